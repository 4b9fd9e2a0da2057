"""The monitor: scrapes every service's /metrics once a second, keeps bounded time series, derives the
signals the learner and the grader look at, computes input drift, and evaluates SLOs.

It lives in the lab process as an asyncio task and knows the stack only through callables (targets, process
stats, drift reference, live window) and HTTP, so the lab server wires it to its supervisor without the
monitor importing either. A failed scrape is recorded (target down, error text) and never stops the loop.

Python API (the CLI and the UI use it): `metrics()`, `drift()`, `slo()`, `series(name, since)`,
`export(since, until)`, `begin_attempt()/end_attempt()/attempt()`, `subscribe(callback)`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lab import parts
from lab.monitor import evidence, prom
from lab.monitor import llm as llm_signals
from lab.monitor.drift import DriftConfig, Reference, drift_report
from lab.monitor.series import ScrapeRing, SeriesStore
from lab.monitor.signals import (
    Window,
    cumulative_quality,
    gateway_score_routes,
    honest_quality,
    prediction_signals,
    process_signals,
    quality_signals,
    request_signals,
    score_distribution,
    service_kind,
    service_signals,
    upstream_signals,
    window,
)
from lab.monitor.slo import SLOBook, SLOSpec, default_slos
from lab.parts.gateway import NAME as GATEWAY
from lab.parts.gateway import PART as GATEWAY_PART
from lab.parts.loadgen import NAME as LOADGEN
from lab.process import DOWN_STATES as PROCESS_DOWN_STATES

log = logging.getLogger("faultline.monitor")

# Supervisor states in which a service is not serving, whatever its /metrics says: no process, or an unready one.
DOWN_STATES = PROCESS_DOWN_STATES | {"unready"}
# SLO kinds of the LLM track -> the probe kind that measures them (target: an `llm-N`, `all` replicas, `gateway`,
# `loadgen` for the clients)
LLM_SLO_KINDS = {"ttft_p99": "ttft_p99_ms", "itl_p99": "itl_p99_ms", "goodput_min": "goodput_ratio"}
# Numbers from a service's signals worth a chart; everything else stays in the snapshot only.
CHARTED = (
    "up", "rps", "error_rate", "error_rate_5xx", "p50_ms", "p95_ms", "p99_ms", "queue_ms", "compute_ms",
    "queue_p99_ms", "compute_p99_ms", "batch_size", "queue_depth", "inflight", "rss_bytes", "cpu_percent",
    "restarts", "fallback_rate", "retry_rps", "scrape_ms", "target_rps", "achieved_rps", "no_answer_rate",
    # the LLM track (lab/monitor/llm.py): replicas, the gateway's LLM routes, the clients
    "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "e2e_p99_ms", "output_tokens_per_s",
    "num_requests_running", "num_requests_waiting", "kv_cache_usage", "kv_cache_usage_max", "preemptions_per_s",
    "prefix_cache_hit_rate", "spec_acceptance_rate", "canary_perplexity", "llm_rps", "llm_error_rate",
    "rate_limited_rate", "llm_ttft_p50_ms", "llm_ttft_p99_ms", "client_ttft_p50_ms", "client_ttft_p99_ms",
    "client_itl_p50_ms", "client_itl_p99_ms", "client_e2e_p99_ms", "client_output_tokens_per_s", "goodput_ratio",
    "goodput_rps",
)


class MonitorConfig(BaseModel):
    """Timing and retention. Tests shrink the windows; the lab uses the defaults."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(default=1.0, gt=0, le=60)
    scrape_timeout_s: float = Field(default=0.8, gt=0, le=30)
    window_s: float = Field(default=10.0, gt=0, le=3600, description="rates, error rates, latency quantiles")
    quality_window_s: float = Field(default=120.0, gt=0, le=24 * 3600, description="accuracy/precision/recall")
    history_s: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600, description="derived series retention")
    raw_history_s: float = Field(default=900.0, gt=0, le=24 * 3600, description="raw scrapes retention")
    drift_interval_s: float = Field(default=10.0, gt=0, le=3600)
    drift_window: int = Field(default=2000, ge=10, le=10_000, description="rows of the live window")
    max_attempts: int = Field(default=50, ge=1, le=10_000)
    canary_interval_s: float = Field(default=30.0, gt=0, le=3600, description="LLM canary perplexity, per replica")
    canary_timeout_s: float = Field(default=10.0, gt=0, le=120)


Provider = Callable[..., Any]


