"""The monitor on a real scoring stack with real locust traffic (registry, feature store, two model replicas,
gateway, load generator — each its own process on a free loopback port), in real time with short windows.

Covers the issue's acceptance properties end to end: baseline is quiet; injected latency flips the latency
SLO and removing it restores it; the unit-change profile makes `amount` (and only it) drift; a concept shift
drops live recall and precision while input drift stays quiet.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from monhelpers import MiniStack, wait_for

from lab.monitor import GatewayRecent, Monitor, MonitorConfig, MonitorRunner, RegistryReference, SLOSpec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

RPS = 50.0
QUALITY_WINDOW_S = 20.0
LATENCY_SLO_MS = 350.0  # baseline p99 is ~20 ms, but the machine is shared: leave room for contention
INJECTED_MS = 700.0


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory, trained_registry: Path) -> Iterator[MiniStack]:
    stack = MiniStack(tmp_path_factory.mktemp("ministack"), trained_registry, rps=RPS)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def offline(mini: MiniStack) -> dict[str, float]:
    """The production model's offline metrics, from the registry's meta."""
    return httpx.get(mini.url("registry") + "/v1/models/v1", timeout=10, trust_env=False).json()["metrics"]


@pytest.fixture(scope="module")
def runner(mini: MiniStack, offline: dict[str, float]) -> Iterator[MonitorRunner]:
    slos = [
        SLOSpec(name="latency", kind="latency_p99", target="gateway", threshold=LATENCY_SLO_MS, window_s=4.0,
                min_samples=20),
        SLOSpec(name="availability", kind="availability", target="gateway", threshold=0.99, window_s=30.0),
        SLOSpec(name="recall", kind="recall_min", target="all", threshold=offline["recall"] / 2,
                window_s=QUALITY_WINDOW_S, min_samples=20, for_s=2.0),
        SLOSpec(name="drift", kind="drift_max", target="all", threshold=0.25),
    ]
    mon = Monitor(mini.targets, reference_provider=RegistryReference(mini.url("registry"), recheck_s=60),
                  live_window_provider=GatewayRecent(mini.url("gateway")),
                  config=MonitorConfig(window_s=5.0, quality_window_s=QUALITY_WINDOW_S, drift_window=600,
                                       drift_interval_s=2.0),
                  slos=slos)
    run = MonitorRunner(mon).start()
    try:
        yield run
    finally:
        run.close()


def slo_state(mon: Monitor, name: str) -> str:
    return next(s["state"] for s in mon.slo()["slos"] if s["name"] == name)


def test_baseline_traffic_is_measured_and_quiet(runner: MonitorRunner) -> None:
    mon = runner.monitor
    wait_for("a full drift window and labelled traffic",
             lambda: mon.drift()["window"] >= 600 and (mon.metrics()["labels"] or 0) >= 300, 60)
    m = mon.metrics()
    gw, m1, m2 = m["services"]["gateway"], m["services"]["model-1"], m["services"]["model-2"]
    assert 0.4 * RPS <= gw["rps"] <= 1.3 * RPS
    assert m1["rps"] > 0 and m2["rps"] > 0
    assert m1["rps"] + m2["rps"] == pytest.approx(gw["rps"], rel=0.3)
    assert gw["error_rate"] <= 0.02
    assert 0 < gw["p50_ms"] <= gw["p99_ms"]
    # p99 over a 4 s window: one stall of another worker's test (a replica importing torch on both cores) can put
    # a single window over the line (a CI run read 352 ms), so the quiet baseline must show in one of three windows
    p99s = [gw["p99_ms"]]
    for _ in range(2):
        if min(p99s) < LATENCY_SLO_MS:
            break
        time.sleep(2.5)
        p99s.append(mon.metrics()["services"]["gateway"]["p99_ms"])
    assert min(p99s) < LATENCY_SLO_MS, p99s
    assert m1["compute_ms"] > 0 and m1["queue_ms"] is not None and m1["batch_size"] >= 1
    assert m1["versions"][0]["version"] == "v1" and m1["rss_bytes"] > 50_000_000
    assert gw["upstreams"]["model-1"]["rps"] > 0 and m1["via_gateway"]["error_rate"] == 0.0
    assert m["versions"]["v1"]["rps"] > 0 and m["score"]["count"] > 0
    client = m["services"]["loadgen"]  # locust's own view of the same traffic
    assert client["target_rps"] == RPS and client["profile"] == "baseline"
    assert client["rps"] == pytest.approx(gw["rps"], rel=0.3) and client["no_answer_rate"] == 0.0
    assert m["accuracy"] >= 0.8 and m["recall"] is not None and m["precision"] is not None
    assert m["quality"]["cumulative"]["labels"] >= m["labels"]
    drift = mon.drift()
    assert drift["reference_version"] == "v1" and drift["drifted"] == []
    assert max(f["psi"] for f in drift["features"]) < 0.1
    assert drift["score"]["psi"] < 0.25
    assert slo_state(mon, "latency") == "ok" and slo_state(mon, "availability") == "ok"
    wait_for("the drift SLO's first verdict", lambda: slo_state(mon, "drift") == "ok", 10)
    assert len(mon.series("gateway.rps")) >= 5


def test_latency_flips_the_slo_and_unit_change_drifts_amount_only(mini: MiniStack, runner: MonitorRunner) -> None:
    mon = runner.monitor
    try:
        for replica in ("model-1", "model-2"):
            mini.patch(replica, extra_latency_ms=INJECTED_MS)
        mini.loadgen(profile="unit-change")
        wait_for("the latency SLO to be violated", lambda: slo_state(mon, "latency") == "violated", 40)
        assert mon.metrics()["services"]["gateway"]["p99_ms"] > LATENCY_SLO_MS
        assert mon.metrics()["services"]["loadgen"]["profile"] == "unit-change"
        report = wait_for("amount to drift", lambda: (d := mon.drift())["drifted"] and d, 60)
        assert report["drifted"] == ["amount"]
        feats = {f["name"]: f for f in report["features"]}
        assert feats["amount"]["psi"] > 0.25
        assert all(feats[n]["psi"] < 0.1 for n in ("hour", "device_age_days"))
        wait_for("the drift SLO to be violated", lambda: slo_state(mon, "drift") == "violated", 10)
    finally:
        for replica in ("model-1", "model-2"):
            mini.patch(replica, extra_latency_ms=0)
        mini.loadgen(profile="baseline")
    wait_for("the latency SLO to be restored", lambda: slo_state(mon, "latency") == "ok", 40)
    events = [(e["slo"], e["state"]) for e in mon.slo()["events"]]
    assert events.index(("latency", "violated")) < events.index(("latency", "restored"))
    assert ("drift", "violated") in events
    assert ("availability", "violated") not in events


def test_concept_shift_drops_recall_and_precision_without_input_drift(
    mini: MiniStack, runner: MonitorRunner, offline: dict[str, float]
) -> None:
    mon = runner.monitor
    mini.loadgen(profile="concept-shift")
    try:
        started = time.monotonic()
        wait_for("the recall SLO to be violated", lambda: slo_state(mon, "recall") == "violated", 60)
        # let the quality window and the drift window hold concept-shift traffic only
        time.sleep(max(0.0, QUALITY_WINDOW_S + 3 - (time.monotonic() - started)))
        m = mon.metrics()
        assert m["labels"] >= 300
        assert m["recall"] < offline["recall"] / 2
        assert m["precision"] is None or m["precision"] < offline["precision"] / 2
        assert m["accuracy"] >= 0.8  # accuracy alone would hide it: fraud is rare
        drift = wait_for("a drift report after the switch", lambda: (d := mon.drift())["at"]
                         and d["at"] > time.time() - 3 and d, 15)
        assert drift["drifted"] == [] and max(f["psi"] for f in drift["features"]) < 0.1
    finally:
        mini.loadgen(profile="baseline")
