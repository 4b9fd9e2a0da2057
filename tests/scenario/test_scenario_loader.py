"""Loading scenarios: the catalog's example, every problem in a file at once, variables, the strict model itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from lab.scenario import Scenario, ScenarioError, check_file, load_catalog, load_scenario, validate_paths
from lab.scenario.loader import CATALOG_DIR
from lab.scenario.variables import substitute, substitute_text

HERE = Path(__file__).resolve().parent
MINIMAL = HERE / "valid" / "minimal-valid.yaml"
EXAMPLE = CATALOG_DIR / "slow-replica.yaml"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace("id: minimal-valid", f"id: {name}"), encoding="utf-8")
    return path


def test_example_scenario_loads_with_every_section() -> None:
    s = load_scenario(EXAMPLE)
    assert s.id == "slow-replica" and s.difficulty == "intro"
    assert s.stack.replicas == 2 and s.stack.versions.production == "v1"
    fault = s.fault("slow-link")
    assert (fault.kind, fault.action, fault.params.type) == ("network", "toxic", "latency")
    # The canonical rendering takes every variable's first value, with its type kept.
    assert s.values["layout"] == {"slow": "model-1", "healthy": "model-2"}
    assert fault.target == "model-1" and fault.params.latency == 300 and fault.when.at_s == 20
    assert s.seed is None
    assert s.diagnosis.answer.category == ["network"] and s.diagnosis.answer.cause == ["link-latency"]
    assert s.hints[-1].solution and "drain model-1" in s.hints[-1].text
    assert [op.op for op in s.solution][-1] == "drain" and s.solution[-1].args.replica == "model-1"
    assert s.wrong_fix is not None and s.wrong_fix[0].op == "restart"
    assert "{{" not in s.model_dump_json()


def test_catalog_loads_and_ids_match_file_names() -> None:
    scenarios = load_catalog()
    assert "slow-replica" in [s.id for s in scenarios]
    assert sorted(s.id for s in scenarios) == sorted(p.stem for p in CATALOG_DIR.glob("*.yaml"))


def test_catalog_with_a_bad_file_reports_all_problems(tmp_path: Path) -> None:
    shutil.copy(MINIMAL, tmp_path / "minimal-valid.yaml")
    for name in ("wrong-type", "weights-not-100"):
        shutil.copy(HERE / "malformed" / f"{name}.yaml", tmp_path / f"{name}.yaml")
    with pytest.raises(ScenarioError) as caught:
        load_catalog(tmp_path)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        str(tmp_path / "weights-not-100.yaml"),
        str(tmp_path / "wrong-type.yaml"),
    ]


def test_every_problem_in_a_file_is_reported_in_line_order(tmp_path: Path) -> None:
    text = MINIMAL.read_text()
    text = text.replace("estimated_minutes: 5", "estimated_minutes: 0")  # line 7
    text = text.replace("  replicas: 2\n", "  replicas: 2\n  replicas: 3\n")  # line 14
    text = text.replace("    action: freeze\n", "    action: freeze\n    colour: red\n")  # line 19
    text = text.replace('target: "{{ replica }}"\n    when', 'target: "{{ replika }}"\n    when')  # line 20
    text = text.replace("      hold_s: 30", "      hold_s: soon")  # line 57
    path = write(tmp_path, "many", text)
    assert validate_paths([path]) == [
        f"{path}:7: estimated_minutes: must be >= 1, got 0",
        f"{path}:14: stack.replicas: duplicate key 'replicas' (first at line 13)",
        f"{path}:19: faults[0].colour: unknown field; expected one of: id, description, when, until, kind, action, "
        "target, params",
        f"{path}:20: faults[0].target: unknown variable 'replika' (declared: replica)",
        f"{path}:42: fix.accepted[0].hold_s: expected a number, got 'soon'",
    ]


def test_file_level_problems(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    listing = tmp_path / "listing.yaml"
    listing.write_text("- a\n- b\n")
    two = tmp_path / "two.yaml"
    two.write_text("id: two\n---\nid: three\n")
    missing = tmp_path / "missing.yaml"
    assert validate_paths([empty, listing, two, missing]) == [
        f"{empty}:1: <file>: the file holds no scenario (it is empty)",
        f"{listing}:1: <scenario>: a scenario is a mapping of fields, got a list",
        f"{two}:2: <yaml>: expected a single document in the stream, but found another document",
        f"{missing}:1: <file>: no such file",
    ]


def test_unsafe_yaml_tags_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tag.yaml"
    path.write_text("id: !!python/object/apply:os.system ['true']\n")
    [problem] = validate_paths([path])
    assert problem == (f"{path}:1: id: YAML tag !!python/object/apply:os.system is not allowed in a scenario file "
                       "(the only tag allowed is !!str)")


def test_id_must_match_file_name(tmp_path: Path) -> None:
    path = tmp_path / "renamed.yaml"
    shutil.copy(MINIMAL, path)
    assert validate_paths([path]) == [f"{path}:2: id: id 'minimal-valid' must match the file name ('renamed.yaml')"]


def test_broken_declarations_do_not_cascade(tmp_path: Path) -> None:
    text = MINIMAL.read_text().replace("    choice: [model-1, model-2]", "    choice: []")
    path = write(tmp_path, "nochoice", text)
    assert validate_paths([path]) == [f"{path}:11: variables.replica.choice: needs at least 1 item(s), got 0"]


def test_references_in_keys_and_malformed_references(tmp_path: Path) -> None:
    text = MINIMAL.read_text().replace("  replicas: 2\n", '  replicas: 2\n  services:\n    "{{ replica }}": {}\n')
    text = text.replace('"Drain {{ replica }}."', '"Drain {{ replica }."')
    text = text.replace("  lesson: Readiness is not liveness.", "  lesson: \"{{ replica.name }}\"")
    path = write(tmp_path, "refs", text)
    assert validate_paths([path]) == [
        f"{path}:15: stack.services.{{{{ replica }}}}: variables are not substituted in keys, only in values",
        f"{path}:48: hints[1].text: malformed variable reference; write {{{{ name }}}} or {{{{ name.key }}}}",
        f"{path}:58: debrief.lesson: variable 'replica' has no keys; write {{{{ replica }}}}",
    ]


def test_substitution_keeps_types_and_interpolates_text() -> None:
    values = {"n": 350, "f": 0.25, "flag": True, "pair": {"slow": "model-2", "healthy": "model-1"}}
    assert substitute_text("{{ n }}", values) == 350
    assert substitute_text("  {{n}} ", values) == 350
    assert substitute_text("{{ f }}", values) == 0.25
    assert substitute_text("{{ flag }}", values) is True
    text = substitute_text("{{ pair.slow }} is slow by {{ n }} ms ({{ flag }})", values)
    assert text == "model-2 is slow by 350 ms (true)"
    # Neither the id, the declarations nor any key is substituted.
    data = {"id": "{{ n }}", "variables": {"x": "{{ n }}"}, "a": [{"b": "{{ pair.healthy }}"}], "{{ n }}": "k"}
    expected = {"id": "{{ n }}", "variables": {"x": "{{ n }}"}, "a": [{"b": "model-1"}], "{{ n }}": "k"}
    assert substitute(data, values) == expected


def test_model_validate_alone_enforces_cross_field_rules() -> None:
    scenario, problems = check_file(MINIMAL)
    assert scenario is not None and problems == []
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    Scenario.model_validate(data)  # a rendered scenario round-trips
    data["stack"]["replicas"] = 1
    with pytest.raises(ValidationError, match=r"faults\[0\]\.target: 'model-2' does not exist"):
        Scenario.model_validate({**data, "faults": [{**data["faults"][0], "target": "model-2"}]})


def test_variable_declarations_are_checked(tmp_path: Path) -> None:
    decl = (
        "variables:\n"
        "  a: {range: [1.5, 3]}\n"
        "  b: {choice: [x, y], step: 2}\n"
        "  c: {choice: [{p: 1}, {q: 2}]}\n"
        "  d: {choice: [x, x]}\n"
        "  e: {range: [1, 5], choice: [1]}\n"
    )
    text = MINIMAL.read_text().replace("variables:\n  replica:\n    choice: [model-1, model-2]\n", decl)
    text = text.replace("{{ replica }}", "model-1")
    path = write(tmp_path, "decl", text)
    assert validate_paths([path]) == [
        f"{path}:10: variables.a: a range of non-whole numbers needs a step",
        f"{path}:11: variables.b: step applies to range, not choice",
        f"{path}:12: variables.c: choice 1 has keys ['q'], choice 0 has ['p']",
        f"{path}:13: variables.d: choice 'x' is listed twice",
        f"{path}:14: variables.e: give exactly one of choice or range",
    ]


def test_patterns_check_the_arguments_they_give(tmp_path: Path) -> None:
    text = MINIMAL.read_text().replace(
        "    - {op: status}\nfix:", "    - {op: status}\n    - {op: logs, args: {service: gatewy}}\nfix:"
    )
    text = text.replace(
        "reason: The gateway was healthy.}",
        "reason: The gateway was healthy.}\n    - {op: scale, args: {replicas: 99}, penalty: 5, reason: Absurd.}",
    )
    path = write(tmp_path, "patterns", text)
    assert validate_paths([path]) == [
        f"{path}:36: diagnosis.evidence[1].args.service: unknown service 'gatewy'; expected one of: gateway, "
        "feature-store, registry, model-N",
        f"{path}:44: fix.collateral[1].args.replicas: must be <= 16, got 99",
    ]


def test_no_nan_and_no_cascade_from_a_broken_variables_section(tmp_path: Path) -> None:
    text = MINIMAL.read_text().replace("    tolerance: {max: 0.01}", "    tolerance: {max: .nan}")
    text = text.replace("variables:\n  replica:\n    choice: [model-1, model-2]\n", "variables: [model-1, model-2]\n")
    path = write(tmp_path, "nan", text)
    assert validate_paths([path]) == [
        f"{path}:9: variables: expected a mapping, got a list",
        f"{path}:22: steady_state[0].tolerance.max: must be a finite number, got nan",
    ]


def test_a_mapping_choice_out_of_the_stack_is_reported_once_at_its_key(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("{slow: model-2, healthy: model-1}", "{slow: model-3, healthy: model-1}")
    path = tmp_path / "slow-replica.yaml"
    path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), start=1) if "slow: model-3" in t)
    assert validate_paths([path]) == [
        f"{path}:{line}: variables.layout.choice[1].slow: 'model-3' does not exist: the stack has 2 replica(s) "
        "(model-1 .. model-2) (used by faults[0].target, diagnosis.answer.component[0], "
        "diagnosis.evidence[2].args.service and 3 more)"
    ]
