"""Serving benchmark: our model server against LitServe and a plain FastAPI endpoint, same model, same client.

    python -m bench serving [--quick] [--json]

Every server is its own process and loads the identical registry artifact (v1 of a private copy of the default
registry; the peers through services/registry + the shared transform, see bench/peers/); before measuring, the
same rows are scored by each and the scores must agree. Then, in one run:
1. Saturation: wrk, 1 thread, 32 connections, single-row requests cycling through 256 generator rows; rounds
   rotate the server order so machine noise spreads over all of them. Figure: median rps over rounds, p50/p99.
2. Fixed rates: the open-loop generator (bench/openloop.py, its own process) at each rate: achieved rps,
   p50/p99 from the scheduled send time, errors.
3. RSS of each server's whole process tree (LitServe runs an API process and an inference worker).
Goal: our rps >= 3x LitServe's (`ratio_vs_litserve`).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import wrk
from bench.common import (
    HOST,
    PYTHON,
    REPO,
    Child,
    child_env,
    children,
    copy_registry,
    dumps,
    load_average,
    machine,
    median,
    model_rows,
    wait_http,
)
from bench.standalone import standalone_argv, wire
from lab.ports import free_port

GOAL_RATIO = 3.0
CONNECTIONS = 32


@dataclass
class Server:
    key: str
    label: str
    path: str  # the predict route
    ready_path: str
    argv: list[str]
    port: int
    child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"


@dataclass
class Plan:
    rounds: int
    warmup_s: float
    seconds: float
    rates: list[float]
    rate_seconds: float
    litserve_batching: bool


def plan(quick: bool, scale: float = 1.0) -> Plan:
    """--quick fits in about a minute on the shared 2-core machine; `scale` shrinks every duration (tests)."""
    if quick:  # short interleaved rounds: a burst of load from others hits every server, not just one
        return Plan(3, 1.0 * scale, 2.0 * scale, [300.0], 4.0 * scale, False)
    return Plan(5, 2.0 * scale, 6.0 * scale, [250.0, 500.0, 1000.0, 2000.0], 8.0 * scale, True)


def servers(registry: Path, with_litserve_batching: bool) -> list[Server]:
    reg = str(registry)
    out = [
        Server("ours", "ours (services.modelserver)", "/v1/predict", "/readyz", [], free_port()),
        Server("litserve", "LitServe 0.2 (defaults)", "/predict", "/health", [], free_port()),
        Server("fastapi", "plain FastAPI endpoint", "/v1/predict", "/healthz", [], free_port()),
    ]
    if with_litserve_batching:
        out.append(Server("litserve_batching", "LitServe, batching 32 / 2 ms", "/predict", "/health", [],
                          free_port()))
    for s in out:
        port = str(s.port)
        if s.key == "ours":
            s.argv = wire(standalone_argv("model-1", s.port, registry=registry, extra=["--log-level", "WARNING"]),
                          {"--replica": "bench"})
        elif s.key == "fastapi":
            s.argv = [PYTHON, "-m", "bench.peers.fastapi_app", "--port", port, "--registry", reg]
        else:
            s.argv = [PYTHON, "-m", "bench.peers.litserve_app", "--port", port, "--registry", reg]
            if s.key == "litserve_batching":
                s.argv += ["--max-batch-size", "32", "--batch-timeout", "0.002"]
    return out


def check_agreement(servers_: list[Server], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every server scores the same rows; the largest difference from ours (must be ~0: same artifact)."""
    got: dict[str, list[float]] = {}
    with httpx.Client(timeout=30, trust_env=False) as client:
        for s in servers_:
            r = client.post(s.url, json={"rows": rows})
            r.raise_for_status()
            got[s.key] = r.json()["scores"]
    ref = got["ours"]
    diff = max(abs(a - b) for k, scores in got.items() for a, b in zip(ref, scores, strict=True))
    return {"rows": len(rows), "max_abs_diff": diff, "agree": diff <= 1e-6}


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its children still alive."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def fixed_rates(server: Server, bodies_file: Path, rates: list[float], seconds: float) -> list[dict[str, Any]]:
    argv = [PYTHON, "-m", "bench.openloop", "--url", server.url, "--bodies", str(bodies_file),
            "--rates", ",".join(f"{r:g}" for r in rates), "--seconds", f"{seconds:g}", "--warmup", "0.5",
            "--pause", "0.5", "--timeout", "5"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=child_env(),
                          timeout=len(rates) * (seconds + 10) + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"open-loop generator failed: {proc.stderr[-800:]}")
    steps = json.loads(proc.stdout)["steps"]
    for step in steps:
        step["load_average"] = load_average()
    return steps


