"""reset_peer: on the first data (or end-of-stream), waits `timeout` ms then resets the connection (TCP RST).

The reset is a close with SO_LINGER 0 on both sockets: peers see ECONNRESET instead of a clean EOF.
"""

from __future__ import annotations

from services.netproxy.stream import monotonic, sleep_until
from services.netproxy.toxics.base import Stub, Toxic


class ResetPeerToxic(Toxic):
    type_name = "reset_peer"
    attributes = {"timeout": 0}

    async def pipe(self, stub: Stub) -> None:
        await stub.recv()
        stub.holding = None  # dropped: a reset discards unsent data
        await sleep_until(monotonic() + self.values["timeout"] / 1000.0)
        stub.reset()
