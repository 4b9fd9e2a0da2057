"""Start-up benchmark: `faultline up -d` to all-ready, and the scenario reset between attempts.

    python -m bench startup [--quick] [--json]

1. `faultline up -d` (two replicas, a free block of ports) timed from the command's start until it returns —
   it returns once every service is ready — then `faultline down`, `runs` times in one home (the first run
   also seeds the feature store's SQLite file; later runs reuse it, as a learner's second `up` does). Figure:
   the median. Goal ≤ 5 s.
2. Reset between attempts, with the attempt engine (lab/attempt): an attempt of the `slow-replica` scenario
   is started through the lab API (its set-up starts traffic and changes the gateway's config), the learner
   then changes the stack through the console (`config_set` on the gateway, `deploy v2 --canary 0.2`), and
   the attempt is aborted. The lab then puts the stack back to its baseline (`Baseline.reset()`), which logs
   how long it took and what it changed; those lines are read from the lab's log in the private home. The
   pre-attempt reset of each attempt is reported too. Goal ≤ 2 s.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench import stack as bstack
from bench.common import copy_registry, load_average, machine, median

GOAL_UP_S = 5.0
GOAL_RESET_S = 2.0
SCENARIO = "slow-replica"
RESET_LINE = re.compile(r"baseline reset in (\d+(?:\.\d+)?)s changed=(.*?) errors=(\d+)$", re.M)


def _resets(log: Path, after: int) -> list[dict[str, Any]]:
    """Baseline resets the lab logged after byte offset `after` of its log."""
    try:
        with open(log, "rb") as f:
            f.seek(after)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [{"seconds": float(m.group(1)), "changed": [c for c in m.group(2).split(",") if c and c != "-"],
             "errors": int(m.group(3))} for m in RESET_LINE.finditer(text)]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def _cpu_so_far(status: dict[str, Any]) -> dict[str, float]:
    """CPU seconds each process of the fresh stack has used (≈ its start-up cost): the profile of `up`."""
    pids = {s["name"]: s["pid"] for s in status["services"] if s.get("pid")}
    pids["lab"] = status["supervisor_pid"]
    out = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = round(t.user + t.system, 2)
        except psutil.NoSuchProcess:
            pass
    out["total"] = round(sum(out.values()), 2)
    return out


def _past_preparing(st: bstack.BenchStack, attempt_id: str) -> dict[str, Any] | None:
    state = st.api("GET", f"/api/attempts/{attempt_id}")
    return None if state["phase"] == "preparing" else state


def one_attempt(st: bstack.BenchStack, seed: int) -> dict[str, Any]:
    """Start an attempt, act on the stack as a learner would, abort; the post-attempt reset as the lab logged it."""
    log = st.home / "lab.log"
    offset = _size(log)
    t0 = time.monotonic()
    started = st.api("POST", "/api/attempts", json={"scenario_id": SCENARIO, "seed": seed})
    attempt_id = started["attempt_id"]
    state = _wait(lambda: _past_preparing(st, attempt_id), 120, "the attempt's set-up")
    prepared_s = time.monotonic() - t0
    if state["phase"] not in ("warming", "running"):
        raise RuntimeError(f"attempt {attempt_id} ended during its set-up: {state.get('end_reason')}")
    actions = [("config_set", {"service": "gateway", "key": "max_retries", "value": 0}),
               ("deploy", {"version": "v2", "canary": 0.2})]
    for op, args in actions:
        st.api("POST", f"/api/console/{op}", json=args)
    pre = _resets(log, offset)
    mark = _size(log)
    t_abort = time.monotonic()
    st.api("POST", f"/api/attempts/{attempt_id}/abort", json={"reason": "benchmark"})
    post = _wait(lambda: _resets(log, mark), 120, "the lab's baseline reset after the attempt")[0]
    return {"attempt_id": attempt_id, "prepared_s": round(prepared_s, 2),
            "pre_attempt_reset": pre[0] if pre else None, "post_attempt_reset": post,
            "abort_to_reset_logged_s": round(time.monotonic() - t_abort, 2),
            "learner_actions": [op for op, _ in actions]}


def run(quick: bool = False, scale: float = 1.0) -> dict[str, Any]:
    runs = 1 if quick else 3
    attempts = 1 if quick else 3
    result: dict[str, Any] = {"bench": "startup", "quick": quick, "machine": machine(),
                              "plan": {"up_runs": runs, "attempts": attempts, "replicas": 2, "scenario": SCENARIO}}
    ups: list[dict[str, Any]] = []
    resets: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="faultline-bench-") as tmp:
        tmpdir = Path(tmp)
        home = tmpdir / "home"
        copy_registry(home, tmpdir / "cache")
        for i in range(runs):
            load = load_average()
            st = bstack.up(home, tmpdir / "cache", replicas=2)
            try:
                status = st.status()
                ups.append({"run": i, "up_s": round(st.up_seconds, 2), "lab_ready_after_s": status.get("ready_after_s"),
                            "load_average": load, "first_in_home": i == 0, "cpu_s": _cpu_so_far(status)})
                if i == runs - 1:
                    for n in range(attempts):
                        resets.append(one_attempt(st, seed=n + 1))
            finally:
                t0 = time.monotonic()
                st.stop()
                ups[-1]["down_s"] = round(time.monotonic() - t0, 2)
    up_median = median([u["up_s"] for u in ups])
    post = [r["post_attempt_reset"]["seconds"] for r in resets]
    reset_median = median(post) if post else None
    cpu_total = median([u["cpu_s"]["total"] for u in ups])
    result.update({
        "up": ups,
        # start-up is CPU-bound: this much CPU on 2 cores cannot be ready in less than half of it, even when idle
        "up_cpu_s_median": cpu_total,
        "up_floor_on_cores_s": round(cpu_total / max(1, result["machine"]["nproc"]), 2),
        "up_median_s": round(up_median, 2),
        "resets": resets,
        "reset_median_s": reset_median,
        "reset_max_s": max(post) if post else None,
        "goal": {"up_s": GOAL_UP_S, "reset_s": GOAL_RESET_S, "up_met": up_median <= GOAL_UP_S,
                 "reset_met": reset_median is not None and reset_median <= GOAL_RESET_S},
        "load_average_end": load_average(),
    })
    return result


def table(r: dict[str, Any]) -> str:
    names = [n for n in r["up"][0]["cpu_s"] if n != "total"]
    rows = ["| run | `faultline up -d` → all ready | lab's own ready_after_s | `faultline down` | load avg "
            "| CPU s to ready: " + ", ".join(names) + " (total) |",
            "|---:|---:|---:|---:|---:|---|"]
    for u in r["up"]:
        first = " (first in home: seeds the feature store)" if u["first_in_home"] else ""
        cpu = ", ".join(f"{u['cpu_s'].get(n, 0):.1f}" for n in names) + f" ({u['cpu_s']['total']:.1f})"
        rows.append(f"| {u['run'] + 1}{first} | {u['up_s']:.2f} s | {u.get('lab_ready_after_s') or '-'} s "
                    f"| {u.get('down_s', '-')} s | {u['load_average']} | {cpu} |")
    rows += ["", "| attempt | set-up done after | pre-attempt reset | post-attempt reset (what it changed) |",
             "|---:|---:|---:|---|"]
    for i, a in enumerate(r["resets"], 1):
        pre = a["pre_attempt_reset"]
        post = a["post_attempt_reset"]
        pre_text = f"{pre['seconds']:.2f} s" if pre else "-"
        rows.append(f"| {i} | {a['prepared_s']:.2f} s | {pre_text} | {post['seconds']:.2f} s "
                    f"({', '.join(post['changed']) or 'nothing'}) |")
    return "\n".join(rows)


def summary(r: dict[str, Any]) -> str:
    g = r["goal"]
    up = "✅ met" if g["up_met"] else "❌ missed"
    reset = "✅ met" if g["reset_met"] else "❌ missed"
    reset_text = f"{r['reset_median_s']:.2f} s" if r["reset_median_s"] is not None else "not measured"
    return (f"`faultline up -d` to all-ready, median of {len(r['up'])}: **{r['up_median_s']:.2f} s** (goal ≤ "
            f"{GOAL_UP_S:g} s: {up}); it costs {r['up_cpu_s_median']:.1f} s of CPU across the processes, so "
            f"{r['up_floor_on_cores_s']:.1f} s is the floor on {r['machine']['nproc']} idle cores. "
            f"Reset to the baseline after an attempt (scenario `{SCENARIO}`, learner "
            f"changed the gateway's config and deployed a canary), median of {len(r['resets'])}: **{reset_text}** "
            f"(goal ≤ {GOAL_RESET_S:g} s: {reset}).")
