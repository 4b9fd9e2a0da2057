"""The monitor against real feature-store processes: rates, error rates, latency, SLO transitions, scrape
failures, restarts, the 1 Hz loop and attempt exports. Time is compressed with a test-driven clock: each
`tick()` is one "second" of monitor time, while the traffic between ticks is real HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
from monhelpers import FakeClock, ServiceProc, free_port, start_featurestore

from lab.monitor import Monitor, MonitorConfig, SLOSpec
from lab.monitor.text import format_drift, format_metrics, format_slo
from services.trainer.generator import Generator, Shift

pytestmark = [pytest.mark.timeout(120), pytest.mark.anyio]


async def lookups(url: str, ok: int, missing: int = 0) -> None:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        calls = [client.get(f"{url}/v1/features/c{i % 500:06d}") for i in range(ok)]
        calls += [client.get(f"{url}/v1/features/nope{i}") for i in range(missing)]
        for resp in await asyncio.gather(*calls):
            assert resp.status_code in (200, 404)


def patch(url: str, **config: object) -> None:
    httpx.patch(f"{url}/admin/config", json=config, timeout=5.0, trust_env=False).raise_for_status()


def config(**kw: float) -> MonitorConfig:
    return MonitorConfig(**{"window_s": 3.0, "quality_window_s": 5.0, **kw})


async def test_rates_error_rate_and_latency_from_real_scrapes(featurestore: ServiceProc, clock: FakeClock) -> None:
    mon = Monitor(lambda: {"feature-store": featurestore.url}, clock=clock, config=config(), slos=[])
    try:
        await mon.tick()
        for _ in range(3):
            await lookups(featurestore.url, ok=30, missing=10)
            clock.advance(1.0)
            snap = await mon.tick()
        fs = snap["services"]["feature-store"]
        assert fs["up"] is True and fs["scrape_error"] is None
        assert fs["rps"] == pytest.approx(40.0)  # 120 lookups over the 3 s window
        assert fs["error_rate"] == pytest.approx(0.25)
        assert fs["error_rate_5xx"] == 0.0
        assert 0 < fs["p50_ms"] <= fs["p99_ms"] < 250
        assert fs["rss_bytes"] > 10_000_000
        pts = mon.series("feature-store.rps")
        assert len(pts) == 3 and pts[-1][1] == pytest.approx(40.0)  # the first tick has no window yet
        assert "feature-store.p99_ms" in mon.series_names()
        text = format_metrics(mon.metrics())
        assert "feature-store" in text and " 40.0 " in text and "25.0%" in text
    finally:
        await mon.stop()


async def test_latency_slo_violates_and_restores(featurestore: ServiceProc, clock: FakeClock) -> None:
    slo = SLOSpec(name="fs-latency", kind="latency_p99", target="feature-store", threshold=250.0, window_s=3.0,
                  min_samples=5)
    mon = Monitor(lambda: {"feature-store": featurestore.url}, clock=clock, config=config(), slos=[slo])
    events: list[dict] = []
    mon.subscribe(events.append)
    try:
        await mon.tick()
        await lookups(featurestore.url, ok=20)
        clock.advance()
        await mon.tick()
        assert mon.slo()["slos"][0]["state"] == "ok"
        patch(featurestore.url, latency_ms=300)
        try:
            await lookups(featurestore.url, ok=20)
        finally:
            patch(featurestore.url, latency_ms=0)
        clock.advance()
        await mon.tick()
        status = mon.slo()["slos"][0]
        assert status["state"] == "violated" and status["value"] >= 250
        assert [e["state"] for e in events] == ["violated"]
        for _ in range(4):  # fast traffic until the slow second leaves the 3 s window
            await lookups(featurestore.url, ok=20)
            clock.advance()
            await mon.tick()
        assert [e["state"] for e in events] == ["violated", "restored"]
        assert events[1]["value"] < 250 and events[1]["at"] > events[0]["at"]
        assert mon.slo()["slos"][0]["state"] == "ok"
    finally:
        await mon.stop()


async def test_scrape_failures_restarts_and_availability(log_dir: Path, clock: FakeClock) -> None:
    proc = start_featurestore(log_dir, name="fs-restart")
    slo = SLOSpec(name="fs-up", kind="availability", target="fs-restart", threshold=0.99, window_s=4.0)
    mon = Monitor(lambda: {"fs-restart": proc.url, "nothing-here": f"http://127.0.0.1:{free_port()}",
                           "wrong-path": proc.url + "/v1"},
                  clock=clock, config=config(), slos=[slo])
    events: list[dict] = []
    mon.subscribe(events.append)
    try:
        for _ in range(2):
            await lookups(proc.url, ok=50)
            clock.advance()
            await mon.tick()
        snap = mon.metrics()
        assert snap["services"]["nothing-here"]["up"] is False
        assert "Connect" in snap["services"]["nothing-here"]["scrape_error"]
        assert snap["services"]["wrong-path"]["scrape_error"].startswith("HTTP 4")
        assert "scrape failed" in format_metrics(snap)
        proc.stop()
        clock.advance()
        snap = await mon.tick()
        down = snap["services"]["fs-restart"]
        assert down["up"] is False and down["scrape_error"]
        assert [e["state"] for e in events] == ["violated"]
        proc.start()  # same port, fresh process: every counter starts again at zero
        for _ in range(6):
            await lookups(proc.url, ok=10)
            clock.advance()
            snap = await mon.tick()
            assert snap["services"]["fs-restart"]["rps"] >= 0
        back = snap["services"]["fs-restart"]
        assert back["up"] is True and back["restarts"] == 1
        assert back["rps"] == pytest.approx(10.0)
        assert [e["state"] for e in events] == ["violated", "restored"]
        assert mon.slo()["slos"][0]["value"] == 1.0
    finally:
        await mon.stop()
        proc.stop()


async def test_the_loop_ticks_on_its_own_and_stops_cleanly(featurestore: ServiceProc) -> None:
    mon = Monitor(lambda: [{"name": "feature-store", "url": featurestore.url}],
                  process_stats_provider=lambda: [{"name": "feature-store", "pid": 1, "state": "running",
                                                   "restarts": 0, "cpu_percent": 1.5}],
                  config=MonitorConfig(interval_s=0.2, window_s=1.0), slos=[])
    await mon.start()
    try:
        await lookups(featurestore.url, ok=20)
        await asyncio.sleep(1.5)
    finally:
        await mon.stop()
    assert 3 <= mon.ticks <= 12
    snap = mon.metrics()
    fs = snap["services"]["feature-store"]
    assert fs["up"] and fs["state"] == "running" and fs["cpu_percent"] == 1.5
    assert mon.overhead()["tick_cpu_ms_mean"] > 0


async def test_drift_through_the_monitor_and_its_slo(clock: FakeClock) -> None:
    gen = Generator(7)
    ref = gen.sample_columns(5000, rng=np.random.default_rng(1))
    live = {"rows": gen.sample(1000, rng=np.random.default_rng(2))}

    async def reference() -> dict:
        return {"version": "v1", "data": ref, "meta": {"metrics": {"recall": 0.2, "precision": 0.5}}}

    slo = SLOSpec(name="drift", kind="drift_max", target="all", threshold=0.25)
    mon = Monitor(lambda: {}, reference_provider=reference, live_window_provider=lambda n: live["rows"][-n:],
                  clock=clock, config=config(drift_interval_s=5.0, drift_window=1000), slos=[slo])
    events: list[dict] = []
    mon.subscribe(events.append)
    try:
        await mon.tick()  # the first tick starts a drift refresh in the background
        await mon.settle_drift()
        clock.advance()
        await mon.tick()
        built = mon._reference
        assert mon.drift()["drifted"] == [] and mon.drift()["reference_version"] == "v1"
        assert mon.slo()["slos"][0]["state"] == "ok"
        live["rows"] = gen.sample(1000, Shift(unit_scale=100.0), rng=np.random.default_rng(3))
        report = await mon.refresh_drift()
        assert report is not None and report["drifted"] == ["amount"]
        clock.advance()
        await mon.tick()
        assert [e["state"] for e in events] == ["violated"] and events[0]["value"] > 0.25
        assert "drifted: amount" in format_drift(mon.drift())
        assert "drift violated since" in format_slo(mon.slo())
        assert mon.series("drift.amount.psi")[-1][1] > 0.25
        assert mon._reference is built  # the binned reference is built once per version
        assert [t.spec.threshold for t in mon.book.trackers.values()] == [0.25]  # explicit SLOs stay as given
        # the 1 Hz loop refreshes drift by itself every drift_interval_s
        live["rows"] = gen.sample(1000, rng=np.random.default_rng(4))
        clock.advance(6.0)
        await mon.tick()
        await mon.settle_drift()
        clock.advance()
        await mon.tick()
        assert mon.drift()["drifted"] == [] and [e["state"] for e in events] == ["violated", "restored"]
    finally:
        await mon.stop()


async def test_attempt_exports_keep_series_and_events(featurestore: ServiceProc, clock: FakeClock) -> None:
    slo = SLOSpec(name="fs-errors", kind="error_rate", target="feature-store", threshold=0.1, window_s=2.0,
                  min_samples=5)
    mon = Monitor(lambda: {"feature-store": featurestore.url}, clock=clock, config=config(), slos=[slo])
    try:
        await mon.tick()
        mon.begin_attempt("a1")
        start = clock()
        for missing in (0, 20, 0, 0, 0):
            await lookups(featurestore.url, ok=20, missing=missing)
            clock.advance()
            await mon.tick()
        frozen = mon.end_attempt("a1")
        clock.advance()
        await mon.tick()
        assert frozen["from"] == start and frozen["to"] == clock() - 1
        assert len(frozen["series"]["feature-store.rps"]) == 5
        assert [e["state"] for e in frozen["events"]] == ["violated", "restored"]
        assert mon.attempt("a1") == frozen
        with pytest.raises(KeyError):
            mon.attempt("nope")
    finally:
        await mon.stop()


async def test_default_quality_floors_follow_the_production_models_meta(clock: FakeClock) -> None:
    ref = Generator(7).sample_columns(1000, rng=np.random.default_rng(1))
    mon = Monitor(lambda: {}, reference_provider=lambda: ("v3", ref, {"metrics": {"recall": 0.2, "precision": 0.5}}),
                  live_window_provider=lambda n: [], clock=clock)
    try:
        await mon.refresh_drift()
        floors = {s["name"]: s["threshold"] for s in mon.slo()["slos"]}
        assert floors["model-recall"] == pytest.approx(0.1) and "model-precision" not in floors
        assert floors["gateway-latency"] == 250.0
        assert mon.drift()["window"] == 0 and mon.drift()["enough_data"] is False
    finally:
        await mon.stop()


async def test_restarts_count_from_the_attempts_beginning(clock: FakeClock) -> None:
    """An earlier attempt's restarts are not this one's: during an attempt a service's restarts count from when it
    began (the lifetime total stays as restarts_total); after it, the total again."""
    stats = [{"name": "feature-store", "state": "running", "pid": 1, "restarts": 4}]
    mon = Monitor(lambda: {}, process_stats_provider=lambda: stats, clock=clock)
    try:
        await mon.tick()
        assert mon.metrics()["services"]["feature-store"]["restarts"] == 4
        mon.begin_attempt("a1")
        clock.advance()
        stats[0]["restarts"] = 6
        await mon.tick()
        entry = mon.metrics()["services"]["feature-store"]
        assert entry["restarts"] == 2 and entry["restarts_total"] == 6
        mon.end_attempt("a1")
        clock.advance()
        await mon.tick()
        assert mon.metrics()["services"]["feature-store"]["restarts"] == 6
    finally:
        await mon.stop()
