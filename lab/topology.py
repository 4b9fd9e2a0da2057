"""The one description of the stack: which services run, on which ports, and which hop goes through which proxy.

The supervisor starts processes from it, creates the network proxies from it, and the compose file is
checked against it. Services never read it: they get their addresses as command-line flags.

Every service-to-service hop goes through a named Toxiproxy proxy:
  clients/load generator -> proxy `gateway`       -> gateway
  gateway                -> proxy `feature-store` -> feature store
  gateway                -> proxy `model-N`       -> model replica N
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_BASE_PORT = 8100
DEFAULT_NETPROXY_PORT = 8474
DEFAULT_LAB_PORT = 8000
MAX_REPLICAS = 16
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    """Port plan. Everything but the netproxy API and the lab derives from `base`."""

    base: int = DEFAULT_BASE_PORT
    netproxy: int = DEFAULT_NETPROXY_PORT
    lab: int = DEFAULT_LAB_PORT

    @property
    def gateway_proxy(self) -> int:
        return self.base

    @property
    def gateway(self) -> int:
        return self.base + 1

    @property
    def feature_store_proxy(self) -> int:
        return self.base + 10

    @property
    def feature_store(self) -> int:
        return self.base + 11

    @property
    def registry(self) -> int:
        return self.base + 20

    @property
    def locust_web(self) -> int:
        return self.base + 89

    def model_proxy(self, n: int) -> int:
        _check_replica(n)
        return self.base + 30 + n

    def model(self, n: int) -> int:
        _check_replica(n)
        return self.base + 50 + n

    def all_ports(self, replicas: int) -> list[int]:
        ports = [
            self.gateway_proxy,
            self.gateway,
            self.feature_store_proxy,
            self.feature_store,
            self.registry,
            self.netproxy,
        ]
        for n in range(1, replicas + 1):
            ports += [self.model_proxy(n), self.model(n)]
        return ports


def _check_replica(n: int) -> None:
    if not 1 <= n <= MAX_REPLICAS:
        raise ValueError(f"replica number must be 1..{MAX_REPLICAS}, got {n}")


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
    ports: Ports = field(default_factory=Ports)
    replicas: int = 2
    host: str = HOST

    def model_names(self) -> list[str]:
        return [f"model-{n}" for n in range(1, self.replicas + 1)]

    def hops(self) -> list[Hop]:
        p = self.ports
        hops = [
            Hop("gateway", p.gateway_proxy, p.gateway, self.host),
            Hop("feature-store", p.feature_store_proxy, p.feature_store, self.host),
        ]
        hops += [
            Hop(f"model-{n}", p.model_proxy(n), p.model(n), self.host) for n in range(1, self.replicas + 1)
        ]
        return hops

    def hop(self, name: str) -> Hop:
        for h in self.hops():
            if h.name == name:
                return h
        raise KeyError(f"no hop named {name!r}; hops are: {', '.join(h.name for h in self.hops())}")

    def service_port(self, name: str) -> int:
        """The real (unproxied) port of a service."""
        p = self.ports
        fixed = {"gateway": p.gateway, "feature-store": p.feature_store, "registry": p.registry}
        if name in fixed:
            return fixed[name]
        if name.startswith("model-"):
            return p.model(int(name.split("-", 1)[1]))
        raise KeyError(f"unknown service {name!r}")

    def service_url(self, name: str) -> str:
        return f"http://{self.host}:{self.service_port(name)}"

    @property
    def public_url(self) -> str:
        """Where clients and the load generator send traffic: the gateway's proxy."""
        return self.hop("gateway").url

    @property
    def netproxy_url(self) -> str:
        return f"http://{self.host}:{self.ports.netproxy}"

    def with_replicas(self, replicas: int) -> Topology:
        _check_replica(replicas)
        return Topology(ports=self.ports, replicas=replicas, host=self.host)
