"""The scenario catalog, end to end: every file in scenarios/, run for real on private labs (one per xdist worker).

For every scenario (parametrized over the files, so a new scenario is covered without touching this test):
- it validates, and renders for every seed used here;
- for one seed: the steady state breaks after the injection, the reference solution (with the right diagnosis)
  fixes it — an accepted end state holds its probes — and grades at least 90, with full diagnosis credit and no
  collateral, and the learner who does nothing scores below 50 — graded on that same run's journal up to the
  learner's first move, which is exactly an attempt where nobody acted (the grade is a pure function of the
  journal); afterwards the stack is back to its baseline and healthy (faults reverted, configs, versions,
  replicas and proxies as before, a real scoring request answered by v1);
- for another seed: the steady state breaks too, and the scenario's plausible wrong fix breaks nothing further but
  does not pass (the fix claim is rejected, the grade stays below 90 and is penalised).
One seed each proves what the brief asks of every scenario (it breaks, its solution fixes it, a plausible wrong fix
does not), and the two runs draw different variables. A second solve seed was 25 more runs, ~7 of the catalog's
~20 minutes, and kept `make test` over issue 15's 50 minutes on CI; a second wrong-fix seed was 25 more again.
`faultline scenarios test --seeds 2` runs seeds 1 and 2 solved and 3 and 4 wrongly fixed, for any file.
The checks are lab/selftest.py's `solve_checks` and `wrong_fix_checks`: `faultline scenarios test` runs the same.
- once, on a stack of its own, the real `faultline run ID --json` (unsolved) breaks, scores below 50 and leaves
  nothing running.

Time is compressed by TIME_SCALE (injection times, probe windows, hold times and par times); the attempt engine's
10 s floor per probe window (`MIN_WINDOW_S`) and the physics of each fault (a leak needs traffic to grow, labels
arrive late) set the rest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cpulock
import psutil
import pytest
from catalogkit import (
    ROOT,
    CatalogLab,
    lab_groups,
    rendered,
    run_group,
    run_takes_the_machine,
    scenario_paths,
    solve_checks,
    wrong_fix_checks,
)

from lab.runner import child_env
from lab.scenario import check_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TIME_SCALE = 0.05
SOLVE_SEEDS = (1,)
WRONG_FIX_SEEDS = (3,)
PATHS = scenario_paths()
IDS = [p.stem for p in PATHS]


def track_of(path: Path) -> str:
    """The scenario's track: its runs go to that track's private lab."""
    return rendered(path, 1, TIME_SCALE).track


GROUPS = lab_groups(PATHS, {p: track_of(p) for p in PATHS})  # the same as catalogkit.scenario_groups()


def runs(seeds: tuple[int, ...]) -> list[Any]:
    """(path, seed) for every scenario and seed, each run of another track than fraud marked with its scenario's
    xdist group (`make test` runs the catalog with `--dist loadgroup`; the groups are read off the test ids by
    conftest.py's scheduler, which hands out the biggest groups first)."""
    cases = []
    for p in PATHS:
        group = GROUPS[p]
        marks = [] if group is None else [pytest.mark.xdist_group(group)]
        cases += [pytest.param(p, s, id=f"{p.stem}-seed{s}", marks=marks) for s in seeds]
    return cases


def test_llm_scenarios_spread_over_labs_and_each_keeps_one() -> None:
    """Ten LLM scenarios between fraud ones: their 40 runs split 20/20 over two groups, a scenario's runs in one."""
    paths = [Path(f"s{i:02d}.yaml") for i in range(16)]
    tracks = {p: ("llm" if i % 3 else "fraud") for i, p in enumerate(paths)}  # s01, s02, s04, ..., s14
    groups = lab_groups(paths, tracks)
    llm = [p for p in paths if tracks[p] == "llm"]
    assert len(llm) == 10 and all(groups[p] is None for p in paths if tracks[p] == "fraud")
    assert sorted(groups[p] for p in llm) == ["track-llm-a"] * 5 + ["track-llm-b"] * 5  # type: ignore[type-var]
    assert lab_groups(paths, tracks, labs=1)[llm[-1]] == "track-llm-a"


def test_the_scheduler_reads_each_runs_group_off_its_test_id() -> None:
    """What conftest.py's xdist scheduler keys on: every run of an LLM scenario, solved or wrongly fixed, has its
    scenario's group; a fraud run and the other tests have none (one test, one unit)."""
    for p in PATHS:
        ids = [f"tests/catalog/test_catalog.py::test_it_breaks_and_the_reference_solution_fixes_it[{p.stem}-seed{s}]"
               for s in SOLVE_SEEDS]
        ids += [f"tests/catalog/test_catalog.py::test_the_wrong_fix_does_not_pass[{p.stem}-seed{s}]"
                for s in WRONG_FIX_SEEDS]
        assert {run_group(i) for i in ids} == {GROUPS[p]}, p.stem
        validates = f"tests/catalog/test_catalog.py::test_scenario_validates_and_renders_for_every_seed[{p.stem}]"
        assert run_group(validates) is None


def test_only_runs_that_load_the_cpu_take_the_machine_and_they_are_queued_first(request: pytest.FixtureRequest) -> None:
    """The CPU lock is taken exclusively on what a run does: stale-draft's wrong fix scales (a replica starting
    imports torch on every core) but its solution does not; noisy-neighbour's CPU hog loads the machine whatever the
    learner does. conftest.py queues those runs before every other test."""
    solve = "tests/catalog/test_catalog.py::test_it_breaks_and_the_reference_solution_fixes_it[{}-seed1]"
    wrong = "tests/catalog/test_catalog.py::test_the_wrong_fix_does_not_pass[{}-seed3]"
    alone = {sid: (run_takes_the_machine(solve.format(sid)), run_takes_the_machine(wrong.format(sid)))
             for sid in ("stale-draft", "noisy-neighbour", "retry-storm")}
    assert alone == {"stale-draft": (False, True), "noisy-neighbour": (True, True), "retry-storm": (False, False)}
    assert not run_takes_the_machine("tests/catalog/test_catalog.py::test_scenario_validates_and_renders_for_every_seed"
                                     "[stale-draft]")
    queued = [run_takes_the_machine(i.nodeid) for i in request.session.items]
    assert queued == sorted(queued, reverse=True), "a run that takes the machine alone is queued after a shared one"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_scenario_validates_and_renders_for_every_seed(path: Path) -> None:
    scenario, problems = check_file(path)
    assert problems == [] and scenario is not None, "\n".join(problems)
    assert scenario.id == path.stem
    assert scenario.wrong_fix, f"{path.name}: every catalog scenario needs a plausible wrong fix to test"
    for seed in (*SOLVE_SEEDS, *WRONG_FIX_SEEDS):
        sc = rendered(path, seed, TIME_SCALE)
        assert sc.seed == seed and sc.time_scale == TIME_SCALE


@pytest.mark.parametrize(("path", "seed"), runs(SOLVE_SEEDS))
def test_it_breaks_and_the_reference_solution_fixes_it(catalog_labs: Any, path: Path, seed: int) -> None:
    catalog_lab: CatalogLab = catalog_labs(track_of(path))
    res = catalog_lab.run(path, seed, "solve", TIME_SCALE)
    print(res.summary())
    failed = [c for c in solve_checks(res) if not c.ok]  # the same checks as `faultline scenarios test`
    assert not failed, res.failure("; ".join(f"{c.name}: {c.detail}" for c in failed))
    catalog_lab.wait_healthy(catalog_lab.status()["public_url"])


@pytest.mark.parametrize(("path", "seed"), runs(WRONG_FIX_SEEDS))
def test_the_wrong_fix_does_not_pass(catalog_labs: Any, path: Path, seed: int) -> None:
    catalog_lab: CatalogLab = catalog_labs(track_of(path))
    res = catalog_lab.run(path, seed, "wrong-fix", TIME_SCALE)
    print(res.summary())
    failed = [c for c in wrong_fix_checks(res) if not c.ok]  # the same checks as `faultline scenarios test`
    assert not failed, res.failure("; ".join(f"{c.name}: {c.detail}" for c in failed))
    catalog_lab.wait_healthy(catalog_lab.status()["public_url"])


def test_faultline_run_unsolved_on_its_own_stack_scores_below_50(cpu_lock_dir: Path) -> None:
    with cpulock.machine(cpu_lock_dir, exclusive=True):  # a whole stack starting: torch imports on every core
        proc = subprocess.run([sys.executable, "-m", "lab.cli", "run", "feature-store-outage", "--json", "--seed",
                               "4", "--time-scale", str(TIME_SCALE), "--give-up-after", "2"],
                              capture_output=True, text=True, timeout=420, env=child_env(), cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout)
    assert out["scenario"] == "feature-store-outage" and out["seed"] == 4
    assert out["broke"] and not out["fixed"] and out["score"] < 50, (out["score"], out["breakdown"])
    assert out["lab"]["private"] and not Path(out["lab"]["home"]).exists()
    home = out["lab"]["home"]
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if any(home in a for a in p.info["cmdline"] or [])]
    assert left == [], f"processes of the private stack still running: {left}"
