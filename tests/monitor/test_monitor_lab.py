"""The monitor inside the real lab (`faultline up -d`, the shared `stack` fixture): its JSON API, and a real
Toxiproxy latency toxic on the model hops flipping the default gateway-latency SLO to violated and back.

Traffic comes from a real locust load generator of our own, sent through the stack's public proxy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kit import ServiceProc, free_port, loadgen_argv
from monhelpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TOXIC = "monitor-test-latency"


@pytest.fixture(scope="module")
def traffic(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProc]:
    port = free_port()
    argv = loadgen_argv(stack.public_url, 30, "baseline", port, feedback_delay_s=1, seed=5) + ["--log-level", "WARNING"]
    proc = ServiceProc("monitor-loadgen", argv, port, Path(tmp_path_factory.mktemp("monitor-lab")))
    try:
        yield proc
    finally:
        proc.stop()


def get(stack: Any, path: str, **params: Any) -> httpx.Response:
    return stack.client.get(stack.lab_url + path, params=params)


def slo(stack: Any, name: str) -> dict[str, Any]:
    return next(s for s in get(stack, "/api/slo").json()["slos"] if s["name"] == name)


def test_the_lab_serves_the_monitors_view(stack: Any, traffic: ServiceProc) -> None:
    metrics = wait_for("gateway traffic in /api/metrics",
                       lambda: (m := get(stack, "/api/metrics").json())["services"].get("gateway", {}).get("rps")
                       and m["services"]["gateway"]["rps"] > 10 and m, 45)
    services = metrics["services"]
    assert {"gateway", "feature-store", "model-1", "model-2", "registry", "netproxy"} <= set(services)
    assert all(s["up"] for s in services.values()), {n: s.get("scrape_error") for n, s in services.items()}
    assert services["netproxy"]["state"] == "running" and services["netproxy"].get("rps") is None
    assert services["gateway"]["p99_ms"] > 0 and services["model-1"]["versions"][0]["version"] == "v1"
    # The stack is shared with other test folders (some restart replicas): the monitor must agree with the
    # supervisor, whatever the count.
    supervised = {s["name"]: s for s in stack.status()["services"]}
    assert services["model-1"]["pid"] == supervised["model-1"]["pid"]
    assert services["model-1"]["restarts"] == supervised["model-1"]["restarts"]

    names = get(stack, "/api/series").json()["names"]
    assert "gateway.rps" in names and "model-2.p99_ms" in names
    points = wait_for("three points of gateway.rps",
                      lambda: len(p := get(stack, "/api/series", name="gateway.rps").json()["points"]) >= 3 and p, 30)
    assert points[-1][1] > 0
    assert get(stack, "/api/series", name="no.such.series").status_code == 404

    drift = get(stack, "/api/drift", refresh="true").json()
    assert drift["reference_version"] == "v1" and drift["window"] > 0
    assert {f["name"] for f in drift["features"]} == {"amount", "hour", "device_age_days", "merchant_category",
                                                     "country", "card_present"}

    bad = stack.client.put(stack.lab_url + "/api/slo", json=[{"name": "x", "kind": "error_rate", "threshold": 7}])
    assert bad.status_code == 422 and "threshold" in bad.json()["detail"]
    assert "gateway-latency" in {s["name"] for s in get(stack, "/api/slo").json()["slos"]}  # unchanged
    assert get(stack, "/api/monitor/overhead").json()["tick_cpu_ms_mean"] < 50  # 5% of a core at 1 Hz


def test_a_latency_toxic_flips_the_latency_slo_and_back(stack: Any, traffic: ServiceProc) -> None:
    netproxy = stack.status()["netproxy_url"]
    models = [p["name"] for p in stack.status()["proxies"] if p["name"].startswith("model-")]
    assert models
    wait_for("a healthy gateway-latency SLO", lambda: slo(stack, "gateway-latency")["state"] == "ok", 45)
    started = time.time()
    try:
        for name in models:
            r = httpx.post(f"{netproxy}/proxies/{name}/toxics", timeout=10, trust_env=False,
                           json={"name": TOXIC, "type": "latency", "stream": "downstream",
                                 "attributes": {"latency": 400, "jitter": 0}})
            assert r.status_code == 200, r.text
        violated = wait_for("gateway-latency violated",
                            lambda: (s := slo(stack, "gateway-latency"))["state"] == "violated" and s, 40)
        assert violated["value"] > 250
    finally:
        for name in models:
            httpx.delete(f"{netproxy}/proxies/{name}/toxics/{TOXIC}", timeout=10, trust_env=False)
    wait_for("gateway-latency restored", lambda: slo(stack, "gateway-latency")["state"] == "ok", 45)
    events = [e for e in get(stack, "/api/slo").json()["events"]
              if e["slo"] == "gateway-latency" and e["at"] >= started - 1]
    assert [e["state"] for e in events][-2:] == ["violated", "restored"]
    assert events[-2]["value"] > 250 and events[-1]["value"] <= 250
