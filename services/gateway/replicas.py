"""Which model replica gets the next request: health, drain, circuit breakers, outlier ejection, balancing.

A replica is routable when it is not drained, not ejected, its breaker lets a request through, and its last
active health check (GET /readyz) passed. Among routable replicas the pool takes the one with fewer
outstanding requests out of two picked at random (power of two choices). If health checks fail everywhere
the pool ignores them rather than refuse all traffic ("panic routing": a flapping health endpoint should not
take the whole service down while the passive mechanisms still work).

Breaker (per replica): `breaker_failures` consecutive failed attempts open it for `breaker_reset_ms`; then
one probe request is let through (half-open); its success closes the breaker, its failure re-opens it.
Outlier ejection: `outlier_errors` consecutive failed attempts eject the replica for `outlier_ejection_ms`,
unless it is the last routable one. Both count the same failures (connect errors, timeouts, 5xx, NaN or
malformed answers); 4xx answers are the request's fault and count for neither.

Everything here runs on the event loop thread: no locks.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.gateway.config import GatewayConfig, parse_loopback_url

log = logging.getLogger("gateway")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

EventHook = Callable[[str, str], None]  # (event, replica name): "breaker_open", "ejected", ...


@dataclass
class Replica:
    name: str
    url: str
    host: str
    port: int
    inflight: int = 0
    healthy: bool = True  # optimistic until the first health check says otherwise
    breaker: str = CLOSED
    breaker_until: float = 0.0
    probing: bool = False
    failures: int = 0  # consecutive, for the breaker
    errors: int = 0  # consecutive, for outlier ejection
    ejected_until: float = 0.0

    def breaker_allows(self, now: float) -> bool:
        if self.breaker == CLOSED:
            return True
        if self.breaker == OPEN:
            return now >= self.breaker_until
        return not self.probing  # half-open: a single probe at a time


class ReplicaPool:
    def __init__(self, on_event: EventHook | None = None) -> None:
        self.replicas: dict[str, Replica] = {}
        self.drained: frozenset[str] = frozenset()
        self._on_event = on_event or (lambda event, name: None)

    def sync(self, config: GatewayConfig) -> None:
        """Adopt the config's replica map, keeping the state of replicas whose URL did not change."""
        fresh: dict[str, Replica] = {}
        for name, url in config.replicas.items():
            old = self.replicas.get(name)
            if old is not None and old.url == url:
                fresh[name] = old
            else:
                host, port = parse_loopback_url(url)
                fresh[name] = Replica(name, url, host, port)
        self.replicas = fresh
        self.drained = frozenset(config.drained)

    def _routable(self, now: float, exclude: set[str], use_health: bool) -> list[Replica]:
        return [
            r
            for r in self.replicas.values()
            if r.name not in exclude
            and r.name not in self.drained
            and now >= r.ejected_until
            and r.breaker_allows(now)
            and (r.healthy or not use_health)
        ]

    def candidates(self, now: float, exclude: set[str] | None = None) -> list[Replica]:
        exclude = exclude or set()
        found = self._routable(now, exclude, True) or self._routable(now, exclude, False)
        if not found and exclude:
            # Every other replica is out: retrying the same one beats giving up on a transient error.
            found = self._routable(now, set(), True) or self._routable(now, set(), False)
        return found

    def pick(self, exclude: set[str] | None = None) -> Replica | None:
        now = time.monotonic()
        found = self.candidates(now, exclude)
        if not found:
            return None
        if len(found) == 1:
            chosen = found[0]
        else:
            a, b = random.sample(found, 2)
            chosen = a if a.inflight <= b.inflight else b
        if chosen.breaker != CLOSED:
            # Reaching here means the open period is over: this request is the half-open probe.
            chosen.breaker = HALF_OPEN
            chosen.probing = True
        return chosen

    def record(self, replica: Replica, outcome: str, config: GatewayConfig) -> None:
        """Feed one attempt's outcome ("ok", "rejected" or a failure) into breaker and outlier state."""
        if outcome == "ok":
            replica.failures = replica.errors = 0
            if replica.breaker != CLOSED:
                replica.breaker, replica.probing = CLOSED, False
                log.info("breaker closed replica=%s", replica.name)
                self._on_event("breaker_closed", replica.name)
            return
        if outcome == "rejected":
            replica.probing = False
            return
        now = time.monotonic()
        replica.failures += 1
        replica.errors += 1
        if replica.breaker == HALF_OPEN or (replica.breaker == CLOSED and replica.failures >= config.breaker_failures):
            replica.breaker, replica.probing = OPEN, False
            replica.breaker_until = now + config.breaker_reset_ms / 1000.0
            log.warning("breaker open replica=%s failures=%d last=%s", replica.name, replica.failures, outcome)
            self._on_event("breaker_open", replica.name)
        # Never eject the last routable replica: a degraded answer beats no answer.
        if (
            replica.errors >= config.outlier_errors
            and now >= replica.ejected_until
            and self._routable(now, {replica.name}, True)
        ):
            replica.ejected_until = now + config.outlier_ejection_ms / 1000.0
            replica.errors = 0
            log.warning("ejected replica=%s for_ms=%.0f last=%s", replica.name, config.outlier_ejection_ms, outcome)
            self._on_event("ejected", replica.name)

    def release(self, replica: Replica) -> None:
        """An attempt ended without an outcome (cancelled): free a half-open probe slot."""
        replica.probing = False

    def set_health(self, name: str, healthy: bool, reason: str) -> None:
        replica = self.replicas.get(name)
        if replica is None or replica.healthy == healthy:
            return
        replica.healthy = healthy
        if healthy:
            log.info("replica healthy replica=%s", name)
        else:
            log.warning("replica unhealthy replica=%s reason=%s", name, reason)
        self._on_event("healthy" if healthy else "unhealthy", name)

    def describe(self) -> dict[str, dict[str, object]]:
        now = time.monotonic()
        return {
            r.name: {
                "url": r.url,
                "inflight": r.inflight,
                "healthy": r.healthy,
                "drained": r.name in self.drained,
                "ejected": now < r.ejected_until,
                "breaker": OPEN if r.breaker == OPEN and now < r.breaker_until else r.breaker,
            }
            for r in self.replicas.values()
        }


