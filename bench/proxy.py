"""Network proxy benchmark: direct vs proxied, in one run, against the embedded Toxiproxy-compatible server.

    python -m bench.proxy [--quick] [--json]

1. Round trip of small messages (64 B, many round trips, interleaved batches direct/proxied): median and p99;
   the added latency per hop is proxied minus direct at the median (a round trip crosses the proxy both ways,
   so this is conservative). Goal: <= 0.3 ms (Toxiproxy's own bound).
2. Throughput of one bulk stream: direct, proxied, and proxied through a 100 ms latency toxic, measured once the
   stream flows (after the first byte). Goal through the latency toxic: >= 100 MB/s.
3. Latency toxic error: round trips through a 100 ms downstream latency toxic minus the direct round trip.
   Toxiproxy's tolerance: within 10 ms.
4. Bandwidth toxic error: 480 KB at 1000 KB/s upstream, echoed back; expected 480 ms. Tolerance: 10 ms.

The echo and stream servers run in a child process (uvloop), the proxy in its own process, the client here.
Prints a side-by-side table; writes the section between the bench:proxy markers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import cpu_model, die_with_parent
from lab.ports import free_port
from lab.toxiproxy import ToxiproxyClient, select_server

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks.md"
START, END = "<!-- bench:proxy start -->", "<!-- bench:proxy end -->"
MESSAGE = b"m" * 64
STREAM_CHUNK = 256 * 1024


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "nproc": os.cpu_count(), "python": platform.python_version(),
            "load": os.getloadavg()[0]}


# servers (child process)


def _serve(echo_port: int, stream_port: int, ready: Any) -> None:
    import uvloop

    die_with_parent()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

    class Stream(asyncio.Protocol):
        """Writes forever as fast as the reader takes it."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.paused = False
            self.block = b"s" * STREAM_CHUNK
            self._fill()

        def _fill(self) -> None:
            while not self.paused and not self.transport.is_closing():
                self.transport.write(self.block)  # type: ignore[attr-defined]

        def pause_writing(self) -> None:
            self.paused = True

        def resume_writing(self) -> None:
            self.paused = False
            asyncio.get_running_loop().call_soon(self._fill)

        def connection_lost(self, exc: Exception | None) -> None:
            self.paused = True

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(Echo, "127.0.0.1", echo_port)
        await loop.create_server(Stream, "127.0.0.1", stream_port)
        ready.set()
        await asyncio.get_running_loop().create_future()

    uvloop.run(main())


# measurements (this process)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> None:
    got = 0
    while got < n:
        data = sock.recv(n - got)
        if not data:
            raise EOFError("peer closed")
        got += len(data)


