"""Each file in malformed/ is a complete scenario with one mistake; validation must name it exactly.

The expectations are `line: field: message` as `faultline scenarios validate` prints them after `file:`. A new
fixture without an expectation here fails `test_every_fixture_has_an_expectation`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.scenario import ScenarioError, load_scenario, taxonomy, validate_paths

HERE = Path(__file__).resolve().parent
MALFORMED = HERE / "malformed"
REPLICAS_2 = "does not exist: the stack has 2 replica(s) (model-1 .. model-2)"

EXPECTED: dict[str, list[str]] = {
    "yaml-syntax": ["13: <yaml>: could not find expected ':' (while scanning a simple key)"],
    "duplicate-key": ["5: difficulty: duplicate key 'difficulty' (first at line 4)"],
    "missing-field": ["1: briefing: required field is missing"],
    "unknown-top-key": [
        "7: severity: unknown field; expected one of: id, title, summary, difficulty, skills, estimated_minutes, "
        "time_scale, briefing, variables, stack, faults, steady_state, diagnosis, fix, hints, scoring, debrief, "
        "page, solution, wrong_fix"
    ],
    "unknown-nested-key": [
        "24: steady_state[0].window: unknown field; expected one of: id, description, tolerance, window_s, kind, target"
    ],
    "wrong-type": ["6: estimated_minutes: expected a whole number, got 'five'"],
    "negative-duration": ["19: faults[0].until.duration_s: must be > 0, got -300"],
    "unknown-fault-kind": [
        "15: faults[0].kind: unknown kind 'meteor'; expected one of: network, process, memory, cpu, data, deploy, "
        "config, dependency"
    ],
    "unknown-action": [
        "16: faults[0].action: unknown action 'pause' for kind process; expected one of: kill, freeze, crash_loop"
    ],
    "bad-params": ["17: faults[0].params.limit_mb: must be >= 16, got 8"],
    "toxic-params": [
        "17: faults[0].params.rate: required field is missing",
        "19: faults[0].params.latency: unknown field; expected one of: stream, toxicity, type, rate",
    ],
    "params-on-paramless-action": ["18: faults[0].params.duration_ms: unknown field; nothing is allowed here"],
    "missing-replica": [f"17: faults[0].target: 'model-5' {REPLICAS_2}"],
    # A variable's every choice is validated; a value that is exactly one variable is reported once, at the choice.
    "variable-out-of-stack": [
        f"10: variables.replica.choice[1]: 'model-3' {REPLICAS_2} (used by faults[0].target, "
        "diagnosis.answer.component[0], solution[1].args.replica)",
    ],
    "undeclared-variable": ["17: faults[0].target: unknown variable 'replica_name' (declared: replica)"],
    "after-unknown-fault": ["18: faults[0].when.after: unknown fault 'deploy'; faults are: freeze"],
    "fix-missing-probe": [
        "38: fix.accepted[0].probes[1]: unknown probe 'latency'; steady_state probes are: errors, ready"
    ],
    "weights-not-100": ["49: scoring.weights: weights must add up to 100, got 105"],
    "hints-no-solution": ["45: hints[1]: the last hint must give the solution: add solution: true"],
    "hint-costs-decrease": [
        "46: hints[1].cost: hint costs must not go down: 10 after 15",
        "49: scoring.weights.hints: the hints cost 25 in all, more than the hints weight 20",
    ],
    # Answers are options of the shared taxonomy (lab/scenario/taxonomy.py), never made up by the scenario.
    "answer-not-an-option": [
        "32: diagnosis.answer.cause[0]: 'frozen' is not a cause of the taxonomy; expected one of: "
        + ", ".join(taxonomy.causes())
    ],
    "evidence-is-action": [
        "35: diagnosis.evidence[1].op: evidence is something looked at; 'restart' is an action (use one of: "
        "config_show, decisions, deploys, distributions, drift, eval, generate, inspect, logs, metrics, reference, "
        "send, slo, status, status_codes, trace, upstreams)"
    ],
}


def test_every_fixture_has_an_expectation() -> None:
    names = sorted(p.stem for p in MALFORMED.glob("*.yaml"))
    assert len(names) >= 12
    assert names == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_file_reports_exactly_its_problems(name: str) -> None:
    path = MALFORMED / f"{name}.yaml"
    assert validate_paths([path]) == [f"{path}:{line}" for line in EXPECTED[name]]


@pytest.mark.parametrize("name", ["wrong-type", "hint-costs-decrease", "yaml-syntax"])
def test_load_scenario_raises_with_the_same_problems(name: str) -> None:
    path = MALFORMED / f"{name}.yaml"
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert caught.value.problems == [f"{path}:{line}" for line in EXPECTED[name]]
    assert str(caught.value).splitlines() == caught.value.problems


def test_a_directory_reports_every_file() -> None:
    problems = validate_paths([MALFORMED])
    assert len(problems) == sum(len(v) for v in EXPECTED.values())
    assert {p.split(":", 1)[0] for p in problems} == {str(MALFORMED / f"{n}.yaml") for n in EXPECTED}
