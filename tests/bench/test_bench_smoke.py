"""Smoke tests of `faultline bench`: each benchmark runs for real (shrunk durations) and emits its documented keys.

No timing assertions: the figures depend on the shared machine's load. What must hold: the command succeeds,
the JSON carries the keys docs/benchmarks.md and the issue name, the servers really answered (and agreed on the
same rows), and nothing the benchmark started is left running. `--scale` (hidden) shrinks every duration.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

# Benchmarks load every core: under pytest-xdist they run with the machine to themselves (tests/cpulock.py), or
# they would slow the other workers' probes and be slowed by them.
pytestmark = pytest.mark.exclusive

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.cli", "bench", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def bench_json(*args: str, timeout: float = 300) -> dict[str, Any]:
    proc = bench(*args, "--json", timeout=timeout)
    what = " ".join(args)
    assert proc.returncode == 0, f"faultline bench {what} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def assert_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.time() + timeout
    alive = pids
    while time.time() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"benchmark processes left running: {alive}")


@pytest.mark.slow
def test_serving_quick_json_has_the_ratio_against_litserve() -> None:
    r = bench_json("serving", "--quick", "--scale", "0.25")
    for key in ("rps", "litserve_rps", "ratio_vs_litserve", "fastapi_rps", "ratio_vs_fastapi", "goal", "machine",
                "ceiling_rps", "ratio_vs_ceiling", "litserve_config", "fastapi_config"):
        assert key in r, key
    assert r["agreement"]["agree"] and r["agreement"]["rows"] == 16
    assert set(r["agreement"]["servers"]) == {"ours", "litserve", "fastapi"}  # every model server scored the rows
    assert set(r["servers"]) == {"ours", "litserve", "fastapi", "ceiling"}
    for name, s in r["servers"].items():
        assert s["rps"] > 0 and s["errors"] == 0, (name, s)
        step = s["fixed_rates"][0]
        assert step["ok"] > 0 and step["p50_ms"] is not None and step["error_rate"] <= 0.05, (name, step)
        assert s["rss_bytes"] > 10 * 2**20
        assert s["cpu_us_per_request"] > 0, name
    assert r["ratio_vs_litserve"] == pytest.approx(r["rps"] / r["litserve_rps"], rel=0.01)
    # the ceiling is measured in the same run, in every round, beside ours
    assert len(r["servers"]["ceiling"]["runs"]) == len(r["servers"]["ours"]["runs"]) == r["plan"]["rounds"]
    assert r["ratio_vs_ceiling"] == pytest.approx(statistics.median(r["round_ratios_vs_ceiling"]), abs=0.002)
    cpu = [c["cpu_us_per_request"] / o["cpu_us_per_request"]
           for o, c in zip(r["servers"]["ours"]["runs"], r["servers"]["ceiling"]["runs"], strict=True)]
    assert r["cpu_ratio_vs_ceiling"] == pytest.approx(statistics.median(cpu), abs=0.002)
    assert r["goal"]["ceiling_cpu_met"] == (r["cpu_ratio_vs_ceiling"] >= 0.6)
    # the sweep: every config tried was measured, and the one that ran is the sweep's best
    lit = r["litserve_config"]
    assert len(lit["sweep"]) >= 2 and all(f["rps"] > 0 for f in lit["sweep"])
    assert lit["best"]["name"] == max(lit["sweep"], key=lambda f: f["rps"])["name"]
    assert r["servers"]["litserve"]["config"] == lit["best"]
    assert {"workers", "fast_queue", "max_batch_size", "batch_timeout"} <= set(lit["best"])
    assert {f["workers"] for f in r["fastapi_config"]["sweep"]} == {1, 2}
    assert r["machine"]["nproc"] >= 1 and r["machine"]["load_average"] >= 0
    assert_gone([s["pid"] for s in r["servers"].values()])


@pytest.mark.slow
def test_memory_quick_json_sums_the_stack() -> None:
    r = bench_json("memory", "--quick", "--scale", "0.2")
    services = r["services_at_peak"]
    assert {"gateway", "feature-store", "model-1", "model-2", "registry"} <= set(services)
    assert r["stack_rss_bytes"] == sum(v for k, v in services.items() if k != "loadgen")
    assert r["lab_rss_bytes"] > 0 and r["goal"]["stack_rss_bytes"] == int(1.5 * 2**30)


@pytest.mark.slow
def test_fullpath_quick_json_reports_each_rate() -> None:
    r = bench_json("fullpath", "--quick", "--scale", "0.2")
    assert [s["target_rps"] for s in r["steps"]] == [250.0, 500.0, 1000.0][:len(r["steps"])] and len(r["steps"]) >= 2
    first = r["steps"][0]
    assert first["ok"] > 0 and first["p99_ms"] is not None
    assert {"gateway", "model-1", "model-2", "feature-store", "lab"} <= set(first["cpu_us_per_request"])
    # the highest offered rate within the p99 budget (0 when none was)
    within = [s["target_rps"] for s in r["steps"] if s["within_budget"]]
    assert r["max_rps_within_p99"] == (max(within) if within else 0.0) == r["max_rps_p99_under_50ms"]
    assert all(s["p99_ms"] <= 50.0 for s in r["steps"] if s["within_budget"])
    assert "met" in r["goal"]


@pytest.mark.slow
def test_startup_and_retrain_quick_json() -> None:
    r = bench_json("startup", "--quick")
    assert r["up_median_s"] > 0 and len(r["up"]) == 2
    # cold (fresh home, page cache dropped) and warm (a second up in the same home) are reported apart
    assert r["cold_s"] == r["up"][0]["up_s"] > 0 and r["warm_s"] == r["up"][1]["up_s"] > 0
    assert r["cold_evicted"]["files"] > 1000 and r["up"][1]["cold"] is None
    assert {"cold_met", "warm_met"} <= set(r["goal"])
    # the LLM track's up, cold then warm, in a home of its own (issue 15's <= 8 s)
    assert r["llm_cold_s"] == r["llm_up"][0]["up_s"] > 0 and r["llm_warm_s"] == r["llm_up"][1]["up_s"] > 0
    assert {"llm_cold_met", "llm_warm_met"} <= set(r["goal"])
    reset = r["resets"][0]["post_attempt_reset"]
    assert reset["errors"] == 0 and "gateway config" in reset["changed"]  # it undid what the learner changed
    assert {"up_met", "reset_met"} <= set(r["goal"])
    t = bench_json("retrain", "--quick", "--scale", "0.3")
    assert t["version"] not in ("v1", "v2") and t["total_s"] >= sum(t["steps"][k] for k in ("retrain_s", "canary_s"))
    assert "met" in t["goal"]


def test_unknown_benchmark_is_a_usage_error() -> None:
    proc = bench("nonsense")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
