"""Prometheus updates off the hot path: counts and observations held as plain numbers, added at scrape time.

Every prometheus_client update takes a lock and (for a histogram) walks the buckets; with several per request
they were ≈ 5 % of a model replica's CPU at saturation and a similar share of the gateway's (py-spy,
docs/benchmarks.md). A `CounterTally` / `HistogramTally` wraps one metric (or labelled child) with the same
`inc` / `observe` call but only adds to a Python int or list; a collector registered on the default registry
the first time this module is imported — before any metric that uses it is created, so collected first — adds
everything held in bulk when /metrics is scraped, so every scrape sees every update
made before it. A histogram also flushes itself once it holds FLUSH_AT values (memory stays bounded when
nobody scrapes). Updates and scrapes run on the service's event loop thread.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.registry import Collector

FLUSH_AT = 4096

_flushers: list[Callable[[], None]] = []


def on_scrape(flush: Callable[[], None]) -> None:
    """Call `flush` before every collection of the default registry."""
    _flushers.append(flush)


def flush_all() -> None:
    for flush in list(_flushers):
        flush()


class CounterTally:
    """`inc(n)` on a counter, held until the next scrape."""

    __slots__ = ("counter", "n")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.n = 0.0
        on_scrape(self.flush)

    def inc(self, amount: float = 1) -> None:
        self.n += amount

    def flush(self) -> None:
        n, self.n = self.n, 0.0
        if n:
            self.counter.inc(n)


class HistogramTally:
    """`observe(v)` on a histogram, held until the next scrape (or FLUSH_AT values).

    Bulk adding uses the histogram's per-bucket values (`_buckets`, `_sum`: prometheus_client 0.26, pinned), the
    only way to add n observations without n calls; tests/ml/test_modelserver_tally.py checks it against
    `observe`."""

    __slots__ = ("hist", "bounds", "values")

    def __init__(self, hist: Histogram, register: bool = True) -> None:
        self.hist = hist
        self.bounds = list(hist._upper_bounds)  # ends with +Inf
        self.values: list[float] = []
        if register:
            on_scrape(self.flush)

    def observe(self, value: float) -> None:
        values = self.values
        values.append(value)
        if len(values) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        values, self.values = self.values, []
        if not values:
            return
        # prometheus buckets are `le`: a value goes to the first bucket whose upper bound is >= it (NaN: none,
        # as with observe). Pure Python: the gateway does not import numpy, and this runs once per scrape.
        bounds = self.bounds
        counts = [0] * len(bounds)
        last = len(bounds) - 1
        for v in values:
            i = bisect_left(bounds, v)
            if i <= last and v == v:
                counts[i] += 1
        buckets = self.hist._buckets
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
        self.hist._sum.inc(sum(values))


class _Flush(Collector):
    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        flush_all()
        return []


REGISTRY.register(_Flush())