async def _call(fn: Provider | None, *args: Any) -> Any:
    """Call a sync or async provider."""
    if fn is None:
        return None
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _targets(raw: Any) -> dict[str, str]:
    """name -> base URL from a dict, a list of {"name", "url"} (optionally "metrics": false) or (name, url)."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): str(v).rstrip("/") for k, v in raw.items()}
    out = {}
    for item in raw:
        if isinstance(item, Mapping):
            if item.get("metrics", True) and item.get("url"):
                out[str(item["name"])] = str(item["url"]).rstrip("/")
        else:
            name, url = item
            out[str(name)] = str(url).rstrip("/")
    return out


def _stats(raw: Any) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        if "services" in raw and not isinstance(raw["services"], Mapping | type(None)):
            return _stats(raw["services"])
        return {str(k): dict(v) for k, v in raw.items() if isinstance(v, Mapping)}
    return {str(s["name"]): dict(s) for s in raw if isinstance(s, Mapping) and "name" in s}


def _flatten(prefix: str, value: Any, out: dict[str, float | None]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, bool):
        out[prefix] = float(value)
    elif isinstance(value, int | float) or value is None:
        out[prefix] = value


def _median_ratio(feature: Mapping[str, Any]) -> float | None:
    """live median / reference median of a numeric feature (the factor a unit change multiplies by)."""
    live, ref = feature.get("live_median"), feature.get("reference_median")
    if live is None or not ref:
        return None
    return float(live) / float(ref)


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Monitor:
    """Scrapes, remembers, derives, judges. One instance per lab."""

    def __init__(
        self,
        targets_provider: Provider,
        process_stats_provider: Provider | None = None,
        reference_provider: Provider | None = None,
        live_window_provider: Provider | None = None,
        clock: Callable[[], float] = time.time,
        config: MonitorConfig | None = None,
        slos: Iterable[SLOSpec] | None = None,
        drift_config: DriftConfig | None = None,
    ) -> None:
        self.targets_provider = targets_provider
        self.process_stats_provider = process_stats_provider
        self.reference_provider = reference_provider
        self.live_window_provider = live_window_provider
        self.clock = clock
        self.config = config or MonitorConfig()
        self.drift_config = drift_config or DriftConfig()
        self._default_slos = slos is None
        self.book = SLOBook(list(slos) if slos is not None else default_slos())
        cfg = self.config
        self.store = SeriesStore(capacity=max(2, int(cfg.history_s / cfg.interval_s)))
        self._raw_capacity = max(3, int(cfg.raw_history_s / cfg.interval_s) + 2)
        self.rings: dict[str, ScrapeRing] = {}
        self.targets: dict[str, str] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.scrape_info: dict[str, dict[str, Any]] = {}
        self._start_times: dict[str, float] = {}
        self._restarts_seen: dict[str, int] = {}
        self._first_up: dict[str, float] = {}
        # the API server reads series and SLO state from other threads while the loop writes them
        self._lock = threading.RLock()
        self._snapshot: dict[str, Any] = {"at": None, "services": {}, "window_s": cfg.window_s}
        self._drift: dict[str, Any] | None = None
        self._live: Any = None  # the live window of the last drift refresh (the distributions' rows)
        self._drift_at = -math.inf
        self._drift_task: asyncio.Task[None] | None = None
        self._reference: Reference | None = None
        self._reference_key: tuple[Any, int] | None = None
        self._reference_meta: dict[str, Any] | None = None
        self._attempts: dict[str, dict[str, Any]] = {}
        self._restart_base: dict[str, int] | None = None  # restarts per service when the running attempt began
        self._windows: dict[tuple[str, float], Window | None] = {}
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.ticks = 0
        self.tick_cpu_s: deque[float] = deque(maxlen=600)
        # LLM canaries: the latest result per replica, and when each answered one (its finish is taken out of the
        # replica's finish_reason shares)
        self.canaries: dict[str, dict[str, Any]] = {}
        self._canary_done: dict[str, deque[float]] = {}
        self._canary_at = -math.inf
        self._canary_task: asyncio.Task[None] | None = None
        # replicas restarted since their last canary answer: their latest figure is of the process before (a
        # rollout restarts a replica on another version), so they get a canary at the next tick, not in 30 s
        self._canary_stale: set[str] = set()

    # ---- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the 1 Hz loop as a task of the running event loop."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.create_task(self.run(), name="faultline-monitor")

    async def stop(self) -> None:
        for task in (self._task, self._drift_task, self._canary_task):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        self._task = self._drift_task = self._canary_task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run(self) -> None:
        """Tick every `interval_s` (on a fixed schedule, skipping beats rather than drifting) until cancelled."""
        interval = self.config.interval_s
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the monitor must outlive any bug in one tick
                log.exception("monitor tick failed")
            next_at += interval
            now = loop.time()
            if next_at < now:
                next_at = now + interval - ((now - next_at) % interval)
            await asyncio.sleep(next_at - now)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
            self._client = httpx.AsyncClient(timeout=self.config.scrape_timeout_s, limits=limits, trust_env=False)
        return self._client

    # ---- one tick --------------------------------------------------------------------------------------

    async def tick(self) -> dict[str, Any]:
        """Scrape everything once, update series and SLOs; returns the new metrics snapshot."""
        cpu0 = time.thread_time()  # this thread only: the lab's API and supervisor threads share the process
        now = self.clock()
        raw_targets: Any = None
        try:
            raw_targets = await _call(self.targets_provider)
            self.targets = _targets(raw_targets)
        except Exception as exc:
            log.warning("targets provider failed error=%s", exc)
        try:
            if self.process_stats_provider is not None:
                self.stats = _stats(await _call(self.process_stats_provider))
            elif isinstance(raw_targets, list):  # a supervisor status list carries the process stats too
                self.stats = _stats(raw_targets)
        except Exception as exc:
            log.warning("process stats provider failed error=%s", exc)
            self.stats = {}
        results = await asyncio.gather(*(self._scrape(name, url) for name, url in self.targets.items()))
        for name, result in zip(self.targets, results, strict=True):
            self._record(name, now, result)
        snapshot = self._compute_snapshot(now)
        self._snapshot = snapshot
        with self._lock:
            self._append_series(now, snapshot)
            self._evaluate_slos(now)
        self._maybe_refresh_drift(now)
        self._maybe_canary(now)
        self.ticks += 1
        self.tick_cpu_s.append(time.thread_time() - cpu0)
        return snapshot

    async def _scrape(self, name: str, url: str) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            resp = await self._http().get(f"{url}/metrics")
            elapsed = time.perf_counter() - start
            if resp.status_code != 200:
                return {"ok": False, "error": f"HTTP {resp.status_code}", "ms": elapsed * 1000}
            parsed = prom.parse(resp.text)
            return {"ok": True, "samples": parsed.samples, "ms": elapsed * 1000, "parse_errors": parsed.errors[:5]}
        except Exception as exc:  # any failure of one target is that target's scrape error, never the tick's
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300],
                    "ms": (time.perf_counter() - start) * 1000}

    def _record(self, name: str, now: float, result: dict[str, Any]) -> None:
        info = self.scrape_info.setdefault(name, {"ok": 0, "failed": 0})
        info["last_ms"] = round(result["ms"], 3)
        if not result["ok"]:
            info["failed"] += 1
            info["error"] = result["error"]
            info["last_failure"] = now
            return
        info["ok"] += 1
        info["error"] = None
        info["last_success"] = now
        if result.get("parse_errors"):
            info["parse_errors"] = result["parse_errors"]
        ring = self.rings.get(name)
        if ring is None:
            ring = self.rings[name] = ScrapeRing(self._raw_capacity)
        samples = result["samples"]
        started = samples.get(("process_start_time_seconds", ()))
        if started is not None:
            before = self._start_times.get(name)
            if before is not None and abs(started - before) > 0.5:
                self._restarts_seen[name] = self._restarts_seen.get(name, 0) + 1
                if llm_signals.is_llm(name):
                    self._canary_stale.add(name)
            self._start_times[name] = started
        ring.add(now, samples)

    def _is_up(self, name: str, now: float) -> bool:
        info = self.scrape_info.get(name)
        scraped = bool(info) and info.get("error") is None and info.get("last_success") == now
        stats = self.stats.get(name)
        if stats is not None and stats.get("state") in DOWN_STATES:
            return False
        if name not in self.targets:  # stats-only services (e.g. the netproxy): trust the supervisor
            return stats is not None and stats.get("state") not in DOWN_STATES and stats.get("pid") is not None
        return scraped

    def _window(self, name: str, window_s: float, now: float, cache: dict | None = None) -> Window | None:
        key = (name, window_s)
        if cache is not None and key in cache:
            return cache[key]
        ring = self.rings.get(name)
        w = None if ring is None else window(ring, window_s, now)
        if cache is not None:
            cache[key] = w
        return w

    def _compute_snapshot(self, now: float) -> dict[str, Any]:
        cfg = self.config
        self._windows = {}
        services: dict[str, dict[str, Any]] = {}
        names = list(dict.fromkeys([*self.targets, *self.stats]))
        for name in names:
            w = self._window(name, cfg.window_s, now, self._windows)
            entry: dict[str, Any] = service_signals(name, w) if w is not None else {}
            if llm_signals.is_llm(name):
                entry = self._llm_entry(name, w, now)
            entry["up"] = self._is_up(name, now)
            if entry["up"]:
                self._first_up.setdefault(name, now)
            stats = self.stats.get(name, {})
            for key in ("state", "pid", "ready"):
                if key in stats:
                    entry[key] = stats[key]
            if entry.get("rss_bytes") is None and stats.get("rss_bytes") is not None:
                entry["rss_bytes"] = stats["rss_bytes"]
            if stats.get("cpu_percent") is not None:
                entry["cpu_percent"] = stats["cpu_percent"]  # psutil's view covers the whole process tree
            total = stats.get("restarts", self._restarts_seen.get(name, 0))
            # during an attempt, restarts count from its beginning: earlier attempts' are not this incident's
            entry["restarts"] = self.restarts_since_attempt(name, total)
            entry["restarts_total"] = total
            if w is not None:
                codes = evidence.status_codes(w, service_kind(name, w.ring))
                if codes:
                    entry["status_codes"] = codes
            info = self.scrape_info.get(name)
            if info is not None:
                entry["scrape_ms"] = info.get("last_ms")
                entry["scrape_error"] = info.get("error")
            services[name] = entry
        snapshot: dict[str, Any] = {"at": now, "window_s": cfg.window_s, "services": services}
        gw = self._window(GATEWAY, cfg.window_s, now, self._windows)
        if gw is not None:
            upstreams = upstream_signals(gw)
            services.setdefault(GATEWAY, {})["upstreams"] = upstreams
            snapshot["upstream_latency"] = evidence.upstream_latency(gw)
            for replica, figures in upstreams.items():
                if replica in services:
                    services[replica]["via_gateway"] = figures
            snapshot["versions"] = prediction_signals(gw)
            snapshot["score"] = score_distribution(gw)
        self._llm_snapshot(snapshot, now)
        gq = self._window(GATEWAY, cfg.quality_window_s, now, self._windows)
        quality = quality_signals(gq) if gq is not None else None
        # failed requests count as wrong decisions: the one definition every view shows (signals.honest_quality)
        overall = honest_quality((quality or {}).get("overall"), gq) if gq is not None else {}
        snapshot["accuracy"] = overall.get("accuracy")
        snapshot["precision"] = overall.get("precision")
        snapshot["recall"] = overall.get("recall")
        snapshot["labels"] = overall.get("labels", 0.0)
        ring = self.rings.get(GATEWAY)
        snapshot["quality"] = {
            "window_s": cfg.quality_window_s,
            "overall": overall or None,
            "versions": (quality or {}).get("versions", {}),
            "cumulative": cumulative_quality(ring)["overall"] if ring is not None else None,
        }
        return snapshot

    # ---- the LLM track ---------------------------------------------------------------------------------

    def note_canary_finish(self, name: str, at: float) -> None:
        """A canary that finished on replica `name` at `at` (the monitor's own, or the UI's canary output panel's
        sample): left out of the replica's finish-reason shares."""
        self._canary_done.setdefault(name, deque(maxlen=64)).append(at)

    def _canary_finishes(self, name: str, w: Window) -> float:
        done = self._canary_done.get(name)
        if not done:
            return 0.0
        # a canary is sent after a tick's scrapes, so one answered at the window's first scrape time finished in it
        end = w.ring.timestamps()[-1]
        return float(sum(1 for t in done if end - w.span_s <= t <= end))

    def _llm_entry(self, name: str, w: Window | None, now: float) -> dict[str, Any]:
        """An LLM replica's entry: its vllm figures (lab/monitor/llm.py) and process figures."""
        canary = self.canaries.get(name)
        if w is None:
            return {"canary_perplexity": (canary or {}).get("perplexity"), "version": (canary or {}).get("version"),
                    "canary": canary}
        entry = llm_signals.server_signals(w, canary, self._canary_finishes(name, w))
        entry.update(process_signals(w))
        entry["window_s"] = round(w.span_s, 3)
        return entry

    def _llm_snapshot(self, snapshot: dict[str, Any], now: float) -> None:
        """The gateway's LLM figures, the clients' figures, goodput and the track summary (LLM stacks only)."""
        services = snapshot["services"]
        cfg = self.config
        replicas = {n: w for n in services if llm_signals.is_llm(n)
                    and (w := self._window(n, cfg.window_s, now, self._windows)) is not None}
        gw = self._window(GATEWAY, cfg.window_s, now, self._windows)
        gateway_llm = gw is not None and bool(gw.ring.columns("gateway_llm_requests_total"))
        if not replicas and not gateway_llm and not any(llm_signals.is_llm(n) for n in services):
            return  # the fraud track alone: nothing changes
        client = self._window(LOADGEN, cfg.window_s, now, self._windows)
        figures = llm_signals.client_signals(client)
        if client is not None and client.ring.columns(llm_signals.CLIENT_REQUESTS) and LOADGEN in services:
            services[LOADGEN].update(figures)
        if gw is not None and GATEWAY in services:
            services[GATEWAY].update(llm_signals.gateway_signals(gw))
            services[GATEWAY].update(figures)
            services[GATEWAY].update(llm_signals.goodput(client, list(replicas.values()), gw))
        finishes = {n: self._canary_finishes(n, w) for n, w in replicas.items()}
        summary = llm_signals.track_summary(replicas, self.canaries, finishes)
        summary.update(llm_signals.goodput(client, list(replicas.values()), gw))
        snapshot["llm"] = summary

    def _maybe_canary(self, now: float) -> None:
        names = [n for n in self.targets if llm_signals.is_llm(n)]
        due = now - self._canary_at >= self.config.canary_interval_s
        stale = [n for n in names if n in self._canary_stale]
        if not names or not (due or stale):
            return
        if self._canary_task is not None and not self._canary_task.done():
            return
        if due:
            self._canary_at = now
        self._canary_task = asyncio.create_task(self.run_canaries(names if due else stale))

    async def settle_canaries(self, timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
        """Wait for the canaries the loop sent in the background, if any; the latest result per replica."""
        task = self._canary_task
        if task is not None and not task.done():
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        with self._lock:
            return {n: dict(c) for n, c in self.canaries.items()}

    async def run_canaries(self, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Send the canary to each LLM replica (direct URL) now; keeps and returns the results."""
        names = [n for n in self.targets if llm_signals.is_llm(n)] if names is None else names
        timeout = httpx.Timeout(self.config.canary_timeout_s)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            results = await asyncio.gather(*(llm_signals.canary(client, self.targets[n]) for n in names
                                             if n in self.targets))
        at = self.clock()
        with self._lock:
            for name, result in zip([n for n in names if n in self.targets], results, strict=True):
                result["at"] = at
                self.canaries[name] = result
                if result.get("perplexity") is not None:
                    self.note_canary_finish(name, at)
                    self._canary_stale.discard(name)  # a replica still starting is asked again next tick
                self.store.append(f"{name}.canary_perplexity", at, result.get("perplexity"))
        return {n: self.canaries[n] for n in names if n in self.canaries}

    def _append_series(self, now: float, snapshot: dict[str, Any]) -> None:
        store = self.store
        for name, entry in snapshot["services"].items():
            for key in CHARTED:
                if key in entry and key != "canary_perplexity":  # recorded when a canary answers
                    value = entry[key]
                    store.append(f"{name}.{key}", now, float(value) if isinstance(value, bool) else value)
            for reason, share in (entry.get("finish_reason") or {}).items():
                store.append(f"{name}.finish_reason.{reason}", now, share)
            for replica, figures in (entry.get("upstreams") or {}).items():
                for key, value in figures.items():
                    store.append(f"gateway.upstream.{replica}.{key}", now, value)
        for version, figures in (snapshot.get("versions") or {}).items():
            for key in ("rps", "decline_rate", "score_mean"):
                store.append(f"version.{version}.{key}", now, figures.get(key))
        for key in ("accuracy", "precision", "recall", "labels"):
            store.append(f"quality.{key}", now, snapshot.get(key))
        for version, q in (snapshot["quality"].get("versions") or {}).items():
            for key in ("accuracy", "precision", "recall"):
                store.append(f"quality.{version}.{key}", now, q.get(key))
        if snapshot.get("versions"):
            store.append("decisions.decline_rate", now, evidence.decisions(snapshot)["decline_rate"])
        gateway_codes: dict[str, float] = {}
        for by_code in ((snapshot["services"].get(GATEWAY) or {}).get("status_codes") or {}).values():
            for code, n in by_code.items():
                gateway_codes[code] = gateway_codes.get(code, 0.0) + n
        total = sum(gateway_codes.values())
        for code, n in gateway_codes.items():  # the share of each status code among the gateway's answers
            store.append(f"gateway.code.{code}.share", now, n / total if total else None)
        llm = snapshot.get("llm") or {}
        for key in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "output_tokens_per_s", "goodput_ratio"):
            if key in llm:
                store.append(f"llm.{key}", now, llm[key])
        for reason, share in (llm.get("finish_reason") or {}).items():
            store.append(f"llm.finish_reason.{reason}", now, share)
        score = snapshot.get("score") or {}
        if score:
            store.append("score.mean", now, score.get("mean"))
            store.append("score.p90", now, score.get("p90"))

    # ---- SLOs ------------------------------------------------------------------------------------------

    def slo_value(self, spec: SLOSpec, now: float) -> tuple[float | None, bool | None]:
        """The measured value of one SLO now (None: no data), and an explicit breach verdict if any."""
        windows = self._windows
        if spec.kind in ("latency_p99", "error_rate"):
            w = self._window(spec.target, spec.window_s, now, windows)
            if w is None:
                return None, None
            kind = service_kind(spec.target, w.ring)
            want = None
            if kind == GATEWAY_PART.metrics_prefix:
                routes = gateway_score_routes(w)
                want = {"route": routes} if routes else None
            r = request_signals(w, kind, want)
            if (r["requests"] or 0) < max(1.0, spec.min_samples):
                return None, None
            return (r["p99_ms"] if spec.kind == "latency_p99" else r["error_rate"]), None
        if spec.kind in ("accuracy_min", "precision_min", "recall_min"):
            w = self._window(GATEWAY, spec.window_s, now, windows)
            if w is None:
                return None, None
            q = quality_signals(w)
            figures = q["overall"] if spec.target in ("all", "*", "") else q["versions"].get(spec.target)
            if not figures:
                return None, None
            figures = honest_quality(figures, w)
            key = spec.kind.removesuffix("_min")
            # judge a ratio only on enough of its own denominator: recall on frauds, precision on declines; an
            # outage without labels is judged on the requests that failed (signals.honest_quality)
            denominator = {"accuracy_min": figures["labels"], "recall_min": figures["tp"] + figures["fn"],
                           "precision_min": figures["tp"] + figures["fp"]}[spec.kind]
            if denominator < max(1.0, spec.min_samples):
                if key != "precision" and figures.get("served") == 0.0 and figures["requests"] >= spec.min_samples:
                    return 0.0, None
                return None, None
            return figures[key], None
        if spec.kind == "availability":
            series = self.store.get(f"{spec.target}.up")
            first_up = self._first_up.get(spec.target)
            if series is None or first_up is None:
                return None, None  # never up yet (the stack is still starting): no verdict
            _, v = series.arrays(since=max(first_up, now - spec.window_s + 1e-9), until=now)
            v = v[~np.isnan(v)]
            return (float(v.mean()), None) if len(v) else (None, None)
        if spec.kind in LLM_SLO_KINDS:  # the LLM track: measured as the scenario probes are (lab/monitor/llm.py)
            kind = LLM_SLO_KINDS[spec.kind]
            everywhere = spec.target in ("all", "*", "") or (kind == "itl_p99_ms" and spec.target == GATEWAY)
            probe = SimpleNamespace(kind=kind, target=None if everywhere else spec.target)
            return llm_signals.probe_value(self, probe, spec.window_s, now), None
        if spec.kind == "drift_max":
            report = self._drift
            if not report or not report.get("enough_data"):
                return None, None
            feats = [f for f in report["features"] if spec.target in ("all", "*", "") or f["name"] == spec.target]
            psis = [f["psi"] for f in feats if f["psi"] is not None]
            if not psis:
                return None, None
            value = max(psis)
            return value, value > spec.threshold or any(f["drifted"] for f in feats)
        return None, None

    def _quality_figure(self, spec: SLOSpec, now: float) -> float | None:
        w = self._window(GATEWAY, spec.window_s, now, self._windows)
        if w is None:
            return None
        q = quality_signals(w)
        figures = q["overall"] if spec.target in ("all", "*", "") else q["versions"].get(spec.target)
        return honest_quality(figures, w).get(spec.kind.removesuffix("_min")) if figures else None

    def running_tracks(self) -> set[str]:
        """The tracks whose replicas the stack runs now (a track's objectives are judged and shown only then); the
        default track's while no replica is known yet (a stack starting, or none)."""
        running = {track for track in parts.TRACKS
                   if any((p := parts.part_for(name)) is not None and p is parts.replica_part(track)
                          for name in self.targets)}
        return running or {parts.DEFAULT_TRACK}

    def _evaluate_slos(self, now: float) -> None:
        running = self.running_tracks()
        for name, tracker in self.book.trackers.items():
            if tracker.spec.track is not None and tracker.spec.track not in running:
                continue  # the other track's objective: no verdict, no events, not shown
            try:
                value, breached = self.slo_value(tracker.spec, now)
            except Exception:
                log.exception("SLO evaluation failed slo=%s", name)
                continue
            self.book.update(name, now, value, breached)
            if value is None and tracker.spec.kind in ("accuracy_min", "precision_min", "recall_min"):
                # too few labels to judge (the state stays unknown), but the figure itself is shown as the
                # metrics show it: the same number in every view
                tracker.value = self._quality_figure(tracker.spec, now)
            self.store.append(f"slo.{name}.value", now, value)
            self.store.append(f"slo.{name}.violated", now, 1.0 if tracker.state == "violated" else 0.0)

    def set_slos(self, specs: Iterable[SLOSpec]) -> None:
        """Replace the SLO set (e.g. a scenario's own objectives); subscribers and past events are kept."""
        new = SLOBook(list(specs))
        with self._lock:
            new.events = self.book.events
            new._subscribers = self.book._subscribers
            self.book = new
            self._default_slos = False

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `callback(event)` on every SLO transition; returns the unsubscribe function."""
        return self.book.subscribe(callback)

    # ---- drift -----------------------------------------------------------------------------------------

    def _maybe_refresh_drift(self, now: float) -> None:
        if self.reference_provider is None or self.live_window_provider is None:
            return
        if now - self._drift_at < self.config.drift_interval_s:
            return
        if self._drift_task is not None and not self._drift_task.done():
            return
        self._drift_at = now
        self._drift_task = asyncio.create_task(self._refresh_drift_logged(now))

    async def _refresh_drift_logged(self, now: float) -> None:
        try:
            await self.refresh_drift(now)
        except Exception as exc:
            log.warning("drift refresh failed error=%s", exc)

    async def settle_drift(self, timeout_s: float = 30.0) -> None:
        """Wait for a drift refresh the loop started in the background, if any."""
        task = self._drift_task
        if task is not None and not task.done():
            await asyncio.wait_for(asyncio.shield(task), timeout_s)

    async def _load_reference(self) -> Reference | None:
        got = await _call(self.reference_provider)
        if got is None:
            return None
        if isinstance(got, Mapping):
            version, data, meta = got.get("version"), got.get("data", got.get("rows")), got.get("meta")
        else:
            version, data, *rest = got
            meta = rest[0] if rest else None
        key = (version, id(data))
        if self._reference is None or key != self._reference_key:
            self._reference = await asyncio.to_thread(Reference.build, data, version, self.drift_config)
            self._reference_key = key
            self._reference_meta = dict(meta) if isinstance(meta, Mapping) else None
            if self._default_slos and self._reference_meta:
                self._recalibrate_quality_slos(self._reference_meta.get("metrics"))
        return self._reference

    def _recalibrate_quality_slos(self, metrics: Any) -> None:
        """Quality floors follow the production model's offline recall/precision (see default_slos)."""
        if not isinstance(metrics, Mapping):
            return
        for spec in default_slos(dict(metrics)):
            tracker = self.book.trackers.get(spec.name)
            if tracker is not None and spec.kind == "recall_min":
                tracker.spec = spec

    async def refresh_drift(self, now: float | None = None) -> dict[str, Any] | None:
        """Fetch the live window, compare it with the reference, keep and return the report."""
        reference = await self._load_reference()
        if reference is None:
            return None
        live = await _call(self.live_window_provider, self.config.drift_window)
        report = await asyncio.to_thread(drift_report, reference, live)
        self._live = live
        report["at"] = self.clock() if now is None else now
        self._drift = report
        at = report["at"]
        with self._lock:
            for f in report["features"]:
                self.store.append(f"drift.{f['name']}.psi", at, f["psi"])
                self.store.append(f"drift.{f['name']}.null_rate", at, f["null_rate"])
                ratio = _median_ratio(f)
                if ratio is not None:
                    self.store.append(f"drift.{f['name']}.median_ratio", at, ratio)
            if report.get("score"):
                self.store.append("drift.score.psi", at, report["score"]["psi"])
        return report

    # ---- the Python API ----------------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """The latest snapshot: {"services": {name: {rps, p50_ms, p99_ms, error_rate, ...}}, "accuracy", ...}."""
        return _clean(self._snapshot)

    def drift(self) -> dict[str, Any]:
        """The latest drift report: {"features": [{name, psi, test, p_value, null_rate, drifted}...], ...}."""
        if self._drift is None:
            return {"features": [], "drifted": [], "window": 0, "reference_version": None, "at": None,
                    "enough_data": False}
        return _clean(self._drift)

    def distributions(self, feature: str | None = None) -> dict[str, Any]:
        """Quantiles and a small histogram of every request feature and the score, live against training, over
        the last drift refresh's window (lab/monitor/evidence.py)."""
        report = evidence.distributions(self._reference, self._live or [], feature)
        report["at"] = (self._drift or {}).get("at")
        return _clean(report)

    def decisions(self) -> dict[str, Any]:
        """Decline rate, score histogram, confusion matrix and cost-weighted loss (lab/monitor/evidence.py)."""
        return _clean(evidence.decisions(self._snapshot))

    def slo(self) -> dict[str, Any]:
        """{"slos": [{name, state, value, threshold, since, ...}], "events": [...]}."""
        running = self.running_tracks()
        with self._lock:  # one book for both (set_slos may replace it meanwhile)
            status = self.book.status()
            shown = {n for n, t in self.book.trackers.items() if t.spec.track is None or t.spec.track in running}
        return _clean({**status, "slos": [s for s in status["slos"] if s["name"] in shown]})

    def series_names(self) -> list[str]:
        with self._lock:
            return self.store.names()

    def series(self, name: str, since: float | None = None, until: float | None = None) -> list[list[Any]]:
        """[[t, value-or-null], ...] of one series; unknown names give an empty list."""
        with self._lock:
            s = self.store.get(name)
            return [] if s is None else s.points(since, until)

    def export(self, since: float | None = None, until: float | None = None, prefix: str | None = None
               ) -> dict[str, Any]:
        """Every series and SLO event within [since, until], JSON-ready (the debrief's charts)."""
        with self._lock:
            events = [e for e in self.book.events if (since is None or e["at"] >= since)
                      and (until is None or e["at"] <= until)]
            series = self.store.export(since, until, prefix)
        return _clean({"from": since, "to": until, "series": series, "events": events})

    def begin_attempt(self, attempt_id: str, at: float | None = None) -> None:
        """Mark the start of a learner's attempt; its series are frozen by `end_attempt`."""
        self._attempts[attempt_id] = {"id": attempt_id, "from": self.clock() if at is None else at, "to": None,
                                      "export": None}
        self._restart_base = {name: int(s.get("restarts") or 0) for name, s in self.stats.items()}
        for name, seen in self._restarts_seen.items():
            self._restart_base.setdefault(name, seen)
        while len(self._attempts) > self.config.max_attempts:
            self._attempts.pop(next(iter(self._attempts)))

    def restarts_since_attempt(self, name: str, total: int | None) -> int | None:
        """A service's restarts since the running attempt began (all of them when no attempt runs)."""
        if total is None or self._restart_base is None:
            return total
        return max(0, int(total) - self._restart_base.get(name, 0))

    def attempt_began(self, attempt_id: str) -> float | None:
        """When `begin_attempt` marked this attempt (None if it did not, or it has been evicted)."""
        entry = self._attempts.get(attempt_id)
        return None if entry is None else entry["from"]

    def end_attempt(self, attempt_id: str, at: float | None = None) -> dict[str, Any]:
        """Freeze and keep the attempt's series (they outlive the ring buffers); returns the export."""
        entry = self._attempts.get(attempt_id)
        if entry is None:
            raise KeyError(f"no attempt {attempt_id!r}")
        entry["to"] = self.clock() if at is None else at
        self._restart_base = None
        entry["export"] = self.export(entry["from"], entry["to"])
        return entry["export"]

    def attempt(self, attempt_id: str) -> dict[str, Any]:
        """An attempt's series: the frozen export once ended, else everything since it began."""
        entry = self._attempts.get(attempt_id)
        if entry is None:
            raise KeyError(f"no attempt {attempt_id!r}")
        return entry["export"] if entry["export"] is not None else self.export(entry["from"], None)

    def overhead(self) -> dict[str, Any]:
        """CPU the monitor's thread spent per tick (scrape, parse, derive, SLOs), for the overhead budget.

        Drift refreshes run in a worker thread every `drift_interval_s` and are not included; bench.drift
        measures the whole process."""
        cpu = list(self.tick_cpu_s)
        return {"ticks": self.ticks, "tick_cpu_ms_mean": round(1000 * sum(cpu) / len(cpu), 3) if cpu else None,
                "interval_s": self.config.interval_s}
