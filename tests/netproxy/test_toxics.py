"""Toxic behaviours and the channel primitives in-process (Toxiproxy's toxic-level tests, on our classes).

The stub here is a real pair of `Channel`s with the stub contract (`recv`, `send`, `holding`); no socket.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from services.netproxy.stream import EOF, TIMED_OUT, Channel, Chunk, monotonic, put
from services.netproxy.toxics import REGISTRY
from services.netproxy.toxics.limit_data import LimitDataToxic
from services.netproxy.toxics.slicer import SlicerToxic


class ChannelStub:
    """The `Stub` contract over two channels: what a link gives a toxic, minus the sockets."""

    def __init__(self, state: object = None) -> None:
        self.input = Channel(1024)
        self.output = Channel(10_000, max_bytes=1 << 30)
        self.holding: Chunk | None = None
        self.eof_pending = False
        self.state = state
        self.closed = False

    async def recv(self, deadline: float | None = None):
        item = await self.input.get(deadline)
        if isinstance(item, Chunk):
            self.holding = item
        return item

    async def send(self, chunk: Chunk, rest: Chunk | None = None) -> None:
        self.holding = rest
        await put(self.output, chunk)

    def close(self) -> None:
        self.closed = True
        self.output.push(EOF)

    def reset(self) -> None:
        self.close()

    def drain(self) -> list[bytes]:
        return [bytes(item.data) for item in self.output.take_all() if item is not None]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_registry_has_every_reference_toxic() -> None:
    assert {"latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data"} <= set(REGISTRY)


def test_slicer_cuts_480kb_into_240_to_720_pieces_intact() -> None:
    data = b"hello world " * 40000
    slicer = SlicerToxic({"average_size": 1024, "size_variation": 512, "delay": 10})

    async def scenario() -> list[bytes]:
        stub = ChannelStub()
        task = asyncio.create_task(slicer.pipe(stub))
        stub.input.push(Chunk(data, monotonic()))
        stub.input.push(EOF)
        await task
        assert stub.closed
        return stub.drain()

    pieces = run(scenario())
    assert 240 <= len(pieces) <= 720
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= 1024 + 512 + 1 for p in pieces)


@pytest.mark.parametrize("size", [0, 1, 7, 1023, 1024, 1025, 100_000])
def test_slicer_bounds_cover_the_chunk_in_order(size: int) -> None:
    bounds = SlicerToxic({"average_size": 100, "size_variation": 40}).bounds(0, size)
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(a < b or size == 0 for a, b in bounds)
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))


def test_slicer_survives_degenerate_settings() -> None:
    for attrs in ({}, {"average_size": 1}, {"average_size": 10, "size_variation": 50}):
        bounds = SlicerToxic(attrs).bounds(0, 500)
        assert bounds[0][0] == 0 and bounds[-1][1] == 500


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([50], [50]),
        ([100], [100]),
        ([150], [100]),
        ([25, 25, 25, 25], [25, 25, 25, 25]),
        ([90, 20], [90, 10]),
        ([], []),
    ],
)
def test_limit_data_passes_exactly_its_budget(chunks: list[int], expected: list[int]) -> None:
    toxic = LimitDataToxic({"bytes": 100})
    buffers = [os.urandom(n) for n in chunks]

    async def scenario() -> tuple[list[bytes], bool]:
        stub = ChannelStub(toxic.new_state())
        task = asyncio.create_task(toxic.pipe(stub))
        for buf in buffers:
            stub.input.push(Chunk(buf, monotonic()))
        stub.input.push(EOF)
        await task
        return stub.drain(), stub.closed

    pieces, closed = run(scenario())
    assert [len(p) for p in pieces] == expected
    assert b"".join(pieces) == b"".join(buffers)[: sum(expected)]
    assert closed


def test_limit_data_zero_closes_on_first_data_and_state_survives_restarts() -> None:
    async def zero() -> tuple[list[bytes], bool]:
        toxic = LimitDataToxic({"bytes": 0})
        stub = ChannelStub(toxic.new_state())
        stub.input.push(Chunk(b"x" * 100, monotonic()))
        await toxic.pipe(stub)
        return stub.drain(), stub.closed

    assert run(zero()) == ([], True)

    async def restarted() -> list[bytes]:
        toxic = LimitDataToxic({"bytes": 100})
        stub = ChannelStub(toxic.new_state())
        task = asyncio.create_task(toxic.pipe(stub))
        stub.input.push(Chunk(b"a" * 90, monotonic()))
        await asyncio.sleep(0.01)
        task.cancel()  # an update interrupts the toxic; its state stays on the stub
        task = asyncio.create_task(toxic.pipe(stub))
        stub.input.push(Chunk(b"b" * 20, monotonic()))
        await task
        return stub.drain()

    assert run(restarted()) == [b"a" * 90, b"b" * 10]


def test_latency_counts_from_arrival_so_streams_stay_pipelined() -> None:
    latency = REGISTRY["latency"]({"latency": 100})

    async def scenario() -> float:
        stub = ChannelStub()
        task = asyncio.create_task(latency.pipe(stub))
        start = monotonic()
        for _ in range(20):
            stub.input.push(Chunk(b"x" * 1000, monotonic()))
            await asyncio.sleep(0.005)
        stub.input.push(EOF)
        await task
        assert len(stub.drain()) == 20
        return monotonic() - start

    # 20 chunks 5 ms apart, each 100 ms late: ~195 ms in all, not 20 x 100 ms
    assert 0.19 <= run(scenario()) < 0.6


def test_timeout_toxic_swallows_then_closes() -> None:
    timeout = REGISTRY["timeout"]({"timeout": 50})

    async def scenario() -> tuple[list[bytes], bool, float]:
        stub = ChannelStub()
        start = monotonic()
        task = asyncio.create_task(timeout.pipe(stub))
        stub.input.push(Chunk(b"gone", monotonic()))
        await task
        return stub.drain(), stub.closed, monotonic() - start

    pieces, closed, elapsed = run(scenario())
    assert pieces == [] and closed and elapsed >= 0.049


def test_channel_put_waits_for_room_without_holding_the_item() -> None:
    async def scenario() -> None:
        ch = Channel(capacity=1)
        await put(ch, Chunk(b"1", 0))
        writer = asyncio.create_task(put(ch, Chunk(b"2", 0)))
        await asyncio.sleep(0.01)
        assert not writer.done() and len(ch) == 2  # already in the channel, waiting for room
        writer.cancel()
        assert [bytes(c.data) for c in ch.take_all()] == [b"1", b"2"]

    run(scenario())


def test_channel_consumer_cancelled_before_resuming_loses_nothing() -> None:
    async def scenario() -> None:
        ch = Channel()
        reader = asyncio.create_task(ch.get())
        await asyncio.sleep(0)
        ch.push(Chunk(b"kept", 0))
        reader.cancel()  # woken but not yet resumed: the item must stay in the channel
        await asyncio.gather(reader, return_exceptions=True)
        assert bytes((await ch.get()).data) == b"kept"

    run(scenario())


def test_channel_redirect_forwards_later_pushes_and_wakes_waiting_producers() -> None:
    async def scenario() -> None:
        first, second = Channel(capacity=0), Channel(capacity=100)
        first.push(Chunk(b"a", 0))
        writer = asyncio.create_task(put(first, Chunk(b"b", 0)))
        await asyncio.sleep(0.01)
        assert not writer.done()
        for item in first.take_all():
            second.push(item)
        first.redirect = second
        await asyncio.wait_for(writer, 1)
        first.push(Chunk(b"c", 0))
        assert [bytes(c.data) for c in second.take_all()] == [b"a", b"b", b"c"]

    run(scenario())


def test_channel_get_with_deadline_times_out() -> None:
    async def scenario() -> float:
        start = time.monotonic()
        assert await Channel().get(monotonic() + 0.05) is TIMED_OUT
        return time.monotonic() - start

    assert 0.045 <= run(scenario()) < 1
