"""latency: every chunk leaves `latency` ms (± `jitter` ms, uniform) after it arrived; no throughput cap."""

from __future__ import annotations

import random

from services.netproxy.stream import sleep_until
from services.netproxy.toxics.base import Stub, Toxic


class LatencyToxic(Toxic):
    type_name = "latency"
    attributes = {"latency": 0, "jitter": 0}
    buffer_size = 1024

    def delay(self) -> float:
        """Seconds for one chunk: latency plus a uniform draw in [-jitter, +jitter) like Toxiproxy."""
        delay_ms = self.values["latency"]
        jitter = self.values["jitter"]
        if jitter > 0:
            delay_ms += random.randrange(2 * jitter) - jitter
        return delay_ms / 1000.0

    async def pipe(self, stub: Stub) -> None:
        while True:
            chunk = await stub.recv()
            if chunk is None:
                stub.close()
                return
            # Counting from arrival (not from when the previous chunk left) keeps a busy stream pipelined.
            release = chunk.ts + self.delay()  # type: ignore[union-attr]
            await sleep_until(release)
            # The next toxic counts from this release time, so stacked latencies add up exactly.
            chunk.ts = release  # type: ignore[union-attr]
            await stub.send(chunk)  # type: ignore[arg-type]
