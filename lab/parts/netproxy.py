"""The network proxy server (Toxiproxy API) that holds every hop. Its client is `lab/toxiproxy.py`'s
`ToxiproxyClient` (toxiproxy-python, wrapped once): the one way the lab talks to any Toxiproxy."""

from __future__ import annotations

from lab.parts import register
from lab.parts.base import TRACKS, Launch, MapPlace, MiB, Part

NAME = "netproxy"


def _custom_argv(_name: str, launch: Launch) -> list[str] | None:
    # select_server (lab/toxiproxy.py) may have picked a `toxiproxy-server` binary on PATH.
    argv = launch.settings.netproxy_argv
    return list(argv) if argv else None


PART = register(Part(
    name=NAME,
    module="services.netproxy",
    doc="the Toxiproxy API server holding every hop (or an external Toxiproxy at TOXIPROXY_URL)",
    port_field="netproxy",
    custom_argv=_custom_argv,
    tier=1,
    proxy_server=True,
    tracks=frozenset(TRACKS),
    ready_path="/version",
    memory_limit=256 * MiB,
    status_rank=90,
    # Watched from process stats only (a real Toxiproxy has no /metrics).
    scraped=False,
    target=False,
    map=MapPlace("infra-right"),
    # docker-compose.yml runs the real Toxiproxy; every other container shares its network namespace.
    compose_extra={
        "image": "ghcr.io/shopify/toxiproxy:2.12.0",
        "command": ["-host=0.0.0.0", "-port={port}", "-config=/config/toxiproxy.json"],
        "volumes": ["./docker/toxiproxy.json:/config/toxiproxy.json:ro"],
        "healthcheck": {"test": ["CMD", "/toxiproxy-cli", "list"], "interval": "2s", "timeout": "2s",
                        "retries": 15},
    },
))
