"""One service alone, outside a lab: its command line as lab.specs writes it, on a port of the caller's choosing.

Tests and benchmarks that wire a few services by hand (a gateway straight to a feature store, a model server on a
copied registry) start them with the lab's own argv, so a flag renamed in lab.specs is renamed for them too. The
lab's argv dials through proxies and reads the lab's home; `wire` replaces those flags with the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lab import parts
from lab.parts.featurestore import NAME as FEATURE_STORE
from lab.parts.gateway import NAME as GATEWAY
from lab.parts.loadgen import NAME as LOADGEN
from lab.parts.netproxy import NAME as NETPROXY
from lab.parts.registry import NAME as REGISTRY
from lab.specs import StackSettings, service_argv
from lab.topology import MAX_REPLICAS, Ports, Topology

# The home lab.specs derives --registry/--root/--db from; a standalone service is always given its own instead.
_NO_HOME = Path("/nonexistent/faultline-standalone")


def topology_at(name: str, port: int) -> Topology:
    """A topology in which service `name` (or the netproxy) listens on `port`."""
    if name == NETPROXY:
        return Topology(ports=Ports(netproxy=port), replicas=1)
    offset = Topology(ports=Ports(base=0), replicas=MAX_REPLICAS).service_port(name)
    replicas = parts.replica_part().replica_number(name) or 1
    return Topology(ports=Ports(base=port - offset), replicas=replicas)


def wire(argv: list[str], flags: Mapping[str, str | None]) -> list[str]:
    """`argv` with each flag's value replaced (added when absent; None removes the flag and its value)."""
    out = list(argv)
    for flag, value in flags.items():
        if flag in out:
            i = out.index(flag)
            del out[i:i + 2]
        if value is not None:
            out += [flag, value]
    return out


def standalone_argv(name: str, port: int, *, registry: Path | None = None, db: Path | None = None,
                    feature_store: str | None = None, models: Mapping[str, str] | None = None,
                    versions: Sequence[str] = ("v1",), seed: int = 7, config: Mapping[str, Any] | str | None = None,
                    python: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """`python -m services.X --host 127.0.0.1 --port PORT ...` for service `name` (gateway, feature-store,
    registry, model-N, netproxy), wired to what the caller names: `registry` (a model server's or the registry
    service's directory), `db` (the feature store's), `feature_store` and `models` ({replica: URL}; empty: no
    --models) (the gateway's upstreams). `config` is the service's initial --config; `extra` goes last."""
    settings = StackSettings(home=_NO_HOME, model_versions=list(versions), feature_seed=seed)
    if python is not None:
        settings.python = python
    argv = service_argv(name, topology_at(name, port), settings)
    flags: dict[str, str | None] = {}
    if registry is not None:
        flags["--root" if name == REGISTRY else "--registry"] = str(registry)
    if db is not None:
        flags["--db"] = str(db)
    if feature_store is not None:
        flags["--feature-store"] = feature_store
    if models is not None:
        flags["--models"] = ",".join(f"{k}={v}" for k, v in models.items()) or None
    foreign = sorted(f for f in flags if f not in argv)
    if foreign:  # a keyword that does not apply to this service is a mistake, not a flag to add
        raise ValueError(f"{name} takes no {', '.join(foreign)}")
    if config:
        flags["--config"] = config if isinstance(config, str) else json.dumps(dict(config), separators=(",", ":"))
    return wire(argv, flags) + list(extra)


def scoring_stack_argv(ports: Mapping[str, int], registry: Path, db: Path, *, replicas: int = 2, rps: float = 40.0,
                       loadgen_seed: int | None = None, n_cards: int = 5000,
                       log_level: str = "WARNING") -> dict[str, list[str]]:
    """The scoring stack without the lab or its proxies, each service on `ports[name]`: registry, feature-store,
    model-1..N (v1), gateway (dialling them directly) and the load generator (locust at `rps` on the gateway),
    in start order. What the monitor's tests and the drift benchmark run to watch a real stack without a lab."""
    from lab.parts.loadgen import loadgen_argv

    log = ["--log-level", log_level]
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    models = [parts.replica_part().instance(n) for n in range(1, replicas + 1)]
    argv = {
        REGISTRY: standalone_argv(REGISTRY, ports[REGISTRY], registry=registry, extra=log),
        FEATURE_STORE: standalone_argv(FEATURE_STORE, ports[FEATURE_STORE], db=db,
                                       extra=["--n-cards", str(n_cards), *log]),
    }
    for name in models:
        argv[name] = standalone_argv(name, ports[name], registry=registry, extra=log)
    argv[GATEWAY] = standalone_argv(GATEWAY, ports[GATEWAY], feature_store=url[FEATURE_STORE],
                                    models={name: url[name] for name in models}, extra=log)
    argv[LOADGEN] = loadgen_argv(url[GATEWAY], rps, "baseline", ports[LOADGEN], feedback_delay_s=1.0,
                                 seed=loadgen_seed) + log
    return argv
