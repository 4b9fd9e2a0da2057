"""deploy.variant: a broken variant of a healthy version (flipped labels, skew, slow, NaN) registered and rolled
out at canary weight or in full; revert undoes the rollout (routing, versions, argv, stages). How a rollout goes:
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
from lab.faults.partnames import ROUTER
from lab.faults.registry import Catalog
from lab.parts.gateway import canary_routing
from lab.parts.model import argv_with_versions, with_version
from lab.scenario import vocab
from lab.scenario.faultspec import FaultModel
from lab.scenario.fields import Strict


class VariantParams(Strict):
    base: Literal[vocab.BASE_VERSIONS] = "v1"  # type: ignore[valid-type]
    variant: Literal[vocab.MODEL_VARIANTS]  # type: ignore[valid-type]
    weight: float = Field(default=1.0, gt=0, le=1, description="share of traffic; 1 = full rollout")


class DeployVariant(FaultModel):
    kind: Literal["deploy"]
    action: Literal["variant"]
    params: VariantParams


@register
class DeployVariantInjector(Injector):
    model = DeployVariant
    position = 60
    catalog = Catalog(
        label="Bad deploy",
        help="Roll out a broken variant of a healthy version (flipped labels, skew, slow, NaN) at a canary weight.",
        example={"variant": "flipped_labels", "weight": 0.25},
    )

    def describe(self, fault: Any) -> str:
        p = fault.params
        how = "in full" if p.weight >= 1 else f"as a canary taking {p.weight:.0%} of traffic"
        return f"a {p.variant} variant of {p.base} deployed {how}"

    def apply(self, ctx: FaultContext, fault: Any) -> Applied:
        p = fault.params
        full = p.weight >= 1
        before = loaded_everywhere(ctx)
        routing_before = ctx.get_config(ROUTER)["routing"]
        stages_before = stages(ctx)
        meta = register_variant(ctx, p.base, p.variant)
        version = meta["version"]
        stages_before[version] = "archived"  # reverted = an abandoned rollout
        c: dict[str, Any] = {"version": version, "variant": p.variant, "base": p.base, "weight": p.weight,
                             "replicas_before": before, "stages_before": stages_before, "argv_before": {}}
        try:
            for r, versions in before.items():
                ctx.reload(r, with_version(versions, version, first=full))
                c["argv_before"][r] = ctx.spec_argv(r)
                ctx.set_argv(r, argv_with_versions(c["argv_before"][r], with_version(versions, version, full)))
            default = next(iter(before.values()))[0]
            routing = {} if full else canary_routing(routing_before, default, version, p.weight)
            c["routing_before"], c["routing"] = routing_before, routing
            ctx.patch_config(ROUTER, {"routing": routing})
            c["gateway_argv_before"] = ctx.persist_config(ROUTER, {"routing": routing})  # a restart keeps it
            ctx.registry("POST", f"/v1/models/{version}/stage", {"stage": "production" if full else "canary"})
        except FaultError as exc:
            undo_rollout(ctx, c)
            raise FaultError(f"the rollout of {version} ({p.variant} of {p.base}) failed and was undone: {exc}",
                             exc.status) from exc
        return self.record(fault, c)

    def revert(self, ctx: FaultContext, applied: Applied) -> list[str]:
        return undo_rollout(ctx, applied.changes)

    def recover(self, ctx: FaultContext, applied: Applied) -> list[str]:
        restore_stages(ctx, applied.changes["stages_before"])  # the registry's files outlive a lab
        return [f"registry stages restored; {applied.changes['version']} archived"]
