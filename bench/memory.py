"""Memory benchmark: resident memory of the whole stack with two replicas under light traffic.

    python -m bench memory [--quick] [--json]

A real stack (`faultline up -d`, two replicas) with the load generator at 20 rps through the gateway proxy;
its status (`faultline status --json` at the start and the end, the same JSON from GET /api/status once a
second in between) gives `rss_bytes` per service, summed. Reported separately: the stack's
services (gateway, feature store, model replicas, registry, netproxy — the goal's scope), the load generator
(a lab tool, not part of the serving stack) and the lab process itself (`lab_rss_bytes`). Goal: stack ≤ 1.5 GiB.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import stack as bstack
from bench.common import load_average, machine, median

GOAL_BYTES = int(1.5 * 2**30)
TOOLS = ("loadgen",)
TRAFFIC_RPS = 20.0


def _sample(st: bstack.BenchStack, via_cli: bool = False) -> dict[str, Any]:
    """One reading: `faultline status --json` itself, or the same JSON from GET /api/status (cheaper per second)."""
    if via_cli:
        proc = st.cli("status", "--json", timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"faultline status --json failed: {proc.stderr[-500:]}")
        status = json.loads(proc.stdout)
    else:
        status = st.status()
    per = {s["name"]: int(s.get("rss_bytes") or 0) for s in status["services"]}
    stack_bytes = sum(v for k, v in per.items() if k not in TOOLS)
    return {"services": per, "stack_bytes": stack_bytes, "tools_bytes": sum(per.get(k, 0) for k in TOOLS),
            "lab_bytes": int(status.get("lab_rss_bytes") or 0)}


def run(quick: bool = False, scale: float = 1.0) -> dict[str, Any]:
    seconds = (10.0 if quick else 30.0) * scale
    result: dict[str, Any] = {"bench": "memory", "quick": quick, "machine": machine(),
                              "plan": {"replicas": 2, "traffic_rps": TRAFFIC_RPS, "seconds": seconds}}
    with tempfile.TemporaryDirectory(prefix="faultline-bench-") as tmp:
        tmpdir = Path(tmp)
        with bstack.running(tmpdir / "home", tmpdir / "cache", replicas=2) as st:
            idle = _sample(st, via_cli=True)
            st.api("POST", "/api/traffic", json={"rps": TRAFFIC_RPS})
            samples = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(1.0)
                samples.append(_sample(st))
            samples.append(_sample(st, via_cli=True))
            traffic = st.api("GET", "/api/traffic")
    peak = max(samples, key=lambda s: s["stack_bytes"])
    stack_peak = peak["stack_bytes"]
    result.update({
        "idle": idle,
        "samples": len(samples),
        "achieved_rps": traffic.get("achieved_rps"),
        "stack_rss_bytes": stack_peak,
        "stack_rss_median_bytes": int(median([s["stack_bytes"] for s in samples])),
        "loadgen_rss_bytes": peak["tools_bytes"],
        "lab_rss_bytes": peak["lab_bytes"],
        "total_with_tools_and_lab_bytes": stack_peak + peak["tools_bytes"] + peak["lab_bytes"],
        "services_at_peak": peak["services"],
        "goal": {"stack_rss_bytes": GOAL_BYTES, "met": stack_peak <= GOAL_BYTES},
        "load_average_end": load_average(),
    })
    return result


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def table(r: dict[str, Any]) -> str:
    rows = ["| process | idle | under traffic (at the stack's peak) |", "|---|---:|---:|"]
    for name, value in r["services_at_peak"].items():
        rows.append(f"| {name}{' (tool)' if name in TOOLS else ''} | {_mib(r['idle']['services'].get(name, 0))} "
                    f"| {_mib(value)} |")
    rows += [
        f"| **stack** (services, no tools) | {_mib(r['idle']['stack_bytes'])} | **{_mib(r['stack_rss_bytes'])}** |",
        f"| lab process | {_mib(r['idle']['lab_bytes'])} | {_mib(r['lab_rss_bytes'])} |",
        f"| everything (stack + load generator + lab) | | {_mib(r['total_with_tools_and_lab_bytes'])} |",
    ]
    return "\n".join(rows)


def summary(r: dict[str, Any]) -> str:
    met = "✅ met" if r["goal"]["met"] else "❌ missed"
    return (f"Stack with two replicas, load generator at {r['plan']['traffic_rps']:g} rps (achieved "
            f"{r['achieved_rps']}), {r['samples']} samples of the lab's status over "
            f"{r['plan']['seconds']:g} s: peak **{_mib(r['stack_rss_bytes'])}** (median "
            f"{_mib(r['stack_rss_median_bytes'])}); goal ≤ 1.5 GiB: {met}. With the load generator and the lab "
            f"process: {_mib(r['total_with_tools_and_lab_bytes'])}.")
