"""Scenarios as data: the schema (pydantic models), the YAML loader with file:line errors, seeded rendering.

    from lab.scenario import load_scenario, render
    scenario = render(load_scenario("scenarios/slow-replica.yaml"), seed=42)

See docs/scenarios.md for the format and scenarios/README.md for the authoring guide.

The names below are loaded on first use: the fault kinds (lab/faults/kinds/) import lab.scenario's vocabulary
while lab.scenario.faults assembles them, and must not pull in the loader and models that wait for that.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.scenario.loader import ScenarioError, check_file, load_catalog, load_scenario, render, validate_paths
    from lab.scenario.models import Scenario

_EXPORTS = {"Scenario": "lab.scenario.models", **{name: "lab.scenario.loader" for name in (
    "ScenarioError", "check_file", "load_catalog", "load_scenario", "render", "validate_paths")}}

__all__ = ["Scenario", "ScenarioError", "check_file", "load_catalog", "load_scenario", "render", "validate_paths"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lab.scenario' has no attribute {name!r}")
