"""Open-loop load at fixed rates: requests leave on a schedule whether or not earlier ones have answered.

    python -m bench.openloop --url http://127.0.0.1:P/v1/predict --bodies FILE --rates 250,500 --seconds 10

wrk2 (the usual open-loop tool) is not in Debian; this is the equivalent for our rates (up to a few thousand per
second). Latency is measured from each request's *scheduled* send time, so a server (or this client) falling
behind shows up as latency instead of silently lowering the offered rate (no coordinated omission).

Runs in its own process (uvloop, the project's keep-alive client from services/common/httpclient.py) and prints
one JSON object: per rate, `target_rps`, `achieved_rps` (2xx answers over the time until the last answer),
`p50_ms`/`p90_ms`/`p99_ms`/`max_ms` of the 2xx answers, `errors` (non-2xx, timeouts, refused, and requests never
sent because `--max-inflight` were already waiting), `error_rate`, `codes`, `client_cpu_cores` (this
generator's own CPU: near 1.0 it is the bottleneck). `--bodies` is a file with one request
body per line, used in order and cycled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from services.common.httpclient import HttpClient, HttpError

TICK_S = 0.001


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


async def _step(client: HttpClient, host: str, port: int, path: str, bodies: list[bytes], offset: int,
                rate: float, seconds: float, timeout: float, max_inflight: int) -> tuple[dict[str, Any], int]:
    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds
    clock = time.perf_counter
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    inflight = 0
    last_done = 0.0
    tasks: set[asyncio.Task[None]] = set()

    async def one(body: bytes, scheduled: float) -> None:
        nonlocal inflight, last_done
        try:
            r = await client.request("POST", host, port, path, body, timeout=timeout)
            code = str(r.status)
        except HttpError as exc:
            code = type(exc).__name__
        finally:
            inflight -= 1
        now = clock()
        last_done = now
        codes[code] += 1
        if code.startswith("2"):
            latencies.append((now - scheduled) * 1000.0)

    cpu0 = time.process_time()
    start = clock() + 0.01
    total = int(rate * seconds)
    sent = 0
    skipped = 0
    while sent < total:
        now = clock()
        due = min(total, int((now - start) * rate) + 1) if now >= start else 0
        while sent < due:
            scheduled = start + sent / rate
            body = bodies[(offset + sent) % len(bodies)]
            sent += 1
            if inflight >= max_inflight:
                skipped += 1
                continue
            inflight += 1
            task = loop.create_task(one(body, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if sent < total:
            # at least one tick of uvloop's millisecond timer: a shorter sleep rounds to 0 and the loop spins (at
            # 2,000 rps this generator took a whole core); each wake-up sends every request due by then, and the
            # lag of up to a tick is counted in the latency (measured from the scheduled time)
            await asyncio.sleep(max(TICK_S, start + sent / rate - clock()))
    if tasks:
        await asyncio.wait(set(tasks), timeout=timeout + 1)
    elapsed = max(seconds, (last_done or clock()) - start)
    # near 1.0 the generator itself is the bottleneck: its lag shows up as latency (from the scheduled times)
    client_cores = (time.process_time() - cpu0) / max(0.001, clock() - start)
    latencies.sort()
    ok = len(latencies)
    errors = total - ok
    if skipped:
        codes["not_sent_max_inflight"] += skipped
    result = {
        "target_rps": rate,
        "seconds": round(elapsed, 2),
        "sent": total - skipped,
        "ok": ok,
        "achieved_rps": round(ok / elapsed, 1),
        "p50_ms": _r(_percentile(latencies, 0.50)),
        "p90_ms": _r(_percentile(latencies, 0.90)),
        "p99_ms": _r(_percentile(latencies, 0.99)),
        "max_ms": _r(latencies[-1] if latencies else None),
        "errors": errors,
        "error_rate": round(errors / total, 4) if total else 0.0,
        "codes": dict(codes),
        "client_cpu_cores": round(client_cores, 2),
    }
    return result, offset + total


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


async def drive(url: str, bodies: list[bytes], rates: list[float], seconds: float, warmup: float, pause: float,
                timeout: float, max_inflight: int) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    client = HttpClient(max_idle_per_host=max_inflight)
    offset = 0
    steps = []
    try:
        if warmup > 0:
            _, offset = await _step(client, host, port, path, bodies, offset, rates[0], warmup, timeout, max_inflight)
        for rate in rates:
            if steps and pause > 0:
                await asyncio.sleep(pause)
            result, offset = await _step(client, host, port, path, bodies, offset, rate, seconds, timeout,
                                         max_inflight)
            steps.append(result)
    finally:
        await client.aclose()
    return {"url": url, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.openloop", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path (POST)")
    parser.add_argument("--bodies", required=True, type=Path, help="file: one request body per line")
    parser.add_argument("--rates", required=True, help="comma-separated requests per second, run in order")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per rate")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds at the first rate before measuring")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of quiet between rates")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request deadline, seconds")
    parser.add_argument("--max-inflight", type=int, default=2000)
    args = parser.parse_args(argv)
    host = urlsplit(args.url).hostname
    if host not in ("127.0.0.1", "localhost"):
        parser.error("--url must be on loopback (127.0.0.1)")
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error("--rates: comma-separated numbers, e.g. 250,500,1000")
    if not rates or any(r <= 0 for r in rates):
        parser.error("--rates: give positive rates")
    bodies = [line.encode() for line in args.bodies.read_text().splitlines() if line.strip()]
    if not bodies:
        parser.error(f"--bodies: {args.bodies} holds no request bodies")
    import uvloop

    t0 = time.time()
    result = uvloop.run(drive(args.url, bodies, rates, args.seconds, args.warmup, args.pause, args.timeout,
                              args.max_inflight))
    result["wall_s"] = round(time.time() - t0, 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
