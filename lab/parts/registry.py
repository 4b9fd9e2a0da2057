"""The model registry's HTTP service: versions, stages, variants, retraining. Its declaration and typed client,
with the registry side of a rollout (stages)."""

from __future__ import annotations

from typing import Any

from lab.parts import register
from lab.parts.base import TRACKS, Launch, MapPlace, MiB, Part
from lab.parts.client import PartClient

NAME = "registry"
# Held by one version at most: promoting another archives the previous holder.
EXCLUSIVE_STAGES = ("production", "canary")


def _args(_name: str, launch: Launch) -> list[str]:
    return ["--root", str(launch.settings.registry_dir)]


class RegistryClient(PartClient):
    what = NAME

    def models(self, stage: str | None = None) -> list[dict[str, Any]]:
        return self.call("GET", "/v1/models", params={"stage": stage} if stage else None)

    def model(self, version: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/models/{version}")

    def set_stage(self, version: str, stage: str) -> dict[str, Any]:
        return self.call("POST", f"/v1/models/{version}/stage", {"stage": stage})

    def reference(self, version: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/models/{version}/reference")

    def holder(self, stage: str) -> str | None:
        """The version holding `stage` (production / canary), or None."""
        found = [m for m in self.models() if m.get("stage") == stage]
        return str(found[-1]["version"]) if found else None


PART = register(Part(
    name=NAME,
    module="services.registry",
    doc="the model registry over FAULTLINE_HOME/registry",
    port_offset=20,
    args=_args,
    tier=1,
    memory_limit=384 * MiB,
    status_rank=80,
    metrics_prefix="registry",
    settable=frozenset({"variant_timeout_s", "train_timeout_s"}),
    dependency=True,
    tracks=frozenset(TRACKS),
    map=MapPlace("infra-left"),
    compose_extra={"depends_on": {"models": {"condition": "service_completed_successfully"}}},
    client=RegistryClient,
    config_model="services.registry.app:RegistryConfig",
))
