"""`faultline run`, the headless runner, end to end on real stacks (slow-replica at time scale 0.05).

- solved, on a private stack it starts and tears down itself: it breaks, the reference solution fixes it, the
  score is at least 90, and nothing of the private stack is left running;
- unsolved, on the session's shared stack (`--lab-url`): it breaks, is not fixed, and scores below 50.

The reference solution and the wrong fix go through the same driver (`lab.runner.run_attempt`) in the catalog test,
for every scenario (tests/catalog).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from attemptkit import LabApi

from lab.grader import grade
from lab.runner import child_env
from lab.scenario import load_scenario, render

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]
SCALE = 0.05  # as the catalog runs: injection 1-3 s after start, a 3 s hold (probe windows keep a 10 s floor)
KEYS = {"scenario", "seed", "broke", "fixed", "score", "breakdown", "timeline"}


@pytest.fixture(scope="module")
def shared(stack: Any) -> Iterator[Any]:
    """The session's stack, left as found (the runs leave an idle load generator behind)."""
    api = LabApi(stack)
    yield stack
    api.close()


def run(*args: str, timeout: float = 420) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "run", "slow-replica", "--json", "--time-scale", str(SCALE),
                           *args], capture_output=True, text=True, timeout=timeout, env=child_env(), cwd=str(ROOT))
    assert proc.stdout.strip(), proc.stderr
    return proc, json.loads(proc.stdout)


def test_solved_on_its_own_stack_scores_at_least_90() -> None:
    proc, out = run("--solve", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert set(out) >= KEYS
    assert out["scenario"] == "slow-replica" and out["seed"] == 1
    assert out["broke"] and out["fixed"] and out["score"] >= 90, (out["score"], out["breakdown"])
    assert out["breakdown"]["diagnosis"]["points"] == 35 and out["breakdown"]["collateral"] == []
    kinds = [e["kind"] for e in out["timeline"]]
    assert kinds.index("fault") < kinds.index("action") < kinds.index("fix")
    assert out["lab"]["private"]
    home = out["lab"]["home"]
    assert not Path(home).exists()
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if any(home in a for a in p.info["cmdline"] or [])]
    assert left == [], f"processes of the private stack still running: {left}"


def test_unsolved_breaks_and_scores_below_50(shared: Any) -> None:
    stack = shared
    proc, out = run("--seed", "2", "--lab-url", stack.lab_url, "--give-up-after", "3")
    assert proc.returncode == 0, proc.stderr
    assert out["broke"] and not out["fixed"] and out["score"] < 50
    assert out["end_reason"] == "gave up without acting (headless run)"
    assert not out["lab"]["private"]
    events = stack.client.get(f"{stack.lab_url}/api/attempts/{out['attempt_id']}/events").json()
    scenario = render(load_scenario(ROOT / "scenarios" / "slow-replica.yaml"), 2, SCALE)
    assert grade(scenario, events)["score"] == out["score"]  # the journal alone gives the grade


def test_bad_arguments_are_reported_without_a_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "run", "no-such-scenario"], capture_output=True,
                          text=True, timeout=60, env=child_env(), cwd=str(ROOT))
    assert proc.returncode == 1 and "no scenario 'no-such-scenario'" in proc.stderr
    assert "Traceback" not in proc.stderr
