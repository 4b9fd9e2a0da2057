"""Late ground truth: every scored transaction's label goes to POST /v1/feedback after a delay, with retries.

Labels arrive late in production (chargebacks, analyst review); the lab reproduces that with a delay queue.
Delivery is at-least-once-attempted: transient failures (connection errors, timeouts, 408/429/5xx) are retried
with exponential backoff up to `max_attempts` and then counted `failed`; a permanent rejection (any other 4xx,
e.g. 404 for a transaction the gateway no longer remembers) is counted `dropped` at once; a 409 (label already
recorded: an earlier attempt got through but its answer was lost) counts as `sent`. While the stack is
healthy nothing is lost. Runs on gevent; requests go through a locust FastHttpSession so they show up in
locust's own statistics as `/v1/feedback`.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
from gevent.pool import Pool

log = logging.getLogger("loadgen.feedback")

_POLL_S = 0.05
FEEDBACK_PATH = "/v1/feedback"
TRANSIENT_CODES = frozenset({0, 408, 425, 429, 500, 502, 503, 504})

# post(path, body) -> HTTP status, 0 when no response arrived (connection refused, reset, timeout).
PostFn = Callable[[str, bytes], int]


@dataclass(order=True)
class _Item:
    due: float
    seq: int
    transaction_id: str = field(compare=False)
    label: int = field(compare=False)
    attempt: int = field(compare=False, default=0)


@dataclass
class FeedbackStats:
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    inflight: int = 0


class FeedbackQueue:
    def __init__(
        self,
        post: PostFn,
        delay_s: float = 2.0,
        max_attempts: int = 8,
        backoff_s: float = 0.25,
        max_backoff_s: float = 5.0,
        concurrency: int = 32,
        max_pending: int = 200_000,
    ) -> None:
        self._post = post
        self.delay_s = delay_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_pending = max_pending
        self.stats = FeedbackStats()
        self._heap: list[_Item] = []
        self._seq = itertools.count()
        self._pool = Pool(concurrency)
        self._greenlet: gevent.Greenlet | None = None

    @property
    def pending(self) -> int:
        """Labels not yet settled: waiting out their delay or backoff, or on the wire."""
        return len(self._heap) + self.stats.inflight

    def add(self, transaction_id: str, label: int) -> None:
        if len(self._heap) >= self.max_pending:
            # Only reachable when the gateway has been unreachable for a long time at a high rate.
            self.stats.failed += 1
            return
        heapq.heappush(self._heap, _Item(time.monotonic() + self.delay_s, next(self._seq), transaction_id, label))

    def start(self) -> gevent.Greenlet:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        return self._greenlet

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True)
            self._greenlet = None

    def flush(self, timeout_s: float) -> int:
        """Send everything now, ignoring the delay (used on shutdown); returns how many stayed unsettled."""
        self.stop()
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            now = time.monotonic()
            while self._heap:
                item = heapq.heappop(self._heap)
                self._spawn(item)
                if time.monotonic() >= deadline:
                    break
            self._pool.join(timeout=max(0.0, min(0.5, deadline - now)))
            gevent.sleep(_POLL_S)
        return self.pending

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            while self._heap and self._heap[0].due <= now:
                self._spawn(heapq.heappop(self._heap))
            gevent.sleep(_POLL_S)

    def _spawn(self, item: _Item) -> None:
        self.stats.inflight += 1
        # Pool.spawn blocks while `concurrency` sends are on the wire: natural backpressure.
        self._pool.spawn(self._send, item)

    def _send(self, item: _Item) -> None:
        body = json.dumps({"transaction_id": item.transaction_id, "label": item.label}).encode()
        try:
            code = self._post(FEEDBACK_PATH, body)
        except Exception:  # a bug in post must not lose the label silently
            log.exception("feedback post raised transaction_id=%s", item.transaction_id)
            code = 0
        try:
            self._settle(item, code)
        finally:
            # Only now: until the item is settled or back in the heap it must count as pending.
            self.stats.inflight -= 1

    def _settle(self, item: _Item, code: int) -> None:
        # 409: the gateway already has this label, i.e. an earlier attempt arrived but its answer was lost.
        if 200 <= code < 300 or code == 409:
            self.stats.sent += 1
        elif code in TRANSIENT_CODES:
            item.attempt += 1
            if item.attempt >= self.max_attempts:
                self.stats.failed += 1
                log.warning(
                    "feedback gave up transaction_id=%s attempts=%d last_code=%d",
                    item.transaction_id,
                    item.attempt,
                    code,
                )
                return
            self.stats.retries += 1
            backoff = min(self.max_backoff_s, self.backoff_s * 2 ** (item.attempt - 1))
            item.due = time.monotonic() + backoff
            item.seq = next(self._seq)
            heapq.heappush(self._heap, item)
        else:
            self.stats.dropped += 1
            # Debug only: after a gateway restart every older label is a 404, one line each would flood the log.
            log.debug("feedback rejected transaction_id=%s code=%d", item.transaction_id, code)
