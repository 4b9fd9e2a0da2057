"""Seeded rendering: the same seed gives the same scenario, other seeds other valid variants, nothing unsubstituted."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.scenario import Scenario, ScenarioError, load_scenario, render
from lab.scenario.loader import CATALOG_DIR

EXAMPLE = CATALOG_DIR / "slow-replica.yaml"
MINIMAL = Path(__file__).resolve().parent / "valid" / "minimal-valid.yaml"


@pytest.fixture(scope="module")
def example() -> Scenario:
    return load_scenario(EXAMPLE)


def test_same_seed_same_scenario(example: Scenario) -> None:
    a, b = render(example, 7), render(example, 7)
    assert a.values == b.values and a.seed == 7
    assert a.model_dump() == b.model_dump()
    assert render(load_scenario(EXAMPLE), 7).model_dump() == a.model_dump()  # not tied to one loaded object


def test_two_seeds_differ_and_both_are_valid(example: Scenario) -> None:
    a, b = render(example, 1), render(example, 2)
    assert a.values != b.values
    for s in (a, b):
        Scenario.model_validate(s.model_dump(mode="json", by_alias=True, exclude_none=True))


def test_values_are_substituted_everywhere(example: Scenario) -> None:
    s = render(example, 3)
    slow, healthy = s.values["layout"]["slow"], s.values["layout"]["healthy"]
    fault = s.fault("slow-link")
    assert fault.target == slow
    assert fault.params.latency == s.values["latency_ms"] and isinstance(fault.params.latency, int)
    assert fault.params.jitter == s.values["jitter_ms"]
    assert fault.when.at_s == s.values["inject_at_s"]
    assert s.diagnosis.answer.component[0] == slow and healthy not in s.diagnosis.answer.component
    assert s.solution[-1].args.replica == slow
    assert f"drain {slow}" in s.hints[-1].text and f"{s.values['latency_ms']} ms" in s.hints[-1].text
    assert s.fix.accepted[0].probes[2].tolerance.contains == slow
    assert "{{" not in s.model_dump_json()


def test_draws_cover_the_declared_values(example: Scenario) -> None:
    seen: dict[str, set] = {"slow": set(), "latency_ms": set(), "jitter_ms": set(), "inject_at_s": set()}
    for seed in range(60):
        v = render(example, seed).values
        assert v["layout"] in ({"slow": "model-1", "healthy": "model-2"}, {"slow": "model-2", "healthy": "model-1"})
        assert v["latency_ms"] in range(300, 601, 50)
        assert v["jitter_ms"] in range(50, 151, 25)
        assert v["inject_at_s"] in range(20, 61, 10)
        seen["slow"].add(v["layout"]["slow"])
        for name in ("latency_ms", "jitter_ms", "inject_at_s"):
            seen[name].add(v[name])
    assert seen["slow"] == {"model-1", "model-2"}
    assert len(seen["latency_ms"]) >= 5 and len(seen["jitter_ms"]) >= 4 and len(seen["inject_at_s"]) >= 4


def test_a_draw_does_not_move_when_another_variable_is_added(tmp_path: Path) -> None:
    text = MINIMAL.read_text()
    wider = text.replace("variables:\n", "variables:\n  delay_s:\n    range: [5, 50]\n")
    (tmp_path / "minimal-valid.yaml").write_text(wider)
    before, after = load_scenario(MINIMAL), load_scenario(tmp_path / "minimal-valid.yaml")
    for seed in range(10):
        assert render(before, seed).values["replica"] == render(after, seed).values["replica"]


def test_time_scale_override(example: Scenario) -> None:
    assert example.time_scale == 1.0
    fast = render(example, 5, time_scale=0.05)
    assert fast.time_scale == 0.05 and fast.values == render(example, 5).values
    with pytest.raises(ScenarioError, match=r"time_scale: must be > 0, got 0"):
        render(example, 5, time_scale=0)


def test_a_scenario_without_variables_renders_as_itself() -> None:
    s = load_scenario(MINIMAL)
    data = s.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["variables"] = {}
    plain = Scenario.model_validate(data)
    assert render(plain, 9).model_dump() == plain.model_dump()
    with pytest.raises(ValueError, match="load_scenario"):
        render(Scenario.model_validate({**data, "variables": {"x": {"choice": [1, 2]}}}), 1)
