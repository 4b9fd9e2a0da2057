"""dependency.slow: the feature store (or the registry) slow, by its own `latency_ms` knob (live and at restart),
not a toxic on its hop: the hop stays clean, so `network.toxic` remains a different diagnosis, and the delay shows
in the dependency's own latency metrics (as a slow database behind it would). Revert restores the previous value."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from lab.faults.base import register
from lab.faults.configpatch import ConfigPatchInjector
from lab.faults.partnames import DEFAULT_DEPENDENCY
from lab.faults.registry import Catalog
from lab.scenario.faultspec import DependencyName, FaultModel
from lab.scenario.fields import Strict


class SlowParams(Strict):
    latency_ms: int = Field(gt=0, le=600_000)


class DependencySlow(FaultModel):
    kind: Literal["dependency"]
    action: Literal["slow"]
    target: DependencyName = DEFAULT_DEPENDENCY
    params: SlowParams


@register
class DependencySlowInjector(ConfigPatchInjector):
    model = DependencySlow
    position = 80
    catalog = Catalog(
        label="Slow dependency",
        help="Make the feature store (or registry) answer slowly, by its own latency_ms knob.",
        example={"latency_ms": 300},
    )

    def describe(self, fault: Any) -> str:
        return f"the {fault.target} answers every request {fault.params.latency_ms} ms late"

    def wanted(self, fault: Any, current: dict[str, Any]) -> dict[str, Any]:
        return {"latency_ms": fault.params.latency_ms}
