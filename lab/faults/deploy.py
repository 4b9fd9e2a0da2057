"""Rollouts for the deploy faults (lab/faults/kinds/deploy_variant.py, deploy_corrupt.py) and the console's
deploy operations: a broken model version rolled out at canary weight or in full, or a corrupt artifact.

A rollout here is what a deploy pipeline would do, through the services' HTTP APIs only:
1. the registry derives the broken version from a healthy base (`POST /v1/variants`) and gives it a new vN;
2. every replica loads it next to what it serves (`POST /admin/reload`), as its default for a full rollout;
   the replicas' start-up argv gets the same `--versions`, so a restart keeps the deploy;
3. the gateway's `routing` sends `weight` of the traffic to vN (canary; the rest keeps its old split), or is
   emptied for a full rollout (vN is then every replica's default); the gateway's start-up config too, so a
   gateway restart keeps the split (restarting it is not a way out of a bad canary);
4. the registry stage follows: `canary`, or `production` for a full rollout.
Revert undoes it in the opposite order — routing first, so no request asks for a version that is being unloaded
— restores the previous stages and archives vN: the rollout was abandoned.

deploy.corrupt registers a copy of the base whose bytes no longer match their recorded sha256 (the registry's
`corrupt` variant) and rolls it out the same way. Every replica refuses the live reload (409, "artifact sha256
mismatch ... refusing to serve") and keeps serving what it had; the gateway's routing is never changed for a
version nobody loaded. In a full rollout the pipeline also restarts the first replica on the new version, as a
rolling update does: it comes up but never ready (the same reason on its /readyz and in its log), while the
other replicas carry the traffic. The fix a learner is expected to find: redeploy the last good version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lab.faults.base import FaultError
from lab.faults.partnames import ROUTER

if TYPE_CHECKING:
    from lab.faults.context import FaultContext

EXCLUSIVE_STAGES = ("production", "canary")
VARIANT_TIMEOUT_S = 300.0
READY_WAIT_S = 60.0


def stages(ctx: FaultContext) -> dict[str, str]:
    return {m["version"]: m.get("stage") for m in ctx.registry("GET", "/v1/models")}


def restore_stages(ctx: FaultContext, wanted: dict[str, str]) -> list[str]:
    """Put every version back on its recorded stage; exclusive stages first (their promotion archives whoever
    holds them), the rest after."""
    current = stages(ctx)
    changed = [v for v, s in wanted.items() if v in current and current[v] != s]
    for v in sorted(changed, key=lambda v: wanted[v] not in EXCLUSIVE_STAGES):
        if stages(ctx).get(v) != wanted[v]:
            ctx.registry("POST", f"/v1/models/{v}/stage", {"stage": wanted[v]})
    return []


def loaded_everywhere(ctx: FaultContext) -> dict[str, list[str]]:
    out = {}
    for r in ctx.replicas():
        try:
            out[r] = ctx.loaded_versions(r)
        except FaultError as exc:
            raise FaultError(f"a rollout needs every replica up, and {r} is not: {exc}", 409) from exc
    return out


def register_variant(ctx: FaultContext, base: str, variant: str) -> dict[str, Any]:
    return ctx.registry("POST", "/v1/variants", {"base": base, "variant": variant}, timeout=VARIANT_TIMEOUT_S)


def restore_replicas(ctx: FaultContext, c: dict[str, Any]) -> list[str]:
    """Start-up argv back, then the live versions of every replica that still differs."""
    notes = []
    for r, argv in c.get("argv_before", {}).items():
        if r in ctx.supervisor.names() and ctx.spec_argv(r) != argv:
            ctx.set_argv(r, argv)
            if r in c.get("restarted", []):  # it runs the broken version: only a restart brings the old one back
                ctx.restart(r)
                # whoever comes next (a baseline reset, the next attempt) must find it answering, not restarting
                ctx.wait_ready([r], READY_WAIT_S)
    for r, versions in c["replicas_before"].items():
        if r in c.get("restarted", []) or r not in ctx.supervisor.names():
            continue
        if ctx.status(r)["pid"] is not None:
            ctx.wait_ready([r], READY_WAIT_S)  # a replica (re)starting meanwhile loads its old argv: reload it after
        try:
            if ctx.loaded_versions(r) != versions:
                ctx.reload(r, versions)
        except FaultError as exc:
            notes.append(f"{r}: could not reload {','.join(versions)} ({exc}); its start-up argv is restored")
    return notes


def undo_rollout(ctx: FaultContext, c: dict[str, Any]) -> list[str]:
    notes: list[str] = []
    if "gateway_argv_before" in c:
        ctx.set_argv(ROUTER, c["gateway_argv_before"])
    if "routing_before" in c:
        try:
            ctx.patch_config(ROUTER, {"routing": c["routing_before"]})
        except FaultError as exc:
            notes.append(f"{ROUTER} routing not restored: {exc}")
    notes += restore_replicas(ctx, c)
    try:
        notes += restore_stages(ctx, c["stages_before"])
    except FaultError as exc:
        notes.append(f"registry stages not restored: {exc}")
    return notes
