"""Scenario variables: values drawn from a seed so that answers cannot be memorised, and `{{ }}` substitution.

The rule, in full:
- `variables` declares named variables, each either `choice: [...]` (scalars, or mappings of scalars that
  share the same keys, for values that must move together) or `range: [lo, hi]` with an optional `step`
  (default 1 for whole numbers; required otherwise); a range yields lo, lo+step, ... up to hi.
- Any string value anywhere in the scenario, except the top-level `id` and the `variables` section itself, may
  reference a variable as `{{ name }}`, or `{{ name.key }}` for a mapping choice. Mapping keys are never
  substituted. Any other `{{` or `}}` in a string is an error.
- A string that is exactly one reference becomes the drawn value with its type (a number stays a number);
  references inside longer text are replaced by the value's text.
- A draw depends only on (scenario id, seed, variable name): one Random stream per variable, so adding a
  variable does not move the others.
- Limits, since validation renders the scenario once per corner value: at most MAX_VARIABLES variables,
  MAX_CHOICES choices each, and MAX_RENDERINGS renderings in all (the loader checks the first and the last).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from lab.scenario.fields import Strict

Loc = tuple[str | int, ...]
Scalar = bool | int | float | str
VarName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*$", max_length=40)]

REF = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\s*\}\}")
MAX_VALUES = 10_000
MAX_VARIABLES = 20
MAX_CHOICES = 20
MAX_RENDERINGS = 40  # the first values, plus one per other corner value of each variable
UNSUBSTITUTED = ("id", "variables")


class Variable(Strict):
    description: str | None = None
    choice: list[Scalar | dict[VarName, Scalar]] | None = Field(default=None, min_length=1)
    range: list[int | float] | None = Field(default=None, min_length=2, max_length=2)
    step: int | float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _shape(self) -> Variable:
        if (self.choice is None) == (self.range is None):
            raise ValueError("give exactly one of choice or range")
        if self.choice is not None:
            if self.step is not None:
                raise ValueError("step applies to range, not choice")
            _check_choices(self.choice)
        else:
            lo, hi = self.range  # type: ignore[misc]
            if lo >= hi:
                raise ValueError(f"range must go from low to high, got [{lo:g}, {hi:g}]")
            if self.step is None and not (_whole(lo) and _whole(hi)):
                raise ValueError("a range of non-whole numbers needs a step")
            if (hi - lo) / (self.step or 1) + 1 > MAX_VALUES:
                raise ValueError(f"range gives more than {MAX_VALUES} values; use a larger step")
        return self

    def keys(self) -> tuple[str, ...]:
        """The keys of a mapping choice; empty for scalar variables."""
        if self.choice and isinstance(self.choice[0], dict):
            return tuple(self.choice[0])
        return ()

    def values(self) -> list[Any]:
        if self.choice is not None:
            return list(self.choice)
        lo, hi = self.range  # type: ignore[misc]
        step = self.step if self.step is not None else 1
        whole = _whole(lo) and _whole(hi) and _whole(step)
        out: list[Any] = []
        i = 0
        while True:
            value = lo + i * step
            if value > hi + 1e-9:
                break
            out.append(int(round(value)) if whole else round(value, 9))
            i += 1
        return out

    def corners(self) -> list[Any]:
        """Values worth validating a scenario with: every choice, or a range's ends."""
        values = self.values()
        return values if self.choice is not None else list(dict.fromkeys([values[0], values[-1]]))

    def draw(self, scenario_id: str, seed: int, name: str) -> Any:
        rng = random.Random(f"faultline:{scenario_id}:{seed}:{name}")
        return rng.choice(self.values())


def _whole(x: float) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_choices(choices: list[Any]) -> None:
    if len(choices) > MAX_CHOICES:  # checked here, before the pairwise comparisons below
        raise ValueError(f"at most {MAX_CHOICES} choices, got {len(choices)}")
    mappings = [c for c in choices if isinstance(c, dict)]
    if mappings and len(mappings) != len(choices):
        raise ValueError("choices must be all scalars or all mappings")
    if mappings:
        keys = set(mappings[0])
        if not keys:
            raise ValueError("a mapping choice needs at least one key")
        for i, m in enumerate(mappings[1:], start=1):
            if set(m) != keys:
                raise ValueError(f"choice {i} has keys {sorted(m)}, choice 0 has {sorted(keys)}")
    seen: list[Any] = []
    for c in choices:
        if c in seen:
            raise ValueError(f"choice {c!r} is listed twice")
        seen.append(c)


