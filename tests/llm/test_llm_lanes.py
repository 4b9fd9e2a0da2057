"""Decode attention over dense lanes computes what attention over gathered paged blocks computes: sequences
join, leave, skip a step (their lane is refilled from their blocks) and share prefix blocks, in one model."""

from __future__ import annotations

import random

import torch

from services.llm.model import GPT, GPTConfig, KVCache
from services.llm.worker import Run, Worker, build_batch


class _Seq:  # what a lane is keyed by: the identity of the sequence object
    pass


def test_lanes_match_gathered_blocks() -> None:
    torch.manual_seed(0)
    rnd = random.Random(1)
    cfg = GPTConfig(vocab_size=50, n_ctx=64, n_layer=2, n_head=2, n_embd=16)
    model = GPT(cfg).eval()
    bs = 4
    cache = KVCache(cfg, 128, bs)
    worker = Worker(model, cache)
    shared_prefix = [rnd.randrange(50) for _ in range(bs)]  # one block both of the first two sequences own
    free = list(range(1, 128))
    seqs: list[dict] = []
    for i in range(6):
        prompt = (shared_prefix if i < 2 else []) + [rnd.randrange(50) for _ in range(3 + i)]
        seqs.append({"key": _Seq(), "tokens": prompt, "computed": 0, "table": []})
    seqs[1]["table"] = [0]  # the shared block: filled by sequence 0's prefill of the same tokens
    checked = 0
    with torch.inference_mode():
        for step in range(30):
            runs = []
            for i, s in enumerate(seqs):
                if step < i or (i == 3 and step % 5 == 0) or (i == 4 and step > 20):  # join late, skip, leave
                    continue
                n_new = len(s["tokens"]) - s["computed"]
                if i == 1 and s["computed"] == 0:
                    s["computed"] = bs  # a prefix-cache hit: the shared block holds its first bs tokens
                    n_new -= bs
                while len(s["table"]) * bs < len(s["tokens"]):
                    s["table"].append(free.pop(0))
                runs.append((s, Run(s["tokens"][s["computed"]:], s["computed"], s["table"], False, s["key"])))
            if not runs:
                continue
            plain, _ = build_batch([r for _, r in runs], bs)
            dense, _ = build_batch([r for _, r in runs], bs, single=worker._assign_lanes)
            # the plain forward first: it writes the same K/V into the same slots, so both see one cache
            want = model.forward_paged(plain, cache)
            got = model.forward_paged(dense, cache)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
            checked += sum(1 for _, r in runs if len(r.tokens) == 1)
            for (s, r), row in zip(runs, want.argmax(-1).tolist(), strict=True):
                s["computed"] = r.start + len(r.tokens)
                s["tokens"].append(row)
    assert checked > 60
    assert any(not g.lanes.identity for g in dense.groups if g.lanes is not None) or worker._num_lanes > 1
