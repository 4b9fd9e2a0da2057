"""The grader on synthetic journals: a pure function of (rendered scenario, events), checked rule by rule.

The scenario is the real scenarios/slow-replica.yaml, rendered with seed 1 (slow replica model-2, healthy
model-1) at time scale 1, so par times are the file's own (detect 180 s, mitigate 420 s).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from lab.grader import debrief, debrief_text, grade
from lab.grader.match import labels_from, matches
from lab.grader.score import time_credit
from lab.journal import Journal
from lab.scenario import load_scenario, render
from lab.scenario.ops import OpPattern

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0  # attempt start
INJECT = T0 + 60.0


@pytest.fixture(scope="module")
def scenario() -> Any:
    s = render(load_scenario(ROOT / "scenarios" / "slow-replica.yaml"), seed=1, time_scale=1.0)
    assert s.values["layout"] == {"slow": "model-2", "healthy": "model-1"}
    return s


class J:
    """A synthetic journal: events appended with times relative to the attempt start."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.add(0, "attempt_started", seed=1, time_scale=1.0)
        self.add(1, "stack_ready")

    def add(self, t: float, type_: str, **data: Any) -> J:
        self.events.append({"seq": len(self.events) + 1, "at": T0 + t, "type": type_, "data": data})
        return self

    def op(self, t: float, op: str, ok: bool = True, pin: bool = False, **args: Any) -> J:
        self.add(t, "console_op", op=op, args=args, ok=ok)
        return self.pin(t, self.events[-1]["seq"]) if pin else self

    def pin(self, t: float, seq: int) -> J:
        e = next(e for e in self.events if e["seq"] == seq)
        return self.add(t, "evidence_pinned", seq=seq, op=e["data"]["op"], args=e["data"]["args"])

    def inject(self, t: float = 60) -> J:
        return self.add(t, "fault_applied", fault_id="slow-link", description="latency on model-2")

    def broke(self, t: float = 65) -> J:
        return self.add(t, "probe_result", probe="p99", ok=False, value=480.0)

    def diagnose(self, t: float, category: str = "network", component: str = "model-2",
                 cause: str = "link-latency") -> J:
        return self.add(t, "diagnosis_submitted", answers={"category": category, "component": component,
                                                           "cause": cause})

    def verified(self, t: float, held_since: float) -> J:
        return self.add(t, "fix_verified", state=0, description="drained", held_since=T0 + held_since)


def ideal(t_fix: float = 120) -> J:
    j = J().inject().broke()
    j.op(70, "slo").op(75, "trace", pin=True).op(80, "metrics", pin=True, service="gateway")
    j.op(85, "metrics", pin=True, service="model-2")
    j.op(90, "drain", replica="model-2").diagnose(95).add(96, "fix_claimed")
    return j.verified(t_fix + 60, held_since=t_fix).add(t_fix + 61, "attempt_finished")


def test_the_ideal_path_scores_100(scenario: Any) -> None:
    g = grade(scenario, ideal().events)
    assert g["score"] == 100.0
    assert g["fixed"] and g["broke"]
    b = g["breakdown"]
    assert b["diagnosis"]["points"] == 35 and b["fix"]["points"] == 35 and b["hints"]["points"] == 20
    assert b["time"]["detect_s"] == 15.0  # the trace at T+75, 15 s after the injection
    assert b["time"]["mitigate_s"] == 60.0  # the verified state began holding at T+120
    assert b["collateral"] == []


def test_doing_nothing_scores_0(scenario: Any) -> None:
    j = J().inject().broke().add(400, "attempt_aborted", reason="gave up")
    g = grade(scenario, j.events)
    assert g["score"] == 0.0
    assert g["broke"] and not g["fixed"]
    assert g["breakdown"]["hints"]["points"] == 0  # no free points for not asking while not fixing


def test_each_wrong_answer_costs_its_share(scenario: Any) -> None:
    j = J().inject().broke().op(75, "trace", pin=True).op(80, "metrics", pin=True, service="gateway")
    j.op(85, "metrics", pin=True, service="model-2")
    j.diagnose(95, component="model-1", cause="slow-model-version").verified(180, held_since=120)
    d = grade(scenario, j.events)["breakdown"]["diagnosis"]
    assert d["category"]["correct"] and not d["component"]["correct"] and not d["cause"]["correct"]
    assert d["component"]["expected"] == "model-2"
    assert d["points"] == pytest.approx(35 * (0.25 + 0.20))


def test_evidence_is_what_was_pinned_between_injection_and_diagnosis(scenario: Any) -> None:
    j = J().op(30, "trace").inject().broke()
    j.pin(70, 3)  # the trace ran before the injection: it looked at nothing
    j.op(80, "metrics", pin=True, service="gateway").op(82, "metrics", service="model-2")  # looked at, not pinned
    j.diagnose(95).op(100, "trace").pin(101, len(j.events))  # pinned after the diagnosis: too late
    ev = grade(scenario, j.events)["breakdown"]["diagnosis"]["evidence"]
    assert ev["seen"] == ["metrics service=gateway"]
    assert set(ev["missed"]) == {"trace", "metrics service=model-2"}
    assert ev["pinned"] == ["metrics service=gateway"]
    assert ev["points"] == pytest.approx(35 * 0.20 / 3, abs=0.01)


