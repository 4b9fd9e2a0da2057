"""Manual benchmark (not a test): gateway throughput and latency, and raw client vs httpx.

    .venv/bin/python tests/gateway/bench_gateway.py [--models peer|real] [--rate 1000] [--seconds 10]

Starts a feature store, two replicas (scripted peers, or real model servers from ./.faultline/registry) and a
gateway on free ports, then drives POST /v1/score at a fixed rate (open loop: latency includes queueing)
and reports achieved rps and p50/p99. `--client-bench` instead compares this project's HttpClient with
httpx.AsyncClient on GET /v1/features against the feature store alone. Processes are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx  # noqa: E402
import psutil  # noqa: E402
import uvloop  # noqa: E402
from gwstack import start_featurestore, start_gateway, start_modelserver, start_peer  # noqa: E402
from kit import REPO  # noqa: E402

from services.common import fastjson  # noqa: E402
from services.common.httpclient import HttpClient  # noqa: E402
from services.trainer.generator import Generator  # noqa: E402


async def drive(port: int, rate: float, seconds: float, bodies: list[bytes]) -> tuple[int, int, list[float]]:
    client = HttpClient()
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def one(body: bytes, scheduled: float) -> None:
        nonlocal errors
        try:
            r = await client.request("POST", "127.0.0.1", port, "/v1/score", body, timeout=5)
            if r.status != 200:
                errors += 1
        except Exception:
            errors += 1
        latencies.append(loop.time() - scheduled)

    start = loop.time()
    n = int(rate * seconds)
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(bodies[i % len(bodies)], scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    await client.aclose()
    return int(n / elapsed), errors, latencies


async def client_bench(port: int, n: int = 5000, concurrency: int = 8) -> None:
    paths = [f"/v1/features/c{i % 500:06d}" for i in range(n)]

    async def run_raw() -> float:
        client = HttpClient()
        started = time.perf_counter()

        async def worker(k: int) -> None:
            for path in paths[k::concurrency]:
                await client.request("GET", "127.0.0.1", port, path, timeout=5)

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        await client.aclose()
        return n / (time.perf_counter() - started)

    async def run_httpx() -> float:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            started = time.perf_counter()

            async def worker(k: int) -> None:
                for path in paths[k::concurrency]:
                    await client.get(path)

            await asyncio.gather(*(worker(k) for k in range(concurrency)))
            return n / (time.perf_counter() - started)

    for name, fn in (("raw", run_raw), ("httpx", run_httpx), ("raw", run_raw), ("httpx", run_httpx)):
        cpu = time.process_time()
        rps = await fn()
        print(f"{name:6s} {rps:7.0f} req/s  client CPU {1e6 * (time.process_time() - cpu) / n:6.0f} us/request")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", choices=["peer", "real"], default="peer")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--client-bench", action="store_true")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="gwbench-"))
    procs = [start_featurestore(log_dir, log_dir / "fs.db")]
    try:
        if args.client_bench:
            uvloop.run(client_bench(procs[0].port))
            return
        if args.models == "real":
            models = [start_modelserver(log_dir, REPO / ".faultline" / "registry", f"model-{i}", "v1") for i in (1, 2)]
            for m in models:
                m.wait_ready()
        else:
            models = [start_peer(log_dir, f"model-{i}") for i in (1, 2)]
        procs += models
        gateway = start_gateway(log_dir, procs[0].url, {m.name: m.url for m in models})
        procs.append(gateway)
        rows = Generator(seed=7, n_cards=500).sample(2000)
        bodies = [fastjson.dumps({k: v for k, v in r.items() if k != "label"}) for r in rows]
        uvloop.run(drive(gateway.port, args.rate, 2, bodies))  # warm-up
        cpu = {p.name: psutil.Process(p.popen.pid).cpu_times() for p in procs}
        rps, errors, lat = uvloop.run(drive(gateway.port, args.rate, args.seconds, bodies))
        n = len(lat)
        for p in procs:
            after = psutil.Process(p.popen.pid).cpu_times()
            used = (after.user + after.system) - (cpu[p.name].user + cpu[p.name].system)
            print(f"  {p.name:14s} CPU {1e6 * used / n:6.0f} us/request ({100 * used / args.seconds:3.0f}% of a core)")
        q = statistics.quantiles(lat, n=100)
        print(f"models={args.models} target={args.rate:.0f} achieved={rps} errors={errors} "
              f"p50={1000 * q[49]:.1f}ms p99={1000 * q[98]:.1f}ms max={1000 * max(lat):.1f}ms")
    finally:
        for proc in reversed(procs):
            proc.stop()


if __name__ == "__main__":
    main()
