"""The launch plan: from the topology and a data directory, the exact argv, URL and limits of every service.

This is the single place where a service's command line is assembled, from its part's declaration
(lab/parts/: entry point and arguments). The process backend runs these argv lists; the compose file is
generated from them (`python -m lab.compose generate`). Every address a
service dials comes from the topology's hops, so each service-to-service call goes through its proxy.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import parts
from lab.process import RestartPolicy, ServiceSpec
from lab.topology import Topology

MiB = 1024 * 1024

# Default memory limits (the process backend's and compose's mem_limit), from each part's declaration; the
# replicated part's applies to every replica. The stack with two replicas must stay under 1.5 GiB in total:
# these are ceilings for a runaway process, not reservations.
DEFAULT_MEMORY_LIMITS: dict[str, int] = {p.name: p.memory_limit for p in parts.parts()}
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def kind_of(name: str) -> str:
    """The part a service belongs to (`model-3` -> `model`); the name itself when no part claims it."""
    part = parts.part_for(name)
    return part.name if part else name


def memory_limit_for(name: str, limits: dict[str, int] | None = None) -> int:
    limits = {**DEFAULT_MEMORY_LIMITS, **(limits or {})}
    if name in limits:
        return limits[name]
    return limits.get(kind_of(name), 512 * MiB)


@dataclass
class StackSettings:
    """Everything `faultline up` can change about the stack besides ports and replica count."""

    home: Path
    python: str = sys.executable
    model_versions: list[str] = field(default_factory=lambda: ["v1"])
    # The LLM version the LLM track's replicas serve (registry/llm/versions/<v>).
    llm_version: str = "v1"
    feature_seed: int = 7
    restart_policy: str = "on-failure"
    # Per-service overrides of restart_policy ("model" applies to every replica).
    restart_policies: dict[str, str] = field(default_factory=dict)
    memory_limits: dict[str, int] = field(default_factory=dict)
    # Initial `--config` JSON per service name ("model" applies to every replica).
    service_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    log_level: str = "INFO"
    # How to run the Toxiproxy server (lab/toxiproxy.py's select_server: toxiproxy-server or the embedded one).
    netproxy_argv: list[str] | None = None

    @property
    def registry_dir(self) -> Path:
        return self.home / "registry"


def _config_flag(settings: StackSettings, name: str, derived: dict[str, Any] | None = None) -> list[str]:
    config = {**(derived or {}),
              **(settings.service_config.get(name) or settings.service_config.get(kind_of(name)) or {})}
    return ["--config", json.dumps(config, separators=(",", ":"))] if config else []


def models_flag(topology: Topology) -> str:
    """The value the replicas' caller dials them with: each replica's proxy URL (`name=url,...`)."""
    return topology.dial_value(parts.replica_part())


def gateway_replicas(topology: Topology) -> dict[str, str]:
    """The caller's `replicas` config ({name: proxy url}) the supervisor pushes after scaling."""
    return topology.dial_config(parts.replica_part())


def service_argv(name: str, topology: Topology, settings: StackSettings) -> list[str]:
    part = parts.part_for(name)
    if part is None:
        raise KeyError(f"unknown service {name!r}")
    launch = parts.Launch(topology, settings)
    if part.custom_argv is not None and (custom := part.custom_argv(name, launch)) is not None:
        return custom
    common = ["--host", topology.host, "--port", str(topology.service_port(name))]
    argv = [settings.python, "-m", part.module, *common, *part.args(name, launch)]
    derived = part.start_config(launch) if part.start_config is not None else None
    return argv if part.proxy_server else argv + _config_flag(settings, name, derived)


def service_names(topology: Topology, with_netproxy: bool = True) -> list[str]:
    """Status order: what the learner cares about first, infrastructure last (on-demand parts left out)."""
    return topology.service_names(with_proxy_server=with_netproxy)


def loadgen_spec(topology: Topology, settings: StackSettings, rps: float, profile: str,
                 feedback_delay_s: float = 2.0, seed: int | None = None, *, track: str = "fraud",
                 retry_policy: str | None = None, retries: int | None = None) -> ServiceSpec:
    """The load generator: locust in its own process, sending to the public (gateway proxy) URL."""
    from lab.parts.loadgen import NAME, loadgen_argv

    port = topology.service_port(NAME)
    argv = loadgen_argv(topology.public_url, rps, profile, port, feedback_delay_s=feedback_delay_s, seed=seed,
                        data_seed=settings.feature_seed, track=track, retry_policy=retry_policy, retries=retries,
                        python=settings.python)
    spec = service_spec(NAME, topology, settings)
    spec.argv = argv
    return spec


def service_spec(name: str, topology: Topology, settings: StackSettings) -> ServiceSpec:
    part = parts.part_for(name)
    if part is None:
        raise KeyError(f"unknown service {name!r}")
    return ServiceSpec(
        name=name,
        argv=service_argv(name, topology, settings),
        url=topology.service_url(name),
        port=topology.service_port(name),
        ready_path=part.ready_path,
        restart=RestartPolicy(mode=restart_policy_for(name, settings)),
        memory_limit_bytes=memory_limit_for(name, settings.memory_limits),
        cwd=str(PACKAGE_ROOT),
        env={"FAULTLINE_HOME": str(settings.home), "FAULTLINE_SERVICE": name},
    )


def restart_policy_for(name: str, settings: StackSettings) -> str:
    return (settings.restart_policies.get(name) or settings.restart_policies.get(kind_of(name))
            or settings.restart_policy)
