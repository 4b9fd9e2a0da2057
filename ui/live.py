"""The live state every open page shows: one frame per second, computed once and shared by every browser tab.

A frame gathers what the lab already knows — the stack's status (services, proxies), the monitor's latest
snapshot and SLO states, active sandbox faults, the load generator — and derives the compact numbers the charts
plot. Tabs on the same lab therefore see the same state, and ten open tabs cost one status call a second, not
ten. Nothing here measures or judges anything itself: it reads the monitor and the stack.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lab.console.llm import is_llm_replica
from lab.parts import DEFAULT_TRACK
from lab.parts.gateway import NAME as GATEWAY
from lab.parts.llm import TRACK as LLM_TRACK
from lab.parts.loadgen import NAME as LOADGEN
from lab.process import DOWN_STATES, WARN_STATES

# Series plotted on every live page, by the monitor's series names (see lab/monitor: `series(name)`).
GATEWAY_KEYS = ("gateway.p50_ms", "gateway.p99_ms", "gateway.error_rate", "gateway.rps")
QUALITY_KEYS = ("quality.accuracy", "quality.recall")
# The LLM track's charted series: the replicas together (the monitor's `llm.*`), per replica (`llm-N.<figure>`) and
# the finish-reason shares (`llm.finish_reason.<reason>`).
LLM_KEYS = ("llm.ttft_p50_ms", "llm.ttft_p99_ms", "llm.itl_p50_ms", "llm.itl_p99_ms", "llm.output_tokens_per_s",
            "llm.goodput_ratio")
LLM_GATEWAY_KEYS = ("gateway.llm_error_rate", "gateway.rate_limited_rate")  # the gateway's LLM routes
LLM_REPLICA_FIGURES = ("output_tokens_per_s", "num_requests_waiting", "num_requests_running", "kv_cache_usage_max",
                       "preemptions_per_s")
LLM_FINISH_PREFIX = "llm.finish_reason."
# The LLM track's SLO bands when no scenario sets its own: issue 16's TTFT p99 <= 1 s and ITL p99 <= 200 ms (the
# goodput definition of lab/monitor/llm.py). A running attempt's steady-state probes of these kinds, else the
# monitor's SLOs of these kinds, replace them.
LLM_BANDS = {"ttft": ("ttft_p99_ms", "ttft_p99", 1000.0), "itl": ("itl_p99_ms", "itl_p99", 200.0)}
_MAX = re.compile(r"\bmax (-?[0-9.]+(?:[eE][-+]?[0-9]+)?)")


def service_health(service: dict[str, Any], figures: dict[str, Any] | None) -> str:
    """ok | warn | down for one service, from the supervisor's state and whether the monitor sees it up."""
    state = service.get("state")
    if state in DOWN_STATES or (service.get("pid") is None and state != "external"):
        return "down"
    if state in WARN_STATES or not service.get("ready", False):
        return "warn"
    if figures is not None and figures.get("up") is False:
        return "warn"
    return "ok"


def hop_health(proxy: dict[str, Any] | None) -> str:
    if proxy is None:
        return "unknown"
    if not proxy.get("enabled", True):
        return "down"
    return "warn" if proxy.get("toxics") else "ok"


def observed_health(figures: dict[str, Any] | None, latency_ms: float) -> str:
    """ok | warn | down | unknown for a hop from what its caller measured (errors, p99), never from fault state."""
    if not figures or not figures.get("rps"):
        return "unknown"
    err = figures.get("error_rate") or 0.0
    if err >= 0.5:
        return "down"
    p99 = figures.get("p99_ms")
    if err > 0.02 or (p99 is not None and p99 > latency_ms):
        return "warn"
    return "ok"


def observed_text(figures: dict[str, Any] | None) -> str:
    if not figures or not figures.get("rps"):
        return ""
    parts = []
    if figures.get("p99_ms") is not None:
        parts.append(f"p99 {figures['p99_ms']:.0f} ms")
    if figures.get("error_rate"):
        parts.append(f"{figures['error_rate']:.0%} errors")
    return " · ".join(parts)


