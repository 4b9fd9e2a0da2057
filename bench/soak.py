"""The bounded soak: faults applied and reverted in a loop under traffic, on a private stack.

    python -m bench.soak [--minutes 5] [--rps 30] [--fault-s 10] [--healthy-s 15] [--json FILE]   (`make soak`)

1. Starts its own stack (`faultline up -d` on a free block of ports, a temporary FAULTLINE_HOME holding a copy of
   the trained registry, `--exit-with` this process so an interrupted soak leaves nothing) and the load generator
   through the lab (`POST /api/traffic`), then warms up: a burst of traffic fills the gateway's bounded buffers
   (the last 10,000 scored rows it keeps for the monitor) so that filling them does not pass for growth.
2. Loops until the time is up: apply one fault through the lab's sandbox API (`POST /api/faults`), hold it, revert
   it (`DELETE /api/faults/{id}`), wait until every service is running and ready and every proxy clean, then a
   healthy interval. Faults, in turn: latency toxic on a replica's hop, a replica's hop down, SIGKILL of a replica,
   a gateway config push, a slow feature store, a CPU hog, a drifted traffic profile, the gateway's own hop down
   (clients cut off for the fault's duration: the labels due meanwhile must arrive once it is back).
3. Measures:
   - feedback labels: the load generator's own counters (sent = acknowledged by the gateway, failed, dropped) at the
     edges of every healthy interval (lost while healthy = failed + dropped there), and at the end, with the
     traffic paused and every pending label delivered, its total `sent` against the gateway's count of 202 and
     409 answers on /v1/feedback;
   - processes and open file descriptors of the lab and of every service, after the warm-up and at the end (both
     with a healthy stack);
   - RSS of the lab and of every service every few seconds: median of the first and of the last minute.
4. Stops the stack and checks that no process and no listening port is left.

Prints a summary (and `--json FILE` writes every figure); exits 1 if a criterion fails: a label lost while healthy,
acknowledgements not matching, more processes or descriptors at the end (beyond a small allowance), a first-to-last
minute RSS median change above 15% for a service that was never restarted, or anything left after `down`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from lab.client import LabError
from lab.ports import is_free
from lab.privatelab import PrivateLab, lab_cli
from lab.topology import Topology

REPO = Path(__file__).resolve().parents[1]
RSS_TOLERANCE = 0.15
FD_ALLOWANCE = 16  # keep-alive connections come and go: a leak grows with every cycle, not by a handful
SAMPLE_S = 5.0
TRAFFIC_FLOOR = 0.5  # a healthy window must see at least half the labels its rate implies, or traffic stalled
KEEPALIVE_S = 8.0  # longer than uvicorn's keep-alive timeout (5 s)

# (name, fault body for POST /api/faults); targets are filled in for the topology.
FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("latency toxic on model-1's hop", {"kind": "network", "action": "toxic", "target": "model-1",
                                        "params": {"type": "latency", "latency": 200, "jitter": 50}}),
    ("model-2's hop down", {"kind": "network", "action": "down", "target": "model-2"}),
    ("SIGKILL of model-1", {"kind": "process", "action": "kill", "target": "model-1", "params": {"signal": "KILL"}}),
    ("gateway config push", {"kind": "config", "action": "push", "target": "gateway",
                             "params": {"values": {"max_retries": 0, "feature_timeout_ms": 100}}}),
    ("slow feature store", {"kind": "dependency", "action": "slow", "target": "feature-store",
                            "params": {"latency_ms": 80}}),
    ("CPU hog", {"kind": "cpu", "action": "hog", "params": {"cores": 1, "duty": 0.5}}),
    ("covariate-shift traffic", {"kind": "data", "action": "profile", "params": {"profile": "covariate-shift"}}),
    # clients cut off: scores fail and labels due meanwhile are retried until the hop is back
    ("gateway's hop down", {"kind": "network", "action": "down", "target": "gateway"}),
]


class SoakError(RuntimeError):
    """The soak could not run (stack did not start, the lab refused something): not a measurement."""


@dataclass
class Counters:
    sent: int
    failed: int
    dropped: int
    pending: int

    @classmethod
    def of(cls, traffic: dict[str, Any]) -> Counters:
        fb = traffic.get("feedback") or {}
        return cls(int(fb.get("sent", 0)), int(fb.get("failed", 0)), int(fb.get("dropped", 0)),
                   int(fb.get("pending", 0)))


@dataclass
class Soak:
    lab_url: str
    topology: Topology
    lab_pid: int
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=120, trust_env=False))
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    cycles: list[dict[str, Any]] = field(default_factory=list)
    _last_sample: float = 0.0

    # --- the lab ------------------------------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        r = self.http.request(method, self.lab_url + path, json=body)
        if r.status_code not in ok:
            raise SoakError(f"{method} {path} -> {r.status_code}: {r.text[:300]}")
        return r.json()

    def status(self) -> dict[str, Any]:
        return self.api("GET", "/api/status")

    def counters(self) -> Counters:
        return Counters.of(self.api("GET", "/api/traffic"))

    def score_codes(self) -> dict[str, int]:
        return dict((self.api("GET", "/api/traffic").get("requests") or {}).get("codes") or {})

    def healthy(self, st: dict[str, Any] | None = None) -> bool:
        st = st or self.status()
        services = [s for s in st["services"] if not s["name"].startswith("scenario-")]
        return (st["phase"] == "running" and all(s["state"] == "running" and s["ready"] for s in services)
                and all(p["enabled"] and not p["toxics"] for p in st["proxies"])
                and not self.api("GET", "/api/faults")["active"])

    def wait_healthy(self, timeout: float) -> float:
        started = time.monotonic()
        while not self.healthy():
            if time.monotonic() - started > timeout:
                raise SoakError(f"the stack was not healthy {timeout:.0f}s after a revert: {self.status()}")
            self.sample()
            time.sleep(0.5)
        return time.monotonic() - started

    # --- measurements -------------------------------------------------------------------------------------------

    def sample(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_sample < SAMPLE_S:
            return
        self._last_sample = now
        st = self.status()
        self.rss.setdefault("lab", []).append((now, int(st.get("lab_rss_bytes") or _rss(self.lab_pid))))
        for s in st["services"]:
            if s["pid"] and s["rss_bytes"] and not s["name"].startswith("scenario-"):
                self.rss.setdefault(s["name"], []).append((now, int(s["rss_bytes"])))

    def processes(self) -> dict[str, Any]:
        """The lab and its descendants: how many, and each supervised service's open descriptors."""
        st = self.status()
        lab = psutil.Process(self.lab_pid)
        tree = [lab, *lab.children(recursive=True)]
        fds = {"lab": lab.num_fds()}
        for s in st["services"]:
            if s["pid"]:
                try:
                    fds[s["name"]] = psutil.Process(s["pid"]).num_fds()
                except psutil.NoSuchProcess:
                    fds[s["name"]] = -1
        # The load generator holds one keep-alive socket per locust user, and its user pool grows whenever the
        # gateway is slow and never shrinks (docs/loadgen.md): its descriptors are counted net of its users.
        users = int(self.api("GET", "/api/traffic").get("users") or 0)
        if "loadgen" in fds and fds["loadgen"] >= 0:
            fds["loadgen (net of users)"] = fds.pop("loadgen") - users
        return {"count": len(tree), "names": sorted(s["name"] for s in st["services"]), "fds": fds,
                "loadgen_users": users, "restarts": {s["name"]: s["restarts"] for s in st["services"]}}

    def quiet_processes(self) -> dict[str, Any]:
        """`processes()` with the traffic paused, every label delivered and idle keep-alive connections closed by
        the servers (uvicorn: 5 s), so that the count does not depend on how many clients happen to be connected."""
        self.api("POST", "/api/traffic", {"rps": 0})
        deadline = time.monotonic() + 60
        while self.counters().pending and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(KEEPALIVE_S)
        return self.processes()

    def gateway_feedback_acks(self) -> int:
        text = httpx.get(self.topology.service_url("gateway") + "/metrics", timeout=30, trust_env=False).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("gateway_requests_total{") and 'route="feedback"' in line:
                code = re.search(r'code="(\d+)"', line)
                if code and code.group(1) in ("202", "409"):
                    total += float(line.rsplit(" ", 1)[1])
        return int(total)

    # --- the loop -----------------------------------------------------------------------------------------------

    def cycle(self, n: int, name: str, body: dict[str, Any], fault_s: float, healthy_s: float) -> None:
        fault_id = f"soak-{n}"
        t0 = time.time()
        codes_before = self.score_codes()
        self.api("POST", "/api/faults", {**body, "id": fault_id}, ok=(201,))
        end = time.monotonic() + fault_s
        while time.monotonic() < end:
            self.sample()
            time.sleep(0.5)
        self.api("DELETE", f"/api/faults/{fault_id}")
        recovered_s = self.wait_healthy(120)
        codes = {k: v - codes_before.get(k, 0) for k, v in self.score_codes().items() if v != codes_before.get(k, 0)}
        before = self.counters()
        end = time.monotonic() + healthy_s
        while time.monotonic() < end:
            self.sample()
            time.sleep(0.5)
        after = self.counters()
        still = self.healthy()
        lg = self.api("GET", "/api/traffic")
        self.cycles.append({
            "n": n, "fault": name, "at": t0, "recovered_s": round(recovered_s, 2), "score_codes_during_fault": codes,
            "healthy_window_s": healthy_s, "healthy_throughout_end": still,
            "labels_sent": after.sent - before.sent, "labels_failed": after.failed - before.failed,
            "labels_dropped": after.dropped - before.dropped,
            "loadgen": {k: lg.get(k) for k in ("runner_state", "target_rps", "achieved_rps", "users", "inflight",
                                               "permits", "profile")},
        })
        during = ", ".join(f"{c}: {k}" for c, k in sorted(codes.items()))
        print(f"  cycle {n:2d} {name:32} scores during the fault ({during}); recovered in {recovered_s:.1f}s; "
              f"healthy window: "
              f"{after.sent - before.sent} labels acknowledged, {after.failed - before.failed} failed, "
              f"{after.dropped - before.dropped} dropped", flush=True)


