"""slicer: cuts chunks into pieces of about `average_size` (± `size_variation`) bytes, `delay` µs apart.

Bytes arrive intact and in order; only the read boundaries (and the pacing) change.
"""

from __future__ import annotations

import random

from services.netproxy.stream import Chunk, monotonic, sleep_until
from services.netproxy.toxics.base import Stub, Toxic


class SlicerToxic(Toxic):
    type_name = "slicer"
    attributes = {"average_size": 0, "size_variation": 0, "delay": 0}

    def bounds(self, start: int, end: int) -> list[tuple[int, int]]:
        """Piece boundaries, halving recursively around the middle (± variation) so sizes vary evenly."""
        average = max(1, self.values["average_size"])
        variation = min(self.values["size_variation"], average - 1)
        pieces: list[tuple[int, int]] = []
        todo = [(start, end)]
        while todo:
            a, b = todo.pop()
            if (b - a) - average <= variation:
                pieces.append((a, b))
                continue
            mid = a + (b - a) // 2
            if variation > 0:
                mid += random.randrange(2 * variation) - variation
            mid = min(max(mid, a + 1), b - 1)
            todo.append((mid, b))  # popped after (a, mid): pieces stay in order
            todo.append((a, mid))
        return pieces

    async def pipe(self, stub: Stub) -> None:
        gap = self.values["delay"] / 1_000_000.0
        while True:
            chunk = await stub.recv()
            if chunk is None:
                stub.close()
                return
            assert isinstance(chunk, Chunk)
            data = chunk.data
            view = memoryview(data)
            # Absolute pacing: many sub-millisecond gaps add up to the right total despite coarse timers.
            due = monotonic()
            for a, b in self.bounds(0, len(data)):
                rest = Chunk(view[b:], chunk.ts) if b < len(data) else None
                await stub.send(Chunk(bytes(view[a:b]), chunk.ts), rest=rest)
                if gap > 0:
                    due += gap
                    await sleep_until(due)
            stub.holding = None