def traffic_from(status: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """The load generator as the supervisor and the monitor see it (no call to locust every second)."""
    loadgen = next((s for s in status.get("services", []) if s.get("name") == LOADGEN), None)
    if loadgen is None or loadgen.get("pid") is None:
        return {"running": False}
    f = (metrics.get("services") or {}).get(LOADGEN) or {}
    argv = [str(a) for a in loadgen.get("argv") or []]
    # the track it drives: its `--track` argument (a load generator of the fraud track may not pass one)
    track = argv[argv.index("--track") + 1] if "--track" in argv[:-1] else DEFAULT_TRACK
    return {"running": True, "state": loadgen.get("state"), "target_rps": f.get("target_rps"),
            "achieved_rps": f.get("achieved_rps", f.get("rps")), "profile": f.get("profile"), "track": track}


def toxic_text(toxic: dict[str, Any]) -> str:
    """`latency 400±100 ms (downstream)` — a short human description of one Toxiproxy toxic."""
    attrs = toxic.get("attributes") or {}
    kind = str(toxic.get("type", "toxic"))
    if kind == "latency":
        text = f"latency {attrs.get('latency', '?')}" + (f"±{attrs['jitter']}" if attrs.get("jitter") else "") + " ms"
    elif kind == "bandwidth":
        text = f"bandwidth {attrs.get('rate', '?')} KB/s"
    elif kind in ("timeout", "reset_peer", "slow_close"):
        value = attrs.get("timeout", attrs.get("delay"))
        text = f"{kind} {value} ms" if value is not None else kind
    else:
        text = kind
    stream = toxic.get("stream")
    toxicity = toxic.get("toxicity", 1)
    extra = [str(stream)] if stream else []
    if isinstance(toxicity, int | float) and toxicity < 1:
        extra.append(f"{toxicity:.0%} of connections")
    return text + (f" ({', '.join(extra)})" if extra else "")


DRAINED_EVERY_S = 2.0  # how often the LLM track's map asks the gateway which replicas are drained
ATTEMPT_WINDOW_S = 3600.0  # an attempt's live charts keep everything since it began, up to an hour


@dataclass
class Frame:
    id: int
    at: float
    status: dict[str, Any]
    metrics: dict[str, Any]
    slo: dict[str, Any]
    faults: list[dict[str, Any]]
    traffic: dict[str, Any]
    attempt_id: str | None = None  # the running attempt, if any: fault details stay hidden while it runs
    cache: dict[str, Any] = field(default_factory=dict)
    drained: list[str] = field(default_factory=list)  # replicas the gateway does not route to (LLM track)
    probes: list[dict[str, Any]] = field(default_factory=list)  # the running attempt's steady-state probes

    @property
    def tracks(self) -> tuple[str, ...]:
        """The tracks the stack runs (the lab's status; the fraud track when it does not say)."""
        found = self.status.get("tracks")
        return tuple(found) if isinstance(found, list) and found else (DEFAULT_TRACK,)

    @property
    def runs_llm(self) -> bool:
        return LLM_TRACK in self.tracks

    @property
    def runs_fraud(self) -> bool:
        return DEFAULT_TRACK in self.tracks

    def llm_replicas(self) -> list[str]:
        return [s["name"] for s in self.status.get("services", []) if is_llm_replica(s["name"])]

    def llm_bands(self) -> dict[str, dict[str, Any]]:
        """The TTFT and ITL p99 limits the LLM charts draw: {"ttft"|"itl": {"threshold" (ms), "source"}}."""
        out: dict[str, dict[str, Any]] = {}
        for band, (probe_kind, slo_kind, default) in LLM_BANDS.items():
            limit, source = None, "default"
            for p in self.probes:
                found = _MAX.search(str(p.get("tolerance") or "")) if p.get("kind") == probe_kind else None
                if found:
                    limit, source = float(found.group(1)), "scenario"
                    break
            if limit is None:
                slo = next((s for s in self.slo.get("slos", []) if s.get("kind") == slo_kind
                            and s.get("threshold") is not None), None)
                if slo is not None:
                    limit, source = float(slo["threshold"]), "slo"
            out[band] = {"threshold": default if limit is None else limit, "source": source}
        return out

    @property
    def phase(self) -> str:
        return str(self.status.get("phase", "idle"))

    def figures(self, name: str) -> dict[str, Any]:
        return (self.metrics.get("services") or {}).get(name) or {}

    def slo_by_name(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.slo.get("slos", [])}

    def services(self) -> list[dict[str, Any]]:
        """Every service with its health and the figures worth showing on the stack map."""
        out = []
        for s in self.status.get("services", []):
            f = self.figures(s["name"])
            entry = {**s, "health": service_health(s, f or None), "rps": f.get("rps"), "p99_ms": f.get("p99_ms"),
                     "error_rate": f.get("error_rate")}
            if is_llm_replica(s["name"]):  # an LLM replica: its TTFT, and whether the gateway routes to it
                entry["ttft_p99_ms"] = f.get("ttft_p99_ms")
                entry["drained"] = s["name"] in self.drained
                if entry["drained"] and entry["health"] == "ok":
                    entry["health"] = "warn"
            out.append(entry)
        return out

    def proxies(self) -> dict[str, dict[str, Any]]:
        out = {}
        for p in self.status.get("proxies", []):
            toxics = p.get("toxics") or []
            out[p["name"]] = {**p, "health": hop_health(p), "toxics_text": [toxic_text(t) for t in toxics]}
        return out

    def hop_observed(self, hop: str) -> dict[str, Any] | None:
        """A hop as its caller measures it: the load generator for `gateway`, the gateway for the others."""
        if hop == GATEWAY:
            f = self.figures(LOADGEN)
            if not f:
                return None
            err = f.get("error_rate")
            return {"rps": f.get("rps"), "p99_ms": f.get("p99_ms"),
                    "error_rate": max(err or 0.0, f.get("no_answer_rate") or 0.0) if err is not None else None}
        return (self.figures(GATEWAY).get("upstreams") or {}).get(hop)

    def latency_objective_ms(self) -> float:
        slo = self.slo_by_name().get("gateway-latency")
        return float(slo["threshold"]) if slo and slo.get("threshold") else 250.0

    def values(self) -> dict[str, float | None]:
        """This frame's point for every charted series (the same names as the monitor's series)."""
        v: dict[str, float | None] = {}
        gw = self.figures(GATEWAY)
        for key in GATEWAY_KEYS:
            v[key] = gw.get(key.split(".", 1)[1])
        v["quality.accuracy"] = self.metrics.get("accuracy")
        v["quality.recall"] = self.metrics.get("recall")
        for name, f in (self.metrics.get("services") or {}).items():
            if f.get("rss_bytes") is not None:
                v[f"{name}.rss_bytes"] = f["rss_bytes"]
        if self.runs_llm:
            v.update(self.llm_values())
        return v

    def llm_values(self) -> dict[str, float | None]:
        """The LLM charts' point: the replicas together, each replica's scheduler figures, finish shares."""
        llm = self.metrics.get("llm") or {}
        v: dict[str, float | None] = {key: _finite(llm.get(key.split(".", 1)[1])) for key in LLM_KEYS}
        gw = self.figures(GATEWAY)
        v.update({key: _finite(gw.get(key.split(".", 1)[1])) for key in LLM_GATEWAY_KEYS})
        for name in self.llm_replicas():
            f = self.figures(name)
            for figure in LLM_REPLICA_FIGURES:
                v[f"{name}.{figure}"] = _finite(f.get(figure))
        for reason, share in (llm.get("finish_reason") or {}).items():
            v[LLM_FINISH_PREFIX + reason] = _finite(share)
        return v

    def chart_point(self) -> dict[str, Any]:
        """The JSON the charts append each second: {"t", "v": {series: value}, "slo": {...}, "phase"}."""
        return {
            "t": self.metrics.get("at") or self.at,
            "v": self.values(),
            "slo": {s["name"]: {"state": s["state"], "threshold": s["threshold"], "value": s["value"]}
                    for s in self.slo.get("slos", [])},
            "phase": self.phase,
            **({"bands": self.llm_bands()} if self.runs_llm else {}),
        }


class Live:
    """Computes at most one Frame per `interval_s`; every caller in that second gets the same one.

    One thread computes at a time. Event streams take the last frame rather than queue behind a slow computation
    (a busy machine can make the lab's status take a second): they must never pile up worker threads. Pages wait
    for a fresh frame, so what a learner just did is on the page they load next.
    """

    def __init__(self, lab: Any, interval_s: float = 1.0) -> None:
        self.lab = lab
        self.interval_s = interval_s
        self._computing = threading.Lock()
        self._frame: Frame | None = None
        self._dirty = False
        self._ids = itertools.count(1)
        self._probe_cache: tuple[str, list[dict[str, Any]]] | None = None
        self._drained_cache: tuple[float, list[str]] | None = None

    @property
    def monitor(self) -> Any:
        runner = self.lab.components.get("monitor")
        return getattr(runner, "monitor", None)

    @property
    def faults(self) -> Any:
        return self.lab.components.get("faults")

    def _fresh(self, frame: Frame | None) -> bool:
        return frame is not None and not self._dirty and time.time() - frame.at < self.interval_s * 0.9

    def current(self, wait: bool = True) -> Frame:
        frame = self._frame
        if self._fresh(frame):
            return frame  # type: ignore[return-value]
        if not self._computing.acquire(blocking=wait or frame is None):
            return frame  # type: ignore[return-value]  # another thread is computing: show the last one
        try:
            frame = self._frame
            if self._fresh(frame):
                return frame  # type: ignore[return-value]
            self._dirty = False
            frame = self._frame = self._compute()
            return frame
        finally:
            self._computing.release()

    def invalidate(self) -> None:
        """After the learner changed something: the next page gets a fresh frame, not one from before it."""
        self._dirty = True
        self._drained_cache = None

    def _compute(self) -> Frame:
        lab = self.lab
        try:
            status = lab.status()
        except Exception as exc:  # noqa: BLE001 - a page must render whatever state the lab is in
            status = {"phase": "unknown", "error": str(exc), "services": [], "proxies": []}
        mon = self.monitor
        metrics = mon.metrics() if mon is not None else {"services": {}}
        slo = mon.slo() if mon is not None else {"slos": [], "events": []}
        manager = self.faults
        faults = [a.to_dict() for a in manager.active()] if manager is not None else []
        attempts = lab.components.get("attempts")
        active = attempts.active_id() if attempts is not None else None
        frame = Frame(id=next(self._ids), at=time.time(), status=status, metrics=metrics, slo=slo, faults=faults,
                      traffic=traffic_from(status, metrics), attempt_id=active)
        if frame.runs_llm:
            frame.drained = self._drained(frame.at)
            if active is not None:
                frame.probes = self._probes(attempts, active)
        return frame

    def _drained(self, now: float) -> list[str]:
        """The gateway's drained replicas (its live config, only on the LLM track, where the monitor's figures do
        not say it): asked at most every DRAINED_EVERY_S with a short timeout, so a frozen gateway slows no frame
        much; a learner's action (invalidate) asks again at once."""
        from lab.stackclients import lab_clients

        cached = self._drained_cache
        if cached is not None and now - cached[0] < DRAINED_EVERY_S:
            return cached[1]
        try:
            clients = lab_clients(self.lab)
            config = clients.call("GET", clients.service_url(GATEWAY) + "/admin/config", GATEWAY, timeout=0.5)
            listed = (config or {}).get("drained") if isinstance(config, dict) else None
            drained = [str(d) for d in listed] if isinstance(listed, list) else []
        except Exception:  # noqa: BLE001 - the map keeps what it last knew rather than no map
            drained = cached[1] if cached is not None else []
        self._drained_cache = (now, drained)
        return drained

    def _probes(self, attempts: Any, attempt_id: str) -> list[dict[str, Any]]:
        """The running attempt's steady-state probes (kind, tolerance): where its LLM SLO bands come from."""
        cached = self._probe_cache
        if cached is not None and cached[0] == attempt_id:
            return cached[1]
        try:
            probes = list(attempts.state(attempt_id).get("steady_state") or [])
        except Exception:  # noqa: BLE001 - the charts fall back to the default bands
            return []
        if probes:
            self._probe_cache = (attempt_id, probes)
        return probes

    def history(self, frame: Frame, seconds: float = 300.0, since: float | None = None,
                markers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The charts' starting data: aligned columns {"t": [...], "v": {series: [...]}, "slo", "markers",
        "window_s"} over the last `seconds` of the monitor's series, with the SLO thresholds of `frame`.

        An attempt's page passes `since` (when the attempt began): its charts start there, never with an earlier
        attempt's data, keep the whole attempt (up to an hour), and draw `markers` ({"t", "label"}: its start, the
        scenario clock's T+0)."""
        values = frame.values()
        rss = sorted(k for k in values if k.endswith(".rss_bytes"))
        keys = [*GATEWAY_KEYS, *QUALITY_KEYS, *rss]
        if frame.runs_llm:
            finish = {LLM_FINISH_PREFIX + r for r in ("stop", "length", "abort")}
            keys += sorted({k for k in values if k not in keys} | finish)
        mon = self.monitor
        point = frame.chart_point()
        window_s = seconds if since is None else ATTEMPT_WINDOW_S
        out: dict[str, Any] = {"t": [], "v": {k: [] for k in keys}, "slo": point["slo"], "markers": markers or [],
                               "window_s": window_s, "since": since, "bands": point.get("bands") or {}}
        if mon is None:
            return out
        start = time.time() - seconds if since is None else max(since, time.time() - ATTEMPT_WINDOW_S)
        points = {k: {t: _finite(v) for t, v in mon.series(k, start)} for k in keys}
        times = sorted({t for p in points.values() for t in p})
        out.update(t=times, v={k: [points[k].get(t) for t in times] for k in keys})
        return out


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None
