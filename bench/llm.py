"""The LLM server's benchmark: ours against `transformers` and LitServe, and the raw batched-decode ceiling.

    faultline bench llm [--quick] [--json]        (python -m bench llm ...)
    python -m bench.llm [--registry DIR] [--version v1] [--concurrency 16] [--quick] [--json]

One run, the same weights (the registry's verified version), the same prompts (a fixed mix of short and long
verses of the held-out corpus) and the same open-loop streaming client for every server:
- ceiling: our GPT's weights in a bare batched decode loop in this process (no scheduler, no HTTP):
  `concurrency` sequences decoding together, output tokens per second, the best of three runs before the servers
  start and three after they stop, with each attention: torch's SDPA over contiguous per-layer K/V, our
  server's own paged-attention kernel over blocks laid out in order, and our fused step (csrc/forward.c:
  the whole step in one call), so that our kernels cannot lift ours above it;
- the same-workload ceiling: the same prompts and lengths in a bare loop (static waves of `concurrency`, each
  prefilled, then decoded in lockstep; no scheduler, no sampler, no HTTP). Prefill is over half of the tokens a
  server computes here, so its share of the decode-only ceiling is the most any server could reach;
- ours: `python -m services.llm` (continuous batching over the paged KV cache);
- transformers: bench/peers/llm_transformers.py, `generate` with a streamer behind FastAPI;
- litserve: bench/peers/llm_litserve.py, LitServe's batched streaming of the same `transformers` model.
Each server is a child process on a free loopback port; after a warm-up, the client keeps `concurrency` streams
open (`POST /v1/completions`, `stream: true`, temperature 0.7, top_p 0.95) and measures what `vllm bench serve`
measures: TTFT, ITL (time between content chunks), end-to-end latency (to `[DONE]`, where the `openai` client
stops reading), output tokens/s (the usage chunk's `completion_tokens`) and goodput: requests per second meeting
TTFT <= 1 s and a mean ITL <= 200 ms. The client (`SSEConnection`: keep-alive HTTP/1.1 on asyncio streams, SSE
parsed from raw bytes) records its own CPU per token beside the servers'. A request succeeds when its stream ends
as the protocol says (a finish_reason, then `[DONE]`), also when the model's end-of-text came first (0 tokens:
counted in `finished_at_once`); `failures` counts the rest by cause. The servers are measured one after another
(rounds rotate the order, so a burst of load from others hits every server), alone on the machine but for the
client, and the CPU each one's process tree spent per output token is recorded beside: the load-independent view.
Goals (measured, never asserted): output tok/s and goodput >= 5x the best peer, >= 60 % of the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import HOST, PYTHON, Child, children, load_average, machine, percentile, wait_http
from lab.ports import free_port

TTFT_SLO_S = 1.0
ITL_SLO_S = 0.2
GOAL_RATIO = 5.0
GOAL_PCT_OF_CEILING = 60.0
TEMPERATURE, TOP_P = 0.7, 0.95

def prompts(n: int, max_chars: int = 160) -> list[str]:
    """A fixed mix: every other prompt short (a verse's first words), the rest long (a verse and a half, cut to
    `max_chars` so that prompt and completion fit the model's context)."""
    from services.llm.corpus import load_corpus

    verses = load_corpus().val
    out = []
    for i in range(n):
        v = verses[(i * 37) % len(verses)]
        long = (v + " " + verses[(i * 37 + 1) % len(verses)])[:max_chars]
        out.append(" ".join(v.split()[:4])[:max_chars] if i % 2 == 0 else long)
    return out


def ceiling(registry: Path, version: str, batch: int, steps: int, threads: int, repeats: int = 3) -> dict[str, Any]:
    """The raw decode loop `repeats` times with each attention: torch's scaled_dot_product_attention over
    contiguous per-layer K/V, our paged-attention kernel (services/llm/csrc) over a cache whose blocks are laid
    out in order, and our fused step (the whole step in one C call), the last two where they build. The
    best run of any is the ceiling: a burst of load from others only ever slows a run down, and our server's own
    kernels must not make it beat a ceiling that lacks them."""
    import torch
    import torch.nn.functional as F

    from services.llm.artifacts import load_llm
    from services.llm.kernels import load

    torch.set_num_threads(threads)
    m = load_llm(registry, version).model
    cfg = m.cfg
    h, d, c = cfg.n_head, cfg.head_dim, cfg.n_embd
    prompt_len = 16
    steps = min(steps, cfg.n_ctx - prompt_len)
    loaded = load()
    paged = loaded.paged_attention if loaded is not None else None
    bs = 16
    nb = -(-cfg.n_ctx // bs)
    with torch.inference_mode():
        ks = [torch.zeros(batch, h, cfg.n_ctx, d) for _ in m.blocks]
        vs = [torch.zeros(batch, h, cfg.n_ctx, d) for _ in m.blocks]
        blocks = [torch.zeros(batch * nb, bs, 2, h, d) for _ in m.blocks]  # sequence b: blocks b*nb ...
        tables = torch.arange(batch * nb).view(batch, nb)
        row0, nq = torch.arange(batch), torch.ones(batch, dtype=torch.long)
        scores, out = torch.empty(cfg.n_ctx * h), torch.empty(batch, c)
        tok = torch.randint(0, 256, (batch, prompt_len))
        # prefill (not timed): fill the caches
        x = m.wte(tok) + m.wpe(torch.arange(prompt_len))
        for i, b in enumerate(m.blocks):
            q, k, v = b.c_attn(b.ln_1(x)).split(c, dim=2)
            q, k, v = (z.view(batch, prompt_len, h, d).transpose(1, 2) for z in (q, k, v))
            ks[i][:, :, :prompt_len], vs[i][:, :, :prompt_len] = k, v
            seq_blocks = blocks[i].view(batch, nb * bs, 2, h, d)
            seq_blocks[:, :prompt_len, 0], seq_blocks[:, :prompt_len, 1] = k.transpose(1, 2), v.transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + b.attn_proj(y.transpose(1, 2).reshape(batch, prompt_len, c))
            x = x + b.mlp(b.ln_2(x))
        first = m.head(x[:, -1]).argmax(-1)

        def sdpa_layer(i: int, b: Any, qkv: torch.Tensor, pos: int) -> torch.Tensor:
            q, k, v = qkv.split(c, dim=1)
            ks[i][:, :, pos] = k.view(batch, h, d)
            vs[i][:, :, pos] = v.view(batch, h, d)
            return F.scaled_dot_product_attention(q.view(batch, h, 1, d), ks[i][:, :, : pos + 1],
                                                  vs[i][:, :, : pos + 1]).reshape(batch, c)

        def kernel_layer(i: int, b: Any, qkv: torch.Tensor, pos: int) -> torch.Tensor:
            slots = tables[:, pos // bs] * bs + pos % bs
            blocks[i].view(-1, 2, h, d).index_copy_(0, slots, qkv[:, c:].view(batch, 2, h, d))
            assert paged is not None
            paged(qkv[:, :c], out, blocks[i], tables, row0, nq, torch.full((batch,), pos), scores)
            return out

        prepared = loaded.forward.prepare(m) if loaded is not None else None
        rows = torch.arange(batch)

        def fused_step(nxt: torch.Tensor, pos: int) -> torch.Tensor:  # the whole step in one call
            assert loaded is not None and prepared is not None
            positions = torch.full((batch,), pos)
            logits = loaded.forward(prepared, blocks, nxt, positions, tables[rows, pos // bs] * bs + pos % bs, row0,
                                    nq, positions, tables, rows, h, m.blocks[0].ln_1.eps, bs)
            assert logits is not None
            return logits.argmax(-1)

        runs: dict[str, list[float]] = {}
        for name, attend in (("sdpa", sdpa_layer), ("kernel", kernel_layer), ("fused", None)):
            if (name == "kernel" and paged is None) or (name == "fused" and not prepared):
                continue
            runs[name] = []
            for _ in range(repeats):
                nxt = first
                t0 = time.perf_counter()
                for step in range(steps):
                    pos = prompt_len + step
                    if attend is None:
                        nxt = fused_step(nxt, pos)
                        continue
                    x = m.wte(nxt) + m.wpe.weight[pos]
                    for i, b in enumerate(m.blocks):
                        x = x + b.attn_proj(attend(i, b, b.c_attn(b.ln_1(x)), pos))
                        x = x + b.mlp(b.ln_2(x))
                    nxt = m.head(x).argmax(-1)
                runs[name].append(batch * steps / (time.perf_counter() - t0))
    best = {name: round(max(r), 1) for name, r in runs.items()}
    return {"ceiling_tok_s": max(best.values()), "by_attention_tok_s": best,
            "runs_tok_s": [round(r, 1) for rs in runs.values() for r in rs], "batch": batch, "steps": steps,
            "threads": threads, "n_ctx": cfg.n_ctx}


def workload_ceiling(registry: Path, version: str, texts: list[str], batch: int, max_tokens: int, threads: int,
                     repeats: int = 2) -> dict[str, Any]:
    """The same workload as the servers get, in a bare loop: `texts` (tokenized by the version's tokenizer) in
    static waves of `batch`; each wave's prompts prefilled, then `max_tokens` tokens decoded in lockstep (argmax;
    no scheduler, no sampler, no HTTP, no end-of-text: every prompt gets all its tokens). The prefill runs both
    ways, torch (one forward per distinct prompt length, causal SDPA) and the whole wave in one call of our fused
    step (csrc/forward.c, where the kernels build); the decode steps through the fused step, else torch layers
    with SDPA and a key mask. Output tokens per second over prefill + decode, the best of `repeats` runs of each.
    The decode-only ceiling (`ceiling`) leaves the prompts out: on this workload (prompts of ~90 tokens, 64
    generated) prefill is over half of the tokens a server computes, so the ratio of the two is the share of the
    decode-only ceiling that any server could reach."""
    import torch
    import torch.nn.functional as F

    from services.llm.artifacts import load_llm
    from services.llm.kernels import load

    torch.set_num_threads(threads)
    loaded_llm = load_llm(registry, version)
    m, tok = loaded_llm.model, loaded_llm.tokenizer
    cfg = m.cfg
    h, d, c = cfg.n_head, cfg.head_dim, cfg.n_embd
    encoded = [tok.encode(t)[: cfg.n_ctx - max_tokens] for t in texts]
    loaded = load()
    paged = loaded.paged_attention if loaded is not None else None
    bs = 16
    nb = -(-cfg.n_ctx // bs)
    blocks = [torch.zeros(batch * nb, bs, 2, h, d) for _ in m.blocks]  # sequence b: blocks b*nb ...
    tables = torch.arange(batch * nb).view(batch, nb)
    scores, out = torch.empty(cfg.n_ctx * h), torch.empty(batch, c)
    keys = torch.arange(cfg.n_ctx)
    prepared = loaded.forward.prepare(m) if loaded is not None else None
    eps = m.blocks[0].ln_1.eps

    def fused_prefill(prompts_: list[list[int]]) -> torch.Tensor:
        """The wave's prompts in one call of the fused step: their first tokens."""
        assert loaded is not None and prepared is not None
        b = len(prompts_)
        lens = [len(p) for p in prompts_]
        starts = [sum(lens[:i]) for i in range(b)]
        toks = torch.tensor([t for p in prompts_ for t in p])
        positions = torch.cat([torch.arange(n) for n in lens])
        seq_of = torch.cat([torch.full((n,), i) for i, n in enumerate(lens)])
        slots = tables[seq_of, positions // bs] * bs + positions % bs
        logits = loaded.forward(prepared, blocks, toks, positions, slots, torch.tensor(starts), torch.tensor(lens),
                                torch.zeros(b, dtype=torch.long), tables[:b],
                                torch.tensor([s + n - 1 for s, n in zip(starts, lens, strict=True)]), h, eps, bs)
        assert logits is not None
        return logits.argmax(-1)

    def torch_prefill(prompts_: list[list[int]]) -> torch.Tensor:
        """The wave's prompts through torch, one forward per distinct length: their first tokens."""
        first = torch.empty(len(prompts_), dtype=torch.long)
        by_len: dict[int, list[int]] = {}
        for i, p in enumerate(prompts_):
            by_len.setdefault(len(p), []).append(i)
        for n, rows in by_len.items():
            idx = torch.tensor(rows)
            x = m.wte(torch.tensor([prompts_[i] for i in rows])) + m.wpe(torch.arange(n))
            for li, blk in enumerate(m.blocks):
                q, k, v = blk.c_attn(blk.ln_1(x)).split(c, dim=2)
                seq = blocks[li].view(batch, nb * bs, 2, h, d)
                seq[idx, :n, 0], seq[idx, :n, 1] = k.view(-1, n, h, d), v.view(-1, n, h, d)
                q, k, v = (z.view(-1, n, h, d).transpose(1, 2) for z in (q, k, v))
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                x = x + blk.attn_proj(y.transpose(1, 2).reshape(-1, n, c))
                x = x + blk.mlp(blk.ln_2(x))
            first[idx] = m.head(x[:, -1]).argmax(-1)
        return first

    prefills = {"torch": torch_prefill, "fused": fused_prefill}

    def wave(prompts_: list[list[int]], prefill: str) -> int:
        b = len(prompts_)
        lengths = torch.tensor([len(p) for p in prompts_])
        first = prefills[prefill](prompts_)
        nxt, pos = first, lengths.clone()
        row0, nq = torch.arange(b), torch.ones(b, dtype=torch.long)  # run s is row s, one token each
        for _ in range(max_tokens - 1):  # the first token came from the prefill
            slots = tables[row0, pos // bs] * bs + pos % bs
            if prepared:  # the whole step in one call (csrc/forward.c)
                assert loaded is not None
                logits = loaded.forward(prepared, blocks, nxt, pos, slots, row0, nq, pos, tables[:b], row0, h, eps,
                                        bs)
                assert logits is not None
                nxt, pos = logits.argmax(-1), pos + 1
                continue
            x = m.wte(nxt) + m.wpe(pos)
            mask = None if paged is not None else \
                torch.zeros(b, 1, 1, cfg.n_ctx).masked_fill_((keys[None, :] > pos[:, None])[:, None, None], -torch.inf)
            for li, blk in enumerate(m.blocks):
                qkv = blk.c_attn(blk.ln_1(x))
                blocks[li].view(-1, 2, h, d).index_copy_(0, slots, qkv[:, c:].view(b, 2, h, d))
                if paged is not None:
                    paged(qkv[:, :c], out[:b], blocks[li], tables[:b], row0, nq, pos, scores)
                    y = out[:b]
                else:
                    kv = blocks[li].view(batch, nb * bs, 2, h, d)[:b, : cfg.n_ctx]
                    y = F.scaled_dot_product_attention(
                        qkv[:, :c].view(b, h, 1, d), kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2),
                        attn_mask=mask).reshape(b, c)
                x = x + blk.attn_proj(y)
                x = x + blk.mlp(blk.ln_2(x))
            nxt, pos = m.head(x).argmax(-1), pos + 1
        return b * max_tokens

    runs: list[float] = []
    by_prefill: dict[str, float] = {}
    with torch.inference_mode():
        for prefill in ("torch", "fused") if prepared else ("torch",):  # the best of both prefills
            for _ in range(repeats):
                t0, tokens = time.perf_counter(), 0
                for i in range(0, len(encoded), batch):
                    tokens += wave(encoded[i: i + batch], prefill)
                runs.append(tokens / (time.perf_counter() - t0))
                by_prefill[prefill] = round(max(by_prefill.get(prefill, 0.0), runs[-1]), 1)
    return {"workload_ceiling_tok_s": round(max(runs), 1), "runs_tok_s": [round(r, 1) for r in runs],
            "by_prefill_tok_s": by_prefill,
            "attention": "fused" if prepared else ("kernel" if paged is not None else "sdpa"), "prompts": len(encoded),
            "prompt_tokens": sum(len(p) for p in encoded), "output_tokens_per_run": len(encoded) * max_tokens}


@dataclass
class Server:
    key: str
    label: str
    argv: list[str]
    ready_path: str
    port: int
    child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def servers(registry: Path, version: str, concurrency: int) -> list[Server]:
    reg = str(registry)
    ports = [free_port() for _ in range(3)]
    # LitServe's batched streaming: a worker per core (its CPU advice), the concurrent streams split over them
    workers = min(2, os.cpu_count() or 1)
    return [
        Server("ours", "ours (services.llm)", [
            PYTHON, "-m", "services.llm", "--port", str(ports[0]), "--registry", reg, "--version", version,
            "--config", orjson.dumps({"max_num_seqs": max(32, concurrency)}).decode()], "/readyz", ports[0]),
        Server("transformers", "transformers generate + FastAPI", [
            PYTHON, "-m", "bench.peers.llm_transformers", "--port", str(ports[1]), "--registry", reg,
            "--version", version], "/healthz", ports[1]),
        Server("litserve", f"LitServe, batched streaming ({workers} workers)", [
            PYTHON, "-m", "bench.peers.llm_litserve", "--port", str(ports[2]), "--registry", reg, "--version",
            version, "--workers", str(workers), "--max-batch-size", str(max(1, concurrency // workers)),
            "--batch-timeout", "0.05"], "/health", ports[2]),
    ]


class SSEConnection:
    """One keep-alive HTTP/1.1 connection of the benchmark's client, reading SSE streams straight from the socket.

    The client shares the machine's two cores with the server it drives, so its CPU per token is taken from the
    server's: httpx's `aiter_lines` (its stream, decoder and line splitter per chunk) cost about 100 µs per
    token, half of what our server spent. This one parses the chunked body and the `data:` events from raw
    bytes and decodes an event's JSON only where it needs to know something (whether a chunk has text, the
    usage): what `vllm bench serve` does with aiohttp. It speaks just what the benchmark needs of HTTP/1.1:
    a POST with a JSON body, a chunked or Content-Length answer, the connection reopened when the server
    closes it.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.reader.at_eof():
            self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, AsyncIterator[bytes]]:
        """Send the request; the status and an iterator over the body's bytes as they arrive."""
        reader, writer = await self._connect()
        writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nAccept: "
                     b"text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
                     % (path.encode(), self.host.encode(), self.port, len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:] if ln)}
        if headers.get(b"connection", b"").lower() == b"close":
            self.reader = None  # reopened for the next request, once this body has been read
        return status, self._body(reader, headers)

    async def _body(self, reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> AsyncIterator[bytes]:
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    return
                yield data[:-2]
        elif b"content-length" in headers:
            yield await reader.readexactly(int(headers[b"content-length"]))
        else:  # the body runs to the end of the connection
            while chunk := await reader.read(65536):
                yield chunk
            self.reader = None


async def _one(conn: SSEConnection, prompt: str, max_tokens: int) -> dict[str, Any]:
    body = orjson.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": TEMPERATURE, "top_p": TOP_P,
                         "stream": True, "stream_options": {"include_usage": True}})
    start = time.perf_counter()
    first = last = None
    gaps: list[float] = []
    tokens = 0
    finish: str | None = None
    done = False
    status, chunks = await conn.post("/v1/completions", body)
    if status != 200:
        async for _ in chunks:  # read the answer out, so the connection can carry the next request
            pass
        return {"ok": False, "code": status}
    buf = b""
    async for data in chunks:
        now = time.perf_counter()  # every event of this read arrived now
        buf += data
        *events, buf = buf.split(b"\n\n")
        for event in events:
            if not event.startswith(b"data: "):
                continue
            if event == b"data: [DONE]":
                done = True  # where the openai client stops reading; the body's end follows
                continue
            chunk = orjson.loads(event[6:])
            choices = chunk.get("choices")
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if choices:
                if choices[0].get("finish_reason"):
                    finish = choices[0]["finish_reason"]
                if choices[0].get("text"):
                    if first is None:
                        first = now
                    elif last is not None:
                        gaps.append(now - last)
                    last = now
    end = time.perf_counter()
    # a stream is a success when it ended as the protocol says: a finish_reason, then [DONE]. A request that
    # finished at once (the model's end-of-text first, for a prompt that is a whole verse) has no content
    # chunk and 0 tokens: a success all the same (its TTFT is its end), counted apart in `finished_at_once`
    return {"ok": done and finish is not None, "code": None if done else "stream ended without [DONE]",
            "finish": finish, "ttft": (first or end) - start, "gaps": gaps, "e2e": end - start, "tokens": tokens,
            "at_once": first is None}


async def drive(url: str, texts: list[str], concurrency: int, max_tokens: int) -> dict[str, Any]:
    queue = list(texts)
    results: list[dict[str, Any]] = []
    host, port = url.removeprefix("http://").rsplit(":", 1)

    async def worker() -> None:
        conn = SSEConnection(host, int(port))
        try:
            while queue:
                try:
                    results.append(await asyncio.wait_for(_one(conn, queue.pop(), max_tokens), 300))
                except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    conn.close()
                    results.append({"ok": False, "code": type(exc).__name__})
        finally:
            conn.close()

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    duration = time.perf_counter() - t0
    client_cpu = time.process_time() - cpu0
    ok = [r for r in results if r["ok"]]
    gaps = [g for r in ok for g in r["gaps"]]
    good = [r for r in ok if r["ttft"] <= TTFT_SLO_S and sum(r["gaps"]) <= ITL_SLO_S * max(1, len(r["gaps"]))]
    failures: dict[str, int] = {}
    for r in results:
        if not r["ok"]:
            failures[str(r.get("code"))] = failures.get(str(r.get("code")), 0) + 1
    finishes: dict[str, int] = {}
    for r in ok:
        finishes[r["finish"]] = finishes.get(r["finish"], 0) + 1
    out_tokens = sum(r["tokens"] for r in ok)

    def pct(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"p50": None, "p99": None}
        return {"p50": round(percentile(values, 0.5) * 1000, 1), "p99": round(percentile(values, 0.99) * 1000, 1)}

    return {
        "requests": len(results), "failed": len(results) - len(ok), "failures": failures,
        "finish_reasons": finishes, "finished_at_once": sum(1 for r in ok if r["at_once"]),
        "duration_s": round(duration, 3), "output_tokens": out_tokens,
        "output_tok_s": round(out_tokens / duration, 1),
        "request_rps": round(len(ok) / duration, 2), "goodput_rps": round(len(good) / duration, 2),
        "ttft_ms": pct([r["ttft"] for r in ok]), "itl_ms": pct(gaps), "e2e_ms": pct([r["e2e"] for r in ok]),
        # the client's own CPU (this process: the one asyncio loop driving every stream) per output token
        "client_cpu_s": round(client_cpu, 3),
        "client_cpu_us_per_token": round(client_cpu / max(1, out_tokens) * 1e6, 1),
    }


def run_client(coro: Any) -> Any:
    """The client on uvloop, like the servers (the loop's own cost per event is part of the client's CPU)."""
    import uvloop

    return uvloop.run(coro)


def _measure(s: Server, texts: list[str], concurrency: int, max_tokens: int) -> dict[str, Any]:
    from bench.serving import tree_cpu_s

    pid = s.child.pid if s.child else 0
    load = load_average()
    cpu0 = tree_cpu_s(pid)
    r = run_client(drive(s.url, texts, concurrency, max_tokens))
    cpu = tree_cpu_s(pid) - cpu0
    r["load_average"] = load
    r["cpu_s"] = round(cpu, 3)
    # what the server's processes spent per output token, whatever share of the cores they were given
    r["cpu_us_per_token"] = round(cpu / max(1, r["output_tokens"]) * 1e6, 1)
    r["cpu_cores_used"] = round(cpu / max(0.01, r["duration_s"]), 2)  # the share of the cores it got
    return r


def _engine_kernels(url: str) -> str | None:
    """Which kernels our replica runs (GET /v1/engine): its C kernels, or their torch versions."""
    import httpx

    try:
        return str(httpx.get(f"{url}/v1/engine", timeout=10).json().get("kernels"))
    except (httpx.HTTPError, ValueError):
        return None


def _best(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """A server's figures over rounds: the round with the median output tok/s (the lower middle one of an even
    number; all rounds kept beside)."""
    ordered = sorted(rs, key=lambda r: r["output_tok_s"])
    return {**ordered[(len(ordered) - 1) // 2], "rounds": [r["output_tok_s"] for r in rs]}


def run(quick: bool = False, scale: float = 1.0, registry: Path | None = None, version: str = "v1",
        concurrency: int = 16) -> dict[str, Any]:
    """The whole comparison; `scale` shrinks the number of requests (smoke tests)."""
    from bench.serving import tree_rss

    registry = registry or Path(os.environ.get("FAULTLINE_HOME", ".faultline")) / "registry"
    # three rounds: a true median per server (LitServe swung 1.4-2.5k tok/s between runs; with two, the lower)
    n_requests, max_tokens, rounds = (64, 32, 1) if quick else (192, 64, 3)
    n_requests = max(concurrency, int(n_requests * scale))
    t_start = time.monotonic()
    result: dict[str, Any] = {"bench": "llm", "quick": quick, "machine": machine(), "concurrency": concurrency,
                              "max_tokens": max_tokens, "requests": n_requests, "rounds": rounds,
                              "slo": {"ttft_s": TTFT_SLO_S, "itl_mean_s": ITL_SLO_S}}
    ceil = ceiling(registry, version, concurrency, 64 if quick else 192, threads=1)
    max_chars = min(160, ceil["n_ctx"] - max_tokens - 2)  # byte tokens: BOS + one per byte (ASCII verses)
    texts = prompts(n_requests, max_chars)
    work = workload_ceiling(registry, version, texts, concurrency, max_tokens, threads=1)
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="faultline-bench-llm-") as tmp, children() as started:
        srv = servers(registry, version, concurrency)
        for s in srv:
            s.child = Child(s.key, s.argv, Path(tmp))
            started.append(s.child)
        result["ready_s"] = {s.key: round(wait_http(s.url + s.ready_path, 180, s.child), 2) for s in srv}
        for s in srv:  # warm-up: first requests pay for lazy set-up (threads, allocator, LitServe's queues)
            run_client(drive(s.url, prompts(concurrency, max_chars), concurrency, 8))
        kernels = _engine_kernels(srv[0].url)
        for rnd in range(rounds):
            for s in srv[rnd % len(srv):] + srv[:rnd % len(srv)]:
                runs.setdefault(s.key, []).append(_measure(s, texts, concurrency, max_tokens))
        per: dict[str, Any] = {}
        for s in srv:
            per[s.key] = {"label": s.label, **_best(runs[s.key]),
                          "rss_bytes": tree_rss(s.child.pid) if s.child else 0,
                          "pid": s.child.pid if s.child else None}
    # measured again once the servers are gone: the best of both (the load moves during a run)
    again = ceiling(registry, version, concurrency, ceil["steps"], threads=1)
    ceil = {**ceil, "ceiling_tok_s": max(ceil["ceiling_tok_s"], again["ceiling_tok_s"]),
            "by_attention_tok_s": {k: max(v, again["by_attention_tok_s"].get(k, 0.0))
                                   for k, v in ceil["by_attention_tok_s"].items()},
            "runs_tok_s": ceil["runs_tok_s"] + again["runs_tok_s"]}
    again_work = workload_ceiling(registry, version, texts, concurrency, max_tokens, threads=1)
    work = {**work, "workload_ceiling_tok_s": max(work["workload_ceiling_tok_s"], again_work["workload_ceiling_tok_s"]),
            "by_prefill_tok_s": {k: max(v, again_work["by_prefill_tok_s"].get(k, 0.0))
                                 for k, v in work["by_prefill_tok_s"].items()},
            "runs_tok_s": work["runs_tok_s"] + again_work["runs_tok_s"]}
    c, wc = ceil["ceiling_tok_s"], work["workload_ceiling_tok_s"]
    for r in per.values():
        r["pct_of_ceiling"] = round(100 * r["output_tok_s"] / c, 1) if c else None
        r["pct_of_workload_ceiling"] = round(100 * r["output_tok_s"] / wc, 1) if wc else None
    ours = per["ours"]
    ours["kernels"] = kernels  # csrc's C kernels ("kernel") or their torch versions ("torch", no compiler)
    ours["label"] = f"ours (services.llm, {'C kernels' if kernels == 'kernel' else 'torch kernels'})"
    peers = {k: v for k, v in per.items() if k != "ours"}
    best_key = max(peers, key=lambda k: peers[k]["output_tok_s"])
    best_tok = peers[best_key]["output_tok_s"]
    best_good = max(v["goodput_rps"] for v in peers.values())
    ratio = round(ours["output_tok_s"] / best_tok, 2) if best_tok else None
    good_ratio = round(ours["goodput_rps"] / best_good, 2) if best_good else None
    result.update({
        "output_tok_s": ours["output_tok_s"], "peer_best": best_key, "peer_best_tok_s": best_tok,
        "ratio_vs_best_peer": ratio, "ceiling_tok_s": c, "pct_of_ceiling": ours["pct_of_ceiling"],
        "ratio_vs_ceiling": round(ours["output_tok_s"] / c, 3) if c else None,
        # the same prompts and lengths in a bare loop (prefill included): what any server could reach at best
        "workload_ceiling_tok_s": wc, "pct_of_workload_ceiling": ours["pct_of_workload_ceiling"],
        "workload_pct_of_ceiling": round(100 * wc / c, 1) if c else None,
        "goodput_rps": ours["goodput_rps"], "peer_best_goodput_rps": best_good,
        "goodput_ratio_vs_best_peer": good_ratio,
        # load-independent view: CPU each peer's processes spent per output token, over ours
        "cpu_ratio_vs_peers": {k: round(v["cpu_us_per_token"] / ours["cpu_us_per_token"], 2)
                               if ours["cpu_us_per_token"] else None for k, v in peers.items()},
        "load_average_rounds": [min(x["load_average"] for rs in runs.values() for x in rs),
                                max(x["load_average"] for rs in runs.values() for x in rs)],
        "servers": per, "ceiling": ceil, "workload_ceiling": work,
        "goal": {"ratio_vs_best_peer": GOAL_RATIO, "goodput_ratio_vs_best_peer": GOAL_RATIO,
                 "pct_of_ceiling": GOAL_PCT_OF_CEILING,
                 "tok_s_met": ratio is not None and ratio >= GOAL_RATIO,
                 "goodput_met": good_ratio is not None and good_ratio >= GOAL_RATIO,
                 "ceiling_met": ours["pct_of_ceiling"] is not None and ours["pct_of_ceiling"] >= GOAL_PCT_OF_CEILING},
        "load_average_end": load_average(), "wall_s": round(time.monotonic() - t_start, 1),
    })
    return result


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def table(r: dict[str, Any]) -> str:
    rows = ["| server | output tok/s | ours vs it | goodput (req/s) | % of ceiling | % of same-workload ceiling | "
            "TTFT p50 / p99 | ITL p50 / p99 | e2e p50 / p99 | CPU per token | cores used | RSS | failed | "
            "client CPU per token |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ours = r["servers"]["ours"]["output_tok_s"]
    for key, s in r["servers"].items():
        vs = "—" if key == "ours" else (f"{ours / s['output_tok_s']:.2f}x" if s["output_tok_s"] else "-")
        rows.append(
            f"| {s['label']} | {s['output_tok_s']:,.0f} | {vs} | {s['goodput_rps']:.2f} | {s['pct_of_ceiling']}% | "
            f"{s.get('pct_of_workload_ceiling', '-')}% | "
            f"{_ms(s['ttft_ms']['p50'])} / {_ms(s['ttft_ms']['p99'])} | "
            f"{_ms(s['itl_ms']['p50'])} / {_ms(s['itl_ms']['p99'])} | "
            f"{_ms(s['e2e_ms']['p50'])} / {_ms(s['e2e_ms']['p99'])} | {s['cpu_us_per_token']:.0f} µs | "
            f"{s['cpu_cores_used']:.2f} | {s['rss_bytes'] / 2**20:.0f} MiB | {s['failed']} of {s['requests']} | "
            f"{s.get('client_cpu_us_per_token', 0):.0f} µs |")
    rows.append(f"| raw batched decode (ceiling, no server) | {r['ceiling_tok_s']:,.0f} | "
                f"{ours / r['ceiling_tok_s']:.2f}x | - | 100% | - | - | - | - | - | 1 thread | - | - | - |")
    if r.get("workload_ceiling_tok_s"):
        w = r["workload_ceiling_tok_s"]
        rows.append(f"| raw loop on the same workload (prefill + decode, no server) | {w:,.0f} | {ours / w:.2f}x | - | "
                    f"{r['workload_pct_of_ceiling']}% | 100% | - | - | - | - | 1 thread | - | - | - |")
    return "\n".join(rows)


def summary(r: dict[str, Any]) -> str:
    g = r["goal"]

    def mark(ok: bool) -> str:
        return "✅ met" if ok else "❌ not met"

    attentions = ", ".join(f"{k} {v:,.0f}" for k, v in r["ceiling"].get("by_attention_tok_s", {}).items())
    return (f"{r['concurrency']} concurrent streams, {r['requests']} requests of up to {r['max_tokens']} tokens "
            f"per server and round ({r['rounds']} round(s)). Ours {r['output_tok_s']:,.0f} output tok/s vs the best "
            f"peer ({r['peer_best']}) {r['peer_best_tok_s']:,.0f}: **{r['ratio_vs_best_peer']}x** (goal ≥ "
            f"{GOAL_RATIO:.0f}x: {mark(g['tok_s_met'])}); goodput {r['goodput_rps']} vs {r['peer_best_goodput_rps']} "
            f"req/s: **{r['goodput_ratio_vs_best_peer']}x** ({mark(g['goodput_met'])}); "
            f"{r['pct_of_ceiling']}% of the raw batched-decode ceiling ({r['ceiling_tok_s']:,.0f} tok/s, the best "
            f"of its attentions: {attentions}; goal ≥ {GOAL_PCT_OF_CEILING:.0f}%: {mark(g['ceiling_met'])}). "
            + (f"The same prompts and lengths in a bare loop (prefill included, no server) reach "
               f"{r['workload_ceiling_tok_s']:,.0f} tok/s, {r['workload_pct_of_ceiling']}% of that ceiling: the most "
               f"any server could reach on this workload; ours is {r['pct_of_workload_ceiling']}% of it. "
               if r.get("workload_ceiling_tok_s") else "")
            + f"SLOs for goodput: TTFT ≤ {TTFT_SLO_S:.0f} s, "
            f"mean ITL ≤ {ITL_SLO_S * 1000:.0f} ms. CPU per output token, the load-independent view: "
            + ", ".join(f"{k} spends {v}x ours" for k, v in r["cpu_ratio_vs_peers"].items())
            + f". Load average during the rounds {r['load_average_rounds'][0]}–{r['load_average_rounds'][1]}; the "
            "client shares the machine's cores with the server it drives (its own CPU per token in the last column). "
            "Requests that ended at once (the model's end-of-text first, 0 tokens: successes): "
            + ", ".join(f"{k} {v.get('finished_at_once', 0)}" for k, v in r["servers"].items()) + ".")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm", description=__doc__.splitlines()[0])
    home = Path(os.environ.get("FAULTLINE_HOME", ".faultline"))
    parser.add_argument("--registry", type=Path, default=home / "registry")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    r = run(args.quick, registry=args.registry, version=args.version, concurrency=args.concurrency)
    if args.json:
        print(orjson.dumps(r).decode())
    else:
        print(summary(r) + "\n\n" + table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
