"""memory.limit: a service's memory limit lowered, live; over it, the supervisor kills it like the OOM killer.
Revert restores the previous limit and starts the service if it is down."""

from __future__ import annotations

from typing import Any, Literal

from lab.faults.base import Applied, Injector, MiB, register
from lab.faults.context import FaultContext
from lab.faults.limits import lower_limit, restore_limit
from lab.faults.registry import Catalog
from lab.scenario.faultspec import FaultModel, Megabytes
from lab.scenario.fields import ServiceName, Strict


class LimitParams(Strict):
    limit_mb: Megabytes


class MemoryLimit(FaultModel):
    kind: Literal["memory"]
    action: Literal["limit"]
    target: ServiceName
    params: LimitParams


@register
class MemoryLimitInjector(Injector):
    model = MemoryLimit
    position = 30
    catalog = Catalog(
        label="Memory limit",
        help="Lower a service's memory limit, live; over it, the supervisor kills it like the OOM killer.",
        example={"limit_mb": 256},
    )

    def describe(self, fault: Any) -> str:
        return f"{fault.target}'s memory limit lowered to {fault.params.limit_mb} MiB"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_service(fault.target)
        before = lower_limit(ctx, fault.target, fault.params.limit_mb * MiB)
        return self.record(fault, {"service": fault.target, "limit_before": before,
                                   "limit": fault.params.limit_mb * MiB})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        return restore_limit(ctx, c["service"], c["limit_before"])