def prefill(soak: Soak, rps: float, timeout: float = 300) -> float:
    """Send traffic at `rps` until the gateway has scored more than its recent-rows ring holds."""
    from services.gateway.ledger import RECENT_CAPACITY

    started = time.monotonic()
    soak.api("POST", "/api/traffic", {"rps": rps})
    recent = soak.topology.service_url("gateway") + "/v1/recent?limit=1"
    while httpx.get(recent, timeout=30, trust_env=False).json()["total_scored"] < RECENT_CAPACITY * 1.1:
        if time.monotonic() - started > timeout:
            raise SoakError(f"the gateway did not score {RECENT_CAPACITY} transactions within {timeout:.0f}s")
        time.sleep(1)
    return time.monotonic() - started


def _rss(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.NoSuchProcess:
        return 0


def _registry() -> Path:
    for home in filter(None, [os.environ.get("FAULTLINE_HOME"), str(REPO / ".faultline")]):
        reg = Path(home) / "registry"
        if (reg / "versions" / "v1" / "meta.json").is_file():
            return reg
    raise SoakError("no trained models (FAULTLINE_HOME/registry or ./.faultline/registry): run `make setup`")


def _median(points: list[tuple[float, int]], since: float, until: float) -> float | None:
    values = [v for t, v in points if since <= t < until]
    return statistics.median(values) if values else None


def rss_report(rss: dict[str, list[tuple[float, int]]], start: float, end: float,
               restarted: set[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, points in sorted(rss.items()):
        first = _median(points, start, start + 60)
        last = _median(points, end - 60, end + 1)
        change = None if not first or not last else (last - first) / first
        out[name] = {"first_minute_median_mib": None if first is None else round(first / 2**20, 1),
                     "last_minute_median_mib": None if last is None else round(last / 2**20, 1),
                     "change": None if change is None else round(change, 4),
                     "restarted": name in restarted, "samples": len(points)}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="faultline-soak-"))
    t_up = time.time()
    try:
        lab = PrivateLab.start(_registry(), replicas=args.replicas, home=home)
    except LabError as exc:
        raise SoakError(f"faultline up -d failed: {exc}") from None
    ports = lab.ports
    soak = Soak(lab_url=lab.url, topology=lab.topology, lab_pid=lab.pid)
    print(f"stack up in {time.time() - t_up:.1f}s (home {home}, ports {ports.base}..{ports.lab})", flush=True)
    result: dict[str, Any] = {"minutes": args.minutes, "rps": args.rps, "replicas": args.replicas,
                              "fault_s": args.fault_s, "healthy_s": args.healthy_s}
    try:
        soak.api("POST", "/api/traffic", {"rps": args.rps, "profile": "baseline", "seed": 7})
        if args.prefill_rps > 0:
            took = prefill(soak, args.prefill_rps)
            soak.api("POST", "/api/traffic", {"rps": args.rps})
            print(f"gateway buffers filled in {took:.0f}s at {args.prefill_rps:g} rps", flush=True)
        time.sleep(args.warmup_s)
        soak.wait_healthy(120)
        start_procs = soak.quiet_processes()
        soak.api("POST", "/api/traffic", {"rps": args.rps})
        start_counters = soak.counters()
        t_start = time.time()
        soak.sample(force=True)
        print(f"warmed up; soaking for {args.minutes:g} min at {args.rps:g} rps", flush=True)
        deadline = time.monotonic() + args.minutes * 60
        n = 0
        while time.monotonic() < deadline:
            name, body = FAULTS[n % len(FAULTS)]
            n += 1
            soak.cycle(n, name, body, args.fault_s, args.healthy_s)
        t_end = time.time()
        soak.sample(force=True)
        # every pending label delivered before counting (quiet_processes pauses the traffic and drains the queue)
        end_procs = soak.quiet_processes()
        end_counters = soak.counters()
        end_acks = soak.gateway_feedback_acks()
        result.update(_figures(soak, start_procs, end_procs, start_counters, end_counters, end_acks, t_start, t_end))
        traffic = soak.api("GET", "/api/traffic")
        result["traffic"] = {"requests": traffic.get("requests"), "achieved_rps_last": traffic.get("achieved_rps")}
    finally:
        pids = [soak.lab_pid]
        try:
            pids += [s["pid"] for s in soak.status()["services"] if s["pid"]]
        except (httpx.HTTPError, SoakError):
            pass
        down = lab_cli("down", "--home", str(home), timeout=180)
        # only the ports this stack used: others in the block may be any process's ephemeral source ports
        result["down"] = _leftovers(pids, ports.all_ports(args.replicas) + [ports.lab, ports.locust_web])
        result["down"]["exit_code"] = down.returncode
        soak.http.close()
        if result["down"]["processes"] or result["down"]["ports"]:
            for pid in result["down"]["processes"]:
                try:
                    psutil.Process(pid).kill()
                except psutil.NoSuchProcess:
                    pass
        shutil.rmtree(home, ignore_errors=True)
    return result


def _figures(soak: Soak, start_procs: dict[str, Any], end_procs: dict[str, Any], start: Counters, end: Counters,
             acks: int, t_start: float, t_end: float) -> dict[str, Any]:
    restarted = {name for name, r in end_procs["restarts"].items() if r != start_procs["restarts"].get(name)}
    healthy = {"labels_sent": sum(c["labels_sent"] for c in soak.cycles),
               "labels_lost": sum(c["labels_failed"] + c["labels_dropped"] for c in soak.cycles),
               "seconds": sum(c["healthy_window_s"] for c in soak.cycles)}
    # Totals since the load generator started (the gateway's only feedback client), read with the traffic paused
    # and nothing pending: they must be equal exactly. Deltas from a moving start could differ by a label in flight.
    whole = {"labels_sent": end.sent - start.sent, "labels_failed": end.failed - start.failed,
             "labels_dropped": end.dropped - start.dropped, "pending_at_end": end.pending,
             "acknowledged_total": {"loadgen": end.sent, "gateway": acks}}
    fd_growth = {name: end_procs["fds"].get(name, 0) - n for name, n in start_procs["fds"].items()}
    return {
        "cycles": soak.cycles, "faults_applied": len(soak.cycles),
        "healthy": healthy, "whole_run": whole,
        "processes": {"start": start_procs["count"], "end": end_procs["count"], "services_start": start_procs["names"],
                      "services_end": end_procs["names"]},
        "fds": {"start": start_procs["fds"], "end": end_procs["fds"], "growth": fd_growth,
                "loadgen_users": [start_procs["loadgen_users"], end_procs["loadgen_users"]]},
        "restarted": sorted(restarted),
        "rss": rss_report(soak.rss, t_start, t_end, restarted),
        "rss_series_mib": {name: [[round(t - t_start, 1), round(v / 2**20, 1)] for t, v in points]
                           for name, points in soak.rss.items()},
        "soak_seconds": round(t_end - t_start, 1),
    }


def _leftovers(pids: list[int], ports: list[int], timeout: float = 15) -> dict[str, list[int]]:
    deadline = time.time() + timeout
    while True:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        busy = [p for p in ports if not is_free(p)]
        if (not alive and not busy) or time.time() > deadline:
            return {"processes": alive, "ports": busy}
        time.sleep(0.2)


def verdict(result: dict[str, Any]) -> list[str]:
    """Every failed criterion, as a sentence (empty: the soak passed)."""
    problems = []
    if result["faults_applied"] < 1:
        problems.append("no fault was applied")
    expected = result["rps"] * result["healthy_s"] * TRAFFIC_FLOOR
    starved = [c["n"] for c in result["cycles"] if c["labels_sent"] < expected]
    if starved:
        problems.append(f"traffic stalled: fewer than {expected:.0f} labels in the healthy window of cycle(s) "
                        f"{starved}")
    if result["healthy"]["labels_lost"]:
        problems.append(f"{result['healthy']['labels_lost']} feedback labels lost while healthy")
    whole = result["whole_run"]
    acked = whole["acknowledged_total"]
    if "gateway" in result["restarted"] or "loadgen" in result["restarted"]:
        problems.append("the gateway or the load generator restarted: their label counts cannot be compared")
    elif whole["pending_at_end"] or acked["loadgen"] != acked["gateway"]:
        problems.append(f"labels acknowledged: the load generator counted {acked['loadgen']}, the gateway "
                        f"{acked['gateway']} ({whole['pending_at_end']} still pending)")
    if result["processes"]["end"] > result["processes"]["start"]:
        problems.append(f"processes: {result['processes']['start']} -> {result['processes']['end']}")
    grown = {k: v for k, v in result["fds"]["growth"].items() if v > FD_ALLOWANCE}
    if grown:
        problems.append(f"open descriptors grew: {grown}")
    for name, r in result["rss"].items():
        if not r["restarted"] and r["change"] is not None and abs(r["change"]) > RSS_TOLERANCE:
            problems.append(f"{name} RSS median {r['first_minute_median_mib']} -> {r['last_minute_median_mib']} MiB")
    if result["down"]["processes"] or result["down"]["ports"]:
        problems.append(f"left after down: {result['down']}")
    return problems


def summary(result: dict[str, Any]) -> str:
    h, w = result["healthy"], result["whole_run"]
    lines = [
        f"soak: {result['soak_seconds']:.0f} s, {result['faults_applied']} faults applied and reverted at "
        f"{result['rps']:g} rps",
        f"labels while healthy: {h['labels_sent']} acknowledged, {h['labels_lost']} lost ({h['seconds']:.0f} s)",
        f"labels, whole run: {w['labels_sent']} acknowledged, {w['labels_failed']} failed, {w['labels_dropped']} "
        f"dropped, {w['pending_at_end']} pending; since the start: load generator {w['acknowledged_total']['loadgen']}"
        f" acknowledged, gateway {w['acknowledged_total']['gateway']}",
        f"processes: {result['processes']['start']} -> {result['processes']['end']}; "
        f"restarted by faults: {', '.join(result['restarted']) or 'none'}",
        "open descriptors (start -> end): " + ", ".join(
            f"{k} {v} -> {result['fds']['end'].get(k)}" for k, v in result["fds"]["start"].items()),
        "RSS first-minute -> last-minute median:",
    ]
    for name, r in result["rss"].items():
        change = "n/a" if r["change"] is None else f"{r['change'] * 100:+.1f}%"
        lines.append(f"  {name:14} {r['first_minute_median_mib']} -> {r['last_minute_median_mib']} MiB ({change})"
                     + (" restarted" if r["restarted"] else ""))
    lines.append(f"after down: processes left {result['down']['processes']}, ports left {result['down']['ports']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="length of the fault loop (default 5)")
    p.add_argument("--rps", type=float, default=30.0, help="load generator rate (default 30)")
    p.add_argument("--replicas", type=int, default=2, choices=range(2, 5), metavar="2..4")
    p.add_argument("--fault-s", type=float, default=10.0, help="how long each fault stays (default 10)")
    p.add_argument("--healthy-s", type=float, default=15.0, help="healthy interval after each recovery (default 15)")
    p.add_argument("--warmup-s", type=float, default=20.0, help="traffic before measuring (default 20)")
    p.add_argument("--prefill-rps", type=float, default=120.0,
                   help="rate of the burst that fills the gateway's buffers before measuring (0: none; default 120)")
    p.add_argument("--json", type=Path, help="write every figure to this file")
    args = p.parse_args(argv)
    if not 0 < args.minutes <= 120 or not 0 < args.rps <= 500 or args.fault_s <= 0 or args.healthy_s <= 0:
        p.error("--minutes in (0, 120], --rps in (0, 500], --fault-s and --healthy-s > 0")
    try:
        result = run(args)
    except SoakError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    print(summary(result))
    problems = verdict(result)
    result["problems"] = problems
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    for line in problems:
        print(f"FAIL: {line}", file=sys.stderr)
    print("soak passed" if not problems else "soak FAILED")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
