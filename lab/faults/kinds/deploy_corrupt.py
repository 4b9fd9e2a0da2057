"""deploy.corrupt: a copy of the base whose bytes no longer match their recorded sha256 (the registry's `corrupt`
variant) rolled out: every replica refuses the live reload and keeps serving what it had; in full, the first
replica is restarted onto it and never becomes ready. Revert: argv and restart, stages. How a rollout goes:
lab/faults/deploy.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from lab.faults.base import Applied, FaultError, Injector, register
from lab.faults.context import FaultContext
from lab.faults.deploy import (
    loaded_everywhere,
    register_variant,
    restore_stages,
    stages,
    undo_rollout,
)
from lab.faults.registry import Catalog
from lab.parts.model import argv_with_versions, with_version
from lab.scenario import vocab
from lab.scenario.faultspec import FaultModel
from lab.scenario.fields import Strict


class CorruptParams(Strict):
    base: Literal[vocab.BASE_VERSIONS] = "v1"  # type: ignore[valid-type]
    weight: float = Field(default=1.0, gt=0, le=1)


class DeployCorrupt(FaultModel):
    kind: Literal["deploy"]
    action: Literal["corrupt"]
    params: CorruptParams


@register
class DeployCorruptInjector(Injector):
    model = DeployCorrupt
    position = 61
    catalog = Catalog(
        label="Corrupt artifact",
        help="Roll out a version whose artifact fails its checksum: replicas refuse it; in full, one gets stuck.",
        example={"weight": 1.0},
    )

    def describe(self, fault: Any) -> str:
        p = fault.params
        text = f"a corrupt copy of {p.base} rolled out " + ("in full" if p.weight >= 1 else f"at {p.weight:.0%}")
        text += ": every live replica refuses it"
        if p.weight >= 1:
            text += "; the first replica, restarted onto it, cannot become ready"
        return text

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        p = fault.params
        full = p.weight >= 1
        before = loaded_everywhere(ctx)
        stages_before = stages(ctx)
        meta = register_variant(ctx, p.base, "corrupt")
        version = meta["version"]
        stages_before[version] = "archived"
        c: dict[str, Any] = {"version": version, "base": p.base, "weight": p.weight, "replicas_before": before,
                             "stages_before": stages_before, "argv_before": {}, "refused": {}, "accepted": [],
                             "restarted": []}
        notes = []
        for r, versions in before.items():
            try:
                ctx.reload(r, with_version(versions, version, first=full))
                c["accepted"].append(r)
            except FaultError as exc:
                if exc.status != 409:
                    undo_rollout(ctx, c)
                    raise
                c["refused"][r] = str(exc)
        if c["accepted"]:
            notes.append(f"{', '.join(c['accepted'])} accepted a corrupt artifact: the checksum check is broken")
        try:
            ctx.registry("POST", f"/v1/models/{version}/stage", {"stage": "production" if full else "canary"})
            if full:
                first = next(iter(before))
                c["argv_before"][first] = ctx.spec_argv(first)
                ctx.set_argv(first, argv_with_versions(c["argv_before"][first],
                                                       with_version(before[first], version, True)))
                c["restarted"].append(first)
                ctx.restart(first)
        except FaultError as exc:
            undo_rollout(ctx, c)
            raise FaultError(f"the corrupt rollout of {version} failed and was undone: {exc}", exc.status) from exc
        return self.record(fault, c, notes)

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        return undo_rollout(ctx, applied.changes)

    def recover(self, ctx: FaultContext, applied: Applied) -> list[str]:
        restore_stages(ctx, applied.changes["stages_before"])  # the registry's files outlive a lab
        return [f"registry stages restored; {applied.changes['version']} archived"]
