"""The attempt journal: every attempt and everything that happened in it, append-only, in SQLite (WAL).

One file, FAULTLINE_HOME/journal.db, two tables:
- `attempts(id, scenario_id, seed, time_scale, started_at, ended_at, status, score, title, skills,
  scenario_sha256)`: one row per attempt. `status` (running|finished|aborted), `ended_at` and `score` are a cache
  of what the events say, so the history can be listed without replaying every journal; they are the only
  columns ever updated. `title`, `skills` (JSON list) and `scenario_sha256` copy the embedded scenario's, so
  history and progress need not open it.
- `events(attempt_id, seq, at, type, data)`: the journal proper. Triggers refuse any UPDATE or DELETE, so an
  event once written is never changed; status changes are events too (attempt_finished, attempt_aborted, graded).

The run embeds the experiment it ran (Chaos Toolkit's model): `attempt_started` holds the rendered scenario
(`scenario`: the validated document after the seeded variables were substituted and the time scale applied,
as JSON), its `scenario_sha256` (of the canonical JSON, `scenario_digest`) and its `source` (`path`, `sha256`
of the raw file text). Grading and the debrief rebuild the scenario from it (`embedded_scenario`), so editing
or deleting the scenario file never changes an old attempt. Attempts journaled before this (schema version 1)
have none: their readers fall back to the scenario file and say so.

Every append is its own committed transaction, so a lab killed at any moment loses nothing it had journaled.
`recover()` (called when a lab opens the journal) marks the attempts a dead lab left `running` as aborted,
with their events intact. Opening a journal written by an older version migrates it in place (`_migrate`: new
columns added, titles and skills copied from the events; nothing removed).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

JOURNAL_FILE = "journal.db"

EVENT_TYPES: frozenset[str] = frozenset({
    "attempt_started", "stack_ready", "fault_applied", "fault_reverted", "slo_violated", "slo_restored",
    "probe_result", "console_op", "hint_taken", "diagnosis_submitted", "fix_claimed", "fix_verified",
    "fix_rejected", "attempt_aborted", "attempt_finished", "graded", "paged", "measured", "incident_declared",
    "evidence_pinned", "stack_snapshot",
})
STATUSES = ("running", "finished", "aborted")
CRASH_REASON = "the lab stopped while the attempt was running (crash or kill)"
SCHEMA_VERSION = 2  # 1: no embedded scenario; 2: attempt_started embeds it, attempts gain title/skills/sha256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    id TEXT PRIMARY KEY,
    scenario_id TEXT NOT NULL,
    seed INTEGER NOT NULL,
    time_scale REAL NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'aborted')),
    score REAL,
    title TEXT,
    skills TEXT,
    scenario_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS events (
    attempt_id TEXT NOT NULL REFERENCES attempts(id),
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (attempt_id, seq)
);
CREATE INDEX IF NOT EXISTS attempts_started ON attempts(started_at);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the journal is append-only: events cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the journal is append-only: events cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS attempts_no_delete BEFORE DELETE ON attempts
BEGIN SELECT RAISE(ABORT, 'the journal is append-only: attempts cannot be deleted'); END;
"""

# Added by schema version 2 (after _migrate, so that an old journal has the columns first): what an attempt ran
# is fixed once it embeds its scenario.
_SCHEMA_V2 = """
CREATE TRIGGER IF NOT EXISTS attempts_run_fixed BEFORE UPDATE OF scenario_id, seed, time_scale, started_at, title,
    skills, scenario_sha256 ON attempts WHEN OLD.scenario_sha256 IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'the journal is append-only: what an attempt ran cannot be changed'); END;
"""
_V2_COLUMNS = {"title": "TEXT", "skills": "TEXT", "scenario_sha256": "TEXT"}


def canonical_json(doc: Any) -> str:
    """The one JSON spelling a digest is taken of: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def scenario_digest(doc: dict[str, Any]) -> str:
    """sha256 (hex) of a rendered scenario document's canonical JSON."""
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()


class JournalError(RuntimeError):
    """A journal operation that cannot be done (unknown attempt, unknown event type, attempt already ended)."""