def round_trips(sock: socket.socket, n: int, payload: bytes = MESSAGE) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        sock.sendall(payload)
        recv_exactly(sock, len(payload))
        times.append(time.perf_counter() - start)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_round_trip(direct_port: int, proxy_port: int, total: int) -> dict[str, Any]:
    """Interleaved batches so that machine noise hits both sides alike."""
    direct, proxied = [], []
    with connect(direct_port) as d, connect(proxy_port) as p:
        round_trips(d, 200)
        round_trips(p, 200)
        batch = max(100, total // 20)
        for _ in range(max(1, total // batch)):
            direct += round_trips(d, batch)
            proxied += round_trips(p, batch)
    result = {}
    for name, values in (("direct", direct), ("proxied", proxied)):
        result[name] = {"median_us": statistics.median(values) * 1e6, "p99_us": percentile(values, 0.99) * 1e6}
    result["added_per_hop_median_us"] = result["proxied"]["median_us"] - result["direct"]["median_us"]
    result["added_per_hop_p99_us"] = result["proxied"]["p99_us"] - result["direct"]["p99_us"]
    result["round_trips_each"] = len(direct)
    return result


def bench_throughput(port: int, total_bytes: int) -> float:
    """MB/s (10^6 bytes/s) of one stream, from the first byte on."""
    with connect(port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        got = sock.recv_into(view)
        start = time.perf_counter()
        got = 0
        while got < total_bytes:
            n = sock.recv_into(view)
            if not n:
                raise EOFError("stream closed")
            got += n
        return got / (time.perf_counter() - start) / 1e6


def bench_latency_error(
    client: ToxiproxyClient, name: str, proxy_port: int, direct_port: int, samples: int, latency_ms: int
) -> dict[str, Any]:
    with connect(direct_port) as d:
        base = statistics.median(round_trips(d, 200))
    client.add_toxic(name, "latency", {"latency": latency_ms}, name="bench_latency")
    try:
        with connect(proxy_port) as p:
            measured = round_trips(p, samples, MESSAGE * 512)  # 32 KB, like Toxiproxy's latency test
    finally:
        client.remove_toxic(name, "bench_latency")
    return {"latency_ms": latency_ms, **error_stats([(t - base) * 1000 - latency_ms for t in measured])}


def error_stats(errors: list[float]) -> dict[str, Any]:
    """Signed errors in ms: median, and the 95th percentile and maximum of their absolute values."""
    absolute = [abs(e) for e in errors]
    return {
        "samples": len(errors),
        "median_error_ms": statistics.median(errors),
        "p95_abs_error_ms": percentile(absolute, 0.95),
        "max_abs_error_ms": max(absolute),
        "min_error_ms": min(errors),
    }


def bench_bandwidth_error(client: ToxiproxyClient, name: str, proxy_port: int, samples: int) -> dict[str, Any]:
    payload = b"hello world " * 40000  # 480,000 bytes
    client.add_toxic(name, "bandwidth", {"rate": 1000}, name="bench_bandwidth", stream="upstream")
    errors = []
    try:
        for _ in range(samples):
            with connect(proxy_port) as sock:
                start = time.perf_counter()
                sender = threading.Thread(target=sock.sendall, args=(payload,))
                sender.start()
                recv_exactly(sock, len(payload))
                errors.append((time.perf_counter() - start) * 1000 - 480)
                sender.join()
    finally:
        client.remove_toxic(name, "bench_bandwidth")
    return {"expected_ms": 480, **error_stats(errors)}


def run(quick: bool) -> dict[str, Any]:
    sizes = {
        "round_trips": 4000 if quick else 40000,
        "stream_bytes": (128 if quick else 1024) * 1024 * 1024,
        "latency_samples": 10 if quick else 40,
        "bandwidth_samples": 3 if quick else 10,
    }
    echo_port, stream_port, api_port = free_port(), free_port(), free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    servers = ctx.Process(target=_serve, args=(echo_port, stream_port, ready), daemon=True)
    servers.start()
    choice = select_server(port=api_port, prefer="embedded")
    assert choice.argv is not None
    proxy_proc = subprocess.Popen(choice.argv + ["--log-level", "WARNING"], cwd=REPO, preexec_fn=die_with_parent)
    try:
        if not ready.wait(20):
            raise RuntimeError("echo/stream servers did not start")
        client = ToxiproxyClient(choice.url)
        client.wait_ready(20)
        echo_proxy = client.create_proxy("bench-echo", "127.0.0.1:0", f"127.0.0.1:{echo_port}")
        stream_proxy = client.create_proxy("bench-stream", "127.0.0.1:0", f"127.0.0.1:{stream_port}")
        lag_proxy = client.create_proxy("bench-stream-latency", "127.0.0.1:0", f"127.0.0.1:{stream_port}")
        client.add_toxic("bench-stream-latency", "latency", {"latency": 100})
        echo_p = int(echo_proxy["listen"].rsplit(":", 1)[1])
        stream_p = int(stream_proxy["listen"].rsplit(":", 1)[1])
        lag_p = int(lag_proxy["listen"].rsplit(":", 1)[1])

        results: dict[str, Any] = {"machine": machine(), "quick": quick, "sizes": sizes}
        results["round_trip"] = bench_round_trip(echo_port, echo_p, sizes["round_trips"])
        results["throughput_mb_s"] = {
            "direct": bench_throughput(stream_port, sizes["stream_bytes"]),
            "proxied": bench_throughput(stream_p, sizes["stream_bytes"]),
            "latency_toxic_100ms": bench_throughput(lag_p, sizes["stream_bytes"]),
        }
        results["latency_toxic"] = bench_latency_error(
            client, "bench-echo", echo_p, echo_port, sizes["latency_samples"], 100
        )
        results["bandwidth_toxic"] = bench_bandwidth_error(client, "bench-echo", echo_p, sizes["bandwidth_samples"])
        results["machine"]["load_end"] = os.getloadavg()[0]
        return results
    finally:
        proxy_proc.terminate()
        try:
            proxy_proc.wait(10)
        except subprocess.TimeoutExpired:
            proxy_proc.kill()
        servers.terminate()
        servers.join(10)


def table(r: dict[str, Any]) -> str:
    rt, tp, lat, bw = r["round_trip"], r["throughput_mb_s"], r["latency_toxic"], r["bandwidth_toxic"]
    hop = rt["added_per_hop_median_us"]
    rows = [
        "| measure | direct | proxied | ratio / result | goal |",
        "|---|---:|---:|---:|---|",
        f"| round trip, 64 B, median | {rt['direct']['median_us']:.0f} µs | {rt['proxied']['median_us']:.0f} µs "
        f"| {rt['proxied']['median_us'] / rt['direct']['median_us']:.2f}x | |",
        f"| round trip, 64 B, p99 | {rt['direct']['p99_us']:.0f} µs | {rt['proxied']['p99_us']:.0f} µs "
        f"| {rt['proxied']['p99_us'] / rt['direct']['p99_us']:.2f}x | |",
        f"| added per hop (median) | | | {hop:.0f} µs | ≤ 300 µs {'✅' if hop <= 300 else '❌'} |",
        f"| stream throughput | {tp['direct']:.0f} MB/s | {tp['proxied']:.0f} MB/s "
        f"| {tp['proxied'] / tp['direct']:.2f}x | |",
        f"| throughput through latency toxic (100 ms) | | {tp['latency_toxic_100ms']:.0f} MB/s | "
        f"| ≥ 100 MB/s {'✅' if tp['latency_toxic_100ms'] >= 100 else '❌'} |",
        error_row(f"latency toxic 100 ms, 32 KB round trips (n={lat['samples']})", lat),
        error_row(f"bandwidth toxic 480 KB at 1000 KB/s, echoed (n={bw['samples']})", bw),
    ]
    return "\n".join(rows)


def error_row(label: str, stats: dict[str, Any]) -> str:
    ok = "✅" if stats["p95_abs_error_ms"] <= 10 else "❌"
    return (
        f"| {label} | | | error median {stats['median_error_ms']:+.1f} ms, p95 {stats['p95_abs_error_ms']:.1f} ms, "
        f"max {stats['max_abs_error_ms']:.1f} ms | p95 ≤ 10 ms {ok} |"
    )


def update_docs(r: dict[str, Any], command: str) -> None:
    m = r["machine"]
    section = "\n".join(
        [
            START,
            "## Network proxy",
            "",
            f"`{command}` — embedded netproxy (uvloop), client and echo/stream servers in separate processes, "
            f"{r['round_trip']['round_trips_each']} round trips per side; machine: {m['cpu']}, nproc {m['nproc']}, "
            f"Python {m['python']}; load average {m['load']:.2f} at start, {m['load_end']:.2f} at the end "
            "(a shared machine: tails and maxima move with the load, medians much less).",
            "",
            table(r),
            "",
            END,
        ]
    )
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (about 10 s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    results = run(args.quick)
    print(json.dumps(results, indent=2) if args.json else table(results))
    if not args.no_docs:
        update_docs(results, "python -m bench.proxy" + (" --quick" if args.quick else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
