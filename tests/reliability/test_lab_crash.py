"""The lab SIGKILLed in the middle of an attempt, on a private stack, and what the next lab on the same home finds:
nothing left running, the attempt intact (every event it had journaled) and marked aborted by the crash, a
healthy stack. Then an attempt given up the normal way, with HTML in the learner's reason: stored as typed,
rendered escaped, and the stack back at its baseline.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from relkit import score_ok, stack_healthy, wait_until

from lab.journal import CRASH_REASON
from services.trainer.generator import Generator

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SEED, SCALE = 5, 0.2  # slow-replica: the link degrades 4-12 s after the stack is ready
SCRIPT = "<script>alert('owned')</script>"


class Api:
    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.http = httpx.Client(base_url=handle.lab_url, timeout=120, trust_env=False)

    def call(self, method: str, path: str, body: Any = None, expect: int | tuple[int, ...] = (200, 201)) -> Any:
        r = self.http.request(method, path, json=body)
        wanted = (expect,) if isinstance(expect, int) else expect
        assert r.status_code in wanted, (method, path, r.status_code, r.text)
        return r.json()

    def start_and_wait_for_the_page(self) -> str:
        st = self.call("POST", "/api/attempts", {"scenario_id": "slow-replica", "seed": SEED, "time_scale": SCALE},
                       201)
        attempt = st["attempt_id"]
        deadline = time.monotonic() + 180
        while not self.call("GET", f"/api/attempts/{attempt}")["paged"]:
            assert time.monotonic() < deadline, "the attempt never paged"
            time.sleep(0.5)
        return attempt


def _journal(home: Path, attempt_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The attempt's row and events, read straight from the journal file (read-only)."""
    db = sqlite3.connect(f"file:{home / 'journal.db'}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        row = dict(db.execute("SELECT * FROM attempts WHERE id=?", (attempt_id,)).fetchone())
        events = [{"seq": r["seq"], "at": r["at"], "type": r["type"], "data": json.loads(r["data"])}
                  for r in db.execute("SELECT * FROM events WHERE attempt_id=? ORDER BY seq", (attempt_id,))]
    finally:
        db.close()
    return row, events


def _transaction(n: int) -> dict[str, Any]:
    txn = Generator(seed=23).sample(1)[0]
    txn.pop("label")
    return {**txn, "transaction_id": f"crash-test-{n}"}


def test_sigkill_mid_attempt_then_a_new_lab_finds_it_intact_and_marked(
        root_conftest: Any, trained_registry: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = root_conftest.start_stack(home, trained_registry, replicas=2)
    second = None
    try:
        api = Api(first)
        attempt = api.start_and_wait_for_the_page()
        # the learner does things: all journaled before the crash
        api.call("POST", "/api/console/trace", {"limit": 2})
        api.call("POST", f"/api/attempts/{attempt}/hint")
        refused = api.call("POST", f"/api/attempts/{attempt}/diagnosis",
                           {"answers": {"category": SCRIPT, "component": "model-1", "cause": "x"}}, 422)
        assert "not an option" in refused["detail"] or "unknown" in refused["detail"], refused
        row, before = _journal(home, attempt)
        assert row["status"] == "running"
        kinds = [e["type"] for e in before]
        for t in ("attempt_started", "stack_ready", "fault_applied", "console_op", "hint_taken"):
            assert t in kinds, (t, kinds)

        pids = first.all_pids()
        ports = first.topology.ports.all_ports(2) + [first.topology.ports.lab]
        os.kill(first.lab_pid, signal.SIGKILL)
        root_conftest.assert_all_gone(pids, ports, timeout=15)
        api.http.close()

        second = root_conftest.start_stack(home, trained_registry, replicas=2)
        api = Api(second)
        st = api.call("GET", f"/api/attempts/{attempt}")
        assert st["status"] == "aborted", st
        events = api.call("GET", f"/api/attempts/{attempt}/events")
        assert events[: len(before)] == before  # intact: every event as it was journaled
        marks = events[len(before):]
        assert [e["type"] for e in marks][:1] == ["attempt_aborted"], marks
        assert marks[0]["data"] == {"reason": CRASH_REASON, "recovered": True}
        assert api.call("GET", "/api/attempts/active")["attempt"] is None
        history = api.call("GET", "/api/attempts")
        listed = history if isinstance(history, list) else history.get("attempts", history.get("items", []))
        assert any(a.get("attempt_id", a.get("id")) == attempt for a in listed), history
        r = api.http.get(f"/api/attempts/{attempt}/debrief")
        assert r.status_code < 500, r.text
        # the new lab's stack is healthy: no toxic survived (the old netproxy died with its lab), nothing active
        wait_until(lambda: stack_healthy(second.status()), 90, what="healthy stack after the crash")
        assert api.call("GET", "/api/faults")["active"] == []
        score_ok(second.public_url, _transaction(1))

        # a normal abort, with HTML in the learner's reason
        again = api.start_and_wait_for_the_page()
        st = api.call("POST", f"/api/attempts/{again}/abort", {"reason": SCRIPT})
        assert st["status"] == "aborted" and st["end_reason"] == SCRIPT  # stored as typed
        wait_until(lambda: stack_healthy(second.status()), 90, what="healthy stack after the abort")
        gateway = httpx.get(second.topology.service_url("gateway") + "/admin/config", timeout=30,
                            trust_env=False).json()
        assert gateway["drained"] == [] and gateway["routing"] == {}
        score_ok(second.public_url, _transaction(2))
        page = httpx.get(f"{second.lab_url}/attempts/{again}/debrief", timeout=60, trust_env=False)
        assert page.status_code == 200, page.text[:500]
        assert "&lt;script&gt;alert(" in page.text and SCRIPT not in page.text
    finally:
        for handle in (second, first):
            if handle is not None:
                handle.stop()
