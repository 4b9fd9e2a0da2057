"""limit_data: lets `bytes` bytes through, then closes the connection (the count survives toxic updates)."""

from __future__ import annotations

from dataclasses import dataclass

from services.netproxy.stream import Chunk
from services.netproxy.toxics.base import Stub, Toxic


@dataclass
class Transmitted:
    bytes: int = 0


class LimitDataToxic(Toxic):
    type_name = "limit_data"
    attributes = {"bytes": 0}

    def new_state(self) -> Transmitted:
        return Transmitted()

    async def pipe(self, stub: Stub) -> None:
        state: Transmitted = stub.state
        limit = self.values["bytes"]
        while True:
            chunk = await stub.recv()
            if chunk is None:
                stub.close()
                return
            assert isinstance(chunk, Chunk)
            remaining = max(0, limit - state.bytes)
            if remaining < len(chunk.data):
                chunk = Chunk(chunk.data[:remaining], chunk.ts)
            stub.holding = None
            if chunk.data:
                state.bytes += len(chunk.data)
                await stub.send(chunk)
            if limit - state.bytes <= 0:
                stub.close()
                return
