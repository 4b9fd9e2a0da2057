"""Monitor benchmarks: drift report latency and the 1 Hz scrape loop's CPU cost on a real stack.

    python -m bench.drift [--json] [--runs 30] [--seconds 30] [--rps 50] [--no-stack] [--update-docs]

1. Drift: a 10,000-row live window (rows as the gateway's /v1/recent returns them) against a 5,000-row
   reference, every request feature plus the score: median and p95 of `--runs` reports (budget: 50 ms).
2. Parsing: our Prometheus text parser vs prometheus_client's, on the real /metrics texts of the stack.
3. Overhead: the Monitor at 1 Hz in this process against a real stack (registry, feature store, two model
   replicas, gateway, locust at `--rps`) for `--seconds`: CPU seconds of this process per wall second, as a
   percentage of one core (budget: 5%). Drift refreshes every 10 s (the default) are included.

`--update-docs` rewrites only the section between the bench:monitor markers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import Child, cpu_model, wait_http
from bench.standalone import scoring_stack_argv
from lab.monitor import GatewayRecent, Monitor, MonitorConfig, Reference, RegistryReference, drift_report, prom
from lab.ports import free_port
from services.trainer.generator import Generator, Shift

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks.md"
START, END = "<!-- bench:monitor start -->", "<!-- bench:monitor end -->"


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores visible, Python {platform.python_version()}, {platform.system()}"


def bench_drift(runs: int) -> dict[str, Any]:
    gen = Generator(7)
    ref_cols = gen.sample_columns(5000, rng=np.random.default_rng(1))
    ref_rows = [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in ref_cols.items()} for i in range(5000)]
    for row, score in zip(ref_rows, np.random.default_rng(2).beta(1, 20, 5000), strict=True):
        row["score"] = float(score)
    t0 = time.perf_counter()
    reference = Reference.build({"rows": ref_rows}, version="v1")
    build_ms = (time.perf_counter() - t0) * 1000
    out: dict[str, Any] = {"reference_rows": 5000, "live_rows": 10_000, "runs": runs,
                           "reference_build_ms": round(build_ms, 2)}
    for name, shift in (("baseline", Shift()), ("unit_change", Shift(unit_scale=100.0))):
        live = gen.sample(10_000, shift, rng=np.random.default_rng(3))
        for row, score in zip(live, np.random.default_rng(4).beta(1, 20, 10_000), strict=True):
            row["score"] = float(score)
        times = []
        report = None
        for _ in range(runs):
            t0 = time.perf_counter()
            report = drift_report(reference, live)
            times.append((time.perf_counter() - t0) * 1000)
        assert report is not None
        times.sort()
        out[name] = {"median_ms": round(statistics.median(times), 2),
                     "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2),
                     "drifted": report["drifted"]}
    return out


# ---- a real stack, without the lab ---------------------------------------------------------------------


class _Stack:
    """The scoring stack without the lab (bench/standalone.py's argv), each service a Child on a free port."""

    def __init__(self, root: Path, registry_src: Path, rps: float) -> None:
        self.children: dict[str, Child] = {}
        self.urls: dict[str, str] = {}
        registry = root / "registry"
        shutil.copytree(registry_src, registry)
        names = ["registry", "feature-store", "model-1", "model-2", "gateway", "loadgen"]
        ports = {name: free_port() for name in names}
        argv = scoring_stack_argv(ports, registry, root / "f.db", replicas=2, rps=rps)
        try:
            for group in (names[:4], ["gateway"], ["loadgen"]):
                for name in group:
                    self.children[name] = Child(name, argv[name], root)
                    self.urls[name] = f"http://127.0.0.1:{ports[name]}"
                for name in group:
                    wait_http(self.urls[name] + "/readyz", 120.0, self.children[name])
        except BaseException:
            self.stop()
            raise

    def url(self, name: str) -> str:
        return self.urls[name]

    def targets(self) -> dict[str, str]:
        return {n: url for n, url in self.urls.items() if n != "loadgen"}

    def stop(self) -> None:
        for child in reversed(list(self.children.values())):
            child.stop()


def _registry_source() -> Path | None:
    for home in filter(None, [os.environ.get("FAULTLINE_HOME"), str(REPO / ".faultline")]):
        reg = Path(home) / "registry"
        if (reg / "versions" / "v1" / "meta.json").is_file():
            return reg
    return None


def bench_parse(texts: dict[str, str], runs: int = 50) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for name, text in texts.items():
        t0 = time.perf_counter()
        for _ in range(runs):
            prom.parse(text)
        ours = (time.perf_counter() - t0) / runs * 1000
        t0 = time.perf_counter()
        for _ in range(runs):
            for family in text_string_to_metric_families(text):
                list(family.samples)
        theirs = (time.perf_counter() - t0) / runs * 1000
        out[name] = {"bytes": len(text), "samples": len(prom.parse(text).samples), "ours_ms": round(ours, 3),
                     "prometheus_client_ms": round(theirs, 3)}
    return out


async def _run_monitor(stack: _Stack, seconds: float) -> dict[str, Any]:
    mon = Monitor(stack.targets, reference_provider=RegistryReference(stack.url("registry")),
                  live_window_provider=GatewayRecent(stack.url("gateway")), config=MonitorConfig())
    await mon.tick()  # warm: first scrape, reference download and binning
    await mon.settle_drift()
    await mon.start()
    await asyncio.sleep(2.0)
    wall0, cpu0, ticks0 = time.perf_counter(), time.process_time(), mon.ticks
    await asyncio.sleep(seconds)
    wall, cpu, ticks = time.perf_counter() - wall0, time.process_time() - cpu0, mon.ticks - ticks0
    snap = mon.metrics()
    await mon.stop()
    return {
        "seconds": round(wall, 1),
        "ticks": ticks,
        "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
        "tick_cpu_ms_mean": mon.overhead()["tick_cpu_ms_mean"],
        "targets": len(stack.targets()),
        "gateway_rps": round(snap["services"]["gateway"].get("rps") or 0.0, 1),
        "drift_window": mon.drift()["window"],
    }


def bench_stack(seconds: float, rps: float) -> dict[str, Any]:
    source = _registry_source()
    if source is None:
        return {"skipped": "no trained registry (run `make models`)"}
    root = Path(tempfile.mkdtemp(prefix="faultline-bench-"))
    stack = _Stack(root, source, rps)
    try:
        time.sleep(3.0)  # let traffic fill every metric family before capturing texts
        texts = {n: httpx.get(url + "/metrics", timeout=5, trust_env=False).text for n, url in stack.targets().items()}
        parse = bench_parse(texts)
        overhead = asyncio.run(_run_monitor(stack, seconds))
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {"rps_target": rps, "parse": parse, "overhead": overhead}


def render(result: dict[str, Any]) -> str:
    d = result["drift"]
    lines = [
        START,
        "## Monitor",
        "",
        f"`python -m bench.drift --update-docs` on {result['machine']} ({result['date']}).",
        "",
        "| measurement | result | budget |",
        "|---|---|---|",
        f"| drift report, 10,000 live rows vs 5,000 reference, 6 features + score (median of {d['runs']}) "
        f"| {d['baseline']['median_ms']} ms (p95 {d['baseline']['p95_ms']} ms) | ≤ 50 ms |",
        f"| same, unit-change traffic (flags {', '.join(d['unit_change']['drifted']) or 'nothing'}) "
        f"| {d['unit_change']['median_ms']} ms | ≤ 50 ms |",
        f"| reference binning (once per production version) | {d['reference_build_ms']} ms | — |",
    ]
    stack = result.get("stack") or {}
    ov = stack.get("overhead")
    if ov:
        lines.append(
            f"| monitor at 1 Hz, {ov['targets']} targets, locust at {stack['rps_target']:g} rps "
            f"({ov['gateway_rps']} rps measured), drift every 10 s, {ov['seconds']} s "
            f"| {ov['cpu_percent_of_one_core']}% of one core ({ov['tick_cpu_ms_mean']} ms CPU per tick) "
            f"| ≤ 5% |")
        for name, p in stack["parse"].items():
            lines.append(f"| parse {name} /metrics ({p['samples']} samples, {p['bytes']} B): ours vs "
                         f"prometheus_client | {p['ours_ms']} ms vs {p['prometheus_client_ms']} ms | — |")
    elif stack.get("skipped"):
        lines.append(f"| monitor overhead | skipped: {stack['skipped']} | ≤ 5% |")
    lines += ["", END]
    return "\n".join(lines)


def update_docs(section: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\nFigures measured by `make bench` pieces.\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.drift", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the raw results as JSON")
    p.add_argument("--runs", type=int, default=30, help="drift reports to time")
    p.add_argument("--seconds", type=float, default=30.0, help="how long to measure the scrape loop")
    p.add_argument("--rps", type=float, default=50.0, help="locust target rate during the overhead run")
    p.add_argument("--no-stack", action="store_true", help="skip the real-stack overhead measurement")
    p.add_argument("--update-docs", action="store_true", help="rewrite the bench:monitor section of the docs")
    args = p.parse_args(argv)
    if args.runs < 1 or args.seconds <= 0 or args.rps <= 0:
        p.error("--runs, --seconds and --rps must be positive")
    result: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
                              "drift": bench_drift(args.runs)}
    if not args.no_stack:
        result["stack"] = bench_stack(args.seconds, args.rps)
    if args.update_docs:
        update_docs(render(result))
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
