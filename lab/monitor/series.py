"""Bounded in-memory time series: the monitor's memory of the last hour.

Two kinds of storage, both fixed-size so a lab left running for days stays flat in memory:
- `Series`: one derived number over time (e.g. `gateway.p99_ms`), a numpy ring buffer of (t, value).
- `ScrapeRing`: the raw samples of one scrape target, one row per successful scrape, aligned to a growing
  key index, so counter increases and histogram deltas over any window are a vectorised diff.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import numpy as np

from lab.monitor.prom import Labels, SampleKey


class Series:
    """A ring buffer of (timestamp, value). NaN means "no value at that tick" (e.g. no traffic)."""

    def __init__(self, capacity: int = 3600) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._t = np.zeros(capacity, dtype=np.float64)
        self._v = np.zeros(capacity, dtype=np.float64)
        self._n = 0  # total appends ever; the write position is _n % capacity

    def __len__(self) -> int:
        return min(self._n, self.capacity)

    def append(self, t: float, value: float | None) -> None:
        i = self._n % self.capacity
        self._t[i] = t
        self._v[i] = math.nan if value is None else float(value)
        self._n += 1

    def arrays(self, since: float | None = None, until: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Timestamps and values in time order, optionally restricted to since <= t <= until."""
        n = len(self)
        if self._n <= self.capacity:
            t, v = self._t[:n], self._v[:n]
        else:
            start = self._n % self.capacity
            t = np.concatenate((self._t[start:], self._t[:start]))
            v = np.concatenate((self._v[start:], self._v[:start]))
        if since is not None or until is not None:
            lo = 0 if since is None else int(np.searchsorted(t, since, side="left"))
            hi = n if until is None else int(np.searchsorted(t, until, side="right"))
            t, v = t[lo:hi], v[lo:hi]
        return t.copy(), v.copy()

    def points(self, since: float | None = None, until: float | None = None) -> list[list[float | None]]:
        """JSON-friendly [[t, value-or-null], ...]."""
        t, v = self.arrays(since, until)
        return [[round(float(a), 3), None if math.isnan(b) else float(b)] for a, b in zip(t, v, strict=True)]

    def last(self) -> tuple[float, float] | None:
        if self._n == 0:
            return None
        i = (self._n - 1) % self.capacity
        return float(self._t[i]), float(self._v[i])


class SeriesStore:
    """Named `Series`, created on first append, all with the same capacity."""

    def __init__(self, capacity: int = 3600) -> None:
        self.capacity = capacity
        self._series: dict[str, Series] = {}

    def append(self, name: str, t: float, value: float | None) -> None:
        s = self._series.get(name)
        if s is None:
            s = self._series[name] = Series(self.capacity)
        s.append(t, value)

    def names(self) -> list[str]:
        return sorted(self._series)

    def get(self, name: str) -> Series | None:
        return self._series.get(name)

    def export(
        self, since: float | None = None, until: float | None = None, prefix: str | None = None
    ) -> dict[str, list[list[float | None]]]:
        """Every series (or those starting with `prefix`) restricted to a time window, as JSON-ready points."""
        out = {}
        for name in self.names():
            if prefix is not None and not name.startswith(prefix):
                continue
            pts = self._series[name].points(since, until)
            if pts:
                out[name] = pts
        return out


class ScrapeRing:
    """The last `capacity` successful scrapes of one target, as rows aligned to a shared key index."""

    def __init__(self, capacity: int = 900) -> None:
        if capacity < 2:
            raise ValueError("capacity must be >= 2")
        self.capacity = capacity
        self.index: dict[SampleKey, int] = {}
        self.keys: list[SampleKey] = []
        self._rows: deque[tuple[float, np.ndarray]] = deque(maxlen=capacity)
        self._by_name: dict[str, list[tuple[int, dict[str, str]]]] = {}
        # increases since the first scrape, counting each counter's value at first sight (since process start)
        self.totals = np.zeros(0)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, t: float, samples: dict[SampleKey, float]) -> None:
        index = self.index
        for key in samples:
            if key not in index:
                index[key] = len(self.keys)
                self.keys.append(key)
                self._by_name.setdefault(key[0], []).append((index[key], dict(key[1])))
        row = np.full(len(self.keys), np.nan)
        for key, value in samples.items():
            row[index[key]] = value
        if len(self.totals) < len(row):
            self.totals = np.concatenate((self.totals, np.zeros(len(row) - len(self.totals))))
        prev = self._rows[-1][1] if self._rows else np.zeros(0)
        if len(prev) < len(row):
            prev = np.concatenate((prev, np.full(len(row) - len(prev), np.nan)))
        self.totals += np.nan_to_num(_counter_delta(prev, row))
        self._rows.append((t, row))

    def columns(self, name: str) -> list[tuple[int, dict[str, str]]]:
        """(column, labels) of every key with that metric name."""
        return self._by_name.get(name, [])

    def latest(self) -> tuple[float, np.ndarray] | None:
        if not self._rows:
            return None
        t, row = self._rows[-1]
        if len(row) < len(self.keys):
            row = np.concatenate((row, np.full(len(self.keys) - len(row), np.nan)))
        return t, row

    def latest_value(self, name: str, labels: Labels = ()) -> float | None:
        col = self.index.get((name, labels))
        last = self.latest()
        if col is None or last is None:
            return None
        v = float(last[1][col])
        return None if math.isnan(v) else v

    def increase(self, window_s: float, now: float | None = None) -> tuple[np.ndarray, float] | None:
        """Per-key counter increase over the last `window_s` seconds, and the time span it covers.

        Pairs of consecutive scrapes are differenced; a drop means the process restarted and its counter began
        again at zero, so the new value is the increase (what Prometheus' increase() does). A key that first
        appears in a scrape counts from zero, because prometheus_client creates labelled children lazily on
        their first event. Returns None when fewer than two scrapes fall in the window.
        """
        rows = self._rows
        if len(rows) < 2:
            return None
        last = len(rows) - 1
        if now is not None:  # a window in the past ends at `now`
            while last >= 0 and rows[last][0] > now:
                last -= 1
            if last < 1:
                return None
        end = rows[last][0] if now is None else now
        start = end - window_s
        # the newest row at or before `start` is the baseline; all rows after it contribute deltas
        base = last
        while base > 0 and rows[base][0] > start:
            base -= 1
        if base == last:
            return None
        picked = [rows[i] for i in range(base, last + 1)]
        k = len(self.keys)
        mat = np.full((len(picked), k), np.nan)
        for i, (_, row) in enumerate(picked):
            mat[i, : len(row)] = row
        total = np.nansum(_counter_delta(mat[:-1], mat[1:]), axis=0)
        span = picked[-1][0] - picked[0][0]
        return total, span

    def timestamps(self) -> list[float]:
        return [t for t, _ in self._rows]


def _counter_delta(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Counter increase from prev to cur: a drop is a restart (count from zero), a new key counts from zero."""
    return np.where(np.isnan(prev), cur, np.where(cur < prev, cur, cur - prev))


def label_match(labels: dict[str, str], want: dict[str, str | Iterable[str]] | None) -> bool:
    """True when every wanted label equals (or is one of) the given values."""
    if not want:
        return True
    for k, v in want.items():
        got = labels.get(k)
        if isinstance(v, str):
            if got != v:
                return False
        elif got not in v:
            return False
    return True
