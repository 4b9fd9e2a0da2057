"""One supervised child process: how it is spawned, how its exit is described, when it is restarted.

Everything here runs on the supervisor's own thread (see lab/supervisor.py). The child is spawned from an argv
list in its own process group (in the lab's session), with its output captured into a LogBuffer, and, on Linux, with
PR_SET_PDEATHSIG=SIGKILL so that it dies with the supervisor even when the supervisor is SIGKILLed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lab.logbuffer import LogBuffer, iso_utc

RESTART_POLICIES = ("no", "on-failure", "always")
STATES = ("starting", "running", "unready", "backoff", "crashloop", "stopped", "exited")
# No process serving: the monitor counts these as down, the UI draws them red.
DOWN_STATES = frozenset({"backoff", "crashloop", "stopped", "exited"})
# A process that runs but is not (yet, or no longer) ready: not serving for the monitor, amber in the UI.
WARN_STATES = frozenset({"starting", "unready"})


@dataclass(frozen=True)
class RestartPolicy:
    """Docker-style policy with exponential backoff; many restarts in a short window is a crash loop."""

    mode: str = "on-failure"
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    crashloop_restarts: int = 5
    crashloop_window_s: float = 60.0
    # A process that stayed up this long is considered healthy again: its backoff starts over.
    reset_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.mode not in RESTART_POLICIES:
            raise ValueError(f"restart policy must be one of {', '.join(RESTART_POLICIES)}, got {self.mode!r}")


@dataclass
class ServiceSpec:
    """What to run and how to watch it. `url` is the service's own address (probes go there, not via a proxy)."""

    name: str
    argv: list[str]
    url: str | None = None
    ready_path: str | None = "/readyz"
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    memory_limit_bytes: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    port: int | None = None


# --- spawning -------------------------------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


# Resolved once in the parent: the child between fork and exec should do as little as possible.
_PRCTL = _load_prctl()


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def child_setup() -> None:
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl: then the signal will never come.
        if os.getppid() != parent_pid:
            os._exit(137)

    return child_setup


def pdeathsig_supported() -> bool:
    return _PRCTL is not None


def spawn(spec: ServiceSpec) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
    return subprocess.Popen(  # noqa: S603 - argv list built by the lab, never a shell string
        spec.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=spec.cwd,
        env=env,
        # Its own process group: signals to the group reach the helpers a service starts, and a terminal's Ctrl-C
        # (sent to the foreground group) reaches only the lab. Not its own session: the stack and the processes a
        # scenario starts beside it (a CPU hog) share the lab's session, hence one scheduler autogroup, the way
        # the processes of one host share its cores. Per-service sessions gave each service its own equal CPU
        # share, which made the noisy-neighbour fault harmless (docs/catalog.md).
        process_group=0,
        preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - needed for PDEATHSIG
    )


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"


def describe_exit(returncode: int, *, oom: bool, stopping: bool, uptime_s: float) -> dict[str, Any]:
    """last_exit in the shape Docker/Kubernetes users know: code 128+signal for signals, a reason word."""
    sig = -returncode if returncode < 0 else None
    code = 128 + sig if sig is not None else returncode
    sig_name = _signal_name(sig) if sig is not None else None
    if oom:
        reason = "OOMKilled"
    elif stopping:
        reason = "Stopped"
    elif sig == signal.SIGKILL:
        reason = "Killed"
    elif sig is not None:
        reason = f"Signal {sig_name}"
    elif code == 0:
        reason = "Completed"
    else:
        reason = "Error"
    return {
        "code": code,
        "reason": reason,
        "signal": sig_name,
        "at": iso_utc(time.time()),
        "uptime_s": round(uptime_s, 3),
    }


# --- the managed process ----------------------------------------------------------------------------------------


