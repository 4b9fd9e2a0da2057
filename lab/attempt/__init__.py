"""Attempts: a scenario's lifecycle in the lab process (set up, warm up, inject, measure, verify, end, grade).

`attach(lab)` (called by lab/server.py, after the monitor, the faults and the journal) creates the lab's
AttemptManager (`lab.components["attempts"]`), grades attempts a dead lab left behind, captures the stack's
baseline once it runs, and serves the attempt routes (lab/attempt/api.py). See docs/console.md.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from lab.attempt.attempt import Attempt, AttemptError
from lab.attempt.manager import AttemptManager

__all__ = ["Attempt", "AttemptError", "AttemptManager", "attach", "lab_attempts"]
SCENARIOS_ENV = "FAULTLINE_SCENARIOS"


def lab_attempts(lab: Any) -> AttemptManager:
    manager = lab.components.get("attempts")
    if manager is None:
        from lab.journal import lab_journal

        # FAULTLINE_SCENARIOS: another catalog folder than scenarios/ (authors, tests); attempts already journaled
        # never read it again — they embed the scenario they ran
        manager = AttemptManager(lab, lab_journal(lab), os.environ.get(SCENARIOS_ENV) or None)
        lab.add_component("attempts", manager)
    return manager


def attach(lab: Any) -> Any:
    from lab.attempt.api import router

    manager = lab_attempts(lab)

    def background() -> None:
        manager.grade_unfinished()
        manager.capture_baseline_when_running()

    threading.Thread(target=background, name="faultline-attempts-init", daemon=True).start()
    return router(manager)
