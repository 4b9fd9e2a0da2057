"""The optional prediction cache: off (0), an LRU of N rows, or unbounded (-1, the memory-leak scenario).

Keys are (version, encoded row): two rows that give the same model input share an entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class PredictionCache:
    def __init__(self, size: int = 0) -> None:
        self._entries: OrderedDict[Hashable, float] = OrderedDict()
        self.size = size
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.size != 0

    def resize(self, size: int) -> None:
        self.size = size
        if size == 0:
            self._entries.clear()
        self._evict()

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def get_all(self, version: str, keys: list[tuple]) -> list[float] | None:
        """Scores for every key, or None as soon as one is missing (partial hits are scored afresh)."""
        out = []
        entries = self._entries
        for key in keys:
            full = (version, key)
            score = entries.get(full)
            if score is None:
                self.misses += 1
                return None
            entries.move_to_end(full)
            out.append(score)
        self.hits += 1
        return out

    def put_all(self, version: str, keys: list[tuple], scores: list[float]) -> None:
        if not self.enabled:
            return
        entries = self._entries
        for key, score in zip(keys, scores, strict=True):
            entries[(version, key)] = score
        self._evict()

    def _evict(self) -> None:
        if self.size > 0:
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