def test_a_compound_answer_accepts_each_listed_option(scenario: Any) -> None:
    assert scenario.diagnosis.answer.component == ["model-2", "netproxy"]
    for component in ("model-2", "netproxy"):
        j = J().inject().broke().diagnose(95, component=component)
        assert grade(scenario, j.events)["breakdown"]["diagnosis"]["component"]["correct"]


def test_a_bare_metrics_does_not_match_a_pattern_naming_a_service(scenario: Any) -> None:
    j = J().inject().broke().op(75, "metrics", pin=True).diagnose(95)
    assert grade(scenario, j.events)["breakdown"]["diagnosis"]["evidence"]["seen"] == []


def test_refused_operations_are_not_evidence_nor_collateral(scenario: Any) -> None:
    j = J().inject().broke().op(75, "trace", ok=False, pin=True).op(80, "restart", ok=False, service="gateway")
    j.diagnose(95)
    g = grade(scenario, j.events)["breakdown"]
    assert g["diagnosis"]["evidence"]["seen"] == [] and g["collateral"] == []


def test_detection_is_the_first_evidence_or_the_diagnosis(scenario: Any) -> None:
    j = J().inject().broke().op(70, "slo").op(200, "trace").diagnose(150)
    assert grade(scenario, j.events)["breakdown"]["time"]["detect_s"] == 90.0  # slo is not evidence here


def test_time_credit_falls_from_par_to_three_times_par() -> None:
    assert time_credit(10, 100) == 1.0
    assert time_credit(100, 100) == 1.0
    assert time_credit(200, 100) == pytest.approx(0.5)
    assert time_credit(300, 100) == 0.0
    assert time_credit(900, 100) == 0.0
    assert time_credit(None, 100) == 0.0


def test_late_mitigation_loses_time_points(scenario: Any) -> None:
    fast = grade(scenario, ideal(t_fix=120).events)["breakdown"]["time"]
    slow = grade(scenario, ideal(t_fix=60 + 420 + 420).events)["breakdown"]["time"]  # 840 s: 2 x par
    assert fast["mitigate_points"] == 5.0
    assert slow["mitigate_points"] == pytest.approx(2.5)


def test_time_scale_scales_par(scenario: Any) -> None:
    compressed = render(load_scenario(ROOT / "scenarios" / "slow-replica.yaml"), seed=1, time_scale=0.1)
    t = grade(compressed, ideal(t_fix=120).events)["breakdown"]["time"]
    assert t["par_detect_s"] == 18.0 and t["par_mitigate_s"] == 42.0
    assert t["mitigate_points"] < 5.0  # 60 s against a par of 42 s


def test_hints_cost_their_points(scenario: Any) -> None:
    j = ideal()
    j.events.insert(5, {"seq": 99, "at": T0 + 71, "type": "hint_taken", "data": {"index": 0, "cost": 3}})
    j.events.insert(6, {"seq": 98, "at": T0 + 72, "type": "hint_taken", "data": {"index": 1, "cost": 5}})
    g = grade(scenario, j.events)
    assert g["breakdown"]["hints"]["points"] == 12
    assert g["score"] == 92.0


def test_collateral_penalties_come_off_the_total(scenario: Any) -> None:
    j = ideal()
    j.events.insert(6, {"seq": 97, "at": T0 + 86, "type": "console_op",
                        "data": {"op": "restart", "args": {"service": "model-1"}, "ok": True}})
    j.events.insert(6, {"seq": 96, "at": T0 + 86, "type": "console_op",
                        "data": {"op": "rollback", "args": {"version": "v1"}, "ok": True}})
    j.events.insert(6, {"seq": 95, "at": T0 + 86, "type": "console_op",  # restarting the slow one: no penalty
                        "data": {"op": "restart", "args": {"service": "model-2"}, "ok": True}})
    g = grade(scenario, j.events)
    reasons = {c["pattern"]: c["penalty"] for c in g["breakdown"]["collateral"]}
    assert reasons == {"restart service=model-1": 10, "rollback": 10}
    # and the three actions, taken before the diagnosis and in no fix, cost 3 x 20 % of the time credit (10)
    assert g["breakdown"]["time"]["disruptive_factor"] == 0.4
    assert g["score"] == 74.0


def test_absurd_scaling_and_rejected_claims_are_penalised(scenario: Any) -> None:
    j = J().inject().broke().op(80, "scale", replicas=6).op(81, "scale", replicas=4)
    for t in (90, 100, 110):
        j.add(t, "fix_claimed").add(t + 5, "fix_rejected", reason="p99 = 480")
    j.add(300, "attempt_aborted", reason="gave up")
    col = grade(scenario, j.events)["breakdown"]["collateral"]
    assert [c["pattern"] for c in col] == ["scale replicas>4", "fix claim rejected", "fix claim rejected"]
    assert grade(scenario, j.events)["score"] == 0.0  # clamped at 0


