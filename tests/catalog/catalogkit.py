"""Helpers for the catalog test: one private lab shared by every run, attempts driven with the scenario self-test's
own driver (lab/selftest.py, which `faultline scenarios test` runs: `SelfTestLab`, `RunResult`, the solve and
wrong-fix checks, the baseline check), plus the catalog's CPU lock around each run.

The lab is started once (`lab.runner.PrivateLab`: a temporary home holding a copy of the trained registry, a free
block of ports); each run is one attempt on it, and the attempt engine resets the stack to its baseline between
attempts — the same path a learner's lab takes between two scenarios.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import cpulock

from lab.runner import EXIT_OK
from lab.selftest import RunResult, SelfTestLab, rendered, solve_checks, wrong_fix_checks

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"


def scenario_paths() -> list[Path]:
    """Every scenario of the catalog, by file name (a new file is picked up without touching this test)."""
    return sorted(SCENARIOS.glob("*.yaml"))


class CatalogLab(SelfTestLab):
    """The self-test's lab, each run holding the catalog's CPU lock (exclusive for a CPU-heavy scenario)."""

    def __init__(self, url: str, lock_dir: Path) -> None:
        self.lock_dir = lock_dir

        def guard(sc: Any) -> contextlib.AbstractContextManager[Any]:
            return cpulock.machine(self.lock_dir, exclusive=cpulock.is_cpu_heavy(sc))

        super().__init__(url, guard)

    def run(self, path: Path, seed: int, mode: str, time_scale: float) -> RunResult:
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


__all__ = ["EXIT_OK", "CatalogLab", "RunResult", "rendered", "scenario_paths", "solve_checks", "wrong_fix_checks"]
