"""CPU faults: a separate busy process on the host (a hog), or a replica running far more torch threads than
the machine has cores (oversubscription: at full load, threads preempt each other and p99 rises).

The hog is supervised (captured output, dies with the lab) but never restarted, and it is listed by
`FaultContext.scenario_pids()`: the console's `kill PID` may end it, and that is a valid fix. With a target,
the hog is placed beside that service: on the process backend every service shares the host's cores, so the
target only names whom it competes with.
"""

from __future__ import annotations

import sys
from typing import Any

from lab.faults.base import Applied, Injector, register
from lab.faults.context import FaultContext
from lab.faults.memory import restore_config
from lab.scenario import faults as models


@register
class CpuHog(Injector):
    model = models.CpuHog
    summary = "Start a busy process (cores x duty) beside a service; the learner may find and kill it."

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


@register
class CpuOversubscribe(Injector):
    model = models.CpuOversubscribe
    summary = "Give a replica many more torch threads than there are cores (live and at restart)."

    def describe(self, fault: Any) -> str:
        return f"{fault.target} runs its model on {fault.params.threads} torch threads"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_service(fault.target)
        name = fault.target
        previous = {"torch_threads": ctx.get_config(name)["torch_threads"]}
        wanted = {"torch_threads": fault.params.threads}
        ctx.patch_config(name, wanted)
        argv_before = ctx.persist_config(name, wanted)
        return self.record(fault, {"service": name, "config_before": previous, "argv_before": argv_before})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        return restore_config(ctx, c["service"], c["config_before"], c["argv_before"])
