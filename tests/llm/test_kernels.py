"""The C kernels (services/llm/csrc) compute what torch computes. Paged attention: per query row, attention over
its own sequence's keys read through a shuffled block table, for decodes and multi-token runs, every head size
and block size; in the model, a mixed step gives the logits of the torch path. Sampling: the token torch's
top-p draws for the same uniform number, rows peaked and flat, top_p below and at 1, seeded requests
reproducible. Without a compiler (or switched off) the replica falls back to torch and says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from services.llm import kernels
from services.llm.model import GPT, GPTConfig, KVCache
from services.llm.worker import Run, build_batch, sample_rows_torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loaded() -> kernels.Kernels:
    k = kernels.load()
    assert k is not None, "the kernels did not build: is there a C compiler (cc/gcc) on this machine?"
    return k


@pytest.fixture(scope="module")
def kernel(loaded: kernels.Kernels) -> kernels.PagedAttention:
    return loaded.paged_attention


def _reference(q: torch.Tensor, cache: torch.Tensor, table: list[int], pos: int) -> torch.Tensor:
    """Query row q (H*D) at position pos: plain attention over keys 0..pos of the blocks in `table`."""
    _, bs, _, h, d = cache.shape
    kv = cache[torch.tensor(table)].reshape(-1, 2, h, d)[: pos + 1]
    return F.scaled_dot_product_attention(q.view(h, 1, d), kv[:, 0].transpose(0, 1),
                                          kv[:, 1].transpose(0, 1)).reshape(-1)


@pytest.mark.parametrize(("heads", "head_dim", "block_size"),
                         [(4, 24, 16), (2, 32, 16), (4, 16, 1), (3, 40, 3), (4, 24, 32), (1, 64, 7)])
def test_kernel_is_attention_over_each_sequences_own_blocks(kernel: kernels.PagedAttention, heads: int,
                                                            head_dim: int, block_size: int) -> None:
    gen = torch.Generator().manual_seed(heads * 100 + head_dim + block_size)
    num_blocks = 400
    cache = torch.randn(num_blocks, block_size, 2, heads, head_dim, generator=gen) * 3  # peaked softmaxes too
    perm = torch.randperm(num_blocks, generator=gen).tolist()
    # decodes at block edges and far in, a speculative run (5 rows), a prefill chunk after a cached prefix
    specs = [(0, 1), (block_size - 1, 1), (block_size, 1), (57, 1), (200, 1), (31, 5), (40, 24)]
    tables, row0, nq, start, used = [], [], [], [], 0
    for pos, n in specs:
        need = -(-(pos + n) // block_size)
        tables.append(perm[used: used + need])
        used += need
        row0.append(sum(nq))
        nq.append(n)
        start.append(pos)
    nb = max(len(t) for t in tables)
    padded = torch.tensor([t + [0] * (nb - len(t)) for t in tables])
    rows = sum(nq)
    hd = heads * head_dim
    qkv = torch.randn(rows, 3 * hd, generator=gen)  # the kernel reads Q out of the fused projection: strided
    out = torch.full((rows, hd), float("nan"))
    ends = [s + n for s, n in zip(start, nq, strict=True)]
    scores = torch.empty(max(ends) * heads)
    kernel(qkv[:, :hd], out, cache, padded, torch.tensor(row0), torch.tensor(nq), torch.tensor(start), scores)
    for (pos, n), table, r0 in zip(specs, tables, row0, strict=True):
        for j in range(n):
            want = _reference(qkv[r0 + j, :hd], cache, table, pos + j)
            got = out[r0 + j]
            assert torch.allclose(got, want, atol=2e-5, rtol=1e-4), (pos, n, j, (got - want).abs().max())


def test_a_mixed_step_gives_the_torch_paths_logits(kernel: kernels.PagedAttention) -> None:
    """Fresh prefills (torch's causal attention), decodes and a chunk after a cached prefix (the kernel) in one
    step: the same logits as the all-torch path, and the same K/V written."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_ctx=256)).eval()
    bs = 16
    caches = {name: KVCache(model.cfg, 64, bs, k) for name, k in (("kernel", kernel), ("torch", None))}
    lengths = [3, 17, 40, 120]
    tables = [list(range(i * 12, i * 12 + 12)) for i in range(len(lengths))]
    tok = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 256, (n,), generator=tok).tolist() for n in lengths]
    out = {}
    with torch.inference_mode():
        for name, cache in caches.items():
            use = cache.kernel is not None
            # step 1: every sequence prefilled but the last, whose first 100 tokens only (a cached prefix)
            first = [Run(p if i < 3 else p[:100], 0, t, False) for i, (p, t) in enumerate(zip(prompts, tables,
                                                                                                 strict=True))]
            a = model.forward_paged(build_batch(first, bs, use)[0], cache)
            # step 2: three decodes, the rest of the last prompt as a chunk, a new fresh prefill
            second = [Run([5], n, t, False) for n, t in zip(lengths[:3], tables[:3], strict=True)]
            second.append(Run(prompts[3][100:], 100, tables[3], True))
            second.append(Run(prompts[0], 0, list(range(50, 54)), False))
            batch, _ = build_batch(second, bs, use)
            assert (batch.paged is not None) == use
            b = model.forward_paged(batch, cache)
            out[name] = (a, b, torch.stack(cache.kv))
    for x, y in zip(out["kernel"], out["torch"], strict=True):
        assert torch.allclose(x, y, atol=1e-4), (x - y).abs().max()


