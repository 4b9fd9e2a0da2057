"""Scenarios as data: the schema (pydantic models), the YAML loader with file:line errors, seeded rendering.

    from lab.scenario import load_scenario, render
    scenario = render(load_scenario("scenarios/slow-replica.yaml"), seed=42)

See docs/scenarios.md for the format and scenarios/README.md for the authoring guide.
"""

from lab.scenario.loader import ScenarioError, check_file, load_catalog, load_scenario, render, validate_paths
from lab.scenario.models import Scenario

__all__ = ["Scenario", "ScenarioError", "check_file", "load_catalog", "load_scenario", "render", "validate_paths"]
