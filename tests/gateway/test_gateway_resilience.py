"""Retries, outlier ejection, circuit breaker, drain, canary split, health checks, fallbacks and the retry budget.

Real processes: the gateway, the feature store, and two scripted replica peers (tests/gateway/peer.py) whose
behaviour each test sets (errors, NaN, hangs, dropped connections); a "down" replica is a port nobody
listens on. Bounds are generous: these assert behaviour, not speed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gwstack import Proc, free_port, http, metric, script, start_gateway, transaction

BASE = {
    "drained": [],
    "routing": {},
    "health_check_ms": 0,
    "max_retries": 2,
    "retry_backoff_ms": 1,
    "retry_budget_ratio": 0.2,
    "breaker_failures": 5,
    "breaker_reset_ms": 2000,
    "outlier_errors": 5,
    "outlier_ejection_ms": 5000,
    "model_timeout_ms": 1000,
    "feature_timeout_ms": 250,
    "feature_fallback": "default_features",
    "model_fallback": "fail",
}


@pytest.fixture(scope="module")
def gateway(log_dir: Path, featurestore: Proc, peers: dict[str, Proc]) -> Iterator[Proc]:
    proc = start_gateway(log_dir, featurestore.url, {n: p.url for n, p in peers.items()}, {"health_check_ms": 0})
    yield proc
    proc.stop()


def configure(gateway: Proc, **changes: Any) -> dict[str, Any]:
    r = http.patch(gateway.url + "/admin/config", json=changes)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(autouse=True)
def fresh(gateway: Proc, featurestore: Proc, peers: dict[str, Proc]) -> Iterator[None]:
    """Every test starts from fresh replica state (replicas removed and re-added) and default knobs."""
    configure(gateway, replicas={}, drained=[], routing={}, retry_budget_ratio=1.0)
    configure(gateway, replicas={n: p.url for n, p in peers.items()}, **BASE)
    for peer in peers.values():
        script(peer)
    yield
    http.patch(featurestore.url + "/admin/config", json={"latency_ms": 0, "error_rate": 0})


def score(gateway: Proc, i: int = 0, **fields: Any) -> httpx.Response:
    return http.post(gateway.url + "/v1/score", json=transaction(i, **fields), timeout=30)


def replicas_state(gateway: Proc) -> dict[str, Any]:
    return http.get(gateway.url + "/v1/replicas").json()["replicas"]


def test_replica_down_retries_elsewhere_then_ejected(gateway: Proc, peers: dict[str, Proc]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    configure(gateway, replicas={**{n: p.url for n, p in peers.items()}, "model-3": dead}, breaker_failures=1000)
    served, failed_attempts = Counter(), []
    for i in range(80):
        r = score(gateway, i)
        assert r.status_code == 200, r.text  # every failure on model-3 was retried on a live replica
        served[r.json()["replica"]] += 1
        tried = [a["replica"] for a in r.json()["timings"]["attempts"]]
        assert len(tried) == len(set(tried))  # a retry goes to another replica
        failed_attempts += [a for a in r.json()["timings"]["attempts"] if a["outcome"] != "ok"]
    assert "model-3" not in served
    assert failed_attempts and {a["replica"] for a in failed_attempts} == {"model-3"}
    assert {a["outcome"] for a in failed_attempts} == {"connect_error"}
    assert len(failed_attempts) == 5  # outlier_errors consecutive errors, then ejected: no more attempts
    assert replicas_state(gateway)["model-3"]["ejected"] is True
    text = http.get(gateway.url + "/metrics").text
    assert metric(text, "gateway_replica_events_total", replica="model-3", event="ejected") == 1
    assert metric(text, "gateway_replica_ejected", replica="model-3") == 1
    assert metric(text, "gateway_upstream_requests_total", replica="model-3", outcome="connect_error") == 5


def test_last_replica_is_never_ejected(gateway: Proc, peers: dict[str, Proc]) -> None:
    configure(gateway, replicas={"model-1": peers["model-1"].url}, breaker_failures=1000, max_retries=0)
    script(peers["model-1"], mode="error")
    for i in range(8):
        assert score(gateway, i).status_code == 503
    assert replicas_state(gateway)["model-1"]["ejected"] is False
    script(peers["model-1"])
    assert score(gateway, 9).status_code == 200


def test_breaker_opens_then_half_open_probe_closes_it(gateway: Proc, peers: dict[str, Proc]) -> None:
    configure(gateway, replicas={"model-1": peers["model-1"].url}, breaker_failures=3, breaker_reset_ms=600,
              outlier_errors=1000, max_retries=0)
    script(peers["model-1"], mode="error")
    for i in range(3):
        r = score(gateway, i)
        assert r.status_code == 503 and "model-1: error" in r.json()["detail"]
    assert replicas_state(gateway)["model-1"]["breaker"] == "open"
    r = score(gateway, 3)  # open: fails fast without calling the replica
    assert r.status_code == 503 and "no routable replica" in r.json()["detail"]
    assert r.json()["timings"]["attempts"] == []
    assert metric(http.get(gateway.url + "/metrics").text, "gateway_breaker_open", replica="model-1") == 1
    script(peers["model-1"])  # recovered; the breaker lets one probe through after breaker_reset_ms
    time.sleep(0.8)
    r = score(gateway, 4)
    assert r.status_code == 200 and r.json()["replica"] == "model-1"
    assert replicas_state(gateway)["model-1"]["breaker"] == "closed"


def test_failed_probe_reopens_breaker(gateway: Proc, peers: dict[str, Proc]) -> None:
    configure(gateway, replicas={"model-1": peers["model-1"].url}, breaker_failures=2, breaker_reset_ms=400,
              outlier_errors=1000, max_retries=0)
    script(peers["model-1"], mode="error")
    for i in range(2):
        score(gateway, i)
    time.sleep(0.6)
    assert score(gateway, 2).json()["timings"]["attempts"][0]["outcome"] == "error"  # the probe, failed
    r = score(gateway, 3)
    assert r.json()["timings"]["attempts"] == []  # open again


@pytest.mark.parametrize(
    ("mode", "outcome"), [("nan", "nan"), ("garbage", "bad_response"), ("truncate", "connection_closed")]
)
def test_bad_answers_count_as_errors_and_are_retried(
    gateway: Proc, peers: dict[str, Proc], mode: str, outcome: str
) -> None:
    configure(gateway, outlier_errors=1000, breaker_failures=1000, retry_budget_ratio=1.0)
    script(peers["model-1"], mode=mode)
    before = metric(http.get(gateway.url + "/metrics").text, "gateway_upstream_requests_total", outcome=outcome)
    for i in range(30):
        r = score(gateway, i)
        assert r.status_code == 200, r.text
        assert r.json()["replica"] == "model-2"
    after = metric(http.get(gateway.url + "/metrics").text, "gateway_upstream_requests_total", outcome=outcome)
    assert after - before >= 3  # p2c sends a fair share of first attempts to model-1


def test_timeout_is_retried_on_the_other_replica(gateway: Proc, peers: dict[str, Proc]) -> None:
    configure(gateway, model_timeout_ms=200, outlier_errors=1000, breaker_failures=1000, retry_budget_ratio=1.0)
    script(peers["model-1"], mode="hang")
    timeouts = 0
    for i in range(12):
        started = time.monotonic()
        r = score(gateway, i)
        assert r.status_code == 200 and r.json()["replica"] == "model-2"
        attempts = r.json()["timings"]["attempts"]
        if attempts[0]["outcome"] == "timeout":
            timeouts += 1
            assert attempts[0]["ms"] >= 190
            assert time.monotonic() - started < 5
    assert timeouts >= 1


def test_drain_moves_all_traffic(gateway: Proc) -> None:
    configure(gateway, drained=["model-1"])
    served = Counter(score(gateway, i).json()["replica"] for i in range(30))
    assert served == {"model-2": 30}
    assert replicas_state(gateway)["model-1"]["drained"] is True
    configure(gateway, drained=[])
    served = Counter(score(gateway, i).json()["replica"] for i in range(40))
    assert set(served) == {"model-1", "model-2"}


def test_canary_split_by_weight(gateway: Proc, peers: dict[str, Proc]) -> None:
    configure(gateway, routing={"v1": 0.8, "v2": 0.2})
    versions = Counter(score(gateway, i).json()["model_version"] for i in range(400))
    assert set(versions) == {"v1", "v2"}
    assert 0.12 <= versions["v2"] / 400 <= 0.28  # binomial sd 0.02: a 4-sigma band
    sent = Counter()
    for peer in peers.values():
        sent.update(http.get(peer.url + "/stats").json())
    assert sent["v2"] == versions["v2"]  # the version really travels in the predict body
    text = http.get(gateway.url + "/metrics").text
    assert metric(text, "gateway_predictions_total", model_version="v2") >= versions["v2"]


def test_health_checks_route_around_unready_replica(gateway: Proc, peers: dict[str, Proc]) -> None:
    script(peers["model-1"], mode="hang")  # its /readyz answers 503
    configure(gateway, health_check_ms=100, model_timeout_ms=5000)
    deadline = time.monotonic() + 15
    while replicas_state(gateway)["model-1"]["healthy"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert replicas_state(gateway)["model-1"]["healthy"] is False
    for i in range(10):
        r = score(gateway, i)
        assert r.json()["timings"]["attempts"] == [{"replica": "model-2", "ms": pytest.approx(0, abs=5000),
                                                    "outcome": "ok"}]
    script(peers["model-1"])
    deadline = time.monotonic() + 15
    while not replicas_state(gateway)["model-1"]["healthy"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert replicas_state(gateway)["model-1"]["healthy"] is True


def test_model_fallback_rule_based_and_fail(gateway: Proc, peers: dict[str, Proc]) -> None:
    for peer in peers.values():
        script(peer, mode="error")
    configure(gateway, outlier_errors=1000, breaker_failures=1000)
    r = score(gateway, 1)
    assert r.status_code == 503
    assert "model unavailable" in r.json()["detail"] and "model_fallback is 'fail'" in r.json()["detail"]
    assert len(r.json()["timings"]["attempts"]) == 3  # first try + max_retries
    configure(gateway, model_fallback="rule_based")
    r = score(gateway, 2, country="BR", hour=2, card_present=False)
    assert r.status_code == 200
    body = r.json()
    assert body["fallback"] == "rule_based" and body["model_version"] == "rules-v1" and body["replica"] is None
    assert {"night_hour", "card_not_present"} <= set(body["rules"])
    assert 0 < body["score"] < 1


def test_feature_store_errors_fall_back_to_default_features(gateway: Proc, featurestore: Proc) -> None:
    http.patch(featurestore.url + "/admin/config", json={"error_rate": 1.0}).raise_for_status()
    r = score(gateway, 1)
    assert r.status_code == 200 and r.json()["fallback"] == "default_features"
    recent = http.get(gateway.url + "/v1/recent?limit=1").json()["items"][-1]
    assert (recent["txn_count_24h"], recent["avg_amount_30d"], recent["home_country"]) == (2, 60.0, "US")
    configure(gateway, feature_fallback="fail")
    r = score(gateway, 2)
    assert r.status_code == 503 and "feature store unavailable" in r.json()["detail"]
    text = http.get(gateway.url + "/metrics").text
    assert metric(text, "gateway_fallbacks_total", kind="default_features") >= 1
    assert metric(text, "gateway_unavailable_total", dependency="features") >= 1


def test_slow_feature_store_times_out_into_fallback(gateway: Proc, featurestore: Proc) -> None:
    http.patch(featurestore.url + "/admin/config", json={"latency_ms": 500}).raise_for_status()
    configure(gateway, feature_timeout_ms=100)
    r = score(gateway, 1)
    assert r.status_code == 200 and r.json()["fallback"] == "default_features"
    assert 90 <= r.json()["timings"]["features_ms"] < 450


def test_feature_store_down(log_dir: Path, peers: dict[str, Proc]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway(log_dir, dead, {n: p.url for n, p in peers.items()}, {"health_check_ms": 0}, name="gw-nofs")
    try:
        r = http.post(gw.url + "/v1/score", json=transaction(1))
        assert r.status_code == 200 and r.json()["fallback"] == "default_features"
        http.patch(gw.url + "/admin/config", json={"feature_fallback": "fail"}).raise_for_status()
        r = http.post(gw.url + "/v1/score", json=transaction(2))
        assert r.status_code == 503
        assert "feature store unavailable (cannot connect" in r.json()["detail"]
    finally:
        gw.stop()


def test_retry_budget_caps_retries(gateway: Proc, peers: dict[str, Proc]) -> None:
    for peer in peers.values():
        script(peer, mode="error")
    configure(gateway, retry_budget_ratio=0.0, outlier_errors=1000, breaker_failures=1000)
    before = http.get(gateway.url + "/metrics").text
    started = time.monotonic()
    for i in range(40):
        assert score(gateway, i).status_code == 503
    elapsed = time.monotonic() - started
    after = http.get(gateway.url + "/metrics").text
    retries = metric(after, "gateway_retries_total") - metric(before, "gateway_retries_total")
    refused = metric(after, "gateway_retry_budget_exhausted_total") - metric(
        before, "gateway_retry_budget_exhausted_total"
    )
    # Without a budget 40 requests would retry 80 times; the bucket holds 10 and refills 1/s.
    assert 10 <= retries <= 10 + elapsed + 1
    assert refused >= 40 - retries / 2 - 1
