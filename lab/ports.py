"""Port checks for the stack: is a port free, which of the stack's ports are taken, find a free block.

`faultline up` checks every port before starting anything so the learner gets one clear message naming the
port and what to do, instead of a service dying half-way through start-up. Tests use `find_free_block` to run
stacks side by side without touching the default ports.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass

from lab import parts
from lab.topology import HOST, Ports, Topology

# Offsets inside a test block: the topology uses base+0..base+89; the netproxy and lab ports go just above.
BLOCK_SIZE = 100
NETPROXY_OFFSET = 98
LAB_OFFSET = 99


class PortInUse(RuntimeError):
    """A port the stack needs is taken; the message says which, by whom (role) and what to do."""

    def __init__(self, port: int, role: str, flag: str) -> None:
        self.port = port
        self.role = role
        self.flag = flag
        super().__init__(
            f"port {port} ({role}) is already in use — stop what is using it (`faultline down`?) "
            f"or pick another {'base' if flag == '--base-port' else 'port'} with {flag}"
        )


def is_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on host:port.

    SO_REUSEADDR mirrors what uvicorn and the proxies do, so a port in TIME_WAIT counts as free (it is usable)
    while a port with a listener does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class PortUse:
    port: int
    role: str
    flag: str


def stack_ports(topology: Topology, *, include_netproxy: bool = True, include_lab: bool = True) -> list[PortUse]:
    """Every port the process backend will listen on, with the role to name in errors and the flag to change it."""
    p = topology.ports
    hops = set(topology.hop_names())
    uses = []
    for name in topology.service_names(with_proxy_server=include_netproxy):
        part = parts.part_for(name)
        # A part on its own Ports field (the netproxy API) has its own flag; the rest move with --base-port.
        flag = f"--{part.port_field}-port" if part is not None and part.port_field else "--base-port"
        if name in hops:
            uses.append(PortUse(p.proxy_port(name), f"proxy {name}", "--base-port"))
        uses.append(PortUse(p.port(name), name, flag))
    if include_lab:
        uses.append(PortUse(p.lab, "lab", "--lab-port"))
    return uses


def check_free(uses: list[PortUse], host: str = HOST) -> None:
    """Raise PortInUse for the first taken port."""
    for use in uses:
        if not is_free(use.port, host):
            raise PortInUse(use.port, use.role, use.flag)


def block_ports(base: int) -> Ports:
    """The port plan of a self-contained block [base, base + BLOCK_SIZE): netproxy and lab inside it too."""
    return Ports(base=base, netproxy=base + NETPROXY_OFFSET, lab=base + LAB_OFFSET)


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux's default when it cannot be read)."""
    try:
        with open(path) as f:
            lo, hi = (int(x) for x in f.read().split()[:2])
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def find_free_block(
    replicas: int = 2,
    *,
    extra_replicas: int = 2,
    low: int = 20000,
    high: int | None = None,
    attempts: int = 200,
    rng: random.Random | None = None,
) -> Ports:
    """A Ports plan whose every port is free now, room left for `extra_replicas` more model replicas.

    Starts at a random block so stacks started at the same moment by parallel test runs rarely collide. By
    default the blocks stay below the kernel's ephemeral range: a port in it can be taken by any outgoing
    connection between our check and the service's bind (seen in CI as a registry dying with "address
    already in use" at start-up).
    """
    if high is None:
        eph_low, _ = ephemeral_range()
        high = eph_low if eph_low - low >= 20 * BLOCK_SIZE else 65000
    rng = rng or random.Random()
    blocks = list(range(low - low % BLOCK_SIZE, high - BLOCK_SIZE, BLOCK_SIZE))
    rng.shuffle(blocks)
    for base in blocks[:attempts]:
        ports = block_ports(base)
        # Every track's ports: the block fits whichever track a caller starts in it.
        topo = Topology(ports=ports, replicas=min(replicas + extra_replicas, 16), tracks=parts.TRACKS)
        if all(is_free(u.port) for u in stack_ports(topo)):
            return ports
    raise RuntimeError(f"no free block of {BLOCK_SIZE} ports found between {low} and {high}")


def free_port(host: str = HOST) -> int:
    """One free port, by binding port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
