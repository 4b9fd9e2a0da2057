"""dependency.down: the feature store's (or the registry's) process stopped through the supervisor (state
`stopped`); the gateway falls back (feature store: `default_features` unless configured to fail). Revert starts
it again. A hop that refuses connections while the process is fine is `network.down` instead."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from lab.faults.base import Applied, Injector, register
from lab.faults.context import FaultContext
from lab.faults.partnames import DEFAULT_DEPENDENCY
from lab.faults.registry import Catalog
from lab.scenario.faultspec import DependencyName, FaultModel, NoParams


class DependencyDown(FaultModel):
    kind: Literal["dependency"]
    action: Literal["down"]
    target: DependencyName = DEFAULT_DEPENDENCY
    params: NoParams = Field(default_factory=NoParams)


@register
class DependencyDownInjector(Injector):
    model = DependencyDown
    position = 81
    catalog = Catalog(
        label="Dependency down",
        help="Stop the feature store (or registry) process; revert starts it again.",
    )

    def describe(self, fault: Any) -> str:
        return f"the {fault.target} is down (process stopped)"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        name = ctx.check_service(fault.target)
        ctx.stop(name)
        return self.record(fault, {"service": name})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        name = applied.changes["service"]
        return [] if ctx.ensure_running(name) else [f"{name} was already running"]
