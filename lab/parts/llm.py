"""An LLM replica (`llm-N`): the OpenAI-compatible streaming server of the LLM track (services/llm, docs/llm.md),
which the gateway calls through the replica's own hop. Its declaration and typed client."""

from __future__ import annotations

from typing import Any

from lab.parts import register
from lab.parts.base import Dial, Launch, MapPlace, MiB, Part
from lab.parts.client import PartClient
from lab.parts.gateway import NAME as GATEWAY

NAME = "llm"
TRACK = "llm"
DEFAULT_VERSION = "v1"


def llm_registry(settings: Any) -> Any:
    """Where the LLM versions live: `<registry>/llm/versions/<v>` (services/registry/llm.py)."""
    return settings.registry_dir / NAME


def _version(settings: Any) -> str:
    return str(getattr(settings, "llm_version", None) or DEFAULT_VERSION)


def _args(name: str, launch: Launch) -> list[str]:
    s = launch.settings
    return ["--registry", str(s.registry_dir), "--replica", name, "--version", _version(s)]


def _preflight(settings: Any) -> str | None:
    version = _version(settings)
    if not (llm_registry(settings) / "versions" / version / "meta.json").is_file():
        return (f"no trained LLM version {version} in {llm_registry(settings)} — run `make setup` "
                f"(or `python -m services.llm.train --home {settings.home}`)")
    return None


class LLMClient(PartClient):
    what = "LLM replica"

    def models(self) -> dict[str, Any]:
        return self.call("GET", "/v1/models")

    def engine(self) -> dict[str, Any]:
        """Scheduler and KV-cache counters (running, waiting, blocks, preemptions)."""
        return self.call("GET", "/v1/engine")

    def complete(self, prompt: str, max_tokens: int = 16, **params: Any) -> dict[str, Any]:
        """A non-streaming completion (what the console's probes may send)."""
        return self.call("POST", "/v1/completions", {"prompt": prompt, "max_tokens": max_tokens, **params},
                         timeout=60.0)


PART = register(Part(
    name=NAME,
    module="services.llm",
    doc="an LLM replica (OpenAI-compatible streaming server); the LLM track runs llm-1 .. llm-N",
    replicated=True,
    # Offsets 67..82 are free (docs/architecture.md, "Adding a part"): hops base+67.., replicas base+75..
    max_replicas=8,
    port_offset=74,
    proxy_offset=66,
    args=_args,
    preflight=_preflight,
    tracks=frozenset({TRACK}),
    # With the model replicas: slow to become ready (torch import, weights, warm-up).
    tier=0,
    memory_limit=768 * MiB,
    status_rank=25,
    metrics_prefix="llm",
    settable=frozenset({
        "num_kv_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill",
        "enable_prefix_caching", "speculative_enabled", "num_speculative_tokens", "cancel_on_disconnect",
        "max_queue", "default_temperature", "default_top_p", "default_max_tokens", "default_stop",
        "torch_threads", "readiness",
    }),
    dials=(Dial(caller=GATEWAY, flag="--llm", config_key="llm_replicas"),),
    map=MapPlace("downstream", rank=30),
    compose_retries=60,
    compose_extra={"depends_on": {"models": {"condition": "service_completed_successfully"}},
                   "profiles": [TRACK]},
    client=LLMClient,
    config_model="services.llm.config:LLMConfig",
))
