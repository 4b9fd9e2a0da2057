"""Dependency faults: the feature store (or the registry) slow or down.

- slow: the dependency's own `latency_ms` knob (live and at restart), not a toxic on its hop: the hop stays clean,
  so `network.toxic` remains a different diagnosis, and the delay shows in the dependency's own latency metrics
  (as a slow database behind it would).
- down: the dependency's process is stopped through the supervisor (state `stopped`); the gateway falls back
  (feature store: `default_features` unless configured to fail). Revert starts it again.
  A hop that refuses connections while the process is fine is `network.down` instead.
"""

from __future__ import annotations

from typing import Any

from lab.faults.base import Applied, Injector, register
from lab.faults.context import FaultContext
from lab.faults.memory import restore_config
from lab.scenario import faults as models


@register
class DependencySlow(Injector):
    model = models.DependencySlow
    summary = "Make the feature store (or registry) answer slowly, by its own latency_ms knob."

    def describe(self, fault: Any) -> str:
        return f"the {fault.target} answers every request {fault.params.latency_ms} ms late"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        name = ctx.check_service(fault.target)
        previous = {"latency_ms": ctx.get_config(name)["latency_ms"]}
        wanted = {"latency_ms": fault.params.latency_ms}
        ctx.patch_config(name, wanted)
        argv_before = ctx.persist_config(name, wanted)
        return self.record(fault, {"service": name, "config_before": previous, "argv_before": argv_before})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        return restore_config(ctx, c["service"], c["config_before"], c["argv_before"])


@register
class DependencyDown(Injector):
    model = models.DependencyDown
    summary = "Stop the feature store (or registry) process; revert starts it again."

    def describe(self, fault: Any) -> str:
        return f"the {fault.target} is down (process stopped)"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        name = ctx.check_service(fault.target)
        ctx.stop(name)
        return self.record(fault, {"service": name})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        name = applied.changes["service"]
        return [] if ctx.ensure_running(name) else [f"{name} was already running"]
