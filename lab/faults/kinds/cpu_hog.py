"""cpu.hog: a separate busy process on the host (`python -m lab.faults.hog --cores N --duty D`).

The hog is supervised (captured output, dies with the lab) but never restarted, and it is listed by
`FaultContext.scenario_pids()`: the console's `kill PID` may end it, and that is a valid fix. With a target, the
hog is placed beside that service: on the process backend every service shares the host's cores, so the target
only names whom it competes with. Revert stops it.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

from pydantic import Field

from lab.faults.base import Applied, Injector, register
from lab.faults.context import FaultContext
from lab.faults.registry import Catalog
from lab.scenario.faultspec import FaultModel
from lab.scenario.fields import ServiceName, Strict


class HogParams(Strict):
    cores: int = Field(default=1, ge=1, le=64)
    duty: float = Field(default=1.0, gt=0, le=1)


class CpuHog(FaultModel):
    """A separate busy process the scenario starts (the learner may `kill` it); target: whom it is placed beside."""

    kind: Literal["cpu"]
    action: Literal["hog"]
    target: ServiceName | None = None
    params: HogParams = Field(default_factory=HogParams)


@register
class CpuHogInjector(Injector):
    model = CpuHog
    position = 40
    starts_process = True
    catalog = Catalog(
        label="CPU hog",
        help="Start a busy process (cores x duty) beside a service; the learner may find and kill it.",
        example={"cores": 1, "duty": 1.0},
    )

    def describe(self, fault: Any) -> str:
        p = fault.params
        where = f" beside {fault.target}" if fault.target else " on the host"
        return f"a process burning {p.cores} core(s) at {p.duty:.0%} duty{where}"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        if fault.target is not None:
            ctx.check_service(fault.target)
        p = fault.params
        argv = [sys.executable, "-m", "lab.faults.hog", "--cores", str(p.cores), "--duty", f"{p.duty:g}"]
        started = ctx.spawn_helper(fault.id, argv)
        return self.record(fault, {"helper": started["name"], "pid": started["pid"], "argv": argv})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        if not ctx.stop_helper(applied.changes["helper"]):
            return [f"{applied.changes['helper']} was already gone"]
        return []
