"""The journal: append-only in SQLite (WAL), per-attempt sequence numbers, ending rules, crash recovery.

A writer process killed with SIGKILL mid-attempt must lose nothing it had appended, and the next opener marks
the attempt aborted with its events intact (the lab-level version of this is in test_crash_recovery.py).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lab.journal import CRASH_REASON, Journal, JournalError

ROOT = Path(__file__).resolve().parents[2]


def test_events_are_appended_in_order_per_attempt(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    a = j.open_attempt("slow-replica", 7, 0.5, {"title": "t"})
    b = j.open_attempt("slow-replica", 8, 1.0)
    j.append(a, "stack_ready", {"x": 1})
    j.append(b, "stack_ready")
    j.append(a, "console_op", {"op": "trace", "args": {}, "ok": True})
    events = j.events(a)
    assert [(e["seq"], e["type"]) for e in events] == [(1, "attempt_started"), (2, "stack_ready"), (3, "console_op")]
    assert events[0]["data"] == {"scenario_id": "slow-replica", "seed": 7, "time_scale": 0.5, "title": "t"}
    assert [e["seq"] for e in j.events(b)] == [1, 2]
    assert j.attempt(a)["status"] == "running"
    j.close()


def test_the_journal_refuses_updates_and_deletes(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    a = j.open_attempt("slow-replica", 1, 1.0)
    j.append(a, "hint_taken", {"index": 0, "cost": 3})
    j.close()
    db = sqlite3.connect(tmp_path / "journal.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE events SET data = '{}' WHERE attempt_id = ?", (a,))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM events")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM attempts")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_unknown_types_unknown_attempts_and_double_endings_are_refused(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    a = j.open_attempt("slow-replica", 1, 1.0)
    with pytest.raises(JournalError, match="unknown event type"):
        j.append(a, "fault_exploded")
    with pytest.raises(JournalError, match="no attempt"):
        j.append("nope", "stack_ready")
    j.append(a, "attempt_finished", {"reason": "fix verified"})
    j.append(a, "graded", {"score": 88.5})
    with pytest.raises(JournalError, match="already ended"):
        j.append(a, "attempt_aborted")
    row = j.attempt(a)
    assert row["status"] == "finished" and row["score"] == 88.5 and row["ended_at"] is not None
    j.close()


def test_concurrent_writers_get_distinct_sequence_numbers(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    a = j.open_attempt("slow-replica", 1, 1.0)

    def write(n: int) -> None:
        for i in range(50):
            j.append(a, "console_op", {"op": "status", "writer": n, "i": i, "ok": True})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [e["seq"] for e in j.events(a)]
    assert seqs == list(range(1, 202))
    j.close()


def test_history_is_most_recent_first(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    first = j.open_attempt("slow-replica", 1, 1.0, at=1000.0)
    second = j.open_attempt("other", 2, 1.0, at=2000.0)
    assert [r["id"] for r in j.attempts()] == [second, first]
    assert [r["id"] for r in j.attempts(scenario_id="slow-replica")] == [first]
    j.close()


WRITER = """
import sys, time
from lab.journal import Journal
j = Journal(sys.argv[1])
a = j.open_attempt("slow-replica", 3, 0.2)
for i in range(5):
    j.append(a, "console_op", {"op": "trace", "i": i, "ok": True})
print(a, flush=True)
while True:  # mid-attempt, forever: the test kills it
    time.sleep(1)
"""


def test_a_killed_writer_loses_nothing_and_recovery_marks_it_aborted(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=str(ROOT))
    try:
        attempt = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert attempt.startswith("slow-replica-")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    j = Journal(path)
    assert j.attempt(attempt)["status"] == "running"  # as the dead process left it
    t0 = time.time()
    assert j.recover() == [attempt]
    events = j.events(attempt)
    assert [e["type"] for e in events] == ["attempt_started"] + ["console_op"] * 5 + ["attempt_aborted"]
    assert [e["data"]["i"] for e in events[1:6]] == [0, 1, 2, 3, 4]
    assert events[-1]["data"] == {"reason": CRASH_REASON, "recovered": True}
    row = j.attempt(attempt)
    assert row["status"] == "aborted" and row["ended_at"] >= t0
    assert j.recover() == []  # idempotent
    j.close()
