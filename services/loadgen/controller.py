"""The load generator's live state: target rate and profile, the user pool, and what actually happened.

One Controller lives in the locust process. The control API changes rate and profile through it without
restarting locust; the users ask it for the next transaction and report each answer back. The user pool is a
concurrency budget, not the rate: the Pacer sets the rate, and the pool grows (up to max_users) when permits
find no idle user, i.e. when answers get slow. Achieved rate counts requests that got an HTTP answer (any
status) in the last ~10 s, the same window locust uses for its current response-time percentiles.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from locust.env import Environment

from services.loadgen.feedback import FeedbackQueue
from services.loadgen.pacer import Pacer
from services.loadgen.profiles import Profile, ProfileRegistry
from services.loadgen.retry import RetryPolicy, check_retry
from services.loadgen.traffic import TrafficSource

log = logging.getLogger("loadgen")

SCORE_PATH = "/v1/score"
WINDOW_S = 10.0
MAX_RPS = 5000.0
MAX_USERS = 5000
_AUTOSCALE_EVERY_S = 1.0


@dataclass(frozen=True)
class PoolPolicy:
    """How many users (concurrent requests) to keep for a target rate."""

    min_users: int = 4
    max_users: int = 200
    # Users per request/s: 0.25 covers answers up to 250 ms at full rate before the pool has to grow.
    users_per_rps: float = 0.25

    def size_for(self, rps: float) -> int:
        return max(self.min_users, min(self.max_users, math.ceil(rps * self.users_per_rps)))


class Controller:
    def __init__(
        self,
        environment: Environment,
        registry: ProfileRegistry,
        source: TrafficSource,
        feedback: FeedbackQueue,
        rps: float,
        pool: PoolPolicy | None = None,
        pacer: Pacer | None = None,
        *,
        track: str = "fraud",
        path: str = SCORE_PATH,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.environment = environment
        self.registry = registry
        self.source = source
        self.feedback = feedback
        self.pool = pool or PoolPolicy()
        self.pacer = pacer or Pacer()
        # The track decides the user (scored transactions or streamed chats); path is the one its stats are under.
        self.track = track
        self.path = path
        self.retry = retry or RetryPolicy()
        self.base_rps = check_rps(rps)
        self.started_at = time.monotonic()
        self.codes: Counter[int] = Counter()
        self.inflight = 0
        self._answered: deque[float] = deque()
        self._autoscaler: gevent.Greenlet | None = None

    @property
    def profile(self) -> Profile:
        return self.source.profile

    @property
    def target_rps(self) -> float:
        return self.base_rps * self.profile.rate_multiplier

    # --- changes from the control API ---------------------------------------------------------------------

    def configure(
        self, rps: float | None = None, profile: str | None = None, feedback_delay_s: float | None = None,
        retry_policy: str | None = None, retries: int | None = None, max_users: int | None = None,
    ) -> None:
        """Validate everything first, then apply: a bad field leaves the running config untouched."""
        new_rps = check_rps(rps) if rps is not None else None
        new_profile = self.registry.get(profile) if profile is not None else None
        new_delay = check_delay(feedback_delay_s) if feedback_delay_s is not None else None
        new_retry = check_retry(retry_policy, retries, self.retry)
        new_pool = check_max_users(max_users, self.pool) if max_users is not None else None
        self.retry = new_retry
        if new_pool is not None:
            self.pool = new_pool
        if new_profile is not None and new_profile != self.profile:
            self.source.set_profile(new_profile)
        if new_rps is not None:
            self.base_rps = new_rps
        if new_delay is not None:
            self.feedback.delay_s = new_delay
        log.info(
            "traffic rps=%g profile=%s target_rps=%g feedback_delay_s=%g retry=%s/%d max_users=%d",
            self.base_rps,
            self.profile.name,
            self.target_rps,
            self.feedback.delay_s,
            self.retry.policy,
            self.retry.retries,
            self.pool.max_users,
        )
        self._apply()
        runner = self.environment.runner
        if new_pool is not None and runner is not None and runner.state not in ("ready", "stopped") \
                and runner.target_user_count > new_pool.max_users:
            # A lower concurrency cap is the one case the pool shrinks: users stop after their request ends.
            runner.start(new_pool.max_users, spawn_rate=100)

    def _apply(self) -> None:
        self.pacer.set_rate(self.target_rps)
        self._ensure_pool(self.pool.size_for(self.target_rps))

    def _ensure_pool(self, wanted: int) -> None:
        runner = self.environment.runner
        if runner is None or self.target_rps <= 0:
            return
        stopped = runner.state in ("ready", "stopped")
        # The pool only grows: shrinking would stop users, and idle users cost nothing but a keep-alive socket.
        current = 0 if stopped else runner.target_user_count
        if stopped or wanted > current:
            size = max(wanted, current)
            runner.start(size, spawn_rate=min(100, max(10, size)))

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self, on_crash: Callable[[BaseException], None] | None = None) -> None:
        """Start the ticker, the feedback sender and the pool autoscaler; on_crash hears if one of them dies."""
        self._autoscaler = gevent.spawn(self._autoscale)
        for greenlet in (self.pacer.start(), self.feedback.start(), self._autoscaler):
            if on_crash is not None:
                greenlet.link_exception(lambda g: on_crash(g.exception))
        self._apply()

    def stop(self, flush_timeout_s: float = 5.0) -> int:
        """Stop sending, then deliver every pending label at once; returns how many stayed undelivered."""
        if self._autoscaler is not None:
            self._autoscaler.kill(block=True)
        self.pacer.set_rate(0)
        self.pacer.stop()
        if self.environment.runner is not None:
            self.environment.runner.stop()
        return self.feedback.flush(flush_timeout_s)

    def _autoscale(self) -> None:
        last_missed = self.pacer.missed
        while True:
            gevent.sleep(_AUTOSCALE_EVERY_S)
            missed, last_missed = self.pacer.missed - last_missed, self.pacer.missed
            runner = self.environment.runner
            if runner is None or self.target_rps <= 0:
                continue
            if runner.state in ("ready", "stopped"):
                continue  # stopped from locust's web UI: respect it until the next rate or profile change
            if missed and runner.user_count < self.pool.max_users:
                grown = min(self.pool.max_users, math.ceil(runner.user_count * 1.5) + 1)
                log.info("pool saturated missed=%d users=%d->%d", missed, runner.user_count, grown)
                self._ensure_pool(grown)

    # --- reports from users --------------------------------------------------------------------------------

    def record(self, code: int) -> None:
        self.codes[code] += 1
        if code:
            now = time.monotonic()
            self._answered.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        cutoff = now - WINDOW_S
        while self._answered and self._answered[0] < cutoff:
            self._answered.popleft()

    def achieved_rps(self) -> float:
        now = time.monotonic()
        self._trim(now)
        span = min(WINDOW_S, max(1.0, now - self.started_at))
        return len(self._answered) / span

    def _percentiles(self) -> tuple[float | None, float | None]:
        runner = self.environment.runner
        if runner is None:
            return None, None
        # The LLM user's entries are per profile; their total is the track's.
        entry = runner.stats.entries.get((self.path, "POST")) if self.track == "fraud" else runner.stats.total
        if entry is None or not entry.num_requests:
            return None, None
        return entry.get_current_response_time_percentile(0.5), entry.get_current_response_time_percentile(0.99)

    def state(self) -> dict[str, Any]:
        runner = self.environment.runner
        ok = sum(n for c, n in self.codes.items() if 200 <= c < 300)
        p50, p99 = self._percentiles()
        fb = self.feedback.stats
        return {
            "track": self.track,
            "target_rps": round(self.target_rps, 3),
            "base_rps": self.base_rps,
            "rate_multiplier": self.profile.rate_multiplier,
            "achieved_rps": round(self.achieved_rps(), 3),
            "profile": self.profile.name,
            "feedback_delay_s": self.feedback.delay_s,
            "users": runner.user_count if runner is not None else 0,
            "max_users": self.pool.max_users,
            **self.retry.to_dict(),
            "inflight": self.inflight,
            "runner_state": runner.state if runner is not None else "none",
            "target": self.environment.host,
            "requests": {
                "ok": ok,
                "failed": sum(self.codes.values()) - ok,
                "codes": {str(c): n for c, n in sorted(self.codes.items())},
            },
            "permits": {"issued": self.pacer.issued, "missed": self.pacer.missed},
            "feedback": {
                "pending": self.feedback.pending,
                "sent": fb.sent,
                "failed": fb.failed,
                "dropped": fb.dropped,
                "retries": fb.retries,
                "delay_s": self.feedback.delay_s,
            },
            "p50_ms": p50,
            "p99_ms": p99,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "run_tag": self.source.run_tag,
        }


def check_rps(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"rps must be a number, got {value!r}")
    if not 0 <= value <= MAX_RPS:
        raise ValueError(f"rps must be between 0 and {MAX_RPS:g}, got {value!r}")
    return float(value)


def check_max_users(value: Any, pool: PoolPolicy) -> PoolPolicy:
    """A pool with a new concurrency cap (max requests in flight); the pool never shrinks below what runs."""
    if isinstance(value, bool) or not isinstance(value, int) or not pool.min_users <= value <= MAX_USERS:
        raise ValueError(f"max_users must be an integer in {pool.min_users}..{MAX_USERS}, got {value!r}")
    return PoolPolicy(min_users=pool.min_users, max_users=value, users_per_rps=pool.users_per_rps)


def check_delay(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"feedback_delay_s must be a number, got {value!r}")
    if not 0 <= value <= 3600:
        raise ValueError(f"feedback_delay_s must be between 0 and 3600, got {value!r}")
    return float(value)
