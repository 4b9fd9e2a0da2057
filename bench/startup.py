"""Start-up benchmark: `faultline up -d` to all-ready, and the scenario reset between attempts.

    python -m bench startup [--quick] [--json]

1. `faultline up -d` (two replicas, a free block of ports) timed from the command's start until it returns —
   it returns once every service is ready — then `faultline down`, `runs` times in one home. Cold and warm
   separately:
   - `cold_s`: the first `up` in a fresh home (the feature store seeds its SQLite file, the lab has no state)
     after dropping from the page cache what a warm start finds there: every file of the venv's site-packages
     and of the project's own packages gets `posix_fadvise(DONTNEED)`. No root needed, and nothing else is
     flushed (writing /proc/sys/vm/drop_caches would, and would slow every other process on a shared machine);
     pages other running processes have mapped (another lab's torch) stay cached, so on a shared machine "cold"
     is a lower bound of a cold boot. `cold_evicted` says how much of libtorch was really out of the cache
     (fincore, before the start). Bytecode caches (.pyc) are kept: pip writes them at install time.
   - `warm_s`: the median of the later `up`s in the same home (a learner's second `up`).
   Goal: both ≤ 5 s on a quiet machine.
   The LLM track likewise (`faultline up -d --track llm`: gateway, registry, netproxy, llm-1..2, in a home of its
   own): `llm_cold_s` (page cache dropped as above) and `llm_warm_s`. Goal (issue 15): ≤ 8 s on a quiet machine.
2. Reset between attempts, with the attempt engine (lab/attempt): an attempt of the `slow-replica` scenario
   is started through the lab API (its set-up starts traffic and changes the gateway's config), the learner
   then changes the stack through the console (`config_set` on the gateway, `deploy v2 --canary 0.2`), and
   the attempt is aborted. The lab then puts the stack back to its baseline (`Baseline.reset()`), which logs
   how long it took and what it changed; those lines are read from the lab's log in the private home. The
   pre-attempt reset of each attempt is reported too. Goal ≤ 2 s.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench import stack as bstack
from bench.common import REPO, copy_registry, load_average, machine, median

GOAL_UP_S = 5.0
GOAL_RESET_S = 2.0
GOAL_LLM_UP_S = 8.0
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


def evict_page_cache(roots: list[Path]) -> dict[str, int]:
    """posix_fadvise(DONTNEED) on every regular file under `roots`: the kernel drops their clean, unmapped pages
    from the page cache, so the next start reads them from disk. Returns files and bytes advised."""
    files = size = 0
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                except OSError:
                    continue
                try:
                    size += os.fstat(fd).st_size
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    files += 1
                except OSError:
                    pass
                finally:
                    os.close(fd)
    return {"files": files, "bytes": size}


def cached_fraction(path: Path) -> float | None:
    """Share of a file's pages in the page cache (util-linux `fincore`), None when that cannot be told."""
    tool = shutil.which("fincore")
    if tool is None or not path.exists():
        return None
    proc = subprocess.run([tool, "--bytes", "--noheadings", "--output", "RES,SIZE", str(path)], capture_output=True,
                          text=True, timeout=30)
    try:
        res, size = (int(x) for x in proc.stdout.split())
    except ValueError:
        return None
    return round(res / size, 3) if size else None


def _libtorch() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / "torch" / "lib" / "libtorch_cpu.so"


