"""cpu.oversubscribe: a replica running far more torch threads than the machine has cores (live and at restart):
at full load, threads preempt each other and p99 rises. Revert restores the previous value and argv."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from lab.faults.base import register
from lab.faults.configpatch import ConfigPatchInjector
from lab.faults.registry import Catalog
from lab.scenario.faultspec import FaultModel
from lab.scenario.fields import ReplicaName, Strict


class OversubscribeParams(Strict):
    threads: int = Field(ge=2, le=1024)


class CpuOversubscribe(FaultModel):
    kind: Literal["cpu"]
    action: Literal["oversubscribe"]
    target: ReplicaName
    params: OversubscribeParams


@register
class CpuOversubscribeInjector(ConfigPatchInjector):
    model = CpuOversubscribe
    position = 41
    catalog = Catalog(
        label="Oversubscribed threads",
        help="Give a replica many more torch threads than there are cores (live and at restart).",
        example={"threads": 16},
    )

    def describe(self, fault: Any) -> str:
        return f"{fault.target} runs its model on {fault.params.threads} torch threads"

    def wanted(self, fault: Any, current: dict[str, Any]) -> dict[str, Any]:
        return {"torch_threads": fault.params.threads}