def new_attempt_id(scenario_id: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{scenario_id}-{stamp}-{secrets.token_hex(2)}"


class Journal:
    """Thread-safe (one connection, one lock): the attempt runner, the console and the API all write to it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._db.executescript(_SCHEMA_V2)

    def _migrate(self) -> None:
        """Bring a journal written by an older version up to SCHEMA_VERSION, in one transaction, losing nothing."""
        with self._lock:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version >= SCHEMA_VERSION:
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                have = {r["name"] for r in self._db.execute("PRAGMA table_info(attempts)")}
                for column, kind in _V2_COLUMNS.items():
                    if column not in have:
                        self._db.execute(f"ALTER TABLE attempts ADD COLUMN {column} {kind}")
                # titles were always in attempt_started; skills were not (left NULL: readers use the file's)
                rows = self._db.execute(
                    "SELECT a.id, e.data FROM attempts a JOIN events e ON e.attempt_id = a.id AND e.seq = 1 "
                    "WHERE a.title IS NULL AND e.type = 'attempt_started'").fetchall()
                for row in rows:
                    title = json.loads(row["data"]).get("title")
                    if isinstance(title, str):
                        self._db.execute("UPDATE attempts SET title=? WHERE id=?", (title, row["id"]))
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writing ---------------------------------------------------------------------------------------------

    def open_attempt(self, scenario_id: str, seed: int, time_scale: float, data: dict[str, Any] | None = None,
                     attempt_id: str | None = None, at: float | None = None,
                     scenario: dict[str, Any] | None = None, source: dict[str, Any] | None = None) -> str:
        """A new running attempt, with its `attempt_started` event (data: whatever the runner wants recorded).

        `scenario` is the rendered scenario document the attempt runs (embedded with its sha256), `source` where
        it came from (`{"path", "sha256"}` of the raw file text); both are journaled once and never change."""
        at = time.time() if at is None else at
        attempt_id = attempt_id or new_attempt_id(scenario_id, at)
        body: dict[str, Any] = {"scenario_id": scenario_id, "seed": seed, "time_scale": time_scale, **(data or {})}
        title, skills, digest = body.get("title"), None, None
        if scenario is not None:
            if scenario.get("id") != scenario_id:
                raise JournalError(f"the embedded scenario is {scenario.get('id')!r}, not {scenario_id!r}")
            digest = scenario_digest(scenario)
            title = scenario.get("title")
            skills = json.dumps(list(scenario.get("skills") or []))
            body.update({"scenario": scenario, "scenario_sha256": digest, "source": source})
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO attempts (id, scenario_id, seed, time_scale, started_at, status, title, skills, "
                    "scenario_sha256) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                    (attempt_id, scenario_id, seed, time_scale, at, title, skills, digest))
                self._insert(attempt_id, "attempt_started", body, at)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return attempt_id

    def append(self, attempt_id: str, type_: str, data: dict[str, Any] | None = None,
               at: float | None = None) -> dict[str, Any]:
        """Append one event; attempt_finished/attempt_aborted also end the attempt, graded caches its score."""
        if type_ not in EVENT_TYPES:
            raise JournalError(f"unknown event type {type_!r}; known: {', '.join(sorted(EVENT_TYPES))}")
        at = time.time() if at is None else at
        data = dict(data or {})
        with self._lock:
            row = self._attempt_row(attempt_id)
            if row is None:
                raise JournalError(f"no attempt {attempt_id!r} in the journal")
            if type_ in ("attempt_finished", "attempt_aborted") and row["status"] != "running":
                raise JournalError(f"attempt {attempt_id} already ended ({row['status']})")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._insert(attempt_id, type_, data, at)
                if type_ == "attempt_finished":
                    self._db.execute("UPDATE attempts SET status='finished', ended_at=? WHERE id=?", (at, attempt_id))
                elif type_ == "attempt_aborted":
                    self._db.execute("UPDATE attempts SET status='aborted', ended_at=? WHERE id=?", (at, attempt_id))
                elif type_ == "graded" and isinstance(data.get("score"), int | float):
                    self._db.execute("UPDATE attempts SET score=? WHERE id=?", (float(data["score"]), attempt_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return {"attempt_id": attempt_id, "seq": seq, "at": at, "type": type_, "data": data}

    def _insert(self, attempt_id: str, type_: str, data: dict[str, Any], at: float) -> int:
        cur = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE attempt_id=?", (attempt_id,))
        seq = int(cur.fetchone()[0])
        self._db.execute("INSERT INTO events (attempt_id, seq, at, type, data) VALUES (?, ?, ?, ?, ?)",
                         (attempt_id, seq, at, type_, json.dumps(data, default=str, allow_nan=False)))
        return seq

    def recover(self, reason: str = CRASH_REASON) -> list[str]:
        """Mark every attempt still `running` (its lab died) as aborted; returns their ids."""
        with self._lock:
            ids = [r["id"] for r in self._db.execute("SELECT id FROM attempts WHERE status='running'")]
            for attempt_id in ids:
                self.append(attempt_id, "attempt_aborted", {"reason": reason, "recovered": True})
        return ids

    # --- reading ---------------------------------------------------------------------------------------------

    def _attempt_row(self, attempt_id: str) -> sqlite3.Row | None:
        return self._db.execute("SELECT * FROM attempts WHERE id=?", (attempt_id,)).fetchone()

    def attempt(self, attempt_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._attempt_row(attempt_id)
        return _row(row) if row is not None else None

    def embedded_scenario(self, attempt_id: str) -> dict[str, Any] | None:
        """What the attempt ran: {"scenario" (the rendered document), "sha256", "source", "seed", "values"}, or
        None for an attempt journaled before scenarios were embedded. JournalError if the document no longer
        matches its sha256 (the file was changed behind the journal's back)."""
        with self._lock:
            row = self._db.execute("SELECT data FROM events WHERE attempt_id=? AND seq=1 AND type='attempt_started'",
                                   (attempt_id,)).fetchone()
        if row is None:
            return None
        data = json.loads(row["data"])
        doc = data.get("scenario")
        if not isinstance(doc, dict):
            return None
        digest = scenario_digest(doc)
        if digest != data.get("scenario_sha256"):
            raise JournalError(f"the scenario embedded in attempt {attempt_id} does not match its sha256 "
                               f"({digest} != {data.get('scenario_sha256')}): the journal was altered")
        return {"scenario": doc, "sha256": digest, "source": data.get("source"), "seed": data.get("seed"),
                "values": data.get("values") or {}}

    def attempts(self, limit: int = 100, scenario_id: str | None = None) -> list[dict[str, Any]]:
        """Most recent first."""
        query = "SELECT * FROM attempts"
        params: list[Any] = []
        if scenario_id is not None:
            query += " WHERE scenario_id=?"
            params.append(scenario_id)
        query += " ORDER BY started_at DESC, id DESC LIMIT ?"
        params.append(int(limit))
        with self._lock:
            return [_row(r) for r in self._db.execute(query, params)]

    def events(self, attempt_id: str, types: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """The attempt's events in order: [{"seq", "at", "type", "data"}]."""
        with self._lock:
            rows = self._db.execute("SELECT seq, at, type, data FROM events WHERE attempt_id=? ORDER BY seq",
                                    (attempt_id,)).fetchall()
        out = [{"seq": r["seq"], "at": r["at"], "type": r["type"], "data": json.loads(r["data"])} for r in rows]
        return [e for e in out if types is None or e["type"] in types]


def _row(row: sqlite3.Row) -> dict[str, Any]:
    """An attempts row as a dict; `skills` decoded (None for attempts from before the scenario was embedded)."""
    out = dict(row)
    out["skills"] = json.loads(out["skills"]) if out.get("skills") else None
    return out


def lab_journal(lab: Any) -> Journal:
    """The lab's journal (opened on first use under FAULTLINE_HOME; the lab closes it at shutdown)."""
    journal = lab.components.get("journal")
    if journal is None:
        journal = Journal(Path(lab.home) / JOURNAL_FILE)
        lab.add_component("journal", journal)
    return journal


def attach(lab: Any) -> None:
    """Called by lab/server.py: open the journal and mark what a dead lab left running as aborted."""
    journal = lab_journal(lab)
    journal.recover()
    return None
