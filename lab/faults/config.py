"""config.push: PATCH any service's live config with the given keys, and write them into its start-up config too
(a pushed config survives a restart, as a real rollout's would). Revert puts back the previous values of exactly
those keys. A value the service refuses is a 422 with the service's own message.
"""

from __future__ import annotations

import json
from typing import Any

from lab.faults.base import Applied, FaultError, Injector, register
from lab.faults.context import FaultContext
from lab.faults.memory import restore_config
from lab.scenario import faults as models

# Derived from the topology: the stack pushes it when it scales, a fault must not own it.
NOT_PUSHABLE = {"gateway": {"replicas"}}


@register
class ConfigPush(Injector):
    model = models.ConfigPush
    summary = "Push config keys to a service (PATCH /admin/config, kept at restart); revert restores the old values."

    def describe(self, fault: Any) -> str:
        pairs = ", ".join(f"{k}={json.dumps(v)}" for k, v in fault.params.values.items())
        return f"config pushed to {fault.target}: {pairs}"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        name = ctx.check_service(fault.target)
        values = dict(fault.params.values)
        blocked = sorted(set(values) & NOT_PUSHABLE.get(name, set()))
        if blocked:
            raise FaultError(f"{name}'s {', '.join(blocked)} is managed by the lab (scale); push other keys", 422)
        current = ctx.get_config(name)
        unknown = sorted(set(values) - set(current))
        if unknown:
            raise FaultError(f"{name} has no config key(s) {', '.join(unknown)}; its keys are: "
                             f"{', '.join(sorted(current))}", 422)
        previous = {k: current[k] for k in values}
        ctx.patch_config(name, values)
        argv_before = ctx.persist_config(name, values)
        return self.record(fault, {"service": name, "config_before": previous, "config": values,
                                   "argv_before": argv_before})

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        c = applied.changes
        return restore_config(ctx, c["service"], c["config_before"], c["argv_before"])
