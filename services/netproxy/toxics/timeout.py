"""timeout: stops all data; closes the connection after `timeout` ms (0 = never). Removing it closes too.

Closing on removal is Toxiproxy's behaviour: the bytes it swallowed are gone, so the connection cannot go on.
"""

from __future__ import annotations

from services.netproxy.stream import TIMED_OUT, monotonic
from services.netproxy.toxics.base import Stub, Toxic


class TimeoutToxic(Toxic):
    type_name = "timeout"
    attributes = {"timeout": 0}

    async def pipe(self, stub: Stub) -> None:
        timeout_ms = self.values["timeout"]
        deadline = monotonic() + timeout_ms / 1000.0 if timeout_ms > 0 else None
        while True:
            chunk = await stub.recv(deadline)
            if chunk is None or chunk is TIMED_OUT:
                stub.close()
                return
            stub.holding = None  # swallowed

    def cleanup(self, stub: Stub) -> None:
        stub.close()