class RetryBudget:
    """Retries allowed ≈ ratio × recent requests: each request deposits `ratio` tokens, a retry spends one.

    The bucket holds at most CAPACITY tokens (so a calm period cannot bank a retry storm) and also refills
    at MIN_PER_SECOND, so that a lab sending a request now and then can still retry.
    """

    CAPACITY = 10.0
    MIN_PER_SECOND = 1.0

    def __init__(self) -> None:
        self.tokens = self.CAPACITY
        self._last = time.monotonic()

    def refill(self) -> None:
        self.tokens = self.CAPACITY

    def deposit(self, ratio: float) -> None:
        self.tokens = min(self.CAPACITY, self.tokens + ratio)

    def try_spend(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.CAPACITY, self.tokens + (now - self._last) * self.MIN_PER_SECOND)
        self._last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class VersionRouter:
    """Weighted choice of a model version for the canary split; None when no routing is configured."""

    def __init__(self) -> None:
        self._versions: list[str] = []
        self._cumulative: list[float] = []

    def sync(self, routing: dict[str, float]) -> None:
        versions, cumulative, total = [], [], 0.0
        for version, weight in routing.items():
            if weight > 0:
                total += weight
                versions.append(version)
                cumulative.append(total)
        self._versions, self._cumulative = versions, cumulative

    def choose(self) -> str | None:
        if not self._versions:
            return None
        if len(self._versions) == 1:
            return self._versions[0]
        return random.choices(self._versions, cum_weights=self._cumulative)[0]
