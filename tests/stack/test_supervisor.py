"""The supervisor on its own, with throwaway processes: readiness, restarts, backoff and crash loops, memory-limit
kills, log capture, stopping whole process groups, and no orphans when the supervisor is SIGKILLed."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from kit import wait_until

from lab.ports import free_port, is_free
from lab.process import RestartPolicy, ServiceSpec, pdeathsig_supported
from lab.supervisor import Supervisor, UnknownService

PY = sys.executable
HERE = Path(__file__).resolve().parent


wait_for = functools.partial(wait_until, timeout=15.0, interval=0.05)


def http_server(name: str, port: int, **kw) -> ServiceSpec:
    return ServiceSpec(name, [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                       url=f"http://127.0.0.1:{port}", ready_path="/", port=port, **kw)


@pytest.fixture
def sup(tmp_path):
    s = Supervisor(tmp_path / "logs").start()
    yield s
    s.shutdown(grace_s=2)


def test_ready_over_http_then_killed_process_is_restarted(sup):
    port = free_port()
    sup.add(http_server("web", port, restart=RestartPolicy("on-failure", backoff_initial_s=0.1)))
    assert sup.wait_ready(["web"], 15) == []
    st = sup.service_status("web")
    assert st["state"] == "running" and st["rss_bytes"] > 1_000_000
    assert httpx.get(f"http://127.0.0.1:{port}/", trust_env=False).status_code == 200

    first = st["pid"]
    os.kill(first, signal.SIGKILL)
    st = wait_for(lambda: (s := sup.service_status("web"))["ready"] and s["pid"] != first and s)
    assert st["restarts"] == 1
    assert st["last_exit"]["code"] == 137 and st["last_exit"]["reason"] == "Killed"
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE


def test_memory_limit_kill_is_recorded_as_oomkilled(sup):
    hog = ("import time\nx = []\nwhile True:\n    x.append(bytearray(20_000_000))\n"
           "    print('holding', len(x) * 20, 'MB', flush=True)\n    time.sleep(0.05)\n")
    sup.add(ServiceSpec("hog", [PY, "-c", hog], ready_path=None, memory_limit_bytes=150_000_000,
                        restart=RestartPolicy("no")))
    st = wait_for(lambda: (s := sup.service_status("hog"))["state"] == "exited" and s)
    assert st["last_exit"]["code"] == 137
    assert st["last_exit"]["reason"] == "OOMKilled"
    assert st["restarts"] == 0
    events = [x["line"] for x in sup.logs("hog", grep="[faultline]")]
    assert any("memory limit exceeded" in e for e in events)
    assert any("holding" in x["line"] for x in sup.logs("hog"))


def _restart_waits(sup, name: str) -> list[float]:
    return [float(x["line"].split("restarting in ")[1].split("s")[0]) for x in sup.logs(name, grep="restarting in")]


def test_crash_loop_is_detected_and_backoff_grows(sup):
    policy = RestartPolicy("on-failure", backoff_initial_s=0.05, backoff_max_s=0.4, crashloop_restarts=4,
                           crashloop_window_s=60)
    sup.add(ServiceSpec("crasher", [PY, "-c", "import sys; print('boom'); sys.exit(3)"], ready_path=None,
                        restart=policy))
    st = wait_for(lambda: (s := sup.service_status("crasher"))["state"] == "crashloop" and s, timeout=20)
    assert st["restarts"] >= 3
    assert st["last_exit"]["code"] == 3 and st["last_exit"]["reason"] == "Error"
    waits = _restart_waits(sup, "crasher")
    assert waits[0] < waits[-1] <= 0.4 + 1e-9


def test_a_new_argv_starts_the_backoff_over(sup):
    """A crash-looping service given a new start-up argv (a config rollout) tries it after the first, short wait,
    not after the long wait its old failures earned, both when the change lands while a doomed process still runs
    and while it waits out a backoff."""
    crash = "import sys, time; time.sleep(1.0); sys.exit(int(sys.argv[1]))"  # a second: the change lands in it
    policy = RestartPolicy("on-failure", backoff_initial_s=0.1, backoff_max_s=20, crashloop_restarts=100)
    sup.add(ServiceSpec("flaky", [PY, "-c", crash, "3"], ready_path=None, restart=policy))
    # Let the waits grow to 1.6 s, then change the argv while the next (doomed) process runs.
    wait_for(lambda: 1.6 in _restart_waits(sup, "flaky"), timeout=40)
    wait_for(lambda: sup.service_status("flaky")["pid"] is not None, timeout=10)
    before = len(_restart_waits(sup, "flaky"))
    sup.update_spec("flaky", argv=[PY, "-c", crash, "4"])
    wait_for(lambda: (sup.service_status("flaky")["last_exit"] or {}).get("code") == 4, timeout=10)
    # The doomed process's exit waits the first wait (its old failures would have earned 3.2 s), then the new
    # argv's own failures count from there.
    assert _restart_waits(sup, "flaky")[before:][:2] == [pytest.approx(0.1), pytest.approx(0.2)]

    # Now waiting out a long backoff, with no process: a new argv is started after the first wait, not 20 s later.
    sup.update_spec("flaky", restart=RestartPolicy("on-failure", backoff_initial_s=20, backoff_max_s=20))
    wait_for(lambda: _restart_waits(sup, "flaky")[-1] == 20, timeout=10)
    port = free_port()
    sup.update_spec("flaky", restart=RestartPolicy("on-failure", backoff_initial_s=0.1),
                    argv=http_server("flaky", port).argv, url=f"http://127.0.0.1:{port}", ready_path="/")
    assert sup.wait_ready(["flaky"], 10) == []


@pytest.mark.parametrize(("mode", "code", "state"), [("no", 5, "exited"), ("on-failure", 0, "exited"),
                                                      ("always", 0, "backoff")])
def test_restart_policies(sup, mode, code, state):
    sup.add(ServiceSpec("once", [PY, "-c", f"import sys; sys.exit({code})"], ready_path=None,
                        restart=RestartPolicy(mode, backoff_initial_s=5)))
    st = wait_for(lambda: (s := sup.service_status("once"))["last_exit"] and s)
    assert st["state"] == state
    assert st["last_exit"]["code"] == code


def test_logs_timestamped_filterable_and_on_disk(sup, tmp_path):
    script = "for i in range(50):\n    print(f'line {i} ' + ('even' if i % 2 == 0 else 'odd'), flush=True)\n"
    sup.add(ServiceSpec("talker", [PY, "-c", script], ready_path=None, restart=RestartPolicy("no")))
    wait_for(lambda: sup.service_status("talker")["state"] == "exited")
    odd = sup.logs("talker", grep=r"line \d+ odd$", regex=True)
    assert len(odd) == 25 and all(x["ts"].endswith("Z") for x in odd)
    assert [x["line"] for x in sup.logs("talker", grep="^line", tail=2, regex=True)] == ["line 48 even", "line 49 odd"]
    mid = sup.logs("talker", grep="line ")[10]["t"]
    assert all(x["t"] > mid for x in sup.logs("talker", since=mid))
    text = (tmp_path / "logs" / "talker.log").read_text()
    assert "line 49 odd" in text and text.splitlines()[0][:4].isdigit()
    with pytest.raises(UnknownService, match="services are: talker"):
        sup.logs("nope")


def test_stop_takes_the_whole_process_group(sup):
    # The service starts a helper of its own; stopping the service must not leave the helper behind.
    script = ("import subprocess, sys, time\n"
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
              "print('helper', p.pid, flush=True)\n"
              "time.sleep(600)\n")
    sup.add(ServiceSpec("parent", [PY, "-c", script], ready_path=None))
    line = wait_for(lambda: sup.logs("parent", grep="^helper", regex=True))
    helper = int(line[0]["line"].split()[1])
    parent = sup.service_status("parent")["pid"]
    sup.stop_service("parent", grace_s=2)
    st = sup.service_status("parent")
    assert st["state"] == "stopped" and st["pid"] is None
    wait_for(lambda: not psutil.pid_exists(helper) and not psutil.pid_exists(parent), timeout=5)


@pytest.mark.skipif(not pdeathsig_supported(), reason="PR_SET_PDEATHSIG is Linux-only")
def test_sigkill_of_the_supervisor_leaves_no_orphans(tmp_path):
    ports = [free_port(), free_port()]
    proc = subprocess.Popen([PY, str(HERE / "supervised.py"), str(tmp_path), *map(str, ports)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(HERE.parent.parent)})
    try:
        line = proc.stdout.readline()
        pids = json.loads(line)["pids"]
        assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
        assert not any(is_free(p) for p in ports)
        proc.kill()
        proc.wait(10)
        wait_for(lambda: not any(psutil.pid_exists(p) for p in pids), timeout=5)
        wait_for(lambda: all(is_free(p) for p in ports), timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
