"""Process faults: kill a service, freeze it (SIGSTOP), or make it crash at every start (a crash loop).

- kill: one signal to the service's pid, as `kill -9 PID` would. The supervisor's restart policy decides what
  happens next (uvicorn re-raises TERM/INT after its graceful shutdown, so every signal ends in 128+N and
  `on-failure` restarts it with backoff). Revert makes sure it runs again (a policy of `no` leaves it down).
- freeze: SIGSTOP to the service's process group; SIGCONT on revert, only to that same process (pid and start
  time checked). The supervisor does not fight it: a stopped process keeps its RSS (no memory kill), its
  readiness probe times out so it shows `unready` — exactly what callers see — and nothing restarts an unready
  process. A `restart` while frozen still works: SIGTERM stays pending, SIGKILL after the grace period ends it.
- crash_loop: the service is restarted with a start-up `--config` it refuses (a key from a newer release); the
  real service exits 2 at once, every time, and the supervisor's backoff turns that into `backoff`, then
  `crashloop`. Revert restores the original argv and restarts it.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import psutil

from lab.faults.base import Applied, FaultError, Injector, register
from lab.faults.context import FaultContext, argv_with_config
from lab.scenario import faults as models

# A key no service knows: the config of a newer release rolled out to an older binary.
CRASH_CONFIG = {"config_schema": 2}
# What the real services exit with when they refuse their start-up config (argparse convention).
BAD_CONFIG_EXIT = 2


@register
class ProcessKill(Injector):
    model = models.ProcessKill
    summary = "Send one signal (KILL, TERM, INT) to a service; the supervisor's restart policy takes over."

    def describe(self, fault: Any) -> str:
        return f"{fault.target} killed with SIG{fault.params.signal}"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_service(fault.target)
        pid = ctx.pid(fault.target)
        restarts = ctx.status(fault.target)["restarts"]
        try:
            os.kill(pid, getattr(signal, "SIG" + fault.params.signal))
        except ProcessLookupError as exc:
            raise FaultError(f"{fault.target} (pid {pid}) exited before the signal: try again", 409) from exc
        return self.record(fault, {"service": fault.target, "pid": pid, "signal": fault.params.signal,
                                   "restarts_before": restarts})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        name = applied.changes["service"]
        if ctx.ensure_running(name):
            return [f"{name} was not running: started it"]
        return []


def _same_process(pid: int, create_time: float) -> psutil.Process | None:
    try:
        p = psutil.Process(pid)
        return p if abs(p.create_time() - create_time) < 0.01 else None
    except psutil.Error:
        return None


@register
class ProcessFreeze(Injector):
    model = models.ProcessFreeze
    summary = "Freeze a service with SIGSTOP: alive to the supervisor, silent to its callers; SIGCONT on revert."

    def describe(self, fault: Any) -> str:
        return f"{fault.target} frozen (SIGSTOP): its port accepts connections but nothing answers"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_service(fault.target)
        pid = ctx.pid(fault.target)
        try:
            created = psutil.Process(pid).create_time()
            os.killpg(pid, signal.SIGSTOP)  # the group: helpers a service spawned freeze with it
        except (psutil.Error, ProcessLookupError) as exc:
            raise FaultError(f"{fault.target} (pid {pid}) vanished before it could be frozen: {exc}", 409) from exc
        return self.record(fault, {"service": fault.target, "pid": pid, "create_time": created})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        if _same_process(c["pid"], c["create_time"]) is None:
            return [f"pid {c['pid']} is gone (restarted or stopped): nothing to thaw"]
        try:
            os.killpg(c["pid"], signal.SIGCONT)
        except ProcessLookupError:
            return [f"pid {c['pid']} exited meanwhile"]
        return []


@register
class ProcessCrashLoop(Injector):
    model = models.ProcessCrashLoop
    summary = "Restart a service with a start-up config it refuses: it exits at once, every time (crash loop)."

    def describe(self, fault: Any) -> str:
        return (f"{fault.target} restarted with a start-up config it refuses ({CRASH_CONFIG}): it exits "
                f"{BAD_CONFIG_EXIT} at every start and the supervisor backs off into a crash loop")

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_service(fault.target)
        before = ctx.spec_argv(fault.target)
        bad = argv_with_config(before, CRASH_CONFIG)
        ctx.set_argv(fault.target, bad)
        notes = []
        if fault.params.exit_code != BAD_CONFIG_EXIT:
            notes.append(f"exit_code {fault.params.exit_code} asked; the real service exits {BAD_CONFIG_EXIT} when it "
                         "refuses its start-up config")
        try:
            ctx.restart(fault.target)
        except Exception:
            ctx.set_argv(fault.target, before)
            raise
        return self.record(fault, {"service": fault.target, "argv_before": before, "argv_bad": bad}, notes)

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        name = c["service"]
        if name not in ctx.supervisor.names():
            return [f"{name} no longer exists"]
        current = ctx.spec_argv(name)
        if current == c["argv_before"]:
            return ["already restored: " + name] if not ctx.ensure_running(name) else [f"started {name}"]
        ctx.set_argv(name, c["argv_before"])
        ctx.restart(name)
        return []
