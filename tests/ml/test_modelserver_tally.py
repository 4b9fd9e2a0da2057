"""The metric tallies (services/common/tally.py; the model replica's in services/modelserver/metrics.py) add to
prometheus exactly what per-request `observe`/`inc` calls would have: same buckets (`le` edges included), sums,
counts, NaN scores, input summaries."""

from __future__ import annotations

import math

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from services.common import tally as tally_module
from services.modelserver import metrics


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for m in registry.collect() for s in m.samples if not s.name.endswith("_created")}


def test_bulk_histogram_equals_observe_one_by_one() -> None:
    bounds = metrics.LATENCY_BUCKETS
    values = [0.0, 0.0005, 0.00050001, 0.001, 0.0042, 0.05, 5.0, 5.0001, 60.0, *np.random.default_rng(3).exponential(
        0.01, 500).tolist(), *bounds]
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    one_by_one = Histogram("h", "h", buckets=bounds, registry=reg_a)
    bulk = Histogram("h", "h", buckets=bounds, registry=reg_b)
    for v in values:
        one_by_one.observe(v)
    tally = tally_module.HistogramTally(bulk, register=False)
    tally.values.extend(values)
    tally.flush()
    tally.flush()  # nothing held: adds nothing
    a, b = _samples(reg_a), _samples(reg_b)
    assert a.keys() == b.keys()
    for key in a:
        assert math.isclose(a[key], b[key], rel_tol=1e-12), key


def test_counter_tally_reaches_its_counter_at_scrape_time() -> None:
    from prometheus_client import REGISTRY, Counter

    counter = Counter("tally_test_total", "t", ["k"])
    held = tally_module.CounterTally(counter.labels("a"))
    for _ in range(5):
        held.inc()
    held.inc(2.5)
    assert REGISTRY.get_sample_value("tally_test_total", {"k": "a"}) == 7.5  # a collection flushes first
    assert held.n == 0


def test_tally_reaches_the_default_registry_at_scrape_time() -> None:
    def value(name: str, labels: dict[str, str] | None = None) -> float:
        from prometheus_client import REGISTRY
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    before_2xx = value("model_requests_total", {"code": "200"})
    before_lat = value("model_request_latency_seconds_count")
    before_nan = value("model_nan_scores_total", {"version": "vtally"})
    before_score = value("model_score_count", {"version": "vtally"})
    before_rows = value("model_predictions_total", {"version": "vtally"})
    before_amount = value("model_input_values_total", {"feature": "amount"})
    n_num = len(metrics.NUMERIC_FEATURES)
    n_cat = len(metrics.CATEGORICAL_FEATURES)
    num = np.ones((3, n_num))
    cat = np.zeros((3, n_cat), dtype=np.int64)
    for _ in range(2):
        metrics.TALLY.request(200, 0.003)
    metrics.TALLY.batch("vtally", 0.0004, [0.001, 0.002], [0.1, float("nan"), 0.9], num, cat, (5,) * n_cat)
    generate_latest()  # a scrape: the flush collector runs before the metrics are read
    assert value("model_requests_total", {"code": "200"}) - before_2xx == 2
    assert value("model_request_latency_seconds_count") - before_lat == 2
    assert value("model_nan_scores_total", {"version": "vtally"}) - before_nan == 1
    assert value("model_score_count", {"version": "vtally"}) - before_score == 2
    assert value("model_predictions_total", {"version": "vtally"}) - before_rows == 3
    assert value("model_input_values_total", {"feature": "amount"}) - before_amount == 3
