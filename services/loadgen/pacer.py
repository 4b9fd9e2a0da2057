"""Constant throughput across a pool of users: one ticker greenlet hands out send permits at the target rate.

Per-user pacing (locust's constant_throughput) makes the pool fire in bursts and only changes rate on each
user's next wait; a shared ticker gives evenly spaced requests, and a rate change applies at the next tick.
Permits that find no idle user wait in a small buffer; beyond it they are counted as `missed` (the pool is
saturated: every user is waiting on a slow answer) rather than sent later in a burst.
"""

from __future__ import annotations

import time

import gevent
from gevent.event import Event
from gevent.queue import Empty, Queue

# Longest stall after which the ticker stops catching up and starts counting again from now.
_MAX_CATCH_UP_S = 0.25
_IDLE_SLEEP_S = 0.2


class Pacer:
    def __init__(self, rate: float = 0.0, burst_s: float = 0.05) -> None:
        self._rate = 0.0
        self._burst_s = burst_s
        self._permits: Queue = Queue()
        self._cap = 1
        self._idle = 0
        self._changed = Event()
        self._greenlet: gevent.Greenlet | None = None
        self.issued = 0
        self.missed = 0
        self.set_rate(rate)

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        self._rate = float(rate)
        # The buffer holds about burst_s worth of permits: enough to absorb jitter, too few for a visible burst.
        self._cap = max(1, int(self._rate * self._burst_s)) if self._rate > 0 else 0
        # Permits buffered at the old rate would be sent in a burst after a rate drop: forget them.
        while self._permits.qsize() > self._cap:
            self._permits.get_nowait()
        self._changed.set()

    def start(self) -> gevent.Greenlet:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        return self._greenlet

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True)
            self._greenlet = None

    def acquire(self, timeout: float | None = None) -> bool:
        """Block until a send permit is available; False on timeout."""
        self._idle += 1
        try:
            self._permits.get(timeout=timeout)
            return True
        except Empty:
            return False
        finally:
            self._idle -= 1

    def _run(self) -> None:
        while True:
            self._changed.clear()
            rate = self._rate
            if rate <= 0:
                self._changed.wait(timeout=_IDLE_SLEEP_S)
                continue
            interval = 1.0 / rate
            start = time.monotonic()
            emitted = 0
            while not self._changed.is_set():
                now = time.monotonic()
                due = int((now - start) * rate) + 1 - emitted
                if due > 1 and (due - 1) * interval > _MAX_CATCH_UP_S:
                    # The process stalled (CPU starved): drop the backlog instead of bursting it.
                    self.missed += due - 1
                    start, emitted, due = now, 0, 1
                for _ in range(due):
                    # Idle users (getters) take theirs at once; the cap bounds what waits for a busy pool.
                    if self._permits.qsize() < self._cap + self._idle:
                        self._permits.put_nowait(None)
                        self.issued += 1
                    else:
                        self.missed += 1
                emitted += due
                next_at = start + emitted * interval
                self._changed.wait(timeout=max(0.0, next_at - time.monotonic()))
