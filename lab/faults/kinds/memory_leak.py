"""memory.leak: the replica's prediction cache made unbounded (`cache_size: -1`, live and in its start-up config,
so a restart does not cure it); every distinct row scored stays in memory (about 0.65 KB per row). With
`limit_mb` (absolute) or `headroom_mb` (above the replica's RSS at injection: portable across machines), the limit
is lowered too and the leak ends in an OOM kill under traffic. Revert restores config, start-up config and limit,
and starts the replica if it is down.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lab.faults.base import Applied, register
from lab.faults.configpatch import ConfigPatchInjector, push_config
from lab.faults.context import FaultContext
from lab.faults.limits import limit_text, lower_limit, restore_limit, wanted_limit
from lab.faults.registry import Catalog
from lab.scenario.faultspec import FaultModel, HeadroomMb, Megabytes
from lab.scenario.fields import ReplicaName, Strict


class LeakParams(Strict):
    """The replica's prediction cache made unbounded; with a limit, it ends in an OOM kill."""

    limit_mb: Megabytes | None = None
    # A replica's RSS depends on the machine: a limit relative to it at injection time keeps a scenario portable.
    headroom_mb: HeadroomMb | None = Field(default=None, description="limit = the replica's RSS at injection + this")

    @model_validator(mode="after")
    def _one_limit(self) -> LeakParams:
        if self.limit_mb is not None and self.headroom_mb is not None:
            raise ValueError("give limit_mb or headroom_mb, not both")
        return self


class MemoryLeak(FaultModel):
    kind: Literal["memory"]
    action: Literal["leak"]
    target: ReplicaName
    params: LeakParams = Field(default_factory=LeakParams)


@register
class MemoryLeakInjector(ConfigPatchInjector):
    model = MemoryLeak
    position = 31
    catalog = Catalog(
        label="Memory leak",
        help="Make a replica's prediction cache unbounded (it keeps every row); with a limit, it ends OOM-killed.",
        example={"headroom_mb": 64},
    )

    def describe(self, fault: Any) -> str:
        text = f"{fault.target}'s prediction cache is unbounded (cache_size -1): memory grows with every new row"
        if fault.params.limit_mb is not None or fault.params.headroom_mb is not None:
            text += f", until {limit_text(fault.params)} kills it"
        return text

    def wanted(self, fault: Any, current: dict[str, Any]) -> dict[str, Any]:
        return {"cache_size": -1}

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        name = ctx.check_service(fault.target)
        current = ctx.get_config(name)
        limit = wanted_limit(ctx, name, fault.params)  # measured before the leak starts
        changes = push_config(ctx, name, self.wanted(fault, current), current)
        if limit is not None:
            changes["limit_before"] = lower_limit(ctx, name, limit)
            changes["limit"] = limit
        return self.record(fault, changes)

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        notes = super().revert(ctx, applied)
        c = applied.changes
        if "limit_before" in c:
            notes += restore_limit(ctx, c["service"], c["limit_before"])
        return notes
