"""Loading scenario files: YAML to validated `Scenario`, every problem reported as `file:line: field: message`.

Validation runs in three passes, so that one mistake does not hide the others:
1. the YAML itself (syntax, duplicate keys) and the `variables` declarations;
2. variable references (`{{ name }}`) in every string;
3. the whole scenario, rendered once with every variable at its first value and then once per other corner value
   of each variable (every choice, a range's ends), so a choice that names a replica the stack does not have is
   caught at validation time rather than on an unlucky seed. Cross-field checks run on each rendering too.
   A problem at a value that is exactly one variable (`target: "{{ replica }}"`) is the variable's value's
   problem: it is reported once, at that value in `variables`, naming the fields that use it.

No file can crash or hang this: source.py reads only a regular file of at most 1 MiB, yamlnodes.py bounds depth,
size, aliases, tags and numbers, variables.py bounds the renderings; whatever still goes wrong is reported as a
problem of the file (`<file>: internal error ...`) rather than raised, and at most MAX_PROBLEMS are listed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from lab.scenario.checks import cross_check
from lab.scenario.errors import data_at, format_loc, problems_from, type_name
from lab.scenario.models import DEFER_CHECKS, Scenario
from lab.scenario.source import SourceError, read_text
from lab.scenario.variables import (
    MAX_RENDERINGS,
    MAX_VARIABLES,
    REF,
    Loc,
    Variable,
    VarName,
    check_references,
    corner_assignments,
    count_renderings,
    drawn_values,
    referenced,
    substitute,
    walk_strings,
)
from lab.scenario.yamlnodes import YamlSyntaxError, duplicate_keys, parse

CATALOG_DIR = Path(__file__).resolve().parents[2] / "scenarios"
SUFFIX = ".yaml"

MAX_PROBLEMS = 100  # per file: past that, the rest are counted, not listed
MAX_REFERENCES = 2_000  # `{{ name }}` uses in a file
MAX_RENDERED_ERRORS = 1_000  # errors met rendering corner values before the remaining corners are skipped

_VARIABLES = TypeAdapter(Annotated[dict[VarName, Variable], Field(max_length=MAX_VARIABLES)])


class ScenarioError(Exception):
    """A scenario (or a catalog) that does not validate; `problems` holds one message per problem.

    From load_catalog, `scenarios` holds the files that did load: one bad file does not hide the others.
    """

    def __init__(self, problems: list[str], scenarios: list[Scenario] | None = None):
        super().__init__("\n".join(problems))
        self.problems = problems
        self.scenarios = scenarios or []


def _annotate(msg: str, raw: Any, values: dict[str, Any]) -> str:
    """Name the variable values behind a templated value, since the author wrote a reference, not the value."""
    if not isinstance(raw, str) or "{{" not in raw:
        return msg
    shown = []
    for name, key in dict.fromkeys(referenced(raw)):
        if name in values:
            value = values[name][key] if key is not None and isinstance(values[name], dict) else values[name]
            shown.append(f"{name}{'.' + key if key else ''} = {value}")
    return f"{msg} (with {', '.join(shown)})" if shown else msg


def analyse(data: Any, expected_id: str | None = None) -> tuple[Scenario | None, list[tuple[Loc, str]]]:
    """Validate scenario data; the scenario (rendered at every variable's first value) only if nothing is wrong."""
    if not isinstance(data, dict):
        return None, [((), f"a scenario is a mapping of fields, got {type_name(data)}")]
    problems: list[tuple[Loc, str]] = []

    raw_vars = data.get("variables") or {}
    variables: dict[str, Variable] | None = None
    try:
        variables = _VARIABLES.validate_python(raw_vars)
    except ValidationError as exc:
        problems += problems_from(exc, Scenario, data, prefix=("variables",))
    references = sum(text.count("{{") for _, text in walk_strings(data))
    if references > MAX_REFERENCES:  # every one is checked, then substituted in every rendering: not worth it
        return None, [*problems, (("variables",), f"the file has {references:,} variable references ({{{{); at most "
                                  f"{MAX_REFERENCES:,}")]
    ref_problems: list[tuple[Loc, str]] = []
    if variables is not None or isinstance(raw_vars, dict):  # otherwise no name can be said to be declared
        declared: dict[str, Any] = variables if variables is not None else dict.fromkeys(_names(raw_vars))
        ref_problems = check_references(data, declared)
    problems += ref_problems
    unrenderable = {loc for loc, _ in ref_problems}

    assignments: list[dict[str, Any]] = [{}]
    if variables is not None:
        renderings = count_renderings(variables)
        if renderings > MAX_RENDERINGS:
            problems.append((("variables",), f"the variables need {renderings} renderings to check every choice and "
                             f"each range's ends; at most {MAX_RENDERINGS} (use fewer variables or choices)"))
            assignments = [next(corner_assignments(variables))]
        else:
            assignments = list(corner_assignments(variables))
    uses: dict[tuple[Loc, str], dict[Loc, None]] = {}  # a variable value's problem -> the fields using the value
    first: Scenario | None = None
    met = 0  # errors met so far: each costs a little, and a large broken file has thousands in every rendering
    for i, values in enumerate(assignments):
        if met >= MAX_RENDERED_ERRORS:
            problems.append((("variables",), f"{len(assignments) - i} rendering(s) with other corner values were "
                             f"skipped after {met} errors; fix those first"))
            break
        rendered = substitute(data, values)
        found: list[tuple[Loc, str]] = []
        try:
            scenario = Scenario.model_validate(rendered, context={DEFER_CHECKS: True})
        except ValidationError as exc:
            found = problems_from(exc, Scenario, rendered)
        else:
            found = cross_check(scenario)
            if first is None and not found:
                first = scenario
        met += len(found)
        for loc, msg in found:
            raw = data_at(data, loc)
            if loc[:1] == ("variables",) or loc in unrenderable:
                continue  # reported by the earlier passes
            if variables is None and isinstance(raw, str) and "{{" in raw:
                continue  # cannot be rendered while the declarations are broken
            origin = _value_origin(raw, values, variables)
            if origin is not None:
                uses.setdefault((origin, msg), {})[loc] = None
                continue
            problems.append((loc, _annotate(msg, raw, values)))
    for (origin, msg), used_at in uses.items():
        where = list(used_at)
        shown = ", ".join(format_loc(loc) for loc in where[:3])
        more = f" and {len(where) - 3} more" if len(where) > 3 else ""
        problems.append((origin, f"{msg} (used by {shown}{more})"))

    if expected_id is not None and isinstance(data.get("id"), str) and data["id"] != expected_id:
        problems.append((("id",), f"id '{data['id']}' must match the file name ('{expected_id}{SUFFIX}')"))
    problems = list(dict.fromkeys(problems))
    if problems or first is None:
        return None, problems
    first._template = copy.deepcopy(data)
    first._values = dict(assignments[0])
    return first, []


def _value_origin(raw: Any, values: dict[str, Any], variables: dict[str, Variable] | None) -> Loc | None:
    """Where in `variables` the value of a field written as exactly one reference was declared, if it was."""
    if variables is None or not isinstance(raw, str):
        return None
    whole = REF.fullmatch(raw.strip())
    if whole is None or whole.group(1) not in variables or whole.group(1) not in values:
        return None
    name, key = whole.group(1), whole.group(2)
    var, value = variables[name], values[name]
    if var.choice is not None:
        at = next((i for i, c in enumerate(var.choice) if c == value and type(c) is type(value)), None)
        if at is None:
            return None
        return ("variables", name, "choice", at, *((key,) if key is not None else ()))
    ends = var.range or []
    return ("variables", name, "range", *([ends.index(value)] if value in ends else []))


def _names(raw_vars: Any) -> list[str]:
    return [k for k in raw_vars if isinstance(k, str)] if isinstance(raw_vars, dict) else []


def _clean(text: str, limit: int) -> str:
    """One line of bounded length: a problem line quotes keys and values from the file, which may hold anything."""
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _file_problem(path: Path | str, line: int, field: str, msg: str) -> str:
    return f"{path}:{line}: {_clean(field, 200) or '<scenario>'}: {_clean(msg, 1000)}"


def check_file(path: Path | str) -> tuple[Scenario | None, list[str]]:
    """The scenario in `path` and the problems found in it (an empty list when it is valid). Never raises."""
    path = Path(path)
    try:
        return _check_file(path)
    except Exception as exc:  # a bug of ours, still answered in the file's format: callers list, they don't crash
        return None, [_file_problem(path, 1, "<file>", f"internal error while checking this file: "
                                    f"{type(exc).__name__}: {exc}")]


def _check_file(path: Path) -> tuple[Scenario | None, list[str]]:
    try:
        text = read_text(path)
    except SourceError as exc:
        return None, [_file_problem(path, exc.line, "<file>", exc.message)]
    try:
        doc = parse(text)
    except YamlSyntaxError as exc:
        return None, [_file_problem(path, exc.line, exc.field, exc.message)]
    if doc.data is None:
        return None, [_file_problem(path, 1, "<file>", "the file holds no scenario (it is empty)")]
    located: list[tuple[int, str, str]] = [
        (line, format_loc(loc), msg) for loc, line, msg in duplicate_keys(doc.root)
    ]
    scenario, problems = analyse(doc.data, expected_id=path.stem)
    located += [(doc.line(loc), format_loc(loc) or "<scenario>", msg) for loc, msg in problems]
    located = sorted(dict.fromkeys(located), key=lambda p: p[0])
    if len(located) > MAX_PROBLEMS:
        hidden = len(located) - MAX_PROBLEMS
        located = [*located[:MAX_PROBLEMS], (located[MAX_PROBLEMS][0], "<file>", f"{hidden} more problem(s) not shown")]
    if located:
        return None, [_file_problem(path, line, field, msg) for line, field, msg in located]
    return scenario, []


def load_scenario(path: Path | str) -> Scenario:
    """The scenario in `path`, rendered with every variable at its first value; ScenarioError if invalid."""
    scenario, problems = check_file(path)
    if scenario is None:
        raise ScenarioError(problems)
    return scenario


def _expand(paths: Iterable[Path | str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(p.glob(f"*{SUFFIX}")) if p.is_dir() else [p]
    return out


def validate_paths(paths: Iterable[Path | str]) -> list[str]:
    """Every problem in the given files (directories: their *.yaml files), as `file:line: field: message`."""
    problems: list[str] = []
    for path in _expand(paths):
        problems += check_file(path)[1]
    return problems


def load_catalog(directory: Path | str = CATALOG_DIR) -> list[Scenario]:
    """Every scenario in the directory, by file name; ScenarioError listing all problems if any is invalid.

    Every file is checked whatever the others hold; the error carries the valid ones as `scenarios`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ScenarioError([_file_problem(directory, 1, "<file>", "no such directory")])
    scenarios: list[Scenario] = []
    problems: list[str] = []
    for path in _expand([directory]):
        scenario, found = check_file(path)
        problems += found
        if scenario is not None:
            scenarios.append(scenario)
    if problems:
        raise ScenarioError(problems, scenarios)
    return scenarios


def render(scenario: Scenario, seed: int, time_scale: float | None = None) -> Scenario:
    """The scenario with its variables drawn from `seed` (same seed, same values) and substituted.

    `time_scale` overrides the scenario's own (tests compress time).
    """
    template = scenario._template
    if template is None:
        if scenario.variables:
            raise ValueError("this scenario was not loaded from its template; use load_scenario() first")
        template = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    values = drawn_values(scenario.variables, scenario.id, seed)
    data = substitute(template, values)
    if time_scale is not None:
        data = {**data, "time_scale": time_scale}
    try:
        rendered = Scenario.model_validate(data, context={DEFER_CHECKS: True})
    except ValidationError as exc:
        found = problems_from(exc, Scenario, data)
    else:
        found = cross_check(rendered)
    if found:
        raise ScenarioError(
            [f"{scenario.id} (seed {seed}): {format_loc(loc)}: {_annotate(msg, data_at(template, loc), values)}"
             for loc, msg in found]
        )
    rendered._template = copy.deepcopy(template)
    rendered._values = values
    rendered._seed = seed
    return rendered


__all__ = [
    "CATALOG_DIR",
    "ScenarioError",
    "analyse",
    "check_file",
    "load_catalog",
    "load_scenario",
    "render",
    "validate_paths",
]
