"""process.kill: one signal to a service's pid, as `kill -9 PID` would.

The supervisor's restart policy decides what happens next (uvicorn re-raises TERM/INT after its graceful shutdown,
so every signal ends in 128+N and `on-failure` restarts it with backoff). Revert makes sure it runs again (a
policy of `no` leaves it down).
"""

from __future__ import annotations

import os
import signal
from typing import Any, Literal

from pydantic import Field

from lab.faults.base import Applied, FaultError, Injector, register
from lab.faults.context import FaultContext
from lab.faults.registry import Catalog
from lab.scenario.faultspec import FaultModel
from lab.scenario.fields import ServiceName, Strict


class KillParams(Strict):
    signal: Literal["KILL", "TERM", "INT"] = "KILL"


class ProcessKill(FaultModel):
    kind: Literal["process"]
    action: Literal["kill"]
    target: ServiceName
    params: KillParams = Field(default_factory=KillParams)


@register
class ProcessKillInjector(Injector):
    model = ProcessKill
    position = 20
    catalog = Catalog(
        label="Kill a service",
        help="Send one signal (KILL, TERM, INT) to a service; the supervisor's restart policy takes over.",
        example={"signal": "KILL"},
    )

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
