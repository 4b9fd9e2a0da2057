"""cpu.hog (a real busy process the scenario owns, which may be killed) and cpu.oversubscribe (torch threads)."""

from __future__ import annotations

import time

import psutil
import pytest
from faultkit import Lab, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]


def _cpu_percent(pid: int, span_s: float = 1.0) -> float:
    p = psutil.Process(pid)
    p.cpu_percent(None)
    time.sleep(span_s)
    return p.cpu_percent(None)


@pytest.mark.exclusive  # the hog's CPU share is measured: the machine alone under xdist
def test_hog_burns_cpu_as_a_scenario_process_and_revert_ends_it(flab: Lab) -> None:
    applied = flab.apply({"id": "hog", "kind": "cpu", "action": "hog", "target": "model-1",
                          "params": {"cores": 1, "duty": 0.6}})
    pid = applied["changes"]["pid"]
    assert applied["description"] == "a process burning 1 core(s) at 60% duty beside model-1"
    listed = flab.http.get(flab.api("/processes")).json()
    assert [(p["pid"], p["fault_id"]) for p in listed] == [(pid, "hog")]
    assert psutil.Process(pid).cmdline()[1:3] == ["-m", "lab.faults.hog"]
    busy = _cpu_percent(pid)
    assert busy >= 25, busy  # 60% of a core asked; generous for a 2-core machine shared with other work

    flab.revert("hog")
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10,
               what="hog gone")
    assert flab.http.get(flab.api("/processes")).json() == []
    again = flab.revert("hog")
    assert any("already gone" in n for n in again["notes"])


def test_only_scenario_processes_may_be_killed_and_killing_the_hog_is_a_fix(flab: Lab) -> None:
    applied = flab.apply({"id": "hog2", "kind": "cpu", "action": "hog", "params": {"cores": 1, "duty": 0.2}})
    pid = applied["changes"]["pid"]
    gateway_pid = flab.service("gateway")["pid"]
    r = flab.http.post(flab.api(f"/processes/{gateway_pid}/kill"))
    assert r.status_code == 403 and "not started by the scenario" in r.json()["detail"]
    assert flab.service("gateway")["pid"] == gateway_pid

    r = flab.http.post(flab.api(f"/processes/{pid}/kill"))
    assert r.status_code == 200 and r.json()["fault_id"] == "hog2"
    wait_until(lambda: flab.http.get(flab.api("/processes")).json() == [], 10, what="hog killed")
    record = flab.revert("hog2")  # the learner killed it: the revert has nothing left to stop, and says so
    assert record["active"] is False


def test_oversubscribe_sets_torch_threads_live_and_at_restart(flab: Lab) -> None:
    argv = flab.service("model-1")["argv"]
    flab.apply({"id": "threads", "kind": "cpu", "action": "oversubscribe", "target": "model-1",
                "params": {"threads": 16}})
    assert flab.config("model-1")["torch_threads"] == 16
    assert '"torch_threads":16' in flab.service("model-1")["argv"][-1]
    assert flab.scores(4)  # still answering, only slower under load

    flab.revert("threads")
    assert flab.config("model-1")["torch_threads"] == 1
    assert flab.service("model-1")["argv"] == argv
    flab.revert("threads")
