"""The lab's attempts: the scenario catalog, starting one attempt at a time, the running one, and what ended —
history, debriefs and progress by skill, all read back from the journal.

This is the Python API the UI and the lab's JSON routes use (docs/console.md lists it):
`scenarios()`, `scenario(id)`, `start(scenario_id, seed, time_scale)`, `state(id)`, `take_hint(id)`,
`submit_diagnosis(id, answers)`, `claim_fixed(id)`, `abort(id)`, `debrief(id)`, `events(id)`, `history()`,
`progress()`.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from lab.attempt.attempt import Attempt, AttemptError
from lab.attempt.baseline import Baseline
from lab.journal import Journal, new_attempt_id
from lab.scenario import ScenarioError, load_scenario, render
from lab.scenario.loader import CATALOG_DIR, SUFFIX
from lab.scenario.vocab import SLUG_PATTERN

log = logging.getLogger("faultline.attempt")
BASELINE_WAIT_S = 600.0
END_WAIT_S = 120.0


class AttemptManager:
    def __init__(self, lab: Any, journal: Journal, scenarios_dir: Path | None = None) -> None:
        self.lab = lab
        self.journal = journal
        self.scenarios_dir = Path(scenarios_dir or CATALOG_DIR)
        self.baseline = Baseline(lab)
        self._active: Attempt | None = None
        self._lock = threading.RLock()
        self._closed = False

    # --- the catalog ----------------------------------------------------------------------------------------

    def _load(self, scenario_id: str) -> Any:
        import re

        if not isinstance(scenario_id, str) or not re.match(SLUG_PATTERN, scenario_id):
            raise AttemptError(f"{scenario_id!r} is not a scenario id (lowercase letters, digits and '-')", 422)
        path = self.scenarios_dir / f"{scenario_id}{SUFFIX}"
        if not os.path.lexists(path):  # a pipe or a device there is load_scenario's to refuse, with its message
            known = ", ".join(p.stem for p in sorted(self.scenarios_dir.glob(f"*{SUFFIX}"))) or "none"
            raise AttemptError(f"no scenario {scenario_id!r}; known: {known}", 404)
        try:
            return load_scenario(path)
        except ScenarioError as exc:
            raise AttemptError(f"scenario {scenario_id} is invalid: {exc.problems[0]}", 422) from exc

    def scenarios(self) -> list[dict[str, Any]]:
        """The catalog cards, with the learner's best score on each."""
        best: dict[str, float] = {}
        for a in self.journal.attempts(limit=10_000):
            if a["score"] is not None:
                best[a["scenario_id"]] = max(best.get(a["scenario_id"], 0.0), a["score"])
        out = []
        for path in sorted(self.scenarios_dir.glob(f"*{SUFFIX}")):
            try:
                s = load_scenario(path)
            except ScenarioError:
                continue
            out.append({**_card(s), "best_score": best.get(s.id)})
        return out

    def scenario(self, scenario_id: str, seed: int | None = None) -> dict[str, Any]:
        """One card with its briefing (rendered with `seed` when given) — never faults, answers or hints."""
        s = self._load(scenario_id)
        if seed is not None:
            s = render(s, seed)
        return {**_card(s), "briefing": s.briefing, "stack": {"replicas": s.stack.replicas,
                                                               "traffic": s.stack.traffic.model_dump()}}

    # --- attempts -----------------------------------------------------------------------------------------------

    def start(self, scenario_id: str, seed: int | None = None, time_scale: float | None = None) -> dict[str, Any]:
        if time_scale is not None and not 0 < time_scale <= 10:
            raise AttemptError("time_scale must be in (0, 10]", 422)
        if seed is not None and not 0 <= seed <= 2**31:
            raise AttemptError("seed must be between 0 and 2^31", 422)
        template = self._load(scenario_id)
        seed = random.randrange(10_000) if seed is None else seed
        scenario = render(template, seed, time_scale)
        ending = self._active
        if ending is not None and ending.status != "running":
            ending.wait(END_WAIT_S)  # it has ended and is putting the stack back: the next one waits for that
        with self._lock:
            if self._closed:
                raise AttemptError("the lab is shutting down", 409)
            if self._active is not None:
                raise AttemptError(f"attempt {self._active.id} ({self._active.scenario.id}) is running: finish or "
                                   "abort it first", 409)
            if self.lab.stack.phase != "running":
                raise AttemptError(f"the stack is not running (phase {self.lab.stack.phase})", 409)
            if self.baseline.snapshot is None:
                self.baseline.capture()
            attempt_id = new_attempt_id(scenario.id)
            self.journal.open_attempt(scenario.id, seed, scenario.time_scale, {
                "title": scenario.title, "values": scenario.values, "lab_run_id": self.lab.run_id},
                attempt_id=attempt_id)
            attempt = Attempt(self, attempt_id, scenario, self.journal)
            self._active = attempt
            attempt.start()
        return attempt.state()

    def ended(self, attempt: Attempt) -> None:
        with self._lock:
            if self._active is attempt:
                self._active = None
            self._last = attempt

    @property
    def closing(self) -> bool:
        return self._closed

    def active(self) -> Attempt | None:
        return self._active

    def active_id(self) -> str | None:
        a = self._active
        return a.id if a is not None else None

    def for_console(self, attempt_id: str | None) -> Attempt | None:
        """The attempt a console operation belongs to: the running one (None in the sandbox)."""
        a = self._active
        if attempt_id is None:
            return a
        if a is None or a.id != attempt_id:
            raise AttemptError(f"attempt {attempt_id} is not running; console operations go to the running attempt",
                               409)
        return a

    def _running(self, attempt_id: str) -> Attempt:
        a = self._active
        if a is not None and a.id == attempt_id:
            return a
        row = self.journal.attempt(attempt_id)
        if row is None:
            raise AttemptError(f"no attempt {attempt_id!r}", 404)
        raise AttemptError(f"attempt {attempt_id} has ended ({row['status']})", 409)

    def state(self, attempt_id: str) -> dict[str, Any]:
        a = self._active
        if a is not None and a.id == attempt_id:
            return a.state()
        last = getattr(self, "_last", None)
        if last is not None and last.id == attempt_id:
            return last.state()
        row = self.journal.attempt(attempt_id)
        if row is None:
            raise AttemptError(f"no attempt {attempt_id!r}", 404)
        ended = [e for e in self.journal.events(attempt_id, ("attempt_finished", "attempt_aborted"))]
        return {"attempt_id": row["id"], "scenario_id": row["scenario_id"], "seed": row["seed"],
                "time_scale": row["time_scale"], "status": row["status"], "phase": row["status"],
                "started_at": row["started_at"], "ended_at": row["ended_at"], "score": row["score"],
                "end_reason": ended[-1]["data"].get("reason") if ended else None}

    def take_hint(self, attempt_id: str) -> dict[str, Any]:
        return self._running(attempt_id).take_hint()

    def submit_diagnosis(self, attempt_id: str, answers: Any) -> dict[str, Any]:
        return {"submitted": self._running(attempt_id).submit_diagnosis(answers)}

    def claim_fixed(self, attempt_id: str) -> dict[str, Any]:
        return self._running(attempt_id).claim_fixed()

    def abort(self, attempt_id: str, reason: str | None = None) -> dict[str, Any]:
        a = self._running(attempt_id)
        a.abort(reason or "given up by the learner")
        return a.state()

    # --- what ended ---------------------------------------------------------------------------------------------

    def _rendered(self, row: dict[str, Any]) -> Any:
        return render(self._load(row["scenario_id"]), row["seed"], row["time_scale"])

    def debrief(self, attempt_id: str) -> dict[str, Any]:
        from lab.grader import debrief, debrief_text

        row = self.journal.attempt(attempt_id)
        if row is None:
            raise AttemptError(f"no attempt {attempt_id!r}", 404)
        if row["status"] == "running":
            raise AttemptError("the debrief opens when the attempt ends (it tells the answer)", 409)
        d = debrief(self._rendered(row), self.journal.events(attempt_id), row)
        d["text"] = debrief_text(d)
        return d

    def events(self, attempt_id: str) -> list[dict[str, Any]]:
        row = self.journal.attempt(attempt_id)
        if row is None:
            raise AttemptError(f"no attempt {attempt_id!r}", 404)
        if row["status"] == "running":
            raise AttemptError("the journal of a running attempt is shown once it ends (it names the faults)", 409)
        return self.journal.events(attempt_id)

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        return [{**a, "duration_s": None if a["ended_at"] is None else round(a["ended_at"] - a["started_at"], 1)}
                for a in self.journal.attempts(limit=limit)]

    def progress(self) -> dict[str, Any]:
        """Per skill: attempts, scenarios tried, best and mean of each scenario's best score."""
        cards = {c["id"]: c for c in self.scenarios()}
        best: dict[str, float] = {}
        tries: dict[str, int] = {}
        for a in self.journal.attempts(limit=10_000):
            sid = a["scenario_id"]
            tries[sid] = tries.get(sid, 0) + 1
            if a["score"] is not None:
                best[sid] = max(best.get(sid, 0.0), a["score"])
        skills: dict[str, dict[str, Any]] = {}
        for sid, card in cards.items():
            for skill in card["skills"]:
                s = skills.setdefault(skill, {"skill": skill, "scenarios": 0, "tried": 0, "attempts": 0,
                                              "best": [], "mean_best_score": None})
                s["scenarios"] += 1
                s["attempts"] += tries.get(sid, 0)
                if sid in tries:
                    s["tried"] += 1
                if sid in best:
                    s["best"].append(best[sid])
        for s in skills.values():
            scores = s.pop("best")
            s["mean_best_score"] = round(sum(scores) / len(scores), 1) if scores else None
        return {"skills": sorted(skills.values(), key=lambda s: s["skill"]),
                "attempts": sum(tries.values()), "scenarios_tried": len(tries)}

    def grade_unfinished(self) -> list[str]:
        """Grade attempts a dead lab left aborted without a grade (their journal is complete up to the crash)."""
        from lab.grader import grade

        done = []
        for row in self.journal.attempts(limit=10_000):
            if row["status"] != "aborted" or row["score"] is not None:
                continue
            if self.journal.events(row["id"], ("graded",)):
                continue
            try:
                result = grade(self._rendered(row), self.journal.events(row["id"]))
            except (AttemptError, ScenarioError, ValueError) as exc:
                log.warning("cannot grade %s: %s", row["id"], exc)
                continue
            self.journal.append(row["id"], "graded", result)
            done.append(row["id"])
        return done

    # --- the lab -------------------------------------------------------------------------------------------------

    def capture_baseline_when_running(self, timeout_s: float = BASELINE_WAIT_S) -> None:
        deadline = time.time() + timeout_s
        while self.lab.stack.phase != "running":
            if self.lab.stack.phase in ("failed", "stopping", "stopped") or time.time() > deadline or self._closed:
                return
            time.sleep(0.2)
        with self._lock:
            if self.baseline.snapshot is None:
                try:
                    self.baseline.capture()
                except Exception as exc:  # noqa: BLE001 - retried when the first attempt starts
                    log.warning("baseline capture failed: %r", exc)

    def close(self) -> None:
        """The lab is stopping: the running attempt ends (aborted), its faults reverted and its grade journaled."""
        with self._lock:
            self._closed = True
            a = self._active
        if a is not None:
            try:
                a.abort("the lab stopped")
            except AttemptError:
                pass


def _card(s: Any) -> dict[str, Any]:
    return {"id": s.id, "title": s.title, "summary": s.summary, "difficulty": s.difficulty,
            "skills": list(s.skills), "estimated_minutes": s.estimated_minutes}