@pytest.mark.parametrize(("n_embd", "n_head", "rows"), [(96, 4, 13), (64, 2, 1), (40, 5, 6), (128, 4, 32)])
def test_a_decode_step_in_one_call_gives_the_torch_paths_logits_and_cache(kernel: kernels.PagedAttention,
                                                                          n_embd: int, n_head: int,
                                                                          rows: int) -> None:
    """csrc/forward.c against the torch path for a step of single-token decodes (the prompts before it were fused
    too): the target's and the draft's shapes, a width that is not a multiple of 32 (padded weights) with an odd
    head size, row counts that are not a multiple of 4, one row, and sequences whose positions cross block edges;
    the same logits and the same K/V written."""
    torch.manual_seed(n_embd)
    model = GPT(GPTConfig(n_ctx=256, n_embd=n_embd, n_head=n_head)).eval()
    bs = 16
    caches = {name: KVCache(model.cfg, rows * 16, bs, k) for name, k in (("fused", kernel), ("torch", None))}
    gen = torch.Generator().manual_seed(2)
    lengths = [int(n) for n in torch.randint(1, 240, (rows,), generator=gen)]
    lengths[0] = 16  # the new token opens a block
    tables = [list(range(i * 16, i * 16 + 16))[::-1] for i in range(rows)]  # blocks out of order
    prompts = [torch.randint(0, 256, (n,), generator=gen).tolist() for n in lengths]
    out = {}
    with torch.inference_mode():
        for name, cache in caches.items():
            use = cache.kernel is not None
            for p, t in zip(prompts, tables, strict=True):
                model.forward_paged(build_batch([Run(p, 0, t, False)], bs, use)[0], cache)
            step = [Run([7 + i], n, t, False) for i, (n, t) in enumerate(zip(lengths, tables, strict=True))]
            batch, _ = build_batch(step, bs, use)
            if use:
                assert model._fused_forward(batch, cache) is not None  # the fused call serves this step
            out[name] = (model.forward_paged(batch, cache), torch.stack(cache.kv))
    for x, y in zip(out["fused"], out["torch"], strict=True):
        assert torch.allclose(x, y, atol=1e-4), (x - y).abs().max()


def test_the_int8_variant_runs_torch_layers_with_the_attention_kernel(kernel: kernels.PagedAttention) -> None:
    """Dynamically quantised linear layers are not what the fused step reads: the int8 variant runs its layers in
    torch, its attention (fresh prompts included) through the kernel, with the logits of torch's attention."""
    from services.llm.model import quantize_int8

    torch.manual_seed(3)
    model = quantize_int8(GPT(GPTConfig(n_ctx=64)).eval())
    out = {}
    with torch.inference_mode():
        for name, k in (("kernel", kernel), ("torch", None)):
            cache = KVCache(model.cfg, 8, 16, k)
            first, _ = build_batch([Run([1, 2, 3], 0, [0], False), Run(list(range(20)), 0, [1, 2], True)], 16,
                                   k is not None)
            assert model._fused_forward(first, cache) is None
            a = model.forward_paged(first, cache)
            b = model.forward_paged(build_batch([Run([4], 3, [0], False), Run([5, 6], 20, [1, 2], False)], 16,
                                                k is not None)[0], cache)
            out[name] = (a, b, torch.stack(cache.kv))
    for x, y in zip(out["kernel"], out["torch"], strict=True):
        assert torch.allclose(x, y, atol=1e-4), (x - y).abs().max()


