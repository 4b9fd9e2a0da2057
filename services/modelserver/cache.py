"""The optional prediction cache: off (0), an LRU of N rows, or unbounded (-1, the memory-leak scenario).

Keys are (version, encoded row): two rows that give the same model input share an entry. An entry holds the score,
plus `payload_bytes` of data when the config's `cache_entry_kb` asks for it (a cache of whole responses), filled so
that the memory really is resident.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class PredictionCache:
    def __init__(self, size: int = 0, payload_bytes: int = 0) -> None:
        self._entries: OrderedDict[Hashable, tuple[float, bytes | None]] = OrderedDict()
        self.size = size
        self.payload_bytes = payload_bytes
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
            entry = entries.get(full)
            if entry is None:
                self.misses += 1
                return None
            entries.move_to_end(full)
            out.append(entry[0])
        self.hits += 1
        return out

    def put_all(self, version: str, keys: list[tuple], scores: list[float]) -> None:
        if not self.enabled:
            return
        entries = self._entries
        size = self.payload_bytes
        for key, score in zip(keys, scores, strict=True):
            # a non-zero fill: zeroed pages from calloc may never become resident, and then nothing would leak
            entries[(version, key)] = (score, b"\xa5" * size if size else None)
        self._evict()

    def _evict(self) -> None:
        if self.size > 0:
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
