"""Steady-state probes, measured on the running stack: value and verdict (within tolerance, violated, or unknown).

Windowed probes (latency, errors, quality) are computed from the monitor's raw scrapes over the probe's own
window (scaled by the attempt's time scale), on the monitor's event loop so they never race its ticks. Drift
comes from the monitor's latest report; versions from the registry and the replicas; configs from
GET /admin/config; states from the supervisor. No data (no traffic yet, too few labels) is `None`: unknown,
never a violation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lab import parts
from lab.monitor.llm import PROBE_KINDS as LLM_KINDS
from lab.monitor.llm import probe_value as llm_probe_value
from lab.monitor.signals import (
    gateway_score_routes,
    prediction_totals,
    quality_signals,
    request_signals,
    service_kind,
    status_share,
    window,
)
from lab.parts.gateway import NAME as GATEWAY
from lab.parts.gateway import PART as GATEWAY_PART
from lab.stackclients import ServiceCallError, lab_clients

MIN_WINDOW_S = 10.0  # compressed runs: shorter windows hold too few requests, and one slow pair breaks p99
MIN_REQUESTS = 5
MIN_LABELS = {"accuracy": 20, "recall": 5, "precision": 5}
WINDOWED = ("latency_p99_ms", "error_rate", "accuracy", "recall", "precision", "decline_rate", "score_quantile",
            "status_share", *LLM_KINDS)
REQUEST_KINDS = ("latency_p99_ms", "error_rate", "status_share")  # measured on the target's own request counters
SCORE_KINDS = ("decline_rate", "score_quantile")  # measured on the gateway's predictions


@dataclass
class ProbeResult:
    id: str
    kind: str
    target: Any
    value: Any
    ok: bool | None
    tolerance: str

    def to_dict(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, float):
            value = round(value, 4) if math.isfinite(value) else None
        return {"id": self.id, "kind": self.kind, "target": self.target, "value": value, "ok": self.ok,
                "tolerance": self.tolerance}


def tolerance_text(tol: Any) -> str:
    parts = []
    for name in ("min", "max", "equals", "in", "contains"):
        if tol.given(name):
            parts.append(f"{name} {tol.in_ if name == 'in' else getattr(tol, name)}")
    return ", ".join(parts)


def within(tol: Any, value: Any, labels: dict[str, str]) -> bool | None:
    """The tolerance's verdict on a measured value; None when there is no value."""
    if value is None:
        return None

    def res(v: Any) -> Any:
        return labels.get(v, v) if isinstance(v, str) else v

    if tol.given("equals"):
        return value == res(tol.equals)
    if tol.given("in"):
        return value in [res(v) for v in tol.in_]
    if tol.given("contains"):
        return isinstance(value, list | tuple) and res(tol.contains) in value
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    if tol.min is not None and value < tol.min:
        return False
    return not (tol.max is not None and value > tol.max)


def window_s(probe: Any, time_scale: float) -> float:
    return max(MIN_WINDOW_S, float(probe.window_s) * time_scale)


def _windowed_values(monitor: Any, probes: list[Any], time_scale: float, labels: dict[str, str],
                     span_s: float | None = None) -> dict[str, Any]:
    """Runs on the monitor's loop: {probe id: value} for latency, error-rate and quality probes, each over its own
    window, or over the last `span_s` seconds when given (a claim's early check: the time since the claim)."""
    now = monitor.clock()
    out: dict[str, Any] = {}
    for p in probes:
        if p.kind in LLM_KINDS:  # the LLM track's figures (lab/monitor/llm.py)
            seconds = span_s if span_s is not None else window_s(p, time_scale) if hasattr(p, "window_s") \
                else MIN_WINDOW_S
            out[p.id] = llm_probe_value(monitor, p, seconds, now)
            continue
        target = p.target if p.kind in REQUEST_KINDS else GATEWAY
        ring = monitor.rings.get(target)
        seconds = window_s(p, time_scale) if span_s is None else span_s
        w = None if ring is None else window(ring, seconds, now)
        if w is None:
            out[p.id] = None
            continue
        if p.kind in REQUEST_KINDS:
            kind = service_kind(target, ring)
            want = None
            if kind == GATEWAY_PART.metrics_prefix:
                routes = gateway_score_routes(w)
                want = {"route": routes} if routes else None
            if p.kind == "status_share":
                share, requests = status_share(w, kind, p.status, want)
                out[p.id] = share if requests >= MIN_REQUESTS else None
                continue
            r = request_signals(w, kind, want)
            if (r["requests"] or 0) < MIN_REQUESTS:
                out[p.id] = None
            else:
                out[p.id] = r["p99_ms"] if p.kind == "latency_p99_ms" else (r["error_rate_5xx"] or 0.0)
            continue
        if p.kind in SCORE_KINDS:
            version = labels.get(p.target, p.target) if p.target else None
            want_v = {"model_version": version} if version else None
            total, declines = prediction_totals(w, version)
            if total < MIN_REQUESTS:
                out[p.id] = None
            elif p.kind == "decline_rate":
                out[p.id] = declines / total
            else:
                out[p.id] = w.quantile("gateway_score", p.q, want_v)
            continue
        q = quality_signals(w)
        version = labels.get(p.target, p.target) if p.target else None
        figures = q["overall"] if version is None else q["versions"].get(version)
        if not figures:
            out[p.id] = None
            continue
        denominator = {"accuracy": figures["labels"], "recall": figures["tp"] + figures["fn"],
                       "precision": figures["tp"] + figures["fp"]}[p.kind]
        out[p.id] = figures[p.kind] if denominator >= MIN_LABELS[p.kind] else None
    return out


