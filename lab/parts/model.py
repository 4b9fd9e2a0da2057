"""A model replica (`model-N`): a PyTorch model server the gateway calls through the replica's own hop. Its
declaration and typed client."""

from __future__ import annotations

from typing import Any

from lab.parts import register
from lab.parts.base import Dial, Launch, MapPlace, MiB, Part
from lab.parts.client import PartClient
from lab.parts.gateway import NAME as GATEWAY

NAME = "model"


def _args(name: str, launch: Launch) -> list[str]:
    s = launch.settings
    return ["--registry", str(s.registry_dir), "--replica", name, "--versions", ",".join(s.model_versions)]


# What a model server holds at most; rollouts keep the newest (or, for a new default, the first) versions.
MAX_VERSIONS = 8


def argv_with_versions(argv: list[str], versions: list[str]) -> list[str]:
    """A replica's start-up argv serving `versions` (its default first), so a restart keeps a rollout."""
    out = list(argv)
    if "--versions" in out[:-1]:
        out[out.index("--versions") + 1] = ",".join(versions)
    else:
        out += ["--versions", ",".join(versions)]
    return out


def with_version(versions: list[str], new: str, first: bool) -> list[str]:
    """`versions` with `new` added as the default (`first`) or last, within MAX_VERSIONS."""
    rest = [v for v in versions if v != new]
    out = [new, *rest] if first else [*rest, new]
    return out[:MAX_VERSIONS] if first else out[-MAX_VERSIONS:]


def _preflight(settings: Any) -> str | None:
    if not (settings.registry_dir / "versions").is_dir():
        return (f"no trained models in {settings.registry_dir} — run `make setup` "
                f"(or `python -m services.trainer defaults --home {settings.home}`)")
    return None


class ModelClient(PartClient):
    what = "model replica"

    def models(self) -> dict[str, Any]:
        return self.call("GET", "/v1/models")

    def loaded_versions(self) -> list[str]:
        return [v["version"] for v in self.models().get("versions", [])]

    def reload(self, versions: list[str], timeout_s: float = 120.0) -> dict[str, Any]:
        return self.call("POST", "/admin/reload", {"versions": versions}, timeout=timeout_s)

    def predict(self, rows: list[dict[str, Any]], version: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"rows": rows}
        if version:
            body["version"] = version
        return self.call("POST", "/v1/predict", body)


PART = register(Part(
    name=NAME,
    module="services.modelserver",
    doc="a model replica; the stack runs model-1 .. model-N",
    replicated=True,
    port_offset=50,
    proxy_offset=30,
    args=_args,
    preflight=_preflight,
    # First: the slowest to become ready (torch import, model load).
    tier=0,
    memory_limit=1024 * MiB,
    status_rank=20,
    metrics_prefix="model",
    settable=frozenset({
        "max_batch_size", "max_wait_ms", "max_queue", "max_rows_per_request", "cache_size", "torch_threads",
        "compute_thread", "readiness",
    }),
    dials=(Dial(caller=GATEWAY, flag="--models", config_key="replicas", subset_keys=("drained",)),),
    map=MapPlace("downstream", rank=20),
    compose_retries=60,
    compose_extra={"depends_on": {"models": {"condition": "service_completed_successfully"}}},
    client=ModelClient,
    config_model="services.modelserver.config:ModelServerConfig",
))
