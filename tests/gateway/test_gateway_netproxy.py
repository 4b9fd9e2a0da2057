"""The gateway behind the lab's real network proxy (services.netproxy, Toxiproxy API) on every upstream hop.

This is how the lab wires it: the gateway only knows the proxies' listen addresses. Faults are applied with
the Toxiproxy API (disable a proxy, latency and reset_peer toxics), and the gateway's client must reconnect
once the proxy has dropped its pooled connections. Skipped while services.netproxy is not there.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gwstack import Proc, free_port, http, start_gateway, start_netproxy, transaction
from kit import REPO


def _netproxy_landed() -> bool:
    """Committed, not merely present: a shared working tree can hold someone's half-finished netproxy."""
    main = "services/netproxy/__main__.py"
    if not (REPO / main).exists():
        return False
    try:
        argv = ["git", "ls-files", "--error-unmatch", main]
        tracked = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return True  # no git to ask: the file is there, use it
    return tracked.returncode == 0 or tracked.returncode == 128 and b"not a git repository" in tracked.stderr


if not _netproxy_landed():
    pytest.skip("services.netproxy has not landed (not committed) yet", allow_module_level=True)


@pytest.fixture(scope="module")
def netproxy(log_dir: Path) -> Iterator[Proc]:
    proc = start_netproxy(log_dir)
    yield proc
    proc.stop()


def add_proxy(netproxy: Proc, name: str, upstream: str) -> str:
    r = http.post(netproxy.url + "/proxies", json={"name": name, "listen": "127.0.0.1:0", "upstream": upstream})
    assert r.status_code == 201, r.text
    return "http://" + r.json()["listen"]


@pytest.fixture(scope="module")
def proxied(log_dir: Path, netproxy: Proc, featurestore: Proc, peers: dict[str, Proc]) -> Iterator[Proc]:
    fs = add_proxy(netproxy, "feature-store", featurestore.url.removeprefix("http://"))
    models = {name: add_proxy(netproxy, name, peer.url.removeprefix("http://")) for name, peer in peers.items()}
    config = {"health_check_ms": 0, "outlier_errors": 1000, "breaker_failures": 1000, "retry_budget_ratio": 1.0}
    gateway = start_gateway(log_dir, fs, models, config, name="gw-proxied")
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def reset(netproxy: Proc) -> Iterator[None]:
    yield
    assert http.post(netproxy.url + "/reset").status_code == 204


def score(gateway: Proc, i: int, **fields: Any) -> dict[str, Any]:
    r = http.post(gateway.url + "/v1/score", json=transaction(i, **fields))
    assert r.status_code == 200, r.text
    return r.json()


def test_scores_through_the_proxies(proxied: Proc) -> None:
    served = Counter(score(proxied, i)["replica"] for i in range(30))
    assert set(served) == {"model-1", "model-2"}


def test_disabled_feature_store_proxy_then_reconnect(proxied: Proc, netproxy: Proc) -> None:
    assert score(proxied, 1)["fallback"] is None  # pooled connections to the proxy exist now
    r = http.post(netproxy.url + "/proxies/feature-store", json={"enabled": False})
    assert r.status_code == 200
    body = score(proxied, 2)
    assert body["fallback"] == "default_features"
    http.post(netproxy.url + "/proxies/feature-store", json={"enabled": True}).raise_for_status()
    assert all(score(proxied, i)["fallback"] is None for i in range(3, 8))


def test_latency_toxic_on_feature_store_hits_the_timeout(proxied: Proc, netproxy: Proc) -> None:
    http.patch(proxied.url + "/admin/config", json={"feature_timeout_ms": 100}).raise_for_status()
    try:
        r = http.post(netproxy.url + "/proxies/feature-store/toxics",
                      json={"type": "latency", "attributes": {"latency": 400}})
        assert r.status_code == 200, r.text
        body = score(proxied, 1)
        assert body["fallback"] == "default_features"
        assert 90 <= body["timings"]["features_ms"] < 390
    finally:
        http.patch(proxied.url + "/admin/config", json={"feature_timeout_ms": 250}).raise_for_status()
    http.post(netproxy.url + "/reset").raise_for_status()
    assert score(proxied, 2)["fallback"] is None


def test_reset_peer_on_one_replica_is_retried_on_the_other(proxied: Proc, netproxy: Proc) -> None:
    r = http.post(netproxy.url + "/proxies/model-1/toxics", json={"type": "reset_peer", "attributes": {"timeout": 0}})
    assert r.status_code == 200, r.text
    outcomes = Counter()
    for i in range(20):
        body = score(proxied, i)
        assert body["replica"] == "model-2"
        outcomes.update(a["outcome"] for a in body["timings"]["attempts"] if a["replica"] == "model-1")
    assert outcomes and set(outcomes) <= {"connection_closed", "connect_error"}


def test_replica_proxy_with_dead_upstream(proxied: Proc, netproxy: Proc, peers: dict[str, Proc]) -> None:
    dead = add_proxy(netproxy, "model-dead", f"127.0.0.1:{free_port()}")
    try:
        http.patch(proxied.url + "/admin/config",
                   json={"replicas": {"model-2": peers["model-2"].url, "model-dead": dead}}).raise_for_status()
        outcomes = Counter()
        for i in range(20):
            body = score(proxied, i)
            assert body["replica"] == "model-2"
            outcomes.update(a["outcome"] for a in body["timings"]["attempts"] if a["replica"] == "model-dead")
        assert outcomes and set(outcomes) == {"connection_closed"}  # the proxy accepts, then hangs up
    finally:
        models = {"model-1": None, "model-2": None}
        for name in models:
            models[name] = "http://" + http.get(netproxy.url + f"/proxies/{name}").json()["listen"]
        http.patch(proxied.url + "/admin/config", json={"replicas": models}).raise_for_status()
        http.delete(netproxy.url + "/proxies/model-dead")
