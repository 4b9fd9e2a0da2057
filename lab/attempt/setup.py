"""Setting up the scenario's starting stack (its `stack` section) on a stack just reset to its baseline: its track
(started beside the running one when the stack does not run it yet), replicas, model versions (production,
canary), service configs, and the traffic.

Versions use the console's rollout functions and configs its config writer (live, and kept at restart), so a
scenario's setup and a learner's operations change the stack the same way.
"""

from __future__ import annotations

from typing import Any

from lab import parts
from lab.console.act import set_config
from lab.console.base import ConsoleContext
from lab.console.rollout import canary_rollout, full_rollout

FRAUD = parts.DEFAULT_TRACK
# An LLM scenario's clients, unless it says otherwise: the load generator's own defaults (services/loadgen).
LLM_TRAFFIC_DEFAULTS = {"retry_policy": "honour-retry-after", "retries": 3, "max_users": 200}


def ensure_track(attempt: Any, track: str) -> dict[str, Any] | None:
    """Start `track`'s parts beside the running ones when the stack does not run it yet (the least surprising:
    nothing the learner had running stops); the baseline is then captured again so that the reset between attempts
    covers the new parts too. Returns what was started, or None."""
    lab = attempt.lab
    part = parts.replica_part(track)
    if lab.stack.topology.runs(part):
        return None
    running = ", ".join(lab.stack.topology.tracks)
    count = part.default_replicas if part.replicated else 1
    attempt.progress = (f"starting the {track} track ({part.name}-1 .. {part.name}-{count}) beside the {running} "
                        "track: this scenario runs on it (once per lab, up to a minute)")
    info = lab.stack.add_track(track)
    attempt.manager.baseline.capture()
    return info


def configure_stack(attempt: Any, stack: Any) -> dict[str, Any]:
    """Apply the scenario's stack section; returns what was done (journaled with stack_ready)."""
    track = getattr(stack, "track", FRAUD)
    done: dict[str, Any] = {}
    started = ensure_track(attempt, track)
    if started is not None:
        done["track_started"] = started
    if track == FRAUD:
        _fraud_replicas_and_versions(attempt, stack, done)
    else:
        _track_replicas(attempt, stack, track, done)
    lab = attempt.lab
    ctx = ConsoleContext(lab, None)
    for service, values in stack.services.items():
        if values:
            set_config(ctx, service, dict(values))
    if stack.services:
        done["services"] = {k: dict(v) for k, v in stack.services.items()}
    traffic = stack.traffic
    attempt.progress = f"starting traffic ({traffic.profile} at {traffic.rps:g} rps)"
    if track == FRAUD:
        lab.stack.traffic(traffic.rps, traffic.profile, seed=attempt.seed)
        done["traffic"] = {"rps": traffic.rps, "profile": traffic.profile}
    else:
        clients = {"retry_policy": traffic.retry_policy or LLM_TRAFFIC_DEFAULTS["retry_policy"],
                   "retries": LLM_TRAFFIC_DEFAULTS["retries"] if traffic.retries is None else traffic.retries,
                   "max_users": traffic.concurrency or LLM_TRAFFIC_DEFAULTS["max_users"]}
        lab.stack.traffic(traffic.rps, traffic.profile, seed=attempt.seed, track=track, **clients)
        done["traffic"] = {"track": track, "rps": traffic.rps, "profile": traffic.profile, **clients}
    return done


def _fraud_replicas_and_versions(attempt: Any, stack: Any, done: dict[str, Any]) -> None:
    lab = attempt.lab
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


def _track_replicas(attempt: Any, stack: Any, track: str, done: dict[str, Any]) -> None:
    """Another track's replica count (its version is the baseline's: the LLM track has production v1 only, and
    the reset puts every replica back on what it served)."""
    lab = attempt.lab
    part = parts.replica_part(track)
    if lab.stack.topology.replica_count(part) != stack.replicas:
        attempt.progress = f"scaling to {stack.replicas} {part.name} replicas"
        lab.stack.scale(stack.replicas, track=track)
        done["replicas"] = stack.replicas