def test_switched_off_or_without_a_compiler_the_replica_attends_through_torch(tmp_path: Path) -> None:
    code = ("from services.llm import kernels; import sys; "
            "sys.stdout.write(kernels.backend())")
    off = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "FAULTLINE_LLM_KERNEL": "0"})
    assert off.stdout == "torch", off.stderr
    assert not kernels._compile(str(tmp_path / "no-such-cc"), kernels.FLAGS, tmp_path / "k.so")
    assert not (tmp_path / "k.so").exists()
    bad = tmp_path / "cc"
    bad.write_text("#!/bin/sh\necho 'cc: error' >&2\nexit 1\n")
    bad.chmod(0o755)
    assert not kernels._compile(str(bad), kernels.FLAGS, tmp_path / "k.so")
    assert list(tmp_path.glob("k.so*")) == [], "a failed build leaves nothing behind"


@pytest.mark.parametrize("top_p", [0.5, 0.95, 1.0])
def test_sampler_draws_the_token_torch_draws(loaded: kernels.Kernels, top_p: float) -> None:
    gen = torch.Generator().manual_seed(int(top_p * 100))
    # peaked rows (the kept mass within the top 32), flat ones (the whole sort) and temperatures from 0.1 to 2
    logits = torch.cat([torch.randn(40, 258, generator=gen) * 6, torch.randn(40, 258, generator=gen) * 0.1])
    temps = torch.linspace(0.1, 2.0, 80)
    top_ps = torch.full((80,), top_p)
    draws = 0
    for _ in range(25):
        u = torch.rand(80, generator=gen)
        got = loaded.sample_top_p(logits, temps, top_ps, u)
        want = sample_rows_torch(logits, temps, top_ps, u)
        # float32 sums in another order (and another exp) may move a boundary by ~1e-7: a draw that lands that
        # close to one may differ, nothing else
        assert sum(g != w for g, w in zip(got, want, strict=True)) <= 1, (got, want)
        draws += len(got)
    assert draws == 2000


def test_seeded_requests_sample_the_same_tokens_whatever_the_batch(loaded: kernels.Kernels) -> None:
    from services.llm.sequence import SamplingParams, Sequence
    from services.llm.worker import sample_rows

    logits = torch.randn(6, 258, generator=torch.Generator().manual_seed(5)) * 2

    def seqs(seeds: list[int | None]) -> list[Sequence]:
        return [Sequence(f"r{i}", [1], SamplingParams(temperature=0.8, top_p=0.9, seed=s), lambda d: None)
                for i, s in enumerate(seeds)]

    alone = [sample_rows(logits[i:i + 1], seqs([7 + i]))[0] for i in range(3)]
    together = sample_rows(logits, seqs([7, 8, 9, None, None, None]))[:3]
    assert alone == together


def test_two_threads_sample_at_once_and_each_gets_its_own_draws(loaded: kernels.Kernels) -> None:
    """The sampler releases the GIL: two engines on threads of their own may be inside it together."""
    import threading

    gen = torch.Generator().manual_seed(11)
    cases = [(torch.randn(16, 258, generator=gen) * 3, torch.rand(16, generator=gen)) for _ in range(2)]
    temps, top_ps = torch.full((16,), 0.9), torch.full((16,), 0.3)  # flat enough rows reach the heap path too
    alone = [loaded.sample_top_p(lg, temps, top_ps, u) for lg, u in cases]
    got: list[list[list[int]]] = [[], []]

    def run(i: int) -> None:
        for _ in range(300):
            got[i].append(loaded.sample_top_p(cases[i][0], temps, top_ps, cases[i][1]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert all(draw == alone[i] for draw in got[i])