def test_version_labels_in_patterns_match_the_versions_the_run_gave_them() -> None:
    pattern = TypeAdapter(OpPattern).validate_python({"op": "deploy", "args": {"version": "flipped_labels"}})
    events = [{"type": "fault_applied", "data": {"labels": {"flipped_labels": "v3"}}, "at": 0, "seq": 1}]
    labels = labels_from(events)
    assert matches(pattern, "deploy", {"version": "v3"}, labels)
    assert not matches(pattern, "deploy", {"version": "v2"}, labels)
    assert not matches(pattern, "rollback", {"version": "v3"}, labels)


def test_same_journal_same_grade_also_through_sqlite(scenario: Any, tmp_path: Path) -> None:
    events = ideal().events
    first = grade(scenario, events)
    assert grade(scenario, copy.deepcopy(events)) == first
    journal = Journal(tmp_path / "journal.db")
    attempt = journal.open_attempt("slow-replica", 1, 1.0, at=events[0]["at"])
    for e in events[1:]:
        journal.append(attempt, e["type"], e["data"], at=e["at"])
    replayed = journal.events(attempt)
    journal.close()
    assert grade(scenario, replayed) == first
    assert json.loads(json.dumps(first)) == first  # JSON-ready, as the journal stores it


def test_debrief_tells_the_story(scenario: Any) -> None:
    d = debrief(scenario, ideal().events, {"id": "a1", "status": "finished"})
    kinds = [e["kind"] for e in d["timeline"]]
    assert kinds.index("fault") < kinds.index("action") < kinds.index("fix")
    assert [p["text"] for p in d["learner_path"]] == ["slo", "trace", "metrics service=gateway",
                                                      "metrics service=model-2", "drain replica=model-2"]
    assert d["ideal_path"] == list(scenario.debrief.ideal_path)
    assert "model-2" in d["what_happened"] and d["lesson"]
    text = debrief_text(d)
    assert "score 100/100" in text and "FAULT slow-link" in text and "drain replica=model-2" in text


def _snap(drained: list[str], timeout: int = 1000, retries: int = 2, fs: int = 50) -> dict[str, Any]:
    return {"replicas": 2, "stages": {"production": "v1"},
            "configs": {"gateway": {"drained": drained, "model_timeout_ms": timeout, "max_retries": retries,
                                    "feature_timeout_ms": fs}}}


def test_settings_left_changed_that_no_fix_needs_are_penalised(scenario: Any) -> None:
    j = ideal()
    j.add(10, "stack_snapshot", when="start", state=_snap([]))
    # the drain is the fix (the solution's); the timeout and retries the other accepted route may leave; the
    # feature-store timeout nothing needs
    j.add(182, "stack_snapshot", when="end", state=_snap(["model-2"], timeout=300, retries=1, fs=2000))
    g = grade(scenario, j.events)
    left = [c for c in g["breakdown"]["collateral"] if c["op"] == "left changed"]
    assert [c["pattern"] for c in left] == ["gateway feature_timeout_ms: 50 -> 2000"]
    assert g["score"] == 100.0 - left[0]["penalty"]


def test_thrashing_before_the_diagnosis_costs_time_credit(scenario: Any) -> None:
    calm = grade(scenario, ideal().events)["breakdown"]["time"]
    j = ideal()
    j.events.insert(3, {"seq": 90, "at": T0 + 66, "type": "console_op",
                        "data": {"op": "restart", "args": {"service": "model-2"}, "ok": True}})
    j.events.insert(3, {"seq": 91, "at": T0 + 67, "type": "console_op",
                        "data": {"op": "scale", "args": {"replicas": 3}, "ok": True}})
    t = grade(scenario, j.events)["breakdown"]["time"]
    assert sorted(t["disruptive_before_diagnosis"]) == ["restart service=model-2", "scale replicas=3"]
    assert t["points"] == pytest.approx(calm["points"] * 0.6)


def test_a_rollout_the_solution_makes_is_no_side_effect_and_new_archived_versions_do_not_count() -> None:
    from lab.grader.sideeffects import differences, needed

    canary = render(load_scenario(ROOT / "scenarios" / "bad-canary.yaml"), seed=1)
    start = {"replicas": 2, "configs": {"gateway": {"routing": {}}}, "stages": {"v1": "production", "v2": "staging"}}
    end = {"replicas": 2, "configs": {"gateway": {"routing": {"v1": 1.0}}},
           "stages": {"v1": "production", "v2": "staging", "v3": "archived"}}
    diffs = differences(start, end)
    assert [d["what"] for d in diffs] == ["config"]  # v3 (the fault's variant), archived, is not a change
    assert needed(canary, diffs[0])  # the solution rolls back: the split is its doing
    end["stages"]["v2"] = "production"
    assert [d["what"] for d in differences(start, end)] == ["config", "stages"]
