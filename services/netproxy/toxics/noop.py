"""noop: passes everything through untouched (also what a toxic does on a connection its toxicity spared)."""

from __future__ import annotations

from services.netproxy.toxics.base import Stub, Toxic


class NoopToxic(Toxic):
    type_name = "noop"

    async def pipe(self, stub: Stub) -> None:
        await pass_through(stub)


async def pass_through(stub: Stub) -> None:
    while True:
        chunk = await stub.recv()
        if chunk is None:
            stub.close()
            return
        await stub.send(chunk)  # type: ignore[arg-type]
