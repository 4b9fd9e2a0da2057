"""The LLM server's benchmark, first part: the raw batched-decode ceiling and our server under streaming load.

    python -m bench.llm [--registry DIR] [--version v1] [--quick] [--json]

- ceiling: our GPT's weights in a bare batched decode loop in this process (contiguous per-layer K/V tensors,
  no scheduler, no paging, no HTTP): `concurrency` sequences decoding together, output tokens per second;
- ours: `python -m services.llm` on a free port, driven by a streaming client (httpx, SSE) that keeps
  `concurrency` streams open over a fixed mix of short and long prompts (verses of the held-out corpus),
  measuring what `vllm bench serve` measures: TTFT, ITL (time between content chunks), end-to-end latency,
  output tokens/s and goodput (requests per second meeting TTFT ≤ 1 s and mean ITL ≤ 200 ms).
Peers (transformers, LitServe) are a later part; their fields are null. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import PYTHON, Child, children, machine, percentile, wait_http

TTFT_SLO_S = 1.0
ITL_SLO_S = 0.2


def prompts(n: int) -> list[str]:
    """A fixed mix: every other prompt short (a verse's first words), the rest long (a verse and a half)."""
    from services.llm.corpus import load_corpus

    verses = load_corpus().val
    out = []
    for i in range(n):
        v = verses[(i * 37) % len(verses)]
        out.append(" ".join(v.split()[:4]) if i % 2 == 0 else (v + " " + verses[(i * 37 + 1) % len(verses)])[:160])
    return out


def ceiling(registry: Path, version: str, batch: int, steps: int, threads: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from services.llm.artifacts import load_llm

    torch.set_num_threads(threads)
    m = load_llm(registry, version).model
    cfg = m.cfg
    h, d, c = cfg.n_head, cfg.head_dim, cfg.n_embd
    prompt_len = 16
    steps = min(steps, cfg.n_ctx - prompt_len)
    with torch.inference_mode():
        ks = [torch.zeros(batch, h, cfg.n_ctx, d) for _ in m.blocks]
        vs = [torch.zeros(batch, h, cfg.n_ctx, d) for _ in m.blocks]
        tok = torch.randint(0, 256, (batch, prompt_len))
        # prefill (not timed): fill the caches
        x = m.wte(tok) + m.wpe(torch.arange(prompt_len))
        for i, b in enumerate(m.blocks):
            q, k, v = b.c_attn(b.ln_1(x)).split(c, dim=2)
            q, k, v = (z.view(batch, prompt_len, h, d).transpose(1, 2) for z in (q, k, v))
            ks[i][:, :, :prompt_len], vs[i][:, :, :prompt_len] = k, v
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + b.attn_proj(y.transpose(1, 2).reshape(batch, prompt_len, c))
            x = x + b.mlp(b.ln_2(x))
        nxt = m.head(x[:, -1]).argmax(-1)
        t0 = time.perf_counter()
        for step in range(steps):
            pos = prompt_len + step
            x = m.wte(nxt) + m.wpe.weight[pos]
            for i, b in enumerate(m.blocks):
                q, k, v = b.c_attn(b.ln_1(x)).split(c, dim=1)
                ks[i][:, :, pos] = k.view(batch, h, d)
                vs[i][:, :, pos] = v.view(batch, h, d)
                y = F.scaled_dot_product_attention(q.view(batch, h, 1, d), ks[i][:, :, : pos + 1],
                                                   vs[i][:, :, : pos + 1])
                x = x + b.attn_proj(y.reshape(batch, c))
                x = x + b.mlp(b.ln_2(x))
            nxt = m.head(x).argmax(-1)
        dt = time.perf_counter() - t0
    return {"ceiling_tok_s": round(batch * steps / dt, 1), "batch": batch, "steps": steps, "threads": threads}


async def _one(client: httpx.AsyncClient, prompt: str, max_tokens: int) -> dict[str, Any]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.7, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = last = None
    gaps: list[float] = []
    tokens = 0
    async with client.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            return {"ok": False, "code": r.status_code}
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            now = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk["choices"] and chunk["choices"][0]["text"]:
                if first is None:
                    first = now
                elif last is not None:
                    gaps.append(now - last)
                last = now
    end = time.perf_counter()
    # a request that ended at once (EOS first) has no content chunk: its TTFT is its end
    return {"ok": True, "ttft": (first or end) - start, "gaps": gaps, "e2e": end - start,
            "tokens": tokens}


async def drive(url: str, texts: list[str], concurrency: int, max_tokens: int) -> dict[str, Any]:
    queue = list(texts)
    results: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, trust_env=False) as client:
        async def worker() -> None:
            while queue:
                results.append(await _one(client, queue.pop(), max_tokens))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        duration = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    gaps = [g for r in ok for g in r["gaps"]]
    good = [r for r in ok if r["ttft"] <= TTFT_SLO_S and sum(r["gaps"]) <= ITL_SLO_S * max(1, len(r["gaps"]))]

    def pct(values: list[float]) -> dict[str, float]:
        return {"p50": round(percentile(values, 0.5) * 1000, 1), "p99": round(percentile(values, 0.99) * 1000, 1)}

    return {
        "requests": len(results), "failed": len(results) - len(ok), "duration_s": round(duration, 2),
        "output_tok_s": round(sum(r["tokens"] for r in ok) / duration, 1),
        "request_rps": round(len(ok) / duration, 2), "goodput_rps": round(len(good) / duration, 2),
        "ttft_ms": pct([r["ttft"] for r in ok]), "itl_ms": pct(gaps), "e2e_ms": pct([r["e2e"] for r in ok]),
    }


def serve_ours(registry: Path, version: str, log_dir: Path, started: list[Child], config: dict[str, Any]) -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = Child("llm-1", [PYTHON, "-m", "services.llm", "--port", str(port), "--registry", str(registry),
                            "--version", version, "--config", json.dumps(config)], log_dir)
    started.append(child)
    wait_http(f"http://127.0.0.1:{port}/readyz", 120, child)
    return f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm", description=__doc__.splitlines()[0])
    home = Path(os.environ.get("FAULTLINE_HOME", ".faultline"))
    parser.add_argument("--registry", type=Path, default=home / "registry")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    n_requests, max_tokens = (32, 32) if args.quick else (128, 64)
    ceil = ceiling(args.registry, args.version, args.concurrency, 64 if args.quick else 192, threads=1)
    with tempfile.TemporaryDirectory() as tmp, children() as started:
        url = serve_ours(args.registry, args.version, Path(tmp), started, {"max_num_seqs": args.concurrency})
        asyncio.run(drive(url, prompts(8), args.concurrency, 8))  # warm-up
        ours = asyncio.run(drive(url, prompts(n_requests), args.concurrency, max_tokens))
    out = {"output_tok_s": ours["output_tok_s"], "peer_best_tok_s": None, "ratio_vs_best_peer": None,
           "ceiling_tok_s": ceil["ceiling_tok_s"],
           "ratio_vs_ceiling": round(ours["output_tok_s"] / ceil["ceiling_tok_s"], 3),
           "goodput_rps": ours["goodput_rps"], "peer_best_goodput_rps": None,
           "concurrency": args.concurrency, "max_tokens": max_tokens, "ours": ours, "ceiling": ceil,
           "slo": {"ttft_s": TTFT_SLO_S, "itl_mean_s": ITL_SLO_S}, "machine": machine()}
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