def run(quick: bool = False, scale: float = 1.0) -> dict[str, Any]:
    p = plan(quick, scale)
    t_start = time.monotonic()
    result: dict[str, Any] = {"bench": "serving", "quick": quick, "machine": machine(),
                              "plan": {"rounds": p.rounds, "seconds": p.seconds, "connections": CONNECTIONS,
                                       "rates": p.rates, "rate_seconds": p.rate_seconds}}
    with tempfile.TemporaryDirectory(prefix="faultline-bench-") as tmp, children() as started:
        tmpdir = Path(tmp)
        registry = copy_registry(tmpdir / "home", tmpdir / "cache")
        rows = model_rows(256)
        bodies = [dumps({"rows": [r]}) for r in rows]
        bodies_file = tmpdir / "bodies.txt"
        bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
        scripts = {path: wrk.write_script(tmpdir / f"post{i}.lua", path, bodies)
                   for i, path in enumerate(("/v1/predict", "/predict"))}
        srv = servers(registry, p.litserve_batching)
        for s in srv:
            s.child = Child(s.key, s.argv, tmpdir)
            started.append(s.child)
        ready_s = {s.key: round(wait_http(f"http://{HOST}:{s.port}{s.ready_path}", 180, s.child), 2) for s in srv}
        result["ready_s"] = ready_s
        result["agreement"] = check_agreement(srv, rows[:16])
        if not result["agreement"]["agree"]:
            raise RuntimeError(f"the servers disagree on the same rows: {result['agreement']}")

        runs: dict[str, list[dict[str, Any]]] = {s.key: [] for s in srv}
        for rnd in range(p.rounds):
            order = srv[rnd % len(srv):] + srv[:rnd % len(srv)]
            for s in order:
                script = scripts[s.path]
                if rnd == 0:
                    wrk.run(s.url, script, p.warmup_s, CONNECTIONS)
                load = load_average()
                pid = s.child.pid if s.child else 0
                cpu0 = tree_cpu_s(pid)
                r = wrk.run(s.url, script, p.seconds, CONNECTIONS)
                cpu = tree_cpu_s(pid) - cpu0
                r["load_average"] = load
                # CPU per answered request: what the server costs, whatever share of the cores it was given
                r["cpu_us_per_request"] = round(cpu / max(1, r["requests"]) * 1e6, 1)
                r["cpu_cores_used"] = round(cpu / max(0.01, r["seconds"]), 2)
                r["round"] = rnd
                runs[s.key].append(r)
        per_server: dict[str, Any] = {}
        for s in srv:
            rs = runs[s.key]
            per_server[s.key] = {
                "label": s.label,
                "rps": round(median([r["rps"] for r in rs]), 1),
                "p50_ms": round(median([r["p50_ms"] for r in rs]), 2),
                "p99_ms": round(median([r["p99_ms"] for r in rs]), 2),
                "cpu_us_per_request": round(median([r["cpu_us_per_request"] for r in rs]), 1),
                "cpu_cores_used": round(median([r["cpu_cores_used"] for r in rs]), 2),
                "errors": sum(r["errors"] for r in rs),
                "runs": rs,
            }
        for s in srv:
            per_server[s.key]["fixed_rates"] = fixed_rates(s, bodies_file, p.rates, p.rate_seconds)
            per_server[s.key]["rss_bytes"] = tree_rss(s.child.pid) if s.child else 0
            per_server[s.key]["pid"] = s.child.pid if s.child else None
        result["servers"] = per_server

    ours, lit, fa = per_server["ours"]["rps"], per_server["litserve"]["rps"], per_server["fastapi"]["rps"]
    round_ratios = [a["rps"] / b["rps"] for a, b in zip(runs["ours"], runs["litserve"], strict=True) if b["rps"]]
    result.update({
        "rps": ours,
        "litserve_rps": lit,
        "fastapi_rps": fa,
        "ratio_vs_litserve": round(ours / lit, 2) if lit else None,
        "ratio_vs_fastapi": round(ours / fa, 2) if fa else None,
        # load-independent view: CPU each server spends per request, LitServe's over ours
        "cpu_ratio_vs_litserve": _cpu_ratio(per_server, "litserve"),
        "cpu_ratio_vs_fastapi": _cpu_ratio(per_server, "fastapi"),
        "round_ratios_vs_litserve": [round(x, 2) for x in round_ratios],
        "goal": {"ratio_vs_litserve": GOAL_RATIO, "met": bool(lit) and ours / lit >= GOAL_RATIO},
        "load_average_end": load_average(),
        "wall_s": round(time.monotonic() - t_start, 1),
    })
    if "litserve_batching" in per_server:
        lb = per_server["litserve_batching"]["rps"]
        result["litserve_batching_rps"] = lb
        result["ratio_vs_litserve_batching"] = round(ours / lb, 2) if lb else None
    return result


