"""process.freeze: SIGSTOP to a service's process group; SIGCONT on revert, only to that same process (pid and
start time checked).

The supervisor does not fight it: a stopped process keeps its RSS (no memory kill), its readiness probe times out
so it shows `unready` — exactly what callers see — and nothing restarts an unready process. A `restart` while
frozen still works: SIGTERM stays pending, SIGKILL after the grace period ends it.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Literal

import psutil
from pydantic import Field

from lab.faults.base import Applied, FaultError, Injector, register
from lab.faults.context import FaultContext
from lab.faults.registry import Catalog
from lab.scenario.faultspec import FaultModel, NoParams
from lab.scenario.fields import ServiceName


class ProcessFreeze(FaultModel):
    """SIGSTOP until reverted (SIGCONT): alive to the supervisor, silent to its callers."""

    kind: Literal["process"]
    action: Literal["freeze"]
    target: ServiceName
    params: NoParams = Field(default_factory=NoParams)


def _same_process(pid: int, create_time: float) -> psutil.Process | None:
    try:
        p = psutil.Process(pid)
        return p if abs(p.create_time() - create_time) < 0.01 else None
    except psutil.Error:
        return None


@register
class ProcessFreezeInjector(Injector):
    model = ProcessFreeze
    position = 21
    catalog = Catalog(
        label="Freeze a service",
        help="Freeze a service with SIGSTOP: alive to the supervisor, silent to its callers; SIGCONT on revert.",
    )

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
