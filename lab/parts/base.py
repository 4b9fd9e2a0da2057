"""What a part of the stack declares: the `Part` record every module of `lab/parts/` registers.

A part is one kind of service (the gateway, the feature store, a model replica, ...). Its declaration holds what
the lab needs to run, proxy, watch, steer, break and draw it; nothing else in `lab/` or `ui/` names a part.
Declarations hold plain data and small functions of a `Launch` (the topology and the stack settings): they
import nothing from the rest of the lab, so every other module may import them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MiB = 1024 * 1024
# The tracks a stack can run (`faultline up --track`): the fraud-scoring stack and the LLM-serving stack.
TRACKS = ("fraud", "llm")
DEFAULT_TRACK = "fraud"


@dataclass(frozen=True)
class Launch:
    """What a part's arguments may depend on: the topology (ports, hops, replicas) and the stack settings.

    Typed as Any on purpose: `lab.topology` and `lab.specs` import this package, not the other way round.
    """

    topology: Any
    settings: Any


ArgsFn = Callable[[str, Launch], list[str]]


def _no_args(_name: str, _launch: Launch) -> list[str]:
    return []


@dataclass(frozen=True)
class Dial:
    """A flag the part's caller is started with to reach this part (through the hop in front of it).

    Replicated parts are passed as one flag `name=url,name=url`; single parts as the hop's URL.
    """

    caller: str
    flag: str
    # The caller's live config key holding {name: url} for a replicated part (pushed again after scaling): the
    # stack manages it, so a baseline never restores it from a snapshot.
    config_key: str | None = None
    # The caller's config keys that list some of those replicas (e.g. drained ones): only live ones are restored.
    subset_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class MapPlace:
    """Where the stack map draws the part: `entry` (where traffic enters), `downstream` (called by the entry
    through a hop), `infra-left` / `infra-right` (below); `rank` orders parts in one place."""

    place: str
    rank: int = 50


@dataclass(frozen=True)
class Part:
    """One part's declaration. `name` is a service name, or for a replicated part the stem of `name-N`."""

    name: str
    # Entry point: `python -m <module> --host H --port P <args>`
    module: str
    doc: str = ""
    replicated: bool = False
    max_replicas: int = 16
    # How many replicas a stack runs when nothing else says (the fraud track's `--replicas` sets its own).
    default_replicas: int = 2
    # The tracks this part belongs to (TRACKS); a stack runs the parts of its chosen track(s) only.
    tracks: frozenset[str] = frozenset({DEFAULT_TRACK})
    # Checked before the stack starts: a message for the user when something it needs is missing (e.g. trained
    # models), else None.
    preflight: Callable[[Any], str | None] | None = None
    # Port of the service: base + port_offset (+ N for a replica); None: the Ports field named `port_field`.
    port_offset: int | None = None
    port_field: str | None = None
    # The hop (proxy) in front of it: listen on base + proxy_offset (+ N); None: no proxy in front.
    proxy_offset: int | None = None
    args: ArgsFn = _no_args
    # Its start-up `--config` values derived from the launch (the stack settings' own `service_config` for it wins).
    start_config: Callable[[Launch], dict[str, Any]] | None = None
    # Replaces the whole argv when it returns a list (the netproxy: a `toxiproxy-server` binary instead).
    custom_argv: Callable[[str, Launch], list[str] | None] | None = None
    # Start order: lower tiers are added first; `after_proxies` parts wait until every hop exists (they dial).
    tier: int = 1
    after_proxies: bool = False
    # Started by `faultline traffic`, not by `up` (its argv depends on the request).
    on_demand: bool = False
    # The Toxiproxy server itself: hops are populated when it is ready; replaced by an external Toxiproxy.
    proxy_server: bool = False
    # Where clients enter: its hop's URL is the stack's public URL; stopped first.
    public: bool = False
    ready_path: str = "/readyz"
    memory_limit: int = 512 * MiB
    # Status order (the learner's services first, infrastructure last).
    status_rank: int = 50
    # Monitor: the prefix of its `<prefix>_requests_total` family; None: inferred from what it exports.
    metrics_prefix: str | None = None
    scraped: bool = True
    # Keys a learner may change with `config_set`.
    settable: frozenset[str] = frozenset()
    # The service's pydantic config model as "module:Class" (importable without starting it): a value for a service
    # that does not answer is checked against it before it goes into the start-up config.
    config_model: str | None = None
    # Config keys the stack derives from the topology and pushes itself (on scale): a fault must not own them.
    lab_managed_keys: frozenset[str] = frozenset()
    # A learner's target: console operations (restart, logs, config, ...) and service faults may name it.
    target: bool = True
    # A dependency a `dependency.*` fault may slow or take down; `default_dependency`: the one such a fault hits when
    # the scenario names no target.
    dependency: bool = False
    default_dependency: bool = False
    dials: tuple[Dial, ...] = ()
    map: MapPlace | None = None
    # Compose: the ports the container publishes on the host's loopback besides the hop (`netproxy` only),
    # how long the healthcheck may take, and extra top-level keys.
    compose_retries: int = 30
    compose_extra: dict[str, Any] = field(default_factory=dict)
    # Other Ports attributes that mean this part's port (kept for older callers), e.g. "locust_web".
    port_aliases: tuple[str, ...] = ()
    # What else its client offers the lab, by name: "transactions" = `sample(n)`, fresh transactions on known
    # cards (what the console's `trace` sends).
    provides: frozenset[str] = frozenset()
    # The typed client class for this part (lab.parts.client.PartClient subclass), if any.
    client: type | None = None

    def __post_init__(self) -> None:
        if self.port_offset is None and self.port_field is None:
            raise ValueError(f"part {self.name!r}: give port_offset or port_field")

    @property
    def pattern(self) -> str:
        return f"{self.name}-{{n}}" if self.replicated else self.name

    def instance(self, n: int) -> str:
        return f"{self.name}-{n}"

    def matches(self, service: str) -> bool:
        if not self.replicated:
            return service == self.name
        stem, _, n = service.rpartition("-")
        return stem == self.name and n.isdigit()

    def replica_number(self, service: str) -> int | None:
        return int(service.rpartition("-")[2]) if self.replicated and self.matches(service) else None
