"""A lab killed with SIGKILL in the middle of an attempt loses nothing: the next lab on the same home marks the
attempt aborted with every event it had journaled intact, grades it, and serves its debrief."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil
import pytest
from attemptkit import LabApi

from lab.journal import CRASH_REASON, Journal

pytestmark = pytest.mark.stack


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def test_a_lab_killed_mid_attempt_leaves_an_aborted_attempt_with_its_journal(stack_factory: Any) -> None:
    first = stack_factory(name="crash")
    api = LabApi(first)
    st = api.call("POST", "/api/attempts", {"scenario_id": "slow-replica", "seed": 4, "time_scale": 0.2}, 201)
    attempt = st["attempt_id"]
    api.wait(attempt, lambda s: s["paged"], 120, "the page")
    api.console("trace", limit=2)
    api.close()
    before = Journal(first.home / "journal.db")
    journaled = before.events(attempt)
    before.close()
    assert {"fault_applied", "probe_result", "console_op"} <= {e["type"] for e in journaled}

    pids = first.all_pids()
    os.kill(first.lab_pid, signal.SIGKILL)
    assert _gone(pids, 20), "the killed lab's services outlived it"

    second = stack_factory(name="crash")  # the same FAULTLINE_HOME, a new lab
    assert second.lab_pid != first.lab_pid
    api = LabApi(second)
    try:
        st = api.state(attempt)
        assert st["status"] == "aborted" and st["end_reason"] == CRASH_REASON
        deadline = time.monotonic() + 30
        while api.state(attempt)["score"] is None and time.monotonic() < deadline:
            time.sleep(0.5)  # graded in the background once the new lab is up
        events = api.call("GET", f"/api/attempts/{attempt}/events")
        assert events[: len(journaled)] == journaled  # nothing lost, nothing changed
        tail = [e["type"] for e in events[len(journaled):]]
        assert tail[0] == "attempt_aborted" and "graded" in tail
        assert events[len(journaled)]["data"]["recovered"] is True
        d = api.call("GET", f"/api/attempts/{attempt}/debrief")
        assert d["broke"] and not d["fixed"] and d["status"] == "aborted"
        assert api.call("GET", "/api/attempts/active")["attempt"] is None
        assert all(not p["toxics"] for p in second.status()["proxies"])
    finally:
        api.close()
