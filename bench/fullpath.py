"""Full-path benchmark: client → gateway proxy → gateway → feature-store proxy → feature store, → model proxy →
model replica, on a real stack started with `faultline up -d` (two replicas, every hop through the netproxy).

    python -m bench fullpath [--quick] [--json]

Real transactions from the seeded generator (unique ids) are posted to POST /v1/score at the gateway proxy by
the open-loop generator (bench/openloop.py, its own process), one fixed rate after another, stepping up the
ladder until two rates in a row miss the budget after one met it (or the ladder ends). Per rate: achieved rps,
p50/p99 from the scheduled send time, error rate, answers served by a fallback, and the CPU each process spent per
transaction (from /proc, via psutil) — the profile of where the 2 cores go. The figure of merit,
`max_rps_within_p99`, is the highest offered rate with p99 ≤ 50 ms, ≥ 95% of it achieved and ≤ 1% errors.
Goal (issue 18): ≥ 2,000 rps.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import stack as bstack
from bench.common import PYTHON, REPO, child_env, dumps, load_average, machine, transactions

GOAL_RPS = 2000.0
P99_BUDGET_MS = 50.0
STOP_AFTER_MISSES = 2  # consecutive rates over budget after one within it: higher ones would only miss by more


def plan(quick: bool, scale: float = 1.0) -> tuple[list[float], float]:
    if quick:
        return [250.0, 500.0, 1000.0], 5.0 * scale
    return [250.0, 500.0, 750.0, 1000.0, 1250.0, 1500.0, 1750.0, 2000.0, 2250.0, 2500.0, 3000.0], 10.0 * scale


def _pids(status: dict[str, Any]) -> dict[str, int]:
    pids = {s["name"]: s["pid"] for s in status["services"] if s.get("pid")}
    pids["lab"] = int(status["supervisor_pid"])
    return pids


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.NoSuchProcess:
            out[name] = 0.0
    return out


def _fallbacks(gateway_url: str) -> float:
    text = httpx.get(gateway_url + "/metrics", timeout=10, trust_env=False).text
    return sum(float(m.group(1)) for m in re.finditer(r"^gateway_fallbacks_total\{[^}]*\} (\S+)$", text, re.M))


def one_rate(url: str, bodies_file: Path, rate: float, seconds: float, warmup: float) -> dict[str, Any]:
    argv = [PYTHON, "-m", "bench.openloop", "--url", url, "--bodies", str(bodies_file), "--rates", f"{rate:g}",
            "--seconds", f"{seconds:g}", "--warmup", f"{warmup:g}", "--timeout", "5"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=child_env(), timeout=seconds * 3 + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"open-loop generator failed: {proc.stderr[-800:]}")
    return json.loads(proc.stdout)["steps"][0]


def run(quick: bool = False, scale: float = 1.0) -> dict[str, Any]:
    rates, seconds = plan(quick, scale)
    warmup = 1.0 * scale if quick else 2.0 * scale
    result: dict[str, Any] = {"bench": "fullpath", "quick": quick, "machine": machine(),
                              "plan": {"rates": rates, "seconds": seconds, "replicas": 2}}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="faultline-bench-") as tmp:
        tmpdir = Path(tmp)
        # every step's generator starts at the file's first line: the busiest step's worth is enough
        needed = int(max(rates) * (seconds + warmup) * 1.1) + 100
        bodies_file = tmpdir / "transactions.txt"
        bodies_file.write_bytes(b"\n".join(dumps(t) for t in transactions(needed, seed=11)) + b"\n")
        with bstack.running(tmpdir / "home", tmpdir / "cache", replicas=2) as st:
            result["up_seconds"] = round(st.up_seconds, 2)
            url = st.public_url + "/v1/score"
            first = httpx.post(url, content=bodies_file.read_bytes().split(b"\n", 1)[0],
                               headers={"content-type": "application/json"}, timeout=10, trust_env=False)
            if first.status_code != 200 or first.json().get("fallback") is not None:
                raise RuntimeError(f"the stack does not score: {first.status_code} {first.text[:300]}")
            status = st.status()
            pids = _pids(status)
            gateway_url = next(s["url"] for s in status["services"] if s["name"] == "gateway")
            steps: list[dict[str, Any]] = []
            for rate in rates:
                if _turned(steps):
                    break
                fb0, cpu0, load = _fallbacks(gateway_url), _cpu(pids), load_average()
                step = one_rate(url, bodies_file, rate, seconds, warmup)
                cpu1 = _cpu(pids)
                answered = max(1, sum(int(v) for k, v in step["codes"].items() if k.isdigit()))
                # CPU per request over warm-up + measured window (both at this rate)
                per_req = {n: round((cpu1[n] - cpu0[n]) / (answered * (seconds + warmup) / seconds) * 1e6, 1)
                           for n in pids}
                step.update({"load_average": load, "fallbacks": _fallbacks(gateway_url) - fb0,
                             "cpu_us_per_request": per_req,
                             "cpu_us_per_request_total": round(sum(per_req.values()), 1)})
                step["within_budget"] = ok(step)
                steps.append(step)
            result["steps"] = steps
    passing = [s["target_rps"] for s in result["steps"] if s["within_budget"]]
    best = max(passing) if passing else 0.0
    # CPU the whole stack spends per transaction at the highest rate it still carried (≥ 95% achieved): how many
    # transactions the machine's cores could take if the stack had them to itself (an estimate, not a measurement)
    carried = [s for s in result["steps"] if s["achieved_rps"] >= 0.95 * s["target_rps"] and s["error_rate"] <= 0.01]
    if carried:
        top = max(carried, key=lambda s: s["target_rps"])
        cores = result["machine"]["nproc"]
        result["cpu_estimate"] = {"at_rps": top["target_rps"], "cpu_us_per_request": top["cpu_us_per_request_total"],
                                  "cores": cores,
                                  "rps_if_cores_were_ours": round(cores * 1e6 / top["cpu_us_per_request_total"])}
    result.update({
        "max_rps_within_p99": best,
        "max_rps_p99_under_50ms": best,  # the older name of the same figure
        "rps": best,
        "goal": {"rps": GOAL_RPS, "p99_ms": P99_BUDGET_MS, "met": best >= GOAL_RPS},
        "load_average_end": load_average(),
        "wall_s": round(time.monotonic() - t_start, 1),
    })
    return result


def _turned(steps: list[dict[str, Any]]) -> bool:
    """The ladder can stop: a rate was within budget, and the last STOP_AFTER_MISSES rates after it were not.
    (Misses before any pass go on: on a shared machine a burst of others' load can fail the lowest rates.)"""
    last_ok = max((i for i, s in enumerate(steps) if s["within_budget"]), default=None)
    return last_ok is not None and len(steps) - 1 - last_ok >= STOP_AFTER_MISSES


def ok(step: dict[str, Any]) -> bool:
    p99 = step.get("p99_ms")
    return (p99 is not None and p99 <= P99_BUDGET_MS and step["achieved_rps"] >= 0.95 * step["target_rps"]
            and step["error_rate"] <= 0.01)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


SERVICES = ("netproxy", "gateway", "feature-store", "model-1", "model-2", "registry", "lab")


def table(r: dict[str, Any]) -> str:
    rows = ["| offered rps | achieved | p50 | p99 | errors | fallbacks | within p99 ≤ 50 ms | load avg "
            "| CPU µs/request: " + ", ".join(SERVICES) + " (total) | client cores |",
            "|---:|---:|---:|---:|---:|---:|:---:|---:|---|---:|"]
    for s in r["steps"]:
        cpu = s["cpu_us_per_request"]
        cpu_text = ", ".join(f"{cpu.get(n, 0):.0f}" for n in SERVICES) + f" ({s['cpu_us_per_request_total']:.0f})"
        rows.append(f"| {s['target_rps']:,.0f} | {s['achieved_rps']:,.0f} | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} "
                    f"| {s['error_rate']:.1%} | {s['fallbacks']:.0f} | {'✅' if s['within_budget'] else '❌'} "
                    f"| {s['load_average']} | {cpu_text} | {s.get('client_cpu_cores', 0):.2f} |")
    return "\n".join(rows)


def summary(r: dict[str, Any]) -> str:
    met = "✅ met" if r["goal"]["met"] else "❌ missed"
    return (f"Highest offered rate with p99 ≤ {P99_BUDGET_MS:g} ms (and ≥ 95% achieved, ≤ 1% errors): "
            f"**{r['max_rps_within_p99']:,.0f} rps** (goal ≥ {GOAL_RPS:,.0f}: {met}). Two replicas; open loop "
            f"from a separate process; every hop through the netproxy." + _estimate(r))


def _estimate(r: dict[str, Any]) -> str:
    e = r.get("cpu_estimate")
    if not e:
        return ""
    return (f" CPU per transaction at {e['at_rps']:,.0f} rps, all processes together: "
            f"{e['cpu_us_per_request']:.0f} µs, so with the {e['cores']} cores to itself the stack would carry "
            f"≈ {e['rps_if_cores_were_ours']:,} rps (an estimate that assumes no other load on the machine).")
