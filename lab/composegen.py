"""docker-compose.yml and docker/toxiproxy.json, generated from the part declarations (lab/parts/).

`python -m lab.compose generate [--check]` (and `faultline compose generate [--check]`) writes both files, or with
`--check` exits 1 naming the stale file. Every command is the process backend's argv (lab/specs.py) for the
default ports, two replicas and every track (`faultline up --track all`), inside the container (`python`, data in
/data); tests/stack/test_compose.py fails when the committed files differ from what this produces.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lab import parts, specs
from lab.parts.base import DEFAULT_TRACK, TRACKS, MiB, Part
from lab.topology import Topology

HEADER = """\
# The Faultline stack in containers: the same services, entrypoints, flags and ports as the default process
# backend (`faultline up`), with the real Toxiproxy in front of every hop. `faultline up --backend compose`.
#
# GENERATED from the part declarations (lab/parts/) by `python -m lab.compose generate`: do not edit by hand;
# tests/stack/test_compose.py fails when this file is stale.
#
# Every service shares the network namespace of the `{server}` container (network_mode: service:{server}), so
# 127.0.0.1 means the same thing as in the process backend and each command is exactly the argv from
# lab/specs.py. Only the public proxy ({public}) and the Toxiproxy API ({api}) listen beyond loopback, published
# on the host's 127.0.0.1. Models are trained once into ./.faultline by the `models` job (the same as
# `make setup`). The project name is given on the command line (`docker compose -p faultline`, as
# lab/compose.py does). `docker compose up` runs the fraud track; the LLM track's replicas are behind the
# profile `llm` (`docker compose --profile llm up -d`; the gateway routes /v1/chat/completions to them).

x-python-service: &python-service
  image: faultline:dev
  build:
    context: .
    dockerfile: docker/Dockerfile
  network_mode: "service:{server}"
  volumes:
    - ./.faultline:/data
  # The data directory is bind-mounted: run as its owner (export FAULTLINE_UID/GID if yours is not 1000).
  user: "${{FAULTLINE_UID:-1000}}:${{FAULTLINE_GID:-1000}}"
  restart: on-failure
  init: true