class ProbeEvaluator:
    """Measures probes on a Lab. `labels` maps version labels of this run to vN (shared with the attempt)."""

    def __init__(self, lab: Any, time_scale: float, labels: dict[str, str], track: str = "fraud") -> None:
        self.lab = lab
        self.track = track  # the scenario's: whose replicas `replicas_ready` counts (model-N, or llm-N)
        self.time_scale = time_scale
        self.labels = labels
        # At the attempt's clock start: each service's process start count, and the time (restarts, uptime_s).
        self.started_at: float | None = None
        self.starts_at_start: dict[str, int] = {}

    def mark_start(self) -> None:
        """The attempt's clock starts now: restarts and uptime are counted from here."""
        self.started_at = time.time()
        self.starts_at_start = {s["name"]: s.get("starts", 0) for s in self.lab.stack.supervisor.status()}

    @property
    def http(self) -> Any:
        return lab_clients(self.lab)

    def evaluate(self, probes: list[Any], span_s: float | None = None) -> list[ProbeResult]:
        """Every probe's value and verdict; `span_s` measures the windowed ones over the last span_s seconds."""
        windowed = [p for p in probes if p.kind in WINDOWED]
        values: dict[str, Any] = {}
        runner = self.lab.components.get("monitor")
        if windowed and runner is not None:
            labels = dict(self.labels)

            async def compute() -> dict[str, Any]:
                return _windowed_values(runner.monitor, windowed, self.time_scale, labels, span_s)

            try:
                values = runner.call(compute(), timeout_s=10)
            except Exception:  # noqa: BLE001 - a monitor hiccup is "no data", never a violation
                values = {}
        cache: dict[str, Any] = {}
        out = []
        for p in probes:
            value = values.get(p.id) if p.kind in WINDOWED else self._value(p, cache)
            out.append(ProbeResult(p.id, p.kind, getattr(p, "target", None), value,
                                   within(p.tolerance, value, self.labels), tolerance_text(p.tolerance)))
        return out

    def _value(self, p: Any, cache: dict[str, Any]) -> Any:
        try:
            if p.kind == "drift_psi":
                runner = self.lab.components.get("monitor")
                report = runner.monitor.drift() if runner is not None else {}
                if not report.get("enough_data"):
                    return None
                return next((f.get("psi") for f in report.get("features") or [] if f.get("name") == p.target), None)
            if p.kind == "deployed_version":
                return self._deployed(p.target, cache)
            if p.kind == "config_value":
                config = cache.get(("config", p.target))
                if config is None:
                    config = cache[("config", p.target)] = self.http.get_config(p.target)
                return dig(config, p.key)
            if p.kind == "service_state":
                if p.target not in self.lab.stack.supervisor.names():
                    return None
                return self.lab.stack.supervisor.service_status(p.target)["state"]
            if p.kind == "replicas_ready":
                return self._replicas_ready(cache)
            if p.kind == "restarts":
                return self._restarts(p.target)
            if p.kind == "uptime_s":
                return self._uptime(p.target)
        except (ServiceCallError, KeyError, ValueError, OSError):
            return None
        return None

    def _deployed(self, target: str, cache: dict[str, Any]) -> str | None:
        if target in ("production", "canary"):
            got = self.http.registry("GET", f"/v1/models?stage={target}")
            return got[0]["version"] if got else None
        got = self.http.call("GET", self.http.service_url(target) + "/v1/models", target)
        return got.get("default")

    def _restarts(self, target: str | None) -> int | None:
        """Process starts since mark_start beyond the first: a service added since (a scale-up) counts its
        starts after the first; one whose process record was replaced counts all of them."""
        if self.started_at is None:
            return None
        supervisor = self.lab.stack.supervisor
        names = [target] if target is not None else supervisor.names()
        total = 0
        for st in supervisor.status(names):
            starts = int(st.get("starts", 0))
            before = self.starts_at_start.get(st["name"])
            total += max(0, starts - 1) if before is None else (starts - before if starts >= before else starts)
        return total

    def _uptime(self, target: str) -> float | None:
        supervisor = self.lab.stack.supervisor
        if target not in supervisor.names():
            return None
        st = supervisor.service_status(target)
        if st["state"] != "running" or not st.get("started_at"):
            return None
        started = datetime.fromisoformat(st["started_at"].replace("Z", "+00:00")).timestamp()
        since = max(started, self.started_at) if self.started_at is not None else started
        return round(max(0.0, time.time() - since), 1)

    def _replicas_ready(self, cache: dict[str, Any]) -> int:
        config = cache.get(("config", GATEWAY))
        if config is None:
            config = cache[("config", GATEWAY)] = self.http.get_config(GATEWAY)
        drained = set(config.get("drained") or [])
        names = self.lab.stack.topology.instances(parts.replica_part(self.track))
        ready = 0
        for st in self.lab.stack.supervisor.status(names):
            if st.get("ready") and st["name"] not in drained:
                ready += 1
        return ready


def dig(config: Any, path: str) -> Any:
    """`routing.v2` -> config["routing"]["v2"]; None when any step is missing."""
    value = config
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value
