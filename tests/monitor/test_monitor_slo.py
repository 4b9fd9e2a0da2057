"""SLO specs and the violated/restored state machine, driven by an explicit clock."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lab.monitor.slo import SLOBook, SLOSpec, SLOTracker, default_slos


def latency(for_s: float = 0.0) -> SLOSpec:
    return SLOSpec(name="lat", kind="latency_p99", target="gateway", threshold=250.0, window_s=10, for_s=for_s)


def test_first_good_value_is_ok_without_an_event() -> None:
    t = SLOTracker(latency())
    assert t.state == "unknown"
    assert t.update(0.0, 40.0) is None
    assert t.state == "ok" and t.since == 0.0


def test_violation_and_restoration_emit_events_with_since() -> None:
    t = SLOTracker(latency())
    t.update(0.0, 40.0)
    ev = t.update(1.0, 400.0)
    assert ev == {"slo": "lat", "kind": "latency_p99", "target": "gateway", "state": "violated", "at": 1.0,
                  "since": 1.0, "value": 400.0, "threshold": 250.0}
    assert t.update(2.0, 500.0) is None  # still violated: no repeated event
    ev = t.update(3.0, 100.0)
    assert ev is not None and ev["state"] == "restored" and ev["since"] == 3.0
    assert t.state == "ok"


def test_for_s_needs_a_sustained_breach_and_a_sustained_recovery() -> None:
    t = SLOTracker(latency(for_s=3.0))
    t.update(0.0, 40.0)
    assert t.update(1.0, 400.0) is None
    assert t.update(2.0, 100.0) is None  # a one-tick blip never flips
    assert t.update(3.0, 400.0) is None
    assert t.update(5.0, 400.0) is None
    ev = t.update(6.0, 400.0)
    assert ev is not None and ev["state"] == "violated" and ev["since"] == 3.0 and ev["at"] == 6.0
    assert t.update(7.0, 100.0) is None
    ev = t.update(10.0, 100.0)
    assert ev is not None and ev["state"] == "restored" and ev["since"] == 7.0


def test_missing_values_never_flip_the_state() -> None:
    t = SLOTracker(latency())
    t.update(0.0, 400.0)
    assert t.state == "violated"
    for now in range(1, 20):
        assert t.update(float(now), None) is None
    assert t.state == "violated" and t.value is None


def test_a_breach_from_unknown_is_a_violation_event() -> None:
    t = SLOTracker(SLOSpec(name="acc", kind="accuracy_min", target="all", threshold=0.8))
    ev = t.update(5.0, 0.5)
    assert ev is not None and ev["state"] == "violated"


def test_minimum_kinds_breach_below_the_threshold() -> None:
    t = SLOTracker(SLOSpec(name="rec", kind="recall_min", target="v1", threshold=0.05))
    t.update(0.0, 0.2)
    assert t.update(1.0, 0.01)["state"] == "violated"
    avail = SLOTracker(SLOSpec(name="up", kind="availability", target="gateway", threshold=0.99))
    avail.update(0.0, 1.0)
    assert avail.update(1.0, 0.98)["state"] == "violated"


def test_explicit_breach_verdict_overrides_the_threshold() -> None:
    t = SLOTracker(SLOSpec(name="drift", kind="drift_max", target="all", threshold=0.25))
    t.update(0.0, 0.02)
    ev = t.update(1.0, 0.02, breached=True)  # e.g. a null-rate jump with a flat PSI
    assert ev is not None and ev["state"] == "violated"


def test_book_notifies_subscribers_and_survives_a_broken_one() -> None:
    book = SLOBook([latency()])
    got: list[dict] = []

    def broken(event: dict) -> None:
        raise RuntimeError("journal down")

    book.subscribe(broken)
    unsubscribe = book.subscribe(got.append)
    book.update("lat", 0.0, 10.0)
    book.update("lat", 1.0, 900.0)
    book.update("lat", 2.0, 10.0)
    assert [e["state"] for e in got] == ["violated", "restored"]
    assert [e["state"] for e in book.status()["events"]] == ["violated", "restored"]
    unsubscribe()
    book.update("lat", 3.0, 900.0)
    assert len(got) == 2
    status = book.status()["slos"][0]
    assert status["state"] == "violated" and status["since"] == 3.0 and status["value"] == 900.0


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "x", "kind": "error_rate", "threshold": 2.0},
        {"name": "x", "kind": "latency_p99", "threshold": -1},
        {"name": "x", "kind": "nonsense", "threshold": 1},
        {"name": "x", "kind": "error_rate", "threshold": 0.1, "window_s": 0},
        {"name": "x", "kind": "error_rate", "threshold": 0.1, "surprise": 1},
        {"name": "", "kind": "error_rate", "threshold": 0.1},
    ],
)
def test_bad_specs_are_rejected_with_a_message(bad: dict) -> None:
    with pytest.raises(ValidationError):
        SLOSpec.model_validate(bad)


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        SLOBook([latency(), latency()])


def test_defaults_follow_the_production_model_when_known() -> None:
    names = {s.name: s for s in default_slos()}
    assert names["gateway-latency"].threshold == 250.0 and names["gateway-errors"].threshold == 0.02
    assert names["model-accuracy"].threshold == 0.8 and names["input-drift"].threshold == 0.25
    assert names["model-recall"].threshold == 0.1 and names["model-recall"].min_samples == 50
    tuned = {s.name: s for s in default_slos({"recall": 0.3, "precision": 0.6})}
    assert tuned["model-recall"].threshold == pytest.approx(0.15)
    assert {s.name for s in default_slos()} == set(tuned)
