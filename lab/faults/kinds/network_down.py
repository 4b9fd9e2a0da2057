"""network.down: a hop down (`enabled: false`): its proxy stops listening and drops its connections; revert puts
back the previous `enabled`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from lab.faults.base import Applied, Injector, register
from lab.faults.context import FaultContext
from lab.faults.partnames import hop_label
from lab.faults.registry import Catalog
from lab.scenario.faultspec import FaultModel, NoParams
from lab.scenario.fields import HopName


class NetworkDown(FaultModel):
    kind: Literal["network"]
    action: Literal["down"]
    target: HopName
    params: NoParams = Field(default_factory=NoParams)


@register
class NetworkDownInjector(Injector):
    model = NetworkDown
    position = 11
    catalog = Catalog(
        label="Hop down",
        help="Take a hop down: the proxy stops listening and drops its connections (enabled=false).",
    )

    def describe(self, fault: Any) -> str:
        return f"the hop {hop_label(fault.target)} is down (connections refused)"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        ctx.check_hop(fault.target)
        before = ctx.proxy(fault.target)
        ctx.set_proxy_enabled(fault.target, False)
        return self.record(fault, {"proxy": fault.target, "enabled_before": bool(before.get("enabled", True))})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        ctx.set_proxy_enabled(c["proxy"], c["enabled_before"])
        return []