services:
"""
# Compose runs the default ports, two replicas of each replicated part and every track; parts outside the default
# track carry a profile (their declaration's compose_extra), so a plain `up` is the fraud track.
TOPOLOGY = Topology(tracks=TRACKS)
IN_CONTAINER = specs.StackSettings(home=Path("/data"), python="python")
MODELS_JOB = "models"
_PLAIN = re.compile(r"^[A-Za-z0-9_./-]+$")


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    s = str(v)
    return s if _PLAIN.match(s) and s not in ("no", "yes", "true", "false", "null") else json.dumps(s)


def _emit(value: Any, indent: int) -> list[str]:
    """Block YAML for mappings, flow (JSON) lists for lists of scalars: the style of the hand-written file."""
    pad = "  " * indent
    lines: list[str] = []
    for k, v in value.items():
        if isinstance(v, dict):
            lines.append(f"{pad}{k}:")
            lines += _emit(v, indent + 1)
        elif isinstance(v, list) and k in ("volumes", "ports"):
            lines.append(f"{pad}{k}:")
            lines += [f"{pad}  - {_scalar(x)}" for x in v]
        elif isinstance(v, list):
            lines.append(f"{pad}{k}: {json.dumps(v)}")
        else:
            lines.append(f"{pad}{k}: {_scalar(v)}")
    return lines


def _mem(limit: int) -> str:
    return f"{limit // MiB}m" if limit % MiB == 0 else str(limit)


def _server() -> Part:
    return next(p for p in parts.parts() if p.proxy_server)


def _public() -> Part:
    return next(p for p in parts.parts() if p.public)


def _healthcheck(name: str, part: Part) -> dict[str, Any]:
    spec = specs.service_spec(name, TOPOLOGY, IN_CONTAINER)
    probe = f"import urllib.request; urllib.request.urlopen('{spec.url}{spec.ready_path}', timeout=2)"
    return {"test": ["CMD", "python", "-c", probe], "interval": "2s", "timeout": "3s",
            "retries": part.compose_retries}


def _depends_on(part: Part) -> dict[str, Any]:
    server = _server().name
    deps: dict[str, Any] = dict(part.compose_extra.get("depends_on", {}))
    if part.on_demand:
        deps[_public().name] = {"condition": "service_healthy"}
    elif part.after_proxies:
        deps[server] = {"condition": "service_healthy"}
        for other in parts.parts():
            # A part of another track may be off (its profile): the caller must not wait for it.
            if DEFAULT_TRACK in other.tracks and any(d.caller == part.name for d in other.dials):
                for n in TOPOLOGY.instances(other):
                    deps[n] = {"condition": "service_healthy"}
    elif not deps:
        deps[server] = {"condition": "service_healthy"}
    return deps


def _python_service(name: str, part: Part) -> dict[str, Any]:
    svc: dict[str, Any] = {"<<": "*python-service"}
    svc.update({k: v for k, v in part.compose_extra.items() if k != "depends_on"})
    svc["command"] = specs.service_argv(name, TOPOLOGY, IN_CONTAINER)
    svc["mem_limit"] = _mem(part.memory_limit)
    svc["healthcheck"] = _healthcheck(name, part)
    svc["depends_on"] = _depends_on(part)
    return svc


def _server_service(part: Part) -> dict[str, Any]:
    port = TOPOLOGY.service_port(part.name)
    extra = part.compose_extra
    public = TOPOLOGY.hop(_public().name).listen_port
    return {
        "image": extra["image"],
        "command": [c.replace("{port}", str(port)) for c in extra["command"]],
        "volumes": extra["volumes"],
        "ports": [f"127.0.0.1:{public}:{public}", f"127.0.0.1:{port}:{port}"],
        "mem_limit": _mem(part.memory_limit),
        # Like the embedded server under the supervisor: restarted when it fails.
        "restart": "on-failure",
        "healthcheck": extra["healthcheck"],
    }


def compose_text() -> str:
    server, public = _server(), _public()
    out = HEADER.format(server=server.name, public=TOPOLOGY.hop(public.name).listen_port,
                        api=TOPOLOGY.service_port(server.name))
    blocks: list[tuple[str, dict[str, Any], str]] = [(server.name, _server_service(server), "")]
    blocks.append((MODELS_JOB, {"<<": "*python-service",
                                "command": ["python", "-m", "services.trainer", "defaults", "--home", "/data"],
                                "restart": "no",
                                "depends_on": {server.name: {"condition": "service_started"}}}, ""))
    for part in sorted(parts.parts(), key=lambda p: (p.on_demand, p.tier, p.status_rank)):
        if part.proxy_server:
            continue
        note = ""
        if part.on_demand:
            note = f"  # {part.doc}: `docker compose --profile traffic up -d`.\n"
        elif DEFAULT_TRACK not in part.tracks:
            profile = ",".join(part.compose_extra.get("profiles", []))
            note = f"  # {part.doc}: `docker compose --profile {profile} up -d`.\n"
        for name in TOPOLOGY.instances(part):
            blocks.append((name, _python_service(name, part), note))
    chunks = []
    for name, svc, note in blocks:
        lines = _emit(svc, 2)
        text = "\n".join(lines).replace('"<<": "*python-service"', "<<: *python-service")
        text = text.replace("<<: \"*python-service\"", "<<: *python-service")
        chunks.append(f"{note}  {name}:\n{text}\n")
    return out + "\n".join(chunks)


def toxiproxy_text() -> str:
    """docker/toxiproxy.json: every hop; only the public one listens beyond the shared loopback."""
    public = _public().name
    rows = []
    for h in TOPOLOGY.hops():
        listen = f"0.0.0.0:{h.listen_port}" if h.name == public else h.listen
        rows.append("  " + json.dumps({"name": h.name, "listen": listen, "upstream": h.upstream, "enabled": True}))
    return "[\n" + ",\n".join(rows) + "\n]\n"


OFFLINE_HEADER = """\
# Override for offline and CI runs (no registry): `docker compose -f docker-compose.yml -f docker/compose.offline.yml`.
#
# GENERATED from the part declarations (lab/parts/) by `python -m lab.compose generate`: do not edit by hand.
#
# The `{server}` service runs our Toxiproxy-API netproxy (services/netproxy, from the faultline image) instead of
# ghcr.io/shopify/toxiproxy, with the same hops (docker/toxiproxy.json). Our netproxy serves its API on loopback
# only, so from the host only the public proxy answers; `faultline up --backend compose` (the lab) runs the
# services on the host's loopback instead and reaches every port (docs/compose.md).

services:
"""


def offline_text() -> str:
    server = _server()
    port = TOPOLOGY.service_port(server.name)
    spec = specs.service_spec(server.name, TOPOLOGY, IN_CONTAINER)
    probe = f"import urllib.request; urllib.request.urlopen('{spec.url}/version', timeout=2)"
    svc = {
        "image": "faultline:dev",
        "command": ["python", "-m", server.module, "--host", "127.0.0.1", "--port", str(port),
                    "--config", "/config/toxiproxy.json"],
        "init": True,
        "healthcheck": {"test": ["CMD", "python", "-c", probe], "interval": "2s", "timeout": "3s",
                        "retries": 30},
    }
    return OFFLINE_HEADER.format(server=server.name) + f"  {server.name}:\n" + "\n".join(_emit(svc, 2)) + "\n"


def toxiproxy_offline_text() -> str:
    """docker/toxiproxy.offline.json: every hop as the process backend has it (loopback only), for the lab's
    compose mode, where the proxy server shares the host's loopback."""
    rows = ["  " + json.dumps({"name": h.name, "listen": h.listen, "upstream": h.upstream, "enabled": True})
            for h in TOPOLOGY.hops()]
    return "[\n" + ",\n".join(rows) + "\n]\n"


def generated(root: Path) -> dict[Path, str]:
    return {root / "docker-compose.yml": compose_text(), root / "docker" / "toxiproxy.json": toxiproxy_text(),
            root / "docker" / "compose.offline.yml": offline_text(),
            root / "docker" / "toxiproxy.offline.json": toxiproxy_offline_text()}


def generate(root: Path, check: bool = False) -> list[Path]:
    """Write the files (or with `check` only compare); returns the files that were (or would be) changed."""
    stale = []
    for path, text in generated(root).items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not check:
                path.write_text(text)
    return stale
