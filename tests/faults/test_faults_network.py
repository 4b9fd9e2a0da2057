"""network.toxic and network.down on real hops: the effect shows in real requests, revert removes it, twice."""

from __future__ import annotations

import httpx
import pytest
from faultkit import Lab, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]


def _attempt_ms(scored: list[dict], replica: str) -> list[float]:
    return [a["ms"] for s in scored for a in s["timings"]["attempts"] if a["replica"] == replica]


def _both_replicas_take_traffic(flab: Lab) -> bool:
    scored = flab.scores(6)
    return bool(_attempt_ms(scored, "model-1") and _attempt_ms(scored, "model-2"))


def test_latency_toxic_slows_exactly_that_replica_and_reverts(flab: Lab) -> None:
    # A replica an earlier test restarted may still sit out of the rotation (a breaker or an ejection running out):
    # the comparison below needs both in it first.
    wait_until(lambda: _both_replicas_take_traffic(flab), 30, what="the gateway routing to both replicas")
    applied = flab.apply({"id": "slow-link", "kind": "network", "action": "toxic", "target": "model-1",
                          "params": {"type": "latency", "latency": 300, "jitter": 20}})
    assert applied["description"] == "latency 300±20 ms on the hop gateway→model-1 (downstream)"
    toxics = flab.proxies()["model-1"]["toxics"]
    assert [(t["name"], t["type"], t["attributes"]) for t in toxics] == [
        ("fl_slow-link", "latency", {"latency": 300, "jitter": 20})]

    scored = flab.scores(12)
    slow, fast = _attempt_ms(scored, "model-1"), _attempt_ms(scored, "model-2")
    assert slow and fast, "both replicas should take traffic"
    assert min(slow) >= 250, slow
    assert max(fast) < 250, fast

    record = flab.revert("slow-link")
    assert record["active"] is False and record["notes"] == []
    assert flab.proxies()["model-1"]["toxics"] == []
    scored = flab.scores(12)
    assert max(_attempt_ms(scored, "model-1")) < 250

    again = flab.revert("slow-link")  # a second revert: harmless, says so
    assert again["active"] is False and any("already gone" in n for n in again["notes"])


def test_hop_down_refuses_connections_and_the_gateway_falls_back(flab: Lab) -> None:
    flab.apply({"id": "fs-hop-down", "kind": "network", "action": "down", "target": "feature-store"})
    assert flab.proxies()["feature-store"]["enabled"] is False
    with pytest.raises(httpx.ConnectError):
        httpx.get(flab.proxy_url("feature-store") + "/healthz", timeout=2)
    # the feature store itself is fine: only the hop is down
    assert httpx.get(flab.url("feature-store") + "/healthz", timeout=2).status_code == 200
    r = flab.score()
    assert r.status_code == 200 and r.json()["fallback"] == "default_features"

    flab.revert("fs-hop-down")
    flab.revert("fs-hop-down")
    assert flab.proxies()["feature-store"]["enabled"] is True
    r = flab.score()
    assert r.status_code == 200 and r.json()["fallback"] is None
