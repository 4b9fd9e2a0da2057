"""The gateway's input contract, config validation, /v1/recent and feedback, against real processes.

The gateway runs with the real feature store and two scripted replica peers (tests/gateway/peer.py) that
answer like model servers; the model server itself is exercised in test_gateway_e2e.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gwstack import Proc, http, metric, script, start_gateway, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DEFAULTS = {"amount_scale": 1.0, "amount_max": 50_000.0, "decision_threshold": 0.5, "model_fallback": "fail"}


@pytest.fixture(scope="module")
def gateway(log_dir: Path, featurestore: Proc, peers: dict[str, Proc]) -> Iterator[Proc]:
    models = {name: peer.url for name, peer in peers.items()}
    proc = start_gateway(log_dir, featurestore.url, models, {"health_check_ms": 0})
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def restore(gateway: Proc, peers: dict[str, Proc]) -> Iterator[None]:
    yield
    http.patch(gateway.url + "/admin/config", json=DEFAULTS).raise_for_status()
    for peer in peers.values():
        script(peer)


def score(gateway: Proc, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    return http.post(gateway.url + "/v1/score", content=content, headers={"content-type": "application/json"})


def test_round_trip_with_timings(gateway: Proc) -> None:
    r = score(gateway, transaction(1, hour=7))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["transaction_id"] == "t-test-1"
    assert body["score"] == 0.7  # the peer scores hour % 10 / 10
    assert body["decision"] == "decline"
    assert body["model_version"] == "v1"
    assert body["replica"] in ("model-1", "model-2")
    assert body["fallback"] is None
    timings = body["timings"]
    assert set(timings) == {"features_ms", "model_ms", "total_ms", "attempts"}
    assert 0 < timings["features_ms"] < timings["total_ms"] and 0 < timings["model_ms"] < timings["total_ms"]
    assert timings["attempts"] == [{"replica": body["replica"], "ms": timings["attempts"][0]["ms"], "outcome": "ok"}]


def test_decision_threshold(gateway: Proc) -> None:
    assert score(gateway, transaction(2, hour=3)).json()["decision"] == "approve"
    http.patch(gateway.url + "/admin/config", json={"decision_threshold": 0.25}).raise_for_status()
    assert score(gateway, transaction(2, hour=3)).json()["decision"] == "decline"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": None}, "amount"),
        ({"amount": -1}, "amount"),
        ({"amount": "12.5"}, "amount"),
        ({"amount": 50_000.01}, "amount"),
        ({"hour": 25}, "hour"),
        ({"hour": -1}, "hour"),
        ({"hour": 3.5}, "hour"),
        ({"hour": "3"}, "hour"),
        ({"card_present": "yes"}, "card_present"),
        ({"card_present": 1}, "card_present"),
        ({"country": "usa"}, "country"),
        ({"country": "us"}, "country"),
        ({"device_age_days": -3}, "device_age_days"),
        ({"merchant_category": ""}, "merchant_category"),
        ({"merchant_category": 5}, "merchant_category"),
        ({"transaction_id": ""}, "transaction_id"),
        ({"card_id": "../etc/passwd"}, "card_id"),
        ({"surprise": 1}, "surprise"),
        ({"card_id": "c999999"}, "card_id"),  # well-formed but unknown to the feature store
    ],
)
def test_contract_violations_are_422_naming_the_field(gateway: Proc, change: dict[str, Any], field: str) -> None:
    r = score(gateway, transaction(3, **change))
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}:") or f"{field}:" in r.json()["detail"]


def test_missing_field_and_non_json(gateway: Proc) -> None:
    body = transaction(4)
    del body["hour"]
    r = score(gateway, body)
    assert r.status_code == 422 and "hour: Field required" in r.json()["detail"]
    for bad in (b"{not json", b"[]", b"null", b"", "\u00e9t\u00e9".encode("latin-1")):
        r = score(gateway, bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["detail"].startswith("body:")
    assert http.get(gateway.url + "/v1/score").status_code == 405
    assert score(gateway, b'{"a": "' + b"x" * 70_000 + b'"}').status_code == 413


def test_nulls_and_unknown_categories_flow_and_are_counted(gateway: Proc) -> None:
    before = http.get(gateway.url + "/metrics").text
    r = score(gateway, transaction(5, device_age_days=None, merchant_category="crypto_exchange", country="ZZ"))
    assert r.status_code == 200, r.text
    after = http.get(gateway.url + "/metrics").text
    for name, field in [
        ("gateway_null_inputs_total", "device_age_days"),
        ("gateway_unknown_category_total", "merchant_category"),
        ("gateway_unknown_category_total", "country"),
    ]:
        assert metric(after, name, field=field) == metric(before, name, field=field) + 1
    recent = http.get(gateway.url + "/v1/recent?limit=1").json()["items"][0]
    assert recent["device_age_days"] is None and recent["merchant_category"] == "crypto_exchange"


def test_amount_scale_applies_before_amount_max(gateway: Proc) -> None:
    cents = transaction(6, amount=120_000)  # 1,200.00 sent in cents
    assert score(gateway, cents).status_code == 422
    http.patch(gateway.url + "/admin/config", json={"amount_scale": 0.01}).raise_for_status()
    r = score(gateway, cents)
    assert r.status_code == 200
    recent = http.get(gateway.url + "/v1/recent?limit=1").json()["items"][-1]
    assert recent["transaction_id"] == "t-test-6" and recent["amount"] == pytest.approx(1200.0)


def test_recent_window(gateway: Proc) -> None:
    mark = time.time()
    for i in range(100, 105):
        assert score(gateway, transaction(i)).status_code == 200
    body = http.get(gateway.url + "/v1/recent", params={"limit": 3}).json()
    assert [row["transaction_id"] for row in body["items"]] == ["t-test-102", "t-test-103", "t-test-104"]
    row = body["items"][-1]
    for key in ("amount", "hour", "device_age_days", "txn_count_24h", "avg_amount_30d", "account_age_days",
                "merchant_category", "country", "card_present", "home_country", "score", "model_version",
                "replica", "ts"):
        assert key in row
    since = http.get(gateway.url + "/v1/recent", params={"limit": 1000, "since": mark}).json()["items"]
    assert [r["transaction_id"] for r in since] == [f"t-test-{i}" for i in range(100, 105)]
    for params in ({"limit": 0}, {"limit": 10_001}, {"limit": "x"}, {"since": "nan"}, {"other": 1}):
        assert http.get(gateway.url + "/v1/recent", params=params).status_code == 422, params


def test_feedback_counts_confusion_outcomes(gateway: Proc) -> None:
    # The peer scores hour/10: hour 7 -> decline, hour 2 -> approve (threshold 0.5).
    cases = {"fb-tp": (7, 1, "tp"), "fb-fp": (7, 0, "fp"), "fb-tn": (2, 0, "tn"), "fb-fn": (2, 1, "fn")}
    before = http.get(gateway.url + "/metrics").text
    for tid, (hour, label, outcome) in cases.items():
        assert score(gateway, transaction(7, transaction_id=tid, hour=hour)).status_code == 200
        r = http.post(gateway.url + "/v1/feedback", json={"transaction_id": tid, "label": label})
        assert r.status_code == 202, r.text
        assert r.json()["outcome"] == outcome
    after = http.get(gateway.url + "/metrics").text
    for outcome in ("tp", "fp", "tn", "fn"):
        delta = metric(after, "gateway_feedback_total", model_version="v1", outcome=outcome) - metric(
            before, "gateway_feedback_total", model_version="v1", outcome=outcome
        )
        assert delta == 1, outcome
    r = http.post(gateway.url + "/v1/feedback", json={"transaction_id": "fb-tp", "label": 1})
    assert r.status_code == 409
    r = http.post(gateway.url + "/v1/feedback", json={"transaction_id": "never-seen", "label": 1})
    assert r.status_code == 404 and "never-seen" in r.json()["detail"]
    for bad in ({"transaction_id": "fb-tn", "label": 2}, {"transaction_id": "fb-tn"}, {"label": 1},
                {"transaction_id": "fb-tn", "label": True}, {"transaction_id": "fb-tn", "label": 1, "x": 0}):
        assert http.post(gateway.url + "/v1/feedback", json=bad).status_code == 422, bad


@pytest.mark.parametrize(
    "patch",
    [
        {"nope": 1},
        {"max_retries": -1},
        {"max_retries": "2"},
        {"model_timeout_ms": 0},
        {"retry_budget_ratio": 1.5},
        {"feature_fallback": "pray"},
        {"model_fallback": "default_features"},
        {"decision_threshold": 2},
        {"amount_scale": 0},
        {"replicas": {"model-1": "http://10.0.0.1:80"}},
        {"replicas": {"model-1": "http://127.0.0.1"}},
        {"replicas": {"bad name!": "http://127.0.0.1:9"}},
        {"replicas": "model-1"},
        {"drained": ["model-9"]},
        {"routing": {"v1": -1}},
        {"routing": {"v1": 0}},
    ],
)
def test_config_patch_validation(gateway: Proc, patch: dict[str, Any]) -> None:
    before = http.get(gateway.url + "/admin/config").json()
    r = http.patch(gateway.url + "/admin/config", json=patch)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert http.get(gateway.url + "/admin/config").json() == before


def test_scale_down_prunes_drained(gateway: Proc, peers: dict[str, Proc]) -> None:
    both = {name: peer.url for name, peer in peers.items()}
    try:
        r = http.patch(gateway.url + "/admin/config", json={"drained": ["model-2"]})
        assert r.status_code == 200
        r = http.patch(gateway.url + "/admin/config", json={"replicas": {"model-1": both["model-1"]}})
        assert r.status_code == 200 and r.json()["drained"] == []
        assert score(gateway, transaction(8)).json()["replica"] == "model-1"
    finally:
        http.patch(gateway.url + "/admin/config", json={"replicas": both, "drained": []}).raise_for_status()


def test_metrics_exposed(gateway: Proc) -> None:
    score(gateway, transaction(9))
    text = http.get(gateway.url + "/metrics").text
    for name in ("gateway_requests_total", "gateway_request_latency_seconds_bucket", "gateway_upstream_requests_total",
                 "gateway_upstream_latency_seconds_bucket", "gateway_predictions_total", "gateway_score_bucket",
                 "gateway_breaker_open", "gateway_replica_inflight", "process_resident_memory_bytes"):
        assert metric(text, name) > 0 or f"\n{name}{{" in text, name
    assert metric(text, "gateway_requests_total", route="score", code="200") >= 1


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _fuzzed_transaction() -> st.SearchStrategy[dict[str, Any]]:
    good = transaction(0)
    field = st.sampled_from(sorted(good))
    return st.builds(
        lambda mutations, drops, extra: {
            **{k: v for k, v in good.items() if k not in drops},
            **dict(mutations),
            **extra,
        },
        st.lists(st.tuples(field, _values), max_size=4),
        st.sets(field, max_size=2),
        st.dictionaries(st.text(max_size=8), _values, max_size=1),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(_fuzzed_transaction(), _values))
def test_fuzzed_inputs_never_5xx(gateway: Proc, body: Any) -> None:
    content = json.dumps(body, allow_nan=True)  # NaN/Infinity tokens are what sloppy clients really send
    r = http.post(gateway.url + "/v1/score", content=content, headers={"content-type": "application/json"})
    assert r.status_code in (200, 422), (content, r.status_code, r.text)
    assert "detail" in r.json() or "score" in r.json()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_fuzzed_bytes_never_5xx(gateway: Proc, raw: bytes) -> None:
    r = http.post(gateway.url + "/v1/score", content=raw)
    assert r.status_code == 422, (raw, r.text)


def test_no_torch_in_the_running_processes(gateway: Proc, featurestore: Proc) -> None:
    """The real processes (the feature store seeded its db on start), not just a fresh import."""
    for proc in (gateway, featurestore):
        maps = Path(f"/proc/{proc.popen.pid}/maps")
        if not maps.exists():
            pytest.skip("needs /proc")
        loaded = maps.read_text()
        assert "libtorch" not in loaded and "/torch/" not in loaded, proc.name
