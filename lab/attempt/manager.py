"""The lab's attempts: the scenario catalog, starting one attempt at a time, the running one, and what ended —
history, debriefs and progress by skill, all read back from the journal.

This is the Python API the UI and the lab's JSON routes use (docs/console.md lists it):
`scenarios()`, `scenario(id)`, `start(scenario_id, seed, time_scale)`, `state(id)`, `take_hint(id)`,
`submit_diagnosis(id, answers)`, `claim_fixed(id)`, `abort(id)`, `debrief(id)`, `events(id)`, `history()`,
`progress()`.

What an attempt ran is journaled with it (the rendered scenario document, its sha256, the source file's path and
sha256): the running attempt, its grade, debrief, state, history and progress are read from that embedded copy,
never from the scenario file, so editing or deleting a file never changes an old attempt. Attempts journaled
before scenarios were embedded fall back to the file, and their debrief says so (`scenario_from: "file"`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lab.attempt.attempt import Attempt, AttemptError
from lab.attempt.baseline import Baseline
from lab.journal import Journal, JournalError, new_attempt_id, scenario_digest
from lab.scenario import Scenario, ScenarioError, load_scenario, render
from lab.scenario.folders import index as scenario_index
from lab.scenario.loader import CATALOG_DIR, SUFFIX
from lab.scenario.models import DEFER_CHECKS
from lab.scenario.vocab import SLUG_PATTERN

log = logging.getLogger("faultline.attempt")
BASELINE_WAIT_S = 600.0
END_WAIT_S = 120.0
FROM_FILE_NOTE = ("this attempt was journaled before scenarios were embedded in the journal: its scenario is read "
                  "from the scenario file as it is now, which may have changed since the attempt ran")


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

    def _path(self, scenario_id: str) -> Path:
        import re

        if not isinstance(scenario_id, str) or not re.match(SLUG_PATTERN, scenario_id):
            raise AttemptError(f"{scenario_id!r} is not a scenario id (lowercase letters, digits and '-')", 422)
        found, _ = scenario_index(self.scenarios_dir)
        source = found.get(scenario_id)
        path = source.path if source is not None else self.scenarios_dir / f"{scenario_id}{SUFFIX}"
        if not os.path.lexists(path):  # a pipe or a device there is load_scenario's to refuse, with its message
            known = ", ".join(sorted(found)) or "none"
            raise AttemptError(f"no scenario {scenario_id!r}; known: {known}", 404)
        return path

    def _load(self, scenario_id: str) -> Any:
        path = self._path(scenario_id)
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
        found, _ = scenario_index(self.scenarios_dir)  # the catalog, then `serve --scenarios` folders (local)
        for scenario_id in sorted(found):
            try:
                s = load_scenario(found[scenario_id].path)
            except ScenarioError:
                continue
            out.append({**_card(s), "best_score": best.get(s.id), "local": found[scenario_id].local})
        return out

    def scenario(self, scenario_id: str, seed: int | None = None) -> dict[str, Any]:
        """One card with its briefing (rendered with `seed` when given) — never faults, answers or hints."""
        s = self._load(scenario_id)
        if seed is not None:
            s = render(s, seed)
        return {**_card(s), "briefing": s.briefing, "stack": {"track": s.track, "replicas": s.stack.replicas,
                                                               "traffic": s.stack.traffic.model_dump()}}

    # --- attempts -----------------------------------------------------------------------------------------------

    def _document(self, document: Any) -> tuple[Scenario, dict[str, Any]]:
        """An inline scenario document (the data of a scenario file, as JSON), validated by the catalog's loader.

        Its id may not name a catalog scenario with other content: that one is refused, never swapped in."""
        from lab.scenario.errors import format_loc
        from lab.scenario.loader import analyse

        template, problems = analyse(document)
        if template is None:
            shown = [f"{format_loc(loc) or '<scenario>'}: {msg}" for loc, msg in problems[:8]]
            more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
            raise AttemptError("the scenario document is invalid: " + "; ".join(shown) + more, 422)
        known = scenario_index(self.scenarios_dir)[0].get(template.id)  # the catalog's or a local folder's
        path = known.path if known is not None else self.scenarios_dir / f"{template.id}{SUFFIX}"
        if path.is_file():
            try:
                same = load_scenario(path)._template == template._template
            except ScenarioError:
                same = False
            if not same:
                raise AttemptError(f"scenario id {template.id!r} belongs to the catalog ({path.name}) and this "
                                   "document differs from it: give the document an id of its own to run it", 409)
            return template, {"kind": "file", "path": str(path), "sha256": _file_sha256(path)}
        return template, {"kind": "document", "path": None, "sha256": scenario_digest(document)}

    def start(self, scenario_id: str | None, seed: int | None = None, time_scale: float | None = None,
              document: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start an attempt at a catalog scenario, or at an inline `document` (then `scenario_id` may be None)."""
        if time_scale is not None and not 0 < time_scale <= 10:
            raise AttemptError("time_scale must be in (0, 10]", 422)
        if seed is not None and not 0 <= seed <= 2**31:
            raise AttemptError("seed must be between 0 and 2^31", 422)
        if document is not None:
            if scenario_id is not None and isinstance(document, dict) and document.get("id") != scenario_id:
                raise AttemptError(f"scenario_id {scenario_id!r} is not the document's id "
                                   f"({document.get('id')!r}); give one of them", 422)
            template, source = self._document(document)
        elif scenario_id is None:
            raise AttemptError("give a scenario_id or a scenario document", 422)
        else:
            path = self._path(scenario_id)
            source = {"kind": "file", "path": str(path), "sha256": _file_sha256(path)}
            template = self._load(scenario_id)
        seed = random.randrange(10_000) if seed is None else seed
        try:
            scenario = render(template, seed, time_scale)
        except ScenarioError as exc:
            raise AttemptError(f"the scenario cannot be rendered with seed {seed}: {exc.problems[0]}", 422) from exc
        document = scenario.model_dump(mode="json", by_alias=True)
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
                attempt_id=attempt_id, scenario=document, source=source)
            # the attempt runs what the journal holds, rebuilt from it: what is graded later is what ran
            ran, _ = self._ran({"id": attempt_id, "scenario_id": scenario.id, "seed": seed,
                                "time_scale": scenario.time_scale})
            attempt = Attempt(self, attempt_id, ran, self.journal)
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
        return {"attempt_id": row["id"], "scenario_id": row["scenario_id"],
                "title": row["title"] or row["scenario_id"], "seed": row["seed"], "time_scale": row["time_scale"],
                "status": row["status"], "phase": row["status"],
                "started_at": row["started_at"], "ended_at": row["ended_at"], "score": row["score"],
                "end_reason": ended[-1]["data"].get("reason") if ended else None}

    def take_hint(self, attempt_id: str) -> dict[str, Any]:
        return self._running(attempt_id).take_hint()

    def submit_diagnosis(self, attempt_id: str, answers: Any) -> dict[str, Any]:
        return {"submitted": self._running(attempt_id).submit_diagnosis(answers)}

    def declare(self, attempt_id: str) -> dict[str, Any]:
        return self._running(attempt_id).declare()

    def pin(self, attempt_id: str, seq: Any) -> dict[str, Any]:
        return self._running(attempt_id).pin(seq)

    def claim_fixed(self, attempt_id: str) -> dict[str, Any]:
        return self._running(attempt_id).claim_fixed()

    def abort(self, attempt_id: str, reason: str | None = None) -> dict[str, Any]:
        a = self._running(attempt_id)
        a.abort(reason or "given up by the learner")
        return a.state()

    # --- what ended ---------------------------------------------------------------------------------------------

    def _ran(self, row: dict[str, Any]) -> tuple[Scenario, dict[str, Any]]:
        """The scenario an attempt ran — rebuilt from the journal — and where it was read from:
        `{"scenario_from": "journal", "scenario_sha256", "scenario_source"}`, or for an attempt journaled before
        scenarios were embedded, the file rendered again with the attempt's seed and time scale
        (`"scenario_from": "file"` and a `scenario_note` saying so)."""
        try:
            embedded = self.journal.embedded_scenario(row["id"])
        except JournalError as exc:
            raise AttemptError(str(exc), 409) from exc
        if embedded is None:
            try:
                path = self._path(row["scenario_id"])
            except AttemptError as exc:
                raise AttemptError(f"attempt {row['id']} was journaled before scenarios were embedded in the "
                                   f"journal, and its scenario file is gone ({exc})", 404) from exc
            try:
                scenario = render(self._load(row["scenario_id"]), row["seed"], row["time_scale"])
            except ScenarioError as exc:
                raise AttemptError(f"attempt {row['id']} was journaled before scenarios were embedded in the "
                                   f"journal, and its scenario file no longer renders: {exc.problems[0]}", 422) from exc
            return scenario, {"scenario_from": "file", "scenario_sha256": None,
                              "scenario_source": {"kind": "file", "path": str(path), "sha256": _file_sha256(path)},
                              "scenario_note": FROM_FILE_NOTE}
        try:
            # the document passed every check when the attempt started; re-running the cross-checks of a newer
            # version here could only refuse an old attempt its debrief
            scenario = Scenario.model_validate(embedded["scenario"], context={DEFER_CHECKS: True})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "<scenario>"
            raise AttemptError(f"the scenario embedded in attempt {row['id']} does not validate in this version of "
                               f"Faultline: {where}: {first['msg']}", 409) from exc
        scenario._values = dict(embedded["values"])
        scenario._seed = embedded["seed"]
        return scenario, {"scenario_from": "journal", "scenario_sha256": embedded["sha256"],
                          "scenario_source": embedded["source"], "scenario_note": None}

    def scenario_of(self, attempt_id: str) -> dict[str, Any]:
        """What an attempt ran: {"scenario" (the rendered document), "scenario_from", "scenario_sha256",
        "scenario_source", "scenario_note"} — the journal's copy, or the file for an attempt from before that."""
        row = self.journal.attempt(attempt_id)
        if row is None:
            raise AttemptError(f"no attempt {attempt_id!r}", 404)
        if row["status"] == "running":
            raise AttemptError("the scenario of a running attempt is shown once it ends (it names the faults)", 409)
        scenario, origin = self._ran(row)
        return {"scenario": scenario.model_dump(mode="json", by_alias=True), **origin}

    def debrief(self, attempt_id: str) -> dict[str, Any]:
        from lab.grader import debrief, debrief_text

        row = self.journal.attempt(attempt_id)
        if row is None:
            raise AttemptError(f"no attempt {attempt_id!r}", 404)
        if row["status"] == "running":
            raise AttemptError("the debrief opens when the attempt ends (it tells the answer)", 409)
        scenario, origin = self._ran(row)
        d = debrief(scenario, self.journal.events(attempt_id), row)
        d.update(origin)
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
        """Per skill: attempts, scenarios tried, best and mean of each scenario's best score.

        `scenarios` counts the catalog as it is; an attempt counts under the skills of the scenario it ran (the
        journal's copy; the catalog's for attempts from before scenarios were embedded)."""
        cards = self.scenarios()
        return skill_progress([c["skills"] for c in cards], {c["id"]: c["skills"] for c in cards},
                              self.journal.attempts(limit=10_000))

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
                result = grade(self._ran(row)[0], self.journal.events(row["id"]))
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