def _cpu_ratio(per_server: dict[str, Any], peer: str) -> float | None:
    ours = per_server["ours"]["cpu_us_per_request"]
    return round(per_server[peer]["cpu_us_per_request"] / ours, 2) if ours else None


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def table(r: dict[str, Any]) -> str:
    servers_ = r["servers"]
    ours = servers_["ours"]["rps"]
    rows = ["| server | saturation rps (wrk -c32) | ours vs it | p50 | p99 | CPU per request | cores used "
            "| RSS (process tree) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in servers_.values():
        ratio = "—" if s["rps"] == ours else f"{ours / s['rps']:.2f}x" if s["rps"] else "-"
        rows.append(f"| {s['label']} | {s['rps']:,.0f} | {ratio} | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} "
                    f"| {s['cpu_us_per_request']:.0f} µs | {s['cpu_cores_used']:.2f} "
                    f"| {s['rss_bytes'] / 2**20:.0f} MiB |")
    rates = r["plan"]["rates"]
    rows += ["", "| server | " + " | ".join(f"{x:g} rps: achieved, p50 / p99" for x in rates) + " |",
             "|---|" + "---:|" * len(rates)]
    for s in servers_.values():
        cells = []
        for step in s["fixed_rates"]:
            err = f", {step['error_rate']:.1%} errors" if step["errors"] else ""
            if step.get("client_cpu_cores", 0) >= 0.8:  # the generator, not the server, was the limit
                err += f", client at {step['client_cpu_cores']:.2f} cores"
            cells.append(f"{step['achieved_rps']:,.0f}, {_ms(step['p50_ms'])} / {_ms(step['p99_ms'])}{err}")
        rows.append(f"| {s['label']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def summary(r: dict[str, Any]) -> str:
    met = "✅ met" if r["goal"]["met"] else "❌ missed"
    loads = [x["load_average"] for s in r["servers"].values() for x in s["runs"]]
    rounds = ", ".join(f"{x:.2f}x" for x in r["round_ratios_vs_litserve"])
    return (f"ours {r['rps']:,.0f} rps vs LitServe {r['litserve_rps']:,.0f} rps: **{r['ratio_vs_litserve']:.2f}x** "
            f"(goal ≥ {GOAL_RATIO:g}x: {met}; per round {rounds})"
            f"; vs plain FastAPI {r['ratio_vs_fastapi']:.2f}x. CPU per request: LitServe spends "
            f"{r['cpu_ratio_vs_litserve']:.1f}x ours, plain FastAPI {r['cpu_ratio_vs_fastapi']:.1f}x — the "
            "load-independent view: under contention a server with more busy processes (LitServe: API process + "
            "inference worker) gets a bigger share of the cores. Scores agree across servers (max |diff| "
            f"{r['agreement']['max_abs_diff']:.1e} on {r['agreement']['rows']} rows). Load average during the wrk runs "
            f"{min(loads):.1f}–{max(loads):.1f}.")
