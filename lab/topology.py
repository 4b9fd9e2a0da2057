"""The stack's layout, read from the part declarations (lab/parts/): which services run, on which ports, and
which hop goes through which proxy.

The supervisor starts processes from it, creates the network proxies from it, and the compose file is generated
from it. Services never read it: they get their addresses as command-line flags. Every service-to-service hop
goes through a named Toxiproxy proxy, named after the service it leads to; a part declares the hop in front of
it (`proxy_offset`) and the flag its caller dials it with (`dials`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lab import parts as _parts
from lab.parts.base import DEFAULT_TRACK, Part

DEFAULT_BASE_PORT = 8100
DEFAULT_NETPROXY_PORT = 8474
DEFAULT_LAB_PORT = 8000
MAX_REPLICAS = 16
HOST = "127.0.0.1"


def _part_and_n(name: str) -> tuple[Part, int | None]:
    part = _parts.part_for(name)
    if part is None:
        raise KeyError(f"unknown service {name!r}")
    n = part.replica_number(name)
    if n is not None:
        _check_replica(n, part.max_replicas)
    return part, n


@dataclass(frozen=True)
class Ports:
    """Port plan. Everything but the netproxy API and the lab derives from `base` and the parts' offsets.

    `port(name)` / `proxy_port(name)` take a service name (`model-3`); the older attribute names still work,
    derived from the declarations: `ports.gateway`, `ports.gateway_proxy`, `ports.model(3)`, a part's aliases.
    """

    base: int = DEFAULT_BASE_PORT
    netproxy: int = DEFAULT_NETPROXY_PORT
    lab: int = DEFAULT_LAB_PORT

    def port(self, name: str) -> int:
        part, n = _part_and_n(name)
        if part.port_offset is None:
            return int(getattr(self, str(part.port_field)))
        return self.base + part.port_offset + (n or 0)

    def proxy_port(self, name: str) -> int:
        part, n = _part_and_n(name)
        if part.proxy_offset is None:
            raise KeyError(f"service {name!r} has no proxy in front of it")
        return self.base + part.proxy_offset + (n or 0)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        proxy = attr.endswith("_proxy")
        stem = (attr[: -len("_proxy")] if proxy else attr).replace("_", "-")
        for part in _parts.parts():
            if part.name == stem or (not proxy and attr in part.port_aliases):
                get = self.proxy_port if proxy else self.port
                if part.replicated:
                    return lambda n, _get=get, _p=part: _get(_p.instance(n))  # type: ignore[misc]
                return get(part.name)
        raise AttributeError(f"Ports has no attribute {attr!r} (and no part named {stem!r})")

    def all_ports(self, replicas: int) -> list[int]:
        topo = Topology(ports=self, replicas=replicas)
        ports = []
        for name in topo.service_names():
            if name in topo.hop_names():
                ports.append(self.proxy_port(name))
            ports.append(self.port(name))
        return ports


def _check_replica(n: int, most: int = MAX_REPLICAS) -> None:
    if not 1 <= n <= min(most, MAX_REPLICAS):
        raise ValueError(f"replica number must be 1..{min(most, MAX_REPLICAS)}, got {n}")


@dataclass(frozen=True)
class Hop:
    """A named proxy: `listen` is where callers connect, `upstream` the real service."""

    name: str
    listen_port: int
    upstream_port: int
    host: str = HOST

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.listen_port}"

    @property
    def upstream(self) -> str:
        return f"{self.host}:{self.upstream_port}"

    @property
    def url(self) -> str:
        return f"http://{self.listen}"


@dataclass(frozen=True)
class Topology:
    """`replicas` is the fraud track's replica count (`--replicas`, `scale`); `counts` holds other replicated
    parts' counts as (part, n) pairs (a part not named runs its `default_replicas`); `tracks` are the tracks the
    stack runs: a part of no chosen track has no instances here."""

    ports: Ports = field(default_factory=Ports)
    replicas: int = 2
    host: str = HOST
    tracks: tuple[str, ...] = (DEFAULT_TRACK,)
    counts: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for name, n in self.counts:
            _check_replica(n, _parts.get(name).max_replicas)

    def replica_count(self, part: Part) -> int:
        """How many replicas of the replicated `part` this stack runs."""
        given = dict(self.counts)
        if part.name in given:
            return given[part.name]
        if DEFAULT_TRACK in part.tracks:
            return self.replicas
        return part.default_replicas

    def runs(self, part: Part) -> bool:
        """True when `part` belongs to one of the stack's tracks."""
        return any(t in part.tracks for t in self.tracks)

    def instances(self, part: Part) -> list[str]:
        """A part's service names here: `name`, or `name-1 .. name-N` for a replicated part; none when the part
        belongs to none of the stack's tracks."""
        if not self.runs(part):
            return []
        if part.replicated:
            return [part.instance(n) for n in range(1, self.replica_count(part) + 1)]
        return [part.name]

    def model_names(self) -> list[str]:
        """The fraud track's replicas (`model-1 .. model-N`, its replicated part's pattern)."""
        return self.instances(_parts.replica_part())

    def service_names(self, with_proxy_server: bool = True, with_on_demand: bool = False) -> list[str]:
        """Status order: what the learner cares about first, infrastructure last."""
        out: list[str] = []
        for part in _parts.parts():
            if (part.proxy_server and not with_proxy_server) or (part.on_demand and not with_on_demand):
                continue
            out += self.instances(part)
        return out

    def hops(self) -> list[Hop]:
        return [Hop(name, self.ports.proxy_port(name), self.ports.port(name), self.host)
                for part in _parts.hop_parts() for name in self.instances(part)]

    def hop_names(self) -> list[str]:
        return [h.name for h in self.hops()]

    def hop(self, name: str) -> Hop:
        for h in self.hops():
            if h.name == name:
                return h
        raise KeyError(f"no hop named {name!r}; hops are: {', '.join(h.name for h in self.hops())}")

    def service_port(self, name: str) -> int:
        """The real (unproxied) port of a service."""
        return self.ports.port(name)

    def service_url(self, name: str) -> str:
        return f"http://{self.host}:{self.service_port(name)}"

    def reach_url(self, name: str) -> str:
        """How another service reaches `name`: through its hop when it has one."""
        return self.hop(name).url if name in self.hop_names() else self.service_url(name)

    def dial_value(self, part: Part) -> str:
        """The value of the flag a caller dials `part` with: a URL, or `name=url,...` for replicas."""
        if part.replicated:
            return ",".join(f"{n}={self.reach_url(n)}" for n in self.instances(part))
        return self.reach_url(part.name)

    def dial_config(self, part: Part) -> dict[str, str]:
        """{name: url} of a replicated part, as its caller's live config holds it."""
        return {n: self.reach_url(n) for n in self.instances(part)}

    @property
    def public_url(self) -> str:
        """Where clients and the load generator send traffic: the public part's proxy."""
        public = next(p for p in _parts.parts() if p.public)
        return self.reach_url(public.name)

    @property
    def netproxy_url(self) -> str:
        return f"http://{self.host}:{self.ports.netproxy}"

    def with_replicas(self, replicas: int) -> Topology:
        _check_replica(replicas)
        return Topology(ports=self.ports, replicas=replicas, host=self.host, tracks=self.tracks, counts=self.counts)

    def with_count(self, part: Part, n: int) -> Topology:
        """This topology with `n` replicas of the replicated `part` (the fraud track's: `with_replicas`)."""
        if DEFAULT_TRACK in part.tracks:
            return self.with_replicas(n)
        counts = tuple((name, c) for name, c in self.counts if name != part.name) + ((part.name, n),)
        return Topology(ports=self.ports, replicas=self.replicas, host=self.host, tracks=self.tracks, counts=counts)