def first_values(variables: dict[str, Variable]) -> dict[str, Any]:
    return {name: var.values()[0] for name, var in variables.items()}


def drawn_values(variables: dict[str, Variable], scenario_id: str, seed: int) -> dict[str, Any]:
    return {name: var.draw(scenario_id, seed, name) for name, var in variables.items()}


def count_renderings(variables: dict[str, Variable]) -> int:
    """How many assignments corner_assignments() yields, without making them."""
    return 1 + sum(len(var.corners()) - 1 for var in variables.values())


def corner_assignments(variables: dict[str, Variable]) -> Iterator[dict[str, Any]]:
    """The first values, then each variable through its corners with the others at their first values."""
    base = first_values(variables)
    yield base
    for name, var in variables.items():
        for value in var.corners():
            if value != base[name]:
                yield {**base, name: value}


def walk_strings(data: Any, loc: Loc = ()) -> Iterator[tuple[Loc, str]]:
    """Every substitutable string value with its location."""
    if isinstance(data, dict):
        for key, value in data.items():
            if loc == () and key in UNSUBSTITUTED:
                continue
            yield from walk_strings(value, (*loc, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from walk_strings(value, (*loc, i))
    elif isinstance(data, str):
        yield loc, data


def _keys_with_braces(data: Any, loc: Loc = ()) -> Iterator[Loc]:
    if isinstance(data, dict):
        for key, value in data.items():
            if loc == () and key in UNSUBSTITUTED:
                continue
            if isinstance(key, str) and ("{{" in key or "}}" in key):
                yield (*loc, key)
            yield from _keys_with_braces(value, (*loc, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _keys_with_braces(value, (*loc, i))


def referenced(text: str) -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in REF.finditer(text)]


def check_references(data: Any, variables: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Every reference names a declared variable (and a key it has); no stray braces.

    `variables` maps names to Variable, or to None for a declaration too broken to say what keys it has.
    """
    problems: list[tuple[Loc, str]] = [
        (loc, "variables are not substituted in keys, only in values") for loc in _keys_with_braces(data)
    ]
    declared = ", ".join(variables) or "none"
    for loc, text in walk_strings(data):
        if "{{" not in text and "}}" not in text:
            continue
        if "{{" in REF.sub("", text) or "}}" in REF.sub("", text):
            problems.append((loc, "malformed variable reference; write {{ name }} or {{ name.key }}"))
            continue
        for name, key in referenced(text):
            if name not in variables:
                problems.append((loc, f"unknown variable '{name}' (declared: {declared})"))
                continue
            var = variables[name]
            if var is None:
                continue
            keys = var.keys()
            if key is None and keys:
                problems.append((loc, f"variable '{name}' is a mapping; name a key: {{{{ {name}.{keys[0]} }}}}"))
            elif key is not None and not keys:
                problems.append((loc, f"variable '{name}' has no keys; write {{{{ {name} }}}}"))
            elif key is not None and key not in keys:
                problems.append((loc, f"variable '{name}' has no key '{key}' (keys: {', '.join(keys)})"))
    return problems


_MISSING = object()


def _lookup(values: dict[str, Any], name: str, key: str | None) -> Any:
    value = values.get(name, _MISSING)
    if key is not None:
        value = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def substitute_text(text: str, values: dict[str, Any]) -> Any:
    """The text with its references replaced; a reference to nothing known is left as written."""
    whole = REF.fullmatch(text.strip())
    if whole:
        value = _lookup(values, whole.group(1), whole.group(2))
        return text if value is _MISSING else value

    def one(m: re.Match[str]) -> str:
        value = _lookup(values, m.group(1), m.group(2))
        return m.group(0) if value is _MISSING else _text(value)

    return REF.sub(one, text)


def substitute(data: Any, values: dict[str, Any], loc: Loc = ()) -> Any:
    """A copy of `data` with every reference replaced (see the module docstring for the rule)."""
    if isinstance(data, dict):
        return {
            k: (v if loc == () and k in UNSUBSTITUTED else substitute(v, values, (*loc, k))) for k, v in data.items()
        }
    if isinstance(data, list):
        return [substitute(v, values, (*loc, i)) for i, v in enumerate(data)]
    if isinstance(data, str) and "{{" in data:
        return substitute_text(data, values)
    return data
