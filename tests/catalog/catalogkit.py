"""Helpers for the catalog test: one private lab shared by every run, attempts driven with the scenario self-test's
own driver (lab/selftest.py, which `faultline scenarios test` runs: `SelfTestLab`, `RunResult`, the solve and
wrong-fix checks, the baseline check), plus the catalog's CPU lock around each run.

The lab is started once (`lab.runner.PrivateLab`: a temporary home holding a copy of the trained registry, a free
block of ports); each run is one attempt on it, and the attempt engine resets the stack to its baseline between
attempts — the same path a learner's lab takes between two scenarios.
"""

from __future__ import annotations

import contextlib
import re
from functools import cache
from pathlib import Path
from typing import Any

import cpulock

from lab.runner import EXIT_OK
from lab.selftest import DEFAULT_TIME_SCALE, RunResult, SelfTestLab, rendered, solve_checks, wrong_fix_checks

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"


def scenario_paths() -> list[Path]:
    """Every scenario of the catalog, by file name (a new file is picked up without touching this test)."""
    return sorted(SCENARIOS.glob("*.yaml"))


# How many private labs the runs of a track other than fraud spread over (one xdist group each). An LLM run takes
# 45-80 s and the LLM catalog has ~10 scenarios (3 runs each): on one lab they would run serially for ~30 min.
TRACK_LABS = 2


def lab_groups(paths: list[Path], tracks: dict[Path, str], labs: int = TRACK_LABS) -> dict[Path, str | None]:
    """The xdist group of each scenario's runs: none for a fraud scenario (its runs spread over every worker's
    fraud lab, one test at a time); for another track, `track-TRACK-a`, `-b`, ... dealt round-robin over that track's
    scenarios in file order, so every run of one scenario goes to the same lab and the track's runs fill `labs` of
    them. A worker that gets two groups of one track runs both on its one lab of that track."""
    groups: dict[Path, str | None] = {}
    dealt: dict[str, int] = {}
    for p in paths:
        track = tracks[p]
        if track == "fraud":
            groups[p] = None
            continue
        n = dealt.get(track, 0)
        dealt[track] = n + 1
        groups[p] = f"track-{track}-{'abcdefghijklmnopqrstuvwxyz'[n % labs]}"
    return groups


@cache
def scenario_groups() -> dict[str, str]:
    """{scenario id: its runs' group} for the catalog's scenarios that have one."""
    paths = scenario_paths()
    groups = lab_groups(paths, {p: rendered(p, 1, DEFAULT_TIME_SCALE).track for p in paths})
    return {p.stem: g for p, g in groups.items() if g is not None}


def run_group(nodeid: str) -> str | None:
    """The group of a catalog run from its test id (`...[SCENARIO-seedN]`), None for any other test."""
    m = re.search(r"\[(.+)-seed\d+\]$", nodeid)
    return None if m is None else scenario_groups().get(m.group(1))


# A catalog run's test id: `test_it_breaks_...[ID-seedN]` solves, `test_the_wrong_fix_...[ID-seedN]` wrongly fixes.
RUN_ID = re.compile(r"::test_(?P<test>it_breaks|the_wrong_fix)\w*\[(?P<id>.+)-seed(?P<seed>\d+)\]$")


@cache
def run_takes_the_machine(nodeid: str) -> bool:
    """Whether the catalog run of this test id holds the CPU lock exclusively (`cpulock.is_cpu_heavy` on the ops
    that run applies); False for any other test."""
    m = RUN_ID.search(nodeid)
    path = SCENARIOS / f"{m.group('id')}.yaml" if m else None
    if m is None or path is None or not path.is_file():
        return False
    mode = "solve" if m.group("test") == "it_breaks" else "wrong-fix"
    return cpulock.is_cpu_heavy(rendered(path, int(m.group("seed")), DEFAULT_TIME_SCALE), mode)


class CatalogLab(SelfTestLab):
    """The self-test's lab, each run holding the catalog's CPU lock (exclusive when the run loads the CPU: a CPU
    fault, or this run's ops start replicas)."""

    def __init__(self, url: str, lock_dir: Path) -> None:
        self.lock_dir = lock_dir
        self.mode: str | None = None  # the run's, set by run(): a solved run does not apply the wrong fix's ops

        def guard(sc: Any) -> contextlib.AbstractContextManager[Any]:
            return cpulock.machine(self.lock_dir, exclusive=cpulock.is_cpu_heavy(sc, self.mode))

        super().__init__(url, guard)

    def run(self, path: Path, seed: int, mode: str, time_scale: float) -> RunResult:
        self.mode = mode
        try:
            return super().run(path, seed, mode, time_scale)
        except Exception as exc:  # noqa: BLE001 - the test's message: the run, and the journal of its attempt
            raise AssertionError(f"{exc}\n{self._last_journal()}") from exc

    def _last_journal(self) -> str:
        """The latest attempt's journal, once it has ended (for the message of a run that failed half-way)."""
        import time

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            last = self.call("GET", "/api/attempts?limit=1")
            if last and last[0]["status"] != "running":
                events = self.call("GET", f"/api/attempts/{last[0]['id']}/events")
                return "\n".join(f"  {e['type']} {str(e['data'])[:200]}" for e in events)
            time.sleep(0.5)
        return "(the attempt did not end within 60 s)"


__all__ = ["EXIT_OK", "TRACK_LABS", "CatalogLab", "RunResult", "lab_groups", "rendered", "run_group",
           "run_takes_the_machine", "scenario_groups", "scenario_paths", "solve_checks", "wrong_fix_checks"]
