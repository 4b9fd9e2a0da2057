"""Validation never crashes: randomly damaged copies of the example always get answers in the documented format.

The damage is seeded (the same 120 files on every run): lines deleted, duplicated, or given odd values.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from lab.scenario import ScenarioError, load_scenario, validate_paths
from lab.scenario.loader import CATALOG_DIR

ODD_VALUES = [
    "null", "[]", "{}", "-1", "0", "1e9", "true", "'{{ x }}'", '"{{ layout }}"', "model-9", "v7", "x: y", "- a",
    "&a b", "*a", "'", "{{", ".nan", "[1, {a: b}]", "? [a]: b", "!!binary aGk=",
]


def damaged(lines: list[str], rng: random.Random) -> str:
    lines = list(lines)
    for _ in range(rng.randint(1, 3)):
        j = rng.randrange(len(lines))
        roll = rng.random()
        if roll < 0.3:
            del lines[j]
        elif roll < 0.5:
            lines.insert(j, lines[rng.randrange(len(lines))])
        elif ":" in lines[j]:
            lines[j] = lines[j][: lines[j].index(":") + 1] + " " + rng.choice(ODD_VALUES) + "\n"
        else:
            lines[j] = rng.choice(ODD_VALUES) + "\n"
    return "".join(lines)


def test_damaged_scenarios_get_well_formed_problems(tmp_path: Path) -> None:
    original = (CATALOG_DIR / "slow-replica.yaml").read_text().splitlines(keepends=True)
    path = tmp_path / "slow-replica.yaml"
    line_format = re.compile(rf"^{re.escape(str(path))}:(\d+): \S.*?: .+$")
    rng = random.Random(20261126)
    rejected = 0
    for _ in range(120):
        text = damaged(original, rng)
        path.write_text(text)
        problems = validate_paths([path])
        n_lines = max(1, len(text.splitlines()))
        for problem in problems:
            m = line_format.match(problem)
            assert m, problem
            assert 1 <= int(m.group(1)) <= n_lines + 1, problem
        if problems:
            rejected += 1
            try:
                load_scenario(path)
            except ScenarioError as exc:
                assert exc.problems == problems
            else:
                raise AssertionError(f"validate reported problems but load_scenario accepted:\n{problems}")
        else:
            load_scenario(path)  # valid means loadable
    assert rejected > 60  # most damage is caught
