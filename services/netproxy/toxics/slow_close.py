"""slow_close: data passes untouched, but the close that follows end-of-stream is delayed by `delay` ms."""

from __future__ import annotations

from services.netproxy.stream import monotonic, sleep_until
from services.netproxy.toxics.base import Stub, Toxic


class SlowCloseToxic(Toxic):
    type_name = "slow_close"
    attributes = {"delay": 0}

    async def pipe(self, stub: Stub) -> None:
        while True:
            chunk = await stub.recv()
            if chunk is None:
                stub.eof_pending = True
                await sleep_until(monotonic() + self.values["delay"] / 1000.0)
                stub.close()
                return
            await stub.send(chunk)  # type: ignore[arg-type]
