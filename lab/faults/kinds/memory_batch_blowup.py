"""memory.batch_blowup: the replica's `max_batch_size` (and `max_queue`, so a full batch can queue at all) raised
live and at restart, plus a lower memory limit: rows waiting for and inside a batch are held in memory (about 0.9 KB
per row in flight), so big bursts push RSS over the limit and the supervisor kills it. Revert restores config,
start-up config and limit, and starts the replica if it is down.
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


class BatchBlowupParams(Strict):
    max_batch_size: int = Field(ge=2, le=1_000_000)
    limit_mb: Megabytes | None = None
    headroom_mb: HeadroomMb | None = Field(default=None, description="limit = the replica's RSS at injection + this")

    @model_validator(mode="after")
    def _one_limit(self) -> BatchBlowupParams:
        if (self.limit_mb is None) == (self.headroom_mb is None):
            raise ValueError("give exactly one of limit_mb, headroom_mb")
        return self


class MemoryBatchBlowup(FaultModel):
    kind: Literal["memory"]
    action: Literal["batch_blowup"]
    target: ReplicaName
    params: BatchBlowupParams


@register
class MemoryBatchBlowupInjector(ConfigPatchInjector):
    model = MemoryBatchBlowup
    position = 32
    catalog = Catalog(
        label="Batch blow-up",
        help="Raise a replica's max_batch_size (and max_queue) and lower its memory limit: bursts get it OOM-killed.",
        example={"max_batch_size": 4096, "headroom_mb": 64},
    )

    def describe(self, fault: Any) -> str:
        p = fault.params
        return f"{fault.target}'s max_batch_size raised to {p.max_batch_size} with {limit_text(p)}"

    def wanted(self, fault: Any, current: dict[str, Any]) -> dict[str, Any]:
        # A queue smaller than a batch would refuse the rows before they could ever form one.
        size = fault.params.max_batch_size
        return {"max_batch_size": size, "max_queue": max(current["max_queue"], size)}

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        name = ctx.check_service(fault.target)
        current = ctx.get_config(name)
        limit = wanted_limit(ctx, name, fault.params)
        # the replica refuses values over its own caps with a 422: passed on
        changes = push_config(ctx, name, self.wanted(fault, current), current)
        changes["limit_before"] = lower_limit(ctx, name, limit)
        changes["limit"] = limit
        return self.record(fault, changes)

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        return super().revert(ctx, applied) + restore_limit(ctx, c["service"], c["limit_before"])
