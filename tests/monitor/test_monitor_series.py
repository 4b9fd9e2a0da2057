"""Bounded series and the counter/histogram arithmetic behind every rate and quantile."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from lab.monitor import prom
from lab.monitor.series import ScrapeRing, Series, SeriesStore
from lab.monitor.signals import histogram_quantile, quality_signals, request_signals, window


def test_series_ring_keeps_the_newest_points_in_order() -> None:
    s = Series(capacity=5)
    for t in range(12):
        s.append(float(t), None if t == 9 else t * 10.0)
    t, v = s.arrays()
    assert list(t) == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert math.isnan(v[2]) and v[0] == 70.0
    assert s.points(since=9.5) == [[10.0, 100.0], [11.0, 110.0]]
    assert s.points(since=8, until=9) == [[8.0, 80.0], [9.0, None]]
    assert s.last() == (11.0, 110.0)


def test_series_store_export_filters_by_time_and_prefix() -> None:
    store = SeriesStore(capacity=10)
    for t in range(5):
        store.append("gateway.rps", t, t)
        store.append("model-1.rps", t, 2 * t)
    out = store.export(since=3, prefix="gateway.")
    assert out == {"gateway.rps": [[3.0, 3.0], [4.0, 4.0]]}


def _ring(rows: list[tuple[float, dict[str, float]]]) -> ScrapeRing:
    ring = ScrapeRing(capacity=100)
    for t, values in rows:
        ring.add(t, {(k, ()): v for k, v in values.items()})
    return ring


def test_counter_increase_survives_a_restart() -> None:
    # 10 -> 20 (+10), restart: 20 -> 5 (+5 since the restart), 5 -> 15 (+10)
    ring = _ring([(0, {"c": 10}), (1, {"c": 20}), (2, {"c": 5}), (3, {"c": 15})])
    inc, span = ring.increase(10.0)
    assert inc[ring.index[("c", ())]] == 25.0
    assert span == 3.0
    assert ring.totals[ring.index[("c", ())]] == 10 + 10 + 5 + 10  # cumulative includes the first sighting


def test_increase_covers_only_the_window() -> None:
    ring = _ring([(t, {"c": 100.0 * t}) for t in range(20)])
    inc, span = ring.increase(5.0)
    assert inc[0] == 500.0 and span == 5.0
    assert ring.increase(5.0, now=100.0) is None  # nothing newer than the window start: no rate


def test_a_key_that_appears_mid_window_counts_from_zero() -> None:
    ring = ScrapeRing(capacity=10)
    ring.add(0, {("req", (("code", "200"),)): 10})
    ring.add(1, {("req", (("code", "200"),)): 20, ("req", (("code", "500"),)): 3})
    w = window(ring, 10.0)
    assert w is not None
    assert w.by("req", "code") == {"200": 10.0, "500": 3.0}


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    bounds = np.array([0.1, 0.2, 0.4, math.inf])
    counts = np.array([50.0, 90.0, 100.0, 100.0])
    assert histogram_quantile(0.5, bounds, counts) == pytest.approx(0.1)
    assert histogram_quantile(0.7, bounds, counts) == pytest.approx(0.15)
    assert histogram_quantile(0.95, bounds, counts) == pytest.approx(0.3)
    assert histogram_quantile(0.99, np.array([0.1, math.inf]), np.array([1.0, 100.0])) == 0.1
    assert histogram_quantile(0.5, bounds, np.zeros(4)) is None


def _scrape(reg: CollectorRegistry) -> dict:
    return prom.parse(generate_latest(reg).decode()).samples


def test_window_signals_from_a_real_registry_reflect_only_recent_traffic() -> None:
    reg = CollectorRegistry()
    req = Counter("featurestore_requests_total", "r", ["code"], registry=reg)
    lat = Histogram("featurestore_request_latency_seconds", "l", registry=reg,
                    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0))
    ring = ScrapeRing(capacity=100)
    rng = np.random.default_rng(1)
    ring.add(0.0, _scrape(reg))
    for t in range(1, 31):
        slow = t > 20  # the last 10 s are slow and failing
        for _ in range(50):
            lat.observe(float(rng.uniform(0.2, 0.4) if slow else rng.uniform(0.001, 0.004)))
            req.labels("503" if slow and rng.random() < 0.3 else "200").inc()
        ring.add(float(t), _scrape(reg))
    recent = request_signals(window(ring, 10.0), "featurestore")
    assert recent["rps"] == pytest.approx(50.0)
    assert 200 <= recent["p50_ms"] <= 500 and 400 <= recent["p99_ms"] <= 500
    assert 0.2 <= recent["error_rate"] <= 0.4
    assert recent["error_rate_5xx"] == recent["error_rate"]
    earlier = request_signals(window(ring, 10.0, now=20.0), "featurestore")
    assert earlier["p99_ms"] <= 5.0 and earlier["error_rate"] == 0.0


def test_quality_counts_precision_and_recall_per_version() -> None:
    reg = CollectorRegistry()
    fb = Counter("gateway_feedback_total", "f", ["model_version", "outcome"], registry=reg)
    ring = ScrapeRing(capacity=10)
    ring.add(0.0, _scrape(reg))
    for outcome, n in {"tp": 8, "fn": 2, "fp": 4, "tn": 86}.items():
        fb.labels("v1", outcome).inc(n)
    fb.labels("v2", "fn").inc(5)
    fb.labels("v2", "tn").inc(95)
    ring.add(1.0, _scrape(reg))
    q = quality_signals(window(ring, 10.0))
    v1, v2, overall = q["versions"]["v1"], q["versions"]["v2"], q["overall"]
    assert v1["accuracy"] == pytest.approx(0.94)
    assert v1["precision"] == pytest.approx(8 / 12) and v1["recall"] == pytest.approx(0.8)
    assert v2["accuracy"] == pytest.approx(0.95) and v2["recall"] == 0.0 and v2["precision"] is None
    assert overall["labels"] == 200 and overall["recall"] == pytest.approx(8 / 15)


def test_failed_requests_count_as_wrong_decisions() -> None:
    """During an outage accuracy is not the accuracy of the few answered requests: correct decisions over all
    scoring requests (signals.honest_quality); with nothing answered and no labels, accuracy and recall are 0."""
    from lab.monitor.signals import honest_quality

    reg = CollectorRegistry()
    fb = Counter("gateway_feedback_total", "f", ["model_version", "outcome"], registry=reg)
    req = Counter("gateway_requests_total", "r", ["route", "code"], registry=reg)
    ring = ScrapeRing(capacity=10)
    ring.add(0.0, _scrape(reg))
    for outcome, n in {"tp": 3, "fn": 1, "fp": 2, "tn": 94}.items():
        fb.labels("v1", outcome).inc(n)
    req.labels("score", "200").inc(25)
    req.labels("score", "503").inc(75)
    req.labels("recent", "200").inc(500)  # not scoring traffic: does not dilute the failure share
    ring.add(1.0, _scrape(reg))
    w = window(ring, 10.0)
    h = honest_quality(quality_signals(w)["overall"], w)
    assert h["accuracy_labelled"] == pytest.approx(0.97) and h["served"] == pytest.approx(0.25)
    assert h["accuracy"] == pytest.approx(0.97 * 0.25) and h["recall"] == pytest.approx(0.75 * 0.25)
    assert h["precision"] == pytest.approx(0.6)
    req.labels("score", "503").inc(100)  # a full outage, no label arrives
    ring.add(2.0, _scrape(reg))
    outage = window(ring, 0.9, now=2.0)
    h = honest_quality(quality_signals(outage)["overall"], outage)
    assert h["labels"] == 0 and h["accuracy"] == 0.0 and h["recall"] == 0.0
