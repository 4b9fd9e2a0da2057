"""The Prometheus text parser against real prometheus_client output (and its own parser as the oracle)."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lab.monitor import prom


def _registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    requests = Counter("gateway_requests_total", "requests", ["route", "code"], registry=reg)
    requests.labels("score", "200").inc(41)
    requests.labels("score", "503").inc(2)
    requests.labels("feedback", "202").inc(7)
    lat = Histogram("gateway_request_latency_seconds", "latency", ["route"], registry=reg,
                    buckets=(0.01, 0.1, 1.0))
    for v in (0.005, 0.05, 0.05, 0.5, 3.0):
        lat.labels("score").observe(v)
    info = Gauge("model_info", "loaded", ["version", "sha256"], registry=reg)
    info.labels("v1", 'odd "quoted" \\ value\nwith newline').set(1)
    Gauge("model_queue_depth", "depth", registry=reg).set(3)
    return reg


def test_parses_real_exposition_like_prometheus_client_does() -> None:
    text = generate_latest(_registry()).decode()
    parsed = prom.parse(text)
    assert parsed.errors == []
    oracle = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            oracle[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert parsed.samples == oracle
    assert parsed.get("gateway_requests_total", route="score", code="503") == 2.0
    assert parsed.get("gateway_request_latency_seconds_bucket", route="score", le="+Inf") == 5.0
    assert parsed.get("gateway_request_latency_seconds_bucket", route="score", le="0.1") == 3.0
    assert parsed.types["gateway_request_latency_seconds"] == "histogram"
    assert parsed.types["gateway_requests_total"] == "counter"


def test_unescapes_label_values() -> None:
    parsed = prom.parse(generate_latest(_registry()).decode())
    shas = [dict(labels)["sha256"] for (name, labels) in parsed.samples if name == "model_info"]
    assert shas == ['odd "quoted" \\ value\nwith newline']


def test_created_series_are_dropped_unless_asked_for() -> None:
    text = generate_latest(_registry()).decode()
    assert not any(name.endswith("_created") for name, _ in prom.parse(text).samples)
    assert any(name.endswith("_created") for name, _ in prom.parse(text, keep_created=True).samples)


def test_bad_lines_are_reported_and_the_rest_kept() -> None:
    text = "\n".join([
        "# TYPE ok_total counter",
        "ok_total 5",
        "broken{label=unquoted} 1",
        "no_value_here",
        'bad_value{a="b"} twelve',
        'with_ts{a="b"} 2.5 1700000000000',
        "inf_gauge +Inf",
        "nan_gauge NaN",
        "",
    ])
    parsed = prom.parse(text)
    assert parsed.get("ok_total") == 5.0
    assert parsed.get("with_ts", a="b") == 2.5
    assert parsed.get("inf_gauge") == math.inf
    assert math.isnan(parsed.get("nan_gauge"))
    assert len(parsed.errors) == 3
    assert any("line 3" in e for e in parsed.errors)
