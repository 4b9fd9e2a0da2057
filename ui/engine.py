"""The UI's view of the attempt engine: lab.attempt's AttemptManager, lab.console and the journal.

Every decision — what an attempt is, what a hint costs, whether a diagnosis is right, the score — belongs to
lab.attempt, lab.console, lab.journal and lab.grader; this module only finds them on the Lab, turns their
refusals (AttemptError, ConsoleError: each with an HTTP status and a message for the learner) into the UI's
4xx answers, and shapes data for templates. A lab without the engine answers attempt pages with 503.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ui.security import Refused

RESET_WAIT_S = 120.0


def _status_of(exc: Exception) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and 400 <= status < 600 else None


def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run an engine call; its own refusals (status + message) become Refused, anything else propagates."""
    try:
        return fn(*args)
    except Exception as exc:
        status = _status_of(exc)
        if status is None or type(exc).__name__ not in ("AttemptError", "ConsoleError"):
            raise
        raise Refused(status, str(exc)) from None


class Engine:
    def __init__(self, lab: Any) -> None:
        self.lab = lab

    @property
    def manager(self) -> Any:
        manager = self.lab.components.get("attempts")
        if manager is None:
            raise Refused(503, "attempts are not available in this lab (the lab.attempt component did not attach; "
                               "see `faultline status`)")
        return manager

    @property
    def journal(self) -> Any | None:
        return self.lab.components.get("journal")

    # --- history ------------------------------------------------------------------------------------------------

    def history(self, limit: int = 100, scenario_id: str | None = None) -> list[dict[str, Any]]:
        journal = self.journal
        return journal.attempts(limit=limit, scenario_id=scenario_id) if journal is not None else []

    def best_scores(self) -> dict[str, float]:
        best: dict[str, float] = {}
        for a in self.history(limit=10_000):
            score = a.get("score")
            if score is not None and score > best.get(a["scenario_id"], -1):
                best[a["scenario_id"]] = score
        return best

    def progress_by_skill(self, scenarios: list[Any]) -> list[dict[str, Any]]:
        """Per skill: scenarios exercising it, how many were tried, attempts, the mean of each one's best score.

        The same figures as lab.attempt's `progress()` (the same function: an attempt counts under the skills of
        the scenario it ran, as journaled), counted over the UI's cached catalog: that call re-reads and
        re-validates every scenario file, which costs a second per page view on a busy machine."""
        from lab.attempt.manager import skill_progress

        by_id = {s.id: list(s.skills) for s in scenarios}
        return skill_progress(list(by_id.values()), by_id, self.history(limit=10_000))["skills"]

    # --- attempts -----------------------------------------------------------------------------------------------

    def running_attempt(self) -> dict[str, Any] | None:
        manager = self.lab.components.get("attempts")
        active = manager.active() if manager is not None else None
        return {"id": active.id, "scenario_id": active.scenario.id} if active is not None else None

    def start(self, scenario_id: str, seed: int | None, time_scale: float | None) -> dict[str, Any]:
        manager = self.manager
        active = manager.active()
        if active is not None and active.status != "running":
            # the last attempt is graded and puts the stack back to its baseline before the next may start:
            # "Try again" right after a debrief waits for that rather than failing
            active.wait(RESET_WAIT_S)
        return call(manager.start, scenario_id, seed, time_scale)

    def start_document(self, document: dict[str, Any], seed: int | None, time_scale: float | None) -> dict[str, Any]:
        """An attempt at a scenario document (a pasted file): validated by the lab like `faultline run PATH`'s."""
        manager = self.manager
        active = manager.active()
        if active is not None and active.status != "running":
            active.wait(RESET_WAIT_S)
        return call(manager.start, None, seed, time_scale, document)

    def state(self, attempt_id: str) -> dict[str, Any]:
        return call(self.manager.state, attempt_id)

    def attempt_or_404(self, attempt_id: str) -> dict[str, Any]:
        return self.state(attempt_id)

    def take_hint(self, attempt_id: str) -> dict[str, Any]:
        return call(self.manager.take_hint, attempt_id)

    def submit_diagnosis(self, attempt_id: str, answers: dict[str, str]) -> dict[str, Any]:
        return call(self.manager.submit_diagnosis, attempt_id, answers)

    def declare(self, attempt_id: str) -> dict[str, Any]:
        return call(self.manager.declare, attempt_id)

    def pin(self, attempt_id: str, seq: int) -> dict[str, Any]:
        return call(self.manager.pin, attempt_id, seq)

    def claim_fixed(self, attempt_id: str) -> dict[str, Any]:
        return call(self.manager.claim_fixed, attempt_id)

    def abort(self, attempt_id: str) -> dict[str, Any]:
        return call(self.manager.abort, attempt_id, "given up by the learner (UI)")

    def debrief(self, attempt_id: str) -> dict[str, Any]:
        return call(self.manager.debrief, attempt_id)

    def new_seed(self, avoid: int | None = None) -> int:
        """A fresh seed ("try again" must not replay the same variant)."""
        while True:
            seed = random.randrange(10_000)
            if seed != avoid:
                return seed

    def attempt_series(self, attempt_id: str) -> dict[str, Any] | None:
        """The monitor's series over the attempt (frozen when it ended), if this lab still has them."""
        runner = self.lab.components.get("monitor")
        if runner is None:
            return None
        try:
            return runner.monitor.attempt(attempt_id)
        except KeyError:
            return None

    # --- the console ----------------------------------------------------------------------------------------------

    def run_op(self, attempt_id: str | None, op: str, args: dict[str, Any]) -> Any:
        from lab.console import run

        return call(run, self.lab, attempt_id, op, args)
