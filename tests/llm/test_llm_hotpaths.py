"""The serving hot paths' shortcuts compute what the plain versions compute: the pre-encoded SSE chunk is the
same bytes as the serialised dict, top-k-first sampling draws the token a full sort would, and the causal mask
rows taken from the kept table are the mask built position by position."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from services.llm.app import _Format, _sse
from services.llm.protocol import ChatRequest, CompletionRequest
from services.llm.sequence import Delta, SamplingParams, Sequence
from services.llm.tokenizer import ByteTokenizer
from services.llm.worker import TOP_K, Run, _group, sample_rows

TEXTS = ["a", 'q"\\\n\u00e9\u2028\t', "</script>\x00 \ud7ff", " and the LORD"]


@pytest.mark.parametrize("chat", [False, True])
def test_pre_encoded_chunk_is_the_serialised_chunk(chat: bool) -> None:
    server = SimpleNamespace(engine=SimpleNamespace(tok=ByteTokenizer()), version="v1")
    req = (ChatRequest(messages=[{"role": "user", "content": "hi"}], stream=True) if chat
           else CompletionRequest(prompt="x", stream=True, stream_options={"include_usage": True}))
    fmt = _Format(server, "cmpl-7", req, [256, 120], SamplingParams(), chat)  # type: ignore[arg-type]
    assert fmt._plain is not None, "a request without logprobs takes the template"
    for text in TEXTS:
        d = Delta(text=text, token_ids=[], logprobs=[])
        assert fmt.sse(d) == b"".join(_sse(c) for c in fmt.chunks(d))
    usage = {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
    last = Delta(text="end", token_ids=[], logprobs=[], finish_reason="length", usage=usage)
    assert fmt.sse(last) == b"".join(_sse(c) for c in fmt.chunks(last))  # the finish goes the dict way


def _sample_by_full_sort(logits: torch.Tensor, seqs: list[Sequence], u: torch.Tensor) -> list[int]:
    temps = torch.tensor([s.params.temperature for s in seqs])
    top_ps = torch.tensor([s.params.top_p for s in seqs])
    probs = torch.softmax(logits / temps[:, None], dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_ps[:, None]
    cdf = (sorted_p * keep).cumsum(-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=logits.shape[-1] - 1)
    ranked = order.gather(1, idx).squeeze(1)
    # top_p 1 keeps every token: drawn in vocabulary order (the same distribution, no ranking needed)
    whole = probs.cumsum(-1)
    by_id = torch.searchsorted(whole, (u * whole[:, -1])[:, None], right=True).clamp_(max=logits.shape[-1] - 1)
    return torch.where(top_ps >= 1.0, by_id.squeeze(1), ranked).tolist()


@pytest.mark.parametrize("top_p", [0.5, 0.95, 1.0])
def test_top_k_first_sampling_draws_what_the_full_sort_draws(top_p: float) -> None:
    gen = torch.Generator().manual_seed(3)
    # peaked rows (the kept mass within the top TOP_K) and flat ones (beyond it: the full sort's fallback)
    logits = torch.cat([torch.randn(8, 258, generator=gen) * 6, torch.randn(8, 258, generator=gen) * 0.1])
    seqs = [Sequence(f"r{i}", [1], SamplingParams(temperature=0.7, top_p=top_p, seed=i), lambda d: None)
            for i in range(16)]
    got = sample_rows(logits, seqs)
    u = torch.tensor([torch.rand(1, generator=torch.Generator().manual_seed(i)).item() for i in range(16)])
    assert got == _sample_by_full_sort(logits, seqs, u)
    probs = torch.softmax(logits[:8] / 0.7, -1).topk(TOP_K).values.sum(-1)
    assert top_p == 1.0 or bool((probs >= top_p).all()), "the peaked rows exercise the top-k path"


def test_causal_mask_rows_are_the_positionwise_mask() -> None:
    bs = 16
    for q_len, starts in [(1, [0, 5, 15, 16, 47, 200]), (3, [0, 14, 30]), (40, [0, 88])]:
        runs = [Run(list(range(q_len)), s, list(range(20)), False) for s in starts]
        g = _group(runs, [i * q_len for i in range(len(runs))], bs)
        n_keys = -(-max(s + q_len for s in starts) // bs) * bs
        q_pos = torch.tensor(starts)[:, None] + torch.arange(q_len)[None, :]
        allowed = torch.arange(n_keys)[None, None, :] <= q_pos[:, :, None]
        expected = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf")).unsqueeze(1)
        assert g.mask.shape == expected.shape and torch.equal(g.mask, expected)


def test_decodes_split_by_length_compute_what_one_group_computes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short and long sequences decoding together: the two attention groups (the short ones apart, fewer blocks
    gathered) give the logits of one group padded to the longest, and split only when that saves blocks."""
    from services.llm import worker
    from services.llm.model import GPT, GPTConfig, KVCache
    from services.llm.worker import _split_by_length, build_batch

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_ctx=256)).eval()
    bs = 16
    cache = KVCache(model.cfg, 128, bs)
    lengths = [3, 5, 9, 17, 20, 150, 160, 200]
    runs, table0 = [], 0
    with torch.inference_mode():
        for n in lengths:  # prefill each sequence into blocks of its own
            table = list(range(table0, table0 + -(-(n + 1) // bs)))
            table0 += len(table)
            toks = torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(n)).tolist()
            model.forward_paged(build_batch([Run(toks, 0, table, False)], bs)[0], cache)
            runs.append(Run([7], n, table, False))
        split, rows = build_batch(runs, bs)
        assert len(split.groups) == 2, "the short sequences decode in a group of their own"
        monkeypatch.setattr(worker, "SPLIT_MIN_SAVING", 10**9)
        whole, _ = build_batch(runs, bs)
        assert len(whole.groups) == 1
        assert torch.allclose(model.forward_paged(split, cache), model.forward_paged(whole, cache), atol=1e-5)
    even = [Run([1], 100 + i, list(range(8)), False) for i in range(6)]
    assert len(_split_by_length(even, list(range(6)), bs)) == 1, "similar lengths: one group"