def go_cold() -> dict[str, Any]:
    """Drop what a warm start finds in the page cache (see the module's docstring)."""
    t0 = time.monotonic()
    advised = evict_page_cache([Path(sysconfig.get_paths()["purelib"]), REPO / "lab", REPO / "services"])
    return {**advised, "seconds": round(time.monotonic() - t0, 2),
            "libtorch_cached_after": cached_fraction(_libtorch())}


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
    runs = 2 if quick else 4  # the first is the cold start
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
            cold = go_cold() if i == 0 else None
            load = load_average()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            st = bstack.up(home, tmpdir / "cache", replicas=2)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            try:
                status = st.status()
                ups.append({"run": i, "up_s": round(st.up_seconds, 2), "lab_ready_after_s": status.get("ready_after_s"),
                            "load_average": load, "first_in_home": i == 0, "cold": cold,
                            "cpu_s": _cpu_so_far(status),
                            # the `faultline up -d` process itself (waited for, so counted in our children's
                            # usage): CPU on the serial path before the lab it spawns starts any service
                            "cli_cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                                               2)})
                if i == runs - 1:
                    for n in range(attempts):
                        resets.append(one_attempt(st, seed=n + 1))
            finally:
                t0 = time.monotonic()
                st.stop()
                ups[-1]["down_s"] = round(time.monotonic() - t0, 2)
        llm_ups = llm_track_ups(tmpdir, runs)
    up_median = median([u["up_s"] for u in ups])
    cold_s = ups[0]["up_s"]
    warm_s = round(median([u["up_s"] for u in ups[1:]]), 2)
    post = [r["post_attempt_reset"]["seconds"] for r in resets]
    reset_median = median(post) if post else None
    cpu_total = median([u["cpu_s"]["total"] for u in ups])
    result.update({
        "up": ups,
        # start-up is CPU-bound: this much CPU on 2 cores cannot be ready in less than half of it, even when idle
        "up_cpu_s_median": cpu_total,
        "up_floor_on_cores_s": round(cpu_total / max(1, result["machine"]["nproc"]), 2),
        "up_median_s": round(up_median, 2),
        "cold_s": cold_s,
        "warm_s": warm_s,
        "cold_evicted": ups[0]["cold"],
        "resets": resets,
        "reset_median_s": reset_median,
        "reset_max_s": max(post) if post else None,
        "goal": {"up_s": GOAL_UP_S, "reset_s": GOAL_RESET_S, "up_met": up_median <= GOAL_UP_S,
                 "cold_met": cold_s <= GOAL_UP_S, "warm_met": warm_s <= GOAL_UP_S,
                 "reset_met": reset_median is not None and reset_median <= GOAL_RESET_S},
        "load_average_end": load_average(),
    })
    llm_cold_s = llm_ups[0]["up_s"]
    llm_warm_s = round(median([u["up_s"] for u in llm_ups[1:]]), 2)
    result.update({"llm_up": llm_ups, "llm_cold_s": llm_cold_s, "llm_warm_s": llm_warm_s})
    result["goal"].update({"llm_up_s": GOAL_LLM_UP_S, "llm_cold_met": llm_cold_s <= GOAL_LLM_UP_S,
                           "llm_warm_met": llm_warm_s <= GOAL_LLM_UP_S})
    return result


def llm_track_ups(tmpdir: Path, runs: int) -> list[dict[str, Any]]:
    """`faultline up -d --track llm` (two LLM replicas) `runs` times in a home of its own, the first cold."""
    home = tmpdir / "llm-home"
    ups: list[dict[str, Any]] = []
    for i in range(runs):
        cold = go_cold() if i == 0 else None
        load = load_average()
        st = bstack.up(home, tmpdir / "cache", replicas=2, track="llm")
        try:
            status = st.status()
            ups.append({"run": i, "up_s": round(st.up_seconds, 2), "lab_ready_after_s": status.get("ready_after_s"),
                        "load_average": load, "first_in_home": i == 0,
                        "libtorch_cached_after": (cold or {}).get("libtorch_cached_after")})
        finally:
            st.stop()
    return ups


def table(r: dict[str, Any]) -> str:
    names = [n for n in r["up"][0]["cpu_s"] if n != "total"]
    rows = ["| run | `faultline up -d` → all ready | lab's own ready_after_s | `faultline down` | load avg "
            "| CPU s of the `up` command | CPU s to ready: " + ", ".join(names) + " (total) |",
            "|---:|---:|---:|---:|---:|---:|---|"]
    for u in r["up"]:
        first = " cold (fresh home, page cache dropped)" if u["first_in_home"] else " warm"
        cpu = ", ".join(f"{u['cpu_s'].get(n, 0):.1f}" for n in names) + f" ({u['cpu_s']['total']:.1f})"
        rows.append(f"| {u['run'] + 1}{first} | {u['up_s']:.2f} s | {u.get('lab_ready_after_s') or '-'} s "
                    f"| {u.get('down_s', '-')} s | {u['load_average']} | {u.get('cli_cpu_s', '-')} | {cpu} |")
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
    cold = "✅" if g["cold_met"] else "❌"
    warm = "✅" if g["warm_met"] else "❌"
    ev = r["cold_evicted"] or {}
    cached = ev.get("libtorch_cached_after")
    cached_text = f", libtorch {cached:.0%} still cached" if cached is not None else ""
    return (f"`faultline up -d` to all-ready: cold **{r['cold_s']:.2f} s** {cold}, warm (median of "
            f"{len(r['up']) - 1}) **{r['warm_s']:.2f} s** {warm} (goal ≤ {GOAL_UP_S:g} s on a quiet machine; load "
            f"average {r['up'][0]['load_average']} at the cold start). Cold = a fresh home after "
            f"posix_fadvise(DONTNEED) on {ev.get('files', 0):,} files ({ev.get('bytes', 0) / 2**30:.1f} GiB) of the "
            f"venv and the project{cached_text} (pages other processes have mapped stay). Median of all "
            f"{len(r['up'])}: {r['up_median_s']:.2f} s ({up}); it costs {r['up_cpu_s_median']:.1f} s of CPU across "
            "the processes, so "
            f"{r['up_floor_on_cores_s']:.1f} s is the floor on {r['machine']['nproc']} idle cores. "
            f"Reset to the baseline after an attempt (scenario `{SCENARIO}`, learner "
            f"changed the gateway's config and deployed a canary), median of {len(r['resets'])}: **{reset_text}** "
            f"(goal ≤ {GOAL_RESET_S:g} s: {reset}). The LLM track (`faultline up -d --track llm`, two LLM "
            f"replicas): cold **{r['llm_cold_s']:.2f} s** {'✅' if g['llm_cold_met'] else '❌'}, warm (median of "
            f"{len(r['llm_up']) - 1}) **{r['llm_warm_s']:.2f} s** {'✅' if g['llm_warm_met'] else '❌'} (goal ≤ "
            f"{GOAL_LLM_UP_S:g} s on a quiet machine; load average {r['llm_up'][0]['load_average']} at its cold "
            "start).")
