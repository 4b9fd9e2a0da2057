"""The launch plan: from the topology and a data directory, the exact argv, URL and limits of every service.

This is the single place where a service's command line is written. The process backend runs these argv
lists; the compose file's commands are checked against them (tests/stack/test_compose.py). Every address a
service dials comes from the topology's hops, so each service-to-service call goes through its proxy.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.process import RestartPolicy, ServiceSpec
from lab.topology import Topology

MiB = 1024 * 1024

# Default memory limits (the process backend's and compose's mem_limit). The stack with two replicas must
# stay under 1.5 GiB in total: these are ceilings for a runaway process, not reservations.
DEFAULT_MEMORY_LIMITS: dict[str, int] = {
    "netproxy": 256 * MiB,
    "registry": 384 * MiB,
    "feature-store": 256 * MiB,
    "gateway": 384 * MiB,
    "model": 1024 * MiB,
    "loadgen": 512 * MiB,
}

# Start tiers: services in a tier start together. Only the gateway dials other services, so it alone waits for
# the proxies to exist; everything else starts at once, in parallel with the netproxy (start-up time is
# dominated by torch imports in the model servers).
INFRA = ("netproxy", "registry")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def memory_limit_for(name: str, limits: dict[str, int] | None = None) -> int:
    limits = {**DEFAULT_MEMORY_LIMITS, **(limits or {})}
    if name in limits:
        return limits[name]
    return limits["model"] if name.startswith("model-") else 512 * MiB


@dataclass
class StackSettings:
    """Everything `faultline up` can change about the stack besides ports and replica count."""

    home: Path
    python: str = sys.executable
    model_versions: list[str] = field(default_factory=lambda: ["v1"])
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

    @property
    def featurestore_db(self) -> Path:
        return self.home / "featurestore.db"


def _config_flag(settings: StackSettings, name: str) -> list[str]:
    key = "model" if name.startswith("model-") else name
    config = settings.service_config.get(name) or settings.service_config.get(key)
    return ["--config", json.dumps(config, separators=(",", ":"))] if config else []


def models_flag(topology: Topology) -> str:
    """--models value for the gateway: each replica's proxy URL."""
    return ",".join(f"{name}={topology.hop(name).url}" for name in topology.model_names())


def gateway_replicas(topology: Topology) -> dict[str, str]:
    """The gateway's `replicas` config ({name: proxy url}) the supervisor pushes after scaling."""
    return {name: topology.hop(name).url for name in topology.model_names()}


def service_argv(name: str, topology: Topology, settings: StackSettings) -> list[str]:
    py, host = settings.python, topology.host
    if name == "netproxy":
        if settings.netproxy_argv:
            return list(settings.netproxy_argv)
        return [py, "-m", "services.netproxy", "--host", host, "--port", str(topology.ports.netproxy)]
    port = str(topology.service_port(name))
    common = ["--host", host, "--port", port]
    if name == "registry":
        argv = [py, "-m", "services.registry", *common, "--root", str(settings.registry_dir)]
    elif name == "feature-store":
        argv = [py, "-m", "services.featurestore", *common, "--db", str(settings.featurestore_db),
                "--seed", str(settings.feature_seed)]
    elif name == "gateway":
        argv = [py, "-m", "services.gateway", *common, "--feature-store", topology.hop("feature-store").url,
                "--models", models_flag(topology)]
    elif name.startswith("model-"):
        argv = [py, "-m", "services.modelserver", *common, "--registry", str(settings.registry_dir),
                "--replica", name, "--versions", ",".join(settings.model_versions)]
    else:
        raise KeyError(f"unknown service {name!r}")
    return argv + _config_flag(settings, name)


def service_names(topology: Topology, with_netproxy: bool = True) -> list[str]:
    """Status order: what the learner cares about first (gateway, feature-store, model-N), infrastructure last."""
    names = ["gateway", "feature-store", *topology.model_names(), "registry"]
    return [*names, "netproxy"] if with_netproxy else names


def loadgen_spec(topology: Topology, settings: StackSettings, rps: float, profile: str,
                 feedback_delay_s: float = 2.0, seed: int | None = None) -> ServiceSpec:
    """The load generator: locust in its own process, sending to the public (gateway proxy) URL."""
    from services.loadgen.client import loadgen_argv

    port = topology.ports.locust_web
    argv = loadgen_argv(topology.public_url, rps, profile, port, feedback_delay_s=feedback_delay_s, seed=seed,
                        data_seed=settings.feature_seed, python=settings.python)
    return ServiceSpec(
        name="loadgen", argv=argv, url=f"http://{topology.host}:{port}", port=port, ready_path="/readyz",
        restart=RestartPolicy(mode=restart_policy_for("loadgen", settings)),
        memory_limit_bytes=memory_limit_for("loadgen", settings.memory_limits),
        cwd=str(PACKAGE_ROOT), env={"FAULTLINE_HOME": str(settings.home), "FAULTLINE_SERVICE": "loadgen"},
    )


def service_spec(name: str, topology: Topology, settings: StackSettings) -> ServiceSpec:
    if name == "netproxy":
        url, port, ready = topology.netproxy_url, topology.ports.netproxy, "/version"
    else:
        url, port, ready = topology.service_url(name), topology.service_port(name), "/readyz"
    return ServiceSpec(
        name=name,
        argv=service_argv(name, topology, settings),
        url=url,
        port=port,
        ready_path=ready,
        restart=RestartPolicy(mode=restart_policy_for(name, settings)),
        memory_limit_bytes=memory_limit_for(name, settings.memory_limits),
        cwd=str(PACKAGE_ROOT),
        env={"FAULTLINE_HOME": str(settings.home), "FAULTLINE_SERVICE": name},
    )


def restart_policy_for(name: str, settings: StackSettings) -> str:
    key = "model" if name.startswith("model-") else name
    return settings.restart_policies.get(name) or settings.restart_policies.get(key) or settings.restart_policy