def skill_progress(catalog_skills: list[list[str]], skills_by_id: dict[str, list[str]],
                   attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """Progress by skill from the catalog's skill lists and journal rows (shared with the UI's history page)."""
    skills: dict[str, dict[str, Any]] = {}

    def row(skill: str) -> dict[str, Any]:
        return skills.setdefault(skill, {"skill": skill, "scenarios": 0, "tried": set(), "attempts": 0, "best": {},
                                         "mean_best_score": None})

    for card_skills in catalog_skills:
        for skill in card_skills:
            row(skill)["scenarios"] += 1
    tried: set[str] = set()
    for a in attempts:
        sid = a["scenario_id"]
        tried.add(sid)
        for skill in a.get("skills") or skills_by_id.get(sid) or []:
            r = row(skill)
            r["attempts"] += 1
            r["tried"].add(sid)
            if a["score"] is not None:
                r["best"][sid] = max(r["best"].get(sid, 0.0), a["score"])
    for r in skills.values():
        r["tried"] = len(r["tried"])
        scores = list(r.pop("best").values())
        r["mean_best_score"] = round(sum(scores) / len(scores), 1) if scores else None
    return {"skills": sorted(skills.values(), key=lambda s: s["skill"]),
            "attempts": len(attempts), "scenarios_tried": len(tried)}


def _file_sha256(path: Path) -> str | None:
    """sha256 of the raw file text (provenance only: what is graded is the embedded document)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _card(s: Any) -> dict[str, Any]:
    return {"id": s.id, "title": s.title, "summary": s.summary, "difficulty": s.difficulty,
            "skills": list(s.skills), "estimated_minutes": s.estimated_minutes, "track": s.track}