class ManagedProcess:
    """State of one service across restarts. Only the supervisor thread mutates it."""

    def __init__(self, spec: ServiceSpec, log_path: Path | None, log_capacity: int = 5000) -> None:
        self.spec = spec
        self.log = LogBuffer(spec.name, log_path, log_capacity)
        self.popen: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.kids: dict[int, psutil.Process] = {}  # its own children, whose CPU counts as its own
        self.state = "stopped"
        self.ready = False
        self.want_running = False
        self.restarts = 0
        self.restart_times: deque[float] = deque()
        self.consecutive_failures = 0
        self.last_exit: dict[str, Any] | None = None
        self.started_at: float | None = None
        self.restart_at: float | None = None
        self.rss_bytes = 0
        self.cpu_percent = 0.0
        self.oom_pending = False
        self.stopping = False
        self.probe_failures = 0
        self.not_ready_reason: str | None = None
        self.generation = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.returncode is None

    def event(self, message: str) -> None:
        """Supervisor events go into the service's own log, where a learner looks first."""
        self.log.add(f"[faultline] {message}")

    def start(self) -> None:
        self.want_running = True
        self.stopping = False
        self.oom_pending = False
        self.ready = False
        self.probe_failures = 0
        self.not_ready_reason = None
        self.restart_at = None
        self.generation += 1
        try:
            self.popen = spawn(self.spec)
        except OSError as exc:
            self.popen = None
            self.event(f"failed to start: {exc}")
            self.last_exit = {"code": 127, "reason": f"StartError: {exc}", "signal": None,
                              "at": iso_utc(time.time()), "uptime_s": 0.0}
            self._after_exit(time.time(), failed=True)
            return
        self.started_at = time.time()
        self.state = "starting"
        try:
            self.ps = psutil.Process(self.popen.pid)
            self.ps.cpu_percent(None)
        except psutil.Error:
            self.ps = None
        self.event(f"started pid={self.popen.pid} argv={' '.join(self.spec.argv)}")

    def signal_group(self, sig: int) -> None:
        """Signal the whole process group, so helpers a service spawned go too."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            if self.popen.returncode is None:
                try:
                    self.popen.send_signal(sig)
                except ProcessLookupError:
                    pass

    def oom_kill(self) -> None:
        limit = self.spec.memory_limit_bytes
        self.event(f"memory limit exceeded: rss={self.rss_bytes} limit={limit} — killed (SIGKILL), like the OOM killer")
        self.oom_pending = True
        self.signal_group(signal.SIGKILL)

    def sample(self, with_cpu: bool) -> None:
        if self.ps is None:
            return
        try:
            self.rss_bytes = self.ps.memory_info().rss
            if with_cpu:
                self.cpu_percent = self.ps.cpu_percent(None) + self._children_cpu()
        except psutil.Error:
            pass

    def _children_cpu(self) -> float:
        """CPU of the processes it forked (a CPU hog's workers, a training subprocess) since the last sample."""
        assert self.ps is not None
        total, seen = 0.0, set()
        for child in self.ps.children(recursive=True):
            seen.add(child.pid)
            known = self.kids.setdefault(child.pid, child)
            try:
                total += known.cpu_percent(None)  # 0.0 on the first sample of a new child
            except psutil.Error:
                pass
        for pid in set(self.kids) - seen:
            del self.kids[pid]
        return total

    def reap(self, now: float) -> bool:
        """Check for exit; returns True when the process exited since the last call."""
        if self.popen is None or self.popen.returncode is not None:
            return False
        rc = self.popen.poll()
        if rc is None:
            return False
        uptime = now - (self.started_at or now)
        self.last_exit = describe_exit(rc, oom=self.oom_pending, stopping=self.stopping, uptime_s=uptime)
        self.event(f"exited code={self.last_exit['code']} reason={self.last_exit['reason']} after {uptime:.1f}s")
        # Mop up anything left in the group (a service's own children): they must not outlive it.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.ready = False
        self.rss_bytes = 0
        self.cpu_percent = 0.0
        self.ps = None
        self.kids = {}
        failed = self.last_exit["code"] != 0
        if uptime >= self.spec.restart.reset_after_s:
            self.consecutive_failures = 0
        self._after_exit(now, failed=failed)
        return True

    def _after_exit(self, now: float, failed: bool) -> None:
        policy = self.spec.restart
        if self.stopping or not self.want_running:
            self.state = "stopped"
            self.want_running = False
            return
        if policy.mode == "no" or (policy.mode == "on-failure" and not failed):
            self.state = "exited"
            self.want_running = False
            return
        while self.restart_times and now - self.restart_times[0] > policy.crashloop_window_s:
            self.restart_times.popleft()
        delay = min(policy.backoff_initial_s * (2**self.consecutive_failures), policy.backoff_max_s)
        self.consecutive_failures += 1
        crashloop = len(self.restart_times) + 1 >= policy.crashloop_restarts
        if crashloop:
            delay = policy.backoff_max_s
        self.state = "crashloop" if crashloop else "backoff"
        self.restart_at = now + delay
        self.event(f"restart policy {policy.mode}: restarting in {delay:.1f}s" + (" (crash loop)" if crashloop else ""))

    def due_restart(self, now: float) -> bool:
        return self.want_running and self.restart_at is not None and now >= self.restart_at and not self.alive()

    def note_restart(self, now: float) -> None:
        self.restarts += 1
        self.restart_times.append(now)

    def forget_failures(self, now: float) -> None:
        """Start the backoff over (a start by hand, a new argv): the failures counted so far no longer say anything
        about the next run. One waiting out a backoff waits the first wait from now, not what its failures earned."""
        self.consecutive_failures = 0
        self.restart_times.clear()
        if self.restart_at is not None and not self.alive():
            self.restart_at = min(self.restart_at, now + self.spec.restart.backoff_initial_s)

    def snapshot(self) -> dict[str, Any]:
        if self.alive():
            self.sample(with_cpu=False)  # status shows the RSS of now, not of the last tick
        return {
            "name": self.name,
            "url": self.spec.url,
            "port": self.spec.port,
            "pid": self.pid if self.alive() else None,
            "state": self.state,
            "ready": self.ready,
            "not_ready_reason": None if self.ready or not self.alive() else self.not_ready_reason,
            "rss_bytes": self.rss_bytes,
            "cpu_percent": round(self.cpu_percent, 1),
            "restarts": self.restarts,
            "starts": self.generation,  # every start, policy or manual: probes count restarts since an attempt began
            "last_exit": self.last_exit,
            "memory_limit_bytes": self.spec.memory_limit_bytes,
            "restart_policy": self.spec.restart.mode,
            "started_at": iso_utc(self.started_at) if self.started_at and self.alive() else None,
            "restart_in_s": round(max(0.0, self.restart_at - time.time()), 1)
            if self.restart_at and not self.alive()
            else None,
            "argv": list(self.spec.argv),
            "log_file": str(self.log.path) if self.log.path else None,
        }
