"""The load generator against the real stack (`faultline up -d` via the shared `stack` fixture).

Through the `gateway` proxy, at 40 rps baseline: the gateway's own counters agree with locust's statistics and
with the target, live accuracy from the late labels is high, and every label is accepted. Then unit-change
traffic makes the monitor's drift report flag `amount` and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lgharness import Loadgen, start_loadgen, wait_until

from lab.monitor.drift import Reference, drift_report
from lab.monitor.providers import production_meta

pytestmark = [pytest.mark.stack, pytest.mark.slow]

RPS = 40


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric_name, _, rest = series.partition("{")
        if metric_name == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total


def snapshot(gateway_url: str, lg: Loadgen) -> dict[str, Any]:
    text = httpx.get(gateway_url + "/metrics", timeout=10).text
    stats = httpx.get(lg.url + "/stats/requests", timeout=10).json()
    score = next((s for s in stats["stats"] if s["name"] == "/v1/score"), {"num_requests": 0})
    return {
        "t": time.monotonic(),
        "gw_score": metric(text, "gateway_requests_total", route="score"),
        "gw_score_ok": metric(text, "gateway_requests_total", route="score", code="200"),
        "feedback": {o: metric(text, "gateway_feedback_total", outcome=o) for o in ("tp", "fp", "tn", "fn")},
        "locust_score": score["num_requests"],
        "state": lg.client.state(),
    }


@pytest.fixture(scope="module")
def lg_stack(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Loadgen]]:
    handle = start_loadgen(
        stack.public_url, RPS, tmp_path_factory.mktemp("loadgen-stack"), feedback_delay_s=1.0, seed=7
    )
    try:
        yield stack, handle
    finally:
        handle.stop()


def test_steady_traffic_agrees_with_gateway_metrics_and_accuracy_is_high(lg_stack: tuple[Any, Loadgen]) -> None:
    stack, lg = lg_stack
    gateway = stack.topology.service_url("gateway")  # direct: metrics of the service itself, not via the proxy
    lg.client.configure(rps=RPS, profile="baseline")
    time.sleep(6)  # warm-up: pool spawned, first labels past their delay
    a = snapshot(gateway, lg)
    time.sleep(12)
    b = snapshot(gateway, lg)
    span = b["t"] - a["t"]

    gw_rate = (b["gw_score"] - a["gw_score"]) / span
    locust_rate = (b["locust_score"] - a["locust_score"]) / span
    achieved = b["state"]["achieved_rps"]
    print(f"\nstack @ {RPS} rps: gateway {gw_rate:.1f} rps, locust {locust_rate:.1f} rps, loadgen {achieved} rps")
    assert RPS * 0.75 <= gw_rate <= RPS * 1.25, gw_rate
    assert RPS * 0.75 <= achieved <= RPS * 1.25, b["state"]
    # Same traffic seen from both ends: the counts over the same window agree closely.
    assert abs(gw_rate - locust_rate) <= 0.1 * RPS, (gw_rate, locust_rate)
    assert b["gw_score_ok"] - a["gw_score_ok"] == b["gw_score"] - a["gw_score"]  # all 200 while healthy

    fb = {o: b["feedback"][o] - a["feedback"][o] for o in ("tp", "fp", "tn", "fn")}
    labelled = sum(fb.values())
    accuracy = (fb["tp"] + fb["tn"]) / labelled
    print(f"live accuracy {accuracy:.3f} over {labelled:.0f} labels {fb}")
    assert labelled >= 0.6 * RPS * span  # labels keep up with traffic (1 s late)
    assert accuracy >= 0.8, fb

    state = b["state"]
    assert state["requests"]["failed"] == 0, state["requests"]
    assert state["feedback"]["dropped"] == 0 and state["feedback"]["failed"] == 0, state["feedback"]


def test_unit_change_drifts_amount_and_nothing_else(lg_stack: tuple[Any, Loadgen]) -> None:
    stack, lg = lg_stack
    gateway = stack.topology.service_url("gateway")
    registry = stack.topology.service_url("registry")
    window = 600
    lg.client.configure(rps=100, profile="unit-change")
    start_total = httpx.get(gateway + "/v1/recent", params={"limit": 1}, timeout=10).json()["total_scored"]

    def enough() -> bool:
        total = httpx.get(gateway + "/v1/recent", params={"limit": 1}, timeout=10).json()["total_scored"]
        return total - start_total >= window + 100  # + the requests that were in flight at the switch

    try:
        wait_until(enough, timeout=40, interval=0.5)
        live = httpx.get(gateway + "/v1/recent", params={"limit": window}, timeout=10).json()
        state = lg.client.state()
    finally:
        lg.client.configure(rps=RPS, profile="baseline")
    production = production_meta(httpx.get(registry + "/v1/models", timeout=10).json())
    assert production is not None
    reference = Reference.build(
        httpx.get(f"{registry}/v1/models/{production['version']}/reference", timeout=30).json(),
        production["version"],
    )
    report = drift_report(reference, live)
    assert report["enough_data"], report["window"]
    assert report["drifted"] == ["amount"], [(f["name"], f["status"], f.get("psi")) for f in report["features"]]
    # Some cents exceed the gateway's amount_max and are refused with a 422 naming the field: counted, not lost.
    codes = state["requests"]["codes"]
    assert set(codes) <= {"200", "422"}, codes


def test_loadgen_shuts_down_cleanly(lg_stack: tuple[Any, Loadgen], tmp_path: Path) -> None:
    _, lg = lg_stack
    drained = wait_until(
        lambda: (s := lg.client.state())["feedback"]["pending"] < 5 * RPS and s, timeout=20, interval=0.5
    )
    assert drained["feedback"]["failed"] == 0
    assert lg.stop() == 0
    assert "undelivered=0" in lg.output()
