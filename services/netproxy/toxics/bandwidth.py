"""bandwidth: limits throughput to `rate` KB/s (1 KB = 1000 bytes); big chunks go out in 100 ms slices.

A rate of 0 lets nothing through (as in Toxiproxy) until the toxic is updated or removed.
"""

from __future__ import annotations

import asyncio

from services.netproxy.stream import Chunk, monotonic, sleep_until
from services.netproxy.toxics.base import Stub, Toxic

SLICE_SECONDS = 0.1


class BandwidthToxic(Toxic):
    type_name = "bandwidth"
    attributes = {"rate": 0}

    async def pipe(self, stub: Stub) -> None:
        rate = self.values["rate"]  # KB/s, i.e. bytes per millisecond
        if rate <= 0:
            await _stall()
            return
        bytes_per_second = rate * 1000
        slice_bytes = rate * 100
        # When the link is next free to send: absolute, so timer error does not accumulate over a long stream.
        free_at = monotonic()
        while True:
            chunk = await stub.recv()
            if chunk is None:
                stub.close()
                return
            assert isinstance(chunk, Chunk)
            # From its arrival, not from now: waking late for one chunk must not delay all the next ones.
            free_at = max(free_at, chunk.ts)
            data = chunk.data
            start = 0
            while start < len(data):
                end = min(len(data), start + slice_bytes)
                free_at += (end - start) / bytes_per_second
                await sleep_until(free_at)
                rest = Chunk(memoryview(data)[end:], chunk.ts) if end < len(data) else None
                await stub.send(Chunk(bytes(data[start:end]), chunk.ts), rest=rest)
                start = end


async def _stall() -> None:
    """Rate 0: read nothing. Data waits in the input channel (so the sender feels back-pressure) until the toxic
    is updated or removed, and then flows on in order."""
    await asyncio.get_running_loop().create_future()
