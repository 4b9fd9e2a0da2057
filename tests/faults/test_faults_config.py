"""config.push and the dependency faults (feature store slow or down) on the real stack, and the revert."""

from __future__ import annotations

import statistics

import httpx
import pytest
from faultkit import Lab, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]


def test_config_push_changes_live_and_start_up_config_and_revert_restores_both(flab: Lab) -> None:
    before = flab.config("gateway")
    argv = flab.service("gateway")["argv"]
    applied = flab.apply({"id": "bad-push", "kind": "config", "action": "push", "target": "gateway",
                          "params": {"values": {"max_retries": 0, "model_timeout_ms": 40.0, "amount_scale": 100.0}}})
    assert applied["changes"]["config_before"] == {k: before[k] for k in ("max_retries", "model_timeout_ms",
                                                                         "amount_scale")}
    live = flab.config("gateway")
    assert (live["max_retries"], live["model_timeout_ms"], live["amount_scale"]) == (0, 40.0, 100.0)
    assert '"amount_scale":100.0' in flab.service("gateway")["argv"][-1]
    # the pushed scale is really applied: a 30.00 amount reaches the model as 3000
    t = flab.transaction() | {"amount": 30.0}
    assert flab.http.post(flab.stack.public_url + "/v1/score", json=t).status_code == 200
    recent = flab.http.get(flab.url("gateway") + "/v1/recent", params={"limit": 1}).json()["items"][-1]
    assert recent["transaction_id"] == t["transaction_id"] and recent["amount"] == pytest.approx(3000.0)

    flab.revert("bad-push")
    assert flab.config("gateway") == before
    assert flab.service("gateway")["argv"] == argv
    flab.revert("bad-push")
    assert flab.config("gateway") == before


def test_slow_dependency_shows_in_feature_time(flab: Lab) -> None:
    flab.apply({"id": "slow-fs", "kind": "dependency", "action": "slow", "params": {"latency_ms": 150}})
    assert flab.config("feature-store")["latency_ms"] == 150
    slow = [s["timings"]["features_ms"] for s in flab.scores(6)]
    assert min(slow) >= 140 and all(s["fallback"] is None for s in flab.scores(2)), slow
    assert flab.proxies()["feature-store"]["toxics"] == []  # the hop stays clean: the store itself is slow

    flab.revert("slow-fs")
    assert flab.config("feature-store")["latency_ms"] == 0
    fast = [s["timings"]["features_ms"] for s in flab.scores(6)]
    assert statistics.median(fast) < 100, fast
    flab.revert("slow-fs")


def test_dependency_down_stops_the_store_and_the_gateway_falls_back(flab: Lab) -> None:
    applied = flab.apply({"id": "fs-down", "kind": "dependency", "action": "down", "target": "feature-store"})
    assert applied["description"] == "the feature-store is down (process stopped)"
    assert flab.service("feature-store")["state"] == "stopped"
    with pytest.raises(httpx.ConnectError):
        httpx.get(flab.url("feature-store") + "/healthz", timeout=2)
    r = flab.score()
    assert r.status_code == 200 and r.json()["fallback"] == "default_features"

    flab.revert("fs-down")
    wait_until(lambda: flab.service("feature-store")["ready"], 30, what="feature store back")
    again = flab.revert("fs-down")
    assert any("already running" in n for n in again["notes"])
    r = flab.score()
    assert r.status_code == 200 and r.json()["fallback"] is None
