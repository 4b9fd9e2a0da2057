"""Setting up the scenario's starting stack (its `stack` section) on a stack just reset to its baseline:
replicas, model versions (production, canary), service configs, and the traffic.

Versions use the console's rollout functions and configs its config writer (live, and kept at restart), so a
scenario's setup and a learner's operations change the stack the same way.
"""

from __future__ import annotations

from typing import Any

from lab.console.act import set_config
from lab.console.base import ConsoleContext
from lab.console.rollout import canary_rollout, full_rollout


def configure_stack(attempt: Any, stack: Any) -> dict[str, Any]:
    """Apply the scenario's stack section; returns what was done (journaled with stack_ready)."""
    lab = attempt.lab
    done: dict[str, Any] = {}
    if lab.stack.topology.replicas != stack.replicas:
        attempt.progress = f"scaling to {stack.replicas} replicas"
        lab.stack.scale(stack.replicas)
        done["replicas"] = stack.replicas
    ctx = ConsoleContext(lab, None)
    replicas = lab.stack.topology.model_names()
    defaults = {ctx.http.loaded_versions(r)[0] for r in replicas}
    versions = stack.versions
    if defaults != {versions.production}:
        attempt.progress = f"deploying {versions.production}"
        full_rollout(ctx.http, replicas, versions.production, archive_canary=True)
        done["production"] = versions.production
    if versions.canary is not None:
        attempt.progress = f"deploying {versions.canary} as a canary"
        canary_rollout(ctx.http, replicas, versions.canary, versions.canary_weight)
        done["canary"] = {"version": versions.canary, "weight": versions.canary_weight}
    for service, values in stack.services.items():
        if values:
            set_config(ctx, service, dict(values))
    if stack.services:
        done["services"] = {k: dict(v) for k, v in stack.services.items()}
    attempt.progress = f"starting traffic ({stack.traffic.profile} at {stack.traffic.rps:g} rps)"
    lab.stack.traffic(stack.traffic.rps, stack.traffic.profile, seed=attempt.seed)
    done["traffic"] = {"rps": stack.traffic.rps, "profile": stack.traffic.profile}
    return done
