"""The pipes between toxics: chunks with arrival times, and bounded channels that never lose a chunk.

A link (one direction of one connection) is a chain `reader -> channel -> toxic -> channel -> toxic -> sink`.
Channels give back-pressure like Go's channels in Toxiproxy, with one twist that makes rewiring safe on a single
event loop: `put` appends first and only then waits for room, so a chunk is never "in the hands" of an awaiting
producer. A consumer pops only when it resumes, so cancelling it never drops an item either. When a toxic is
removed its input channel is redirected to its output: later pushes, and producers still waiting, follow along.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

monotonic = time.monotonic

# Sub-millisecond sleeps are not worth a timer: uvloop timers have millisecond resolution anyway.
SLEEP_SLACK = 0.0005


class Chunk:
    """Bytes read from a socket, with the monotonic time they arrived (delays count from arrival)."""

    __slots__ = ("data", "ts")

    def __init__(self, data: bytes, ts: float) -> None:
        self.data = data
        self.ts = ts


# The end of a stream: the source reached EOF, or a toxic closed the link.
EOF = None
Item = Chunk | None


class Outlet(Protocol):
    """Anything a stage can write to: a channel, the socket writer at the end of a link, or the discard bin."""

    def push(self, item: Item) -> None: ...

    def over(self) -> bool: ...

    async def wait_space(self) -> None: ...

    def resolve(self) -> Outlet: ...


class Channel:
    """A bounded FIFO between two stages: one consumer, any number of producers."""

    def __init__(self, capacity: int = 0, max_bytes: int = 1 << 20) -> None:
        self._items: deque[Item] = deque()
        self._bytes = 0
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._getter: asyncio.Future[None] | None = None
        self._space: list[asyncio.Future[None]] = []
        self.redirect: Outlet | None = None
        # Called whenever a pop made room: the link uses it to resume reading its socket.
        self.on_space: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def resolve(self) -> Outlet:
        target: Outlet = self
        while isinstance(target, Channel) and target.redirect is not None:
            target = target.redirect
        return target

    def over(self) -> bool:
        n = len(self._items)
        return n > self.capacity or (n > 1 and self._bytes > self.max_bytes)

    def push(self, item: Item) -> None:
        """Append without waiting (the producer waits afterwards, if it wants back-pressure)."""
        if self.redirect is not None:
            self.resolve().push(item)
            return
        self._items.append(item)
        if item is not None:
            self._bytes += len(item.data)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def wait_space(self) -> None:
        while self.redirect is None and self.over():
            fut = asyncio.get_running_loop().create_future()
            self._space.append(fut)
            await fut
        if self.redirect is not None:
            await self.resolve().wait_space()

    async def get(self, deadline: float | None = None) -> Item | TimedOut:
        """The next item; with a deadline (monotonic), `TIMED_OUT` once it passes with nothing to read."""
        while not self._items:
            if deadline is not None and monotonic() >= deadline - SLEEP_SLACK:
                return TIMED_OUT
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._getter = fut
            timer = None
            if deadline is not None:
                timer = loop.call_later(max(0.0, deadline - monotonic()), _wake, fut)
            try:
                await fut
            finally:
                if timer is not None:
                    timer.cancel()
        item = self._items.popleft()
        if item is not None:
            self._bytes -= len(item.data)
        if not self.over():
            self._release_space()
        return item

    def take_all(self) -> list[Item]:
        """Empty the channel at once (used when the stage reading it is removed)."""
        items = list(self._items)
        self._items.clear()
        self._bytes = 0
        self._release_space()
        return items

    def _release_space(self) -> None:
        waiters, self._space = self._space, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        if self.on_space is not None:
            self.on_space()


class TimedOut:
    """The type of `TIMED_OUT`, what `Channel.get` returns when its deadline passed."""


TIMED_OUT = TimedOut()


class Discard:
    """Where data goes once a link is closed: nowhere, and never full."""

    def push(self, item: Item) -> None:
        return None

    def over(self) -> bool:
        return False

    async def wait_space(self) -> None:
        return None

    def resolve(self) -> Outlet:
        return self


DISCARD = Discard()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def sleep_until(deadline: float) -> None:
    """Sleep until a monotonic deadline (within half a millisecond: timers are millisecond-grained)."""
    while True:
        remaining = deadline - monotonic()
        if remaining <= SLEEP_SLACK:
            return
        await asyncio.sleep(remaining)


async def put(outlet: Outlet, item: Item) -> None:
    """Push, then wait until the receiver has room (back-pressure without ever holding the item)."""
    target = outlet.resolve()
    target.push(item)
    if target.over():
        await target.wait_space()
