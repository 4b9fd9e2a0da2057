"""One proxied TCP connection: its two sockets, and one link per direction running that direction's toxics.

    client --(upstream link: reader -> toxic stubs -> sink)--> upstream server
    client <--(downstream link: sink <- toxic stubs <- reader)-- upstream server

With no toxic on a direction its link is a straight pipe: `data_received` writes to the other socket at once
(the fast path that keeps per-hop overhead small). With toxics, chunks are stamped with their arrival time and go
through one asyncio task per toxic, joined by bounded channels (see `stream.py`).

Toxic changes reach live connections at once and never wait for data (Toxiproxy's interrupt semantics): a changed
or removed toxic is cancelled, whatever it held goes on to the next stage, and the chain is rewired in place.
Toxicity is drawn per connection: when the link starts, and again for a toxic that is added or updated.

Closing follows Toxiproxy: when one direction ends (EOF, error, or a toxic closing it) its destination socket is
closed, which ends the other direction too once that direction has flushed what its toxics still hold.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
from typing import TYPE_CHECKING, Any

from services.netproxy.stream import (
    DISCARD,
    EOF,
    Channel,
    Chunk,
    Item,
    Outlet,
    TimedOut,
    monotonic,
    put,
)
from services.netproxy.toxics import REGISTRY, Toxic

if TYPE_CHECKING:
    from services.netproxy.proxy import Proxy
    from services.netproxy.toxic_collection import ToxicWrapper

log = logging.getLogger("netproxy")

UPSTREAM = "upstream"
DOWNSTREAM = "downstream"
CONNECT_TIMEOUT = 10.0
# How much data may wait ahead of one toxic (besides its chunk count): bounds memory per connection.
CHANNEL_MAX_BYTES = 32 << 20
_NOOP: Toxic = REGISTRY["noop"]()


class Side(asyncio.Protocol):
    """One socket of a connection (the client's or the upstream's), as an asyncio protocol."""

    def __init__(self, conn: Connection, name: str) -> None:
        self.conn = conn
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.out_link: Link | None = None  # the link reading from this socket
        self.in_link: Link | None = None  # the link writing to this socket
        self.writing_paused = False
        self.reading_paused = False
        self.closed = False
        self._writable: list[asyncio.Future[None]] = []
        # Data (and EOF) that arrived before both sockets and links existed. uvloop starts reading only after
        # connection_made returns, so pausing there is not enough: the first read is kept here instead.
        self._early: list[bytes] = []
        self._early_eof = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.name == "client":
            self.conn.client_connected(self)

    def data_received(self, data: bytes) -> None:
        link = self.out_link
        if link is None:
            self._early.append(data)
            self.set_reading(False)
            return
        link.received += len(data)
        if link.head is link.sink:
            dest = link.dest
            if not dest.closed:
                link.sent += len(data)
                dest.transport.write(data)  # type: ignore[union-attr]
        else:
            link.feed(data)

    def eof_received(self) -> bool:
        if self.out_link is None:
            self._early_eof = True
        else:
            self.out_link.source_ended()
        # Keep the socket open for writing: the other direction may still flush data to it.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake_writers()
        self.conn.side_lost(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.in_link is not None:
            self.in_link.update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writers()
        if self.in_link is not None:
            self.in_link.update_reading()

    # used by links
    def attach(self, out_link: Link, in_link: Link) -> None:
        """Both links exist: replay what arrived early, then let data flow."""
        self.out_link, self.in_link = out_link, in_link
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self._early_eof:
            out_link.source_ended()
        elif not out_link.source_done:
            out_link.update_reading()

    def set_reading(self, on: bool) -> None:
        if self.transport is None or self.closed or self.reading_paused == (not on):
            return
        self.reading_paused = not on
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    async def wait_writable(self) -> None:
        while self.writing_paused and not self.closed:
            fut = asyncio.get_running_loop().create_future()
            self._writable.append(fut)
            await fut

    def _wake_writers(self) -> None:
        waiters, self._writable = self._writable, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def linger_zero(self) -> None:
        """Make the next close a TCP RST (what reset_peer is about)."""
        if self.transport is None or self.closed:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass


class Sink:
    """The end of a link: writes to the destination socket; end-of-stream closes it."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def push(self, item: Item) -> None:
        link = self.link
        if item is None:
            link.finish()
            return
        dest = link.dest
        if not dest.closed and dest.transport is not None:
            link.sent += len(item.data)
            dest.transport.write(item.data)

    def over(self) -> bool:
        return self.link.dest.writing_paused

    async def wait_space(self) -> None:
        await self.link.dest.wait_writable()

    def resolve(self) -> Outlet:
        return self


class Stub:
    """One toxic on one link: its input channel, where it writes, its per-connection state and its task."""

    def __init__(self, link: Link, wrapper: ToxicWrapper) -> None:
        self.link = link
        self.wrapper = wrapper
        self.input = Channel(wrapper.toxic.buffer_size, CHANNEL_MAX_BYTES)
        self.output: Outlet = link.sink
        self.holding: Chunk | None = None
        self.eof_pending = False
        self.state: Any = wrapper.toxic.new_state()
        self.closed = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the toxic, or a no-op for this connection if the toxicity draw spares it."""
        toxic = self.wrapper.toxic if random.random() < self.wrapper.toxicity else _NOOP
        self._task = asyncio.get_running_loop().create_task(self._run(toxic))

    async def _run(self, toxic: Toxic) -> None:
        try:
            await toxic.pipe(self)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("toxic failed proxy=%s toxic=%s", self.link.conn.proxy.name, self.wrapper.name)
            self.link.conn.abort()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def interrupt(self) -> None:
        """Stop the toxic now; whatever it held goes on, unharmed, to the next stage."""
        self.cancel()
        if self.holding is not None:
            self.output.resolve().push(self.holding)
            self.holding = None
        if self.eof_pending:
            self.eof_pending = False
            self.output.resolve().push(EOF)

    # the toxic-facing API (see toxics/base.py)
    async def recv(self, deadline: float | None = None) -> Item | TimedOut:
        item = await self.input.get(deadline)
        if isinstance(item, Chunk):
            self.holding = item
        return item

    async def send(self, chunk: Chunk, rest: Chunk | None = None) -> None:
        self.holding = rest
        await put(self.output, chunk)

    def close(self) -> None:
        """End this link here: end-of-stream downstream of the toxic, and nothing more accepted upstream of it."""
        if self.closed:
            return
        self.closed = True
        self.holding = None
        self.eof_pending = False
        self.input.take_all()
        self.input.redirect = DISCARD
        self.output.resolve().push(EOF)
        self.link.closed = True
        self.link.source.set_reading(True)  # drain (and drop) what the source still sends

    def reset(self) -> None:
        self.link.conn.linger_zero()
        self.close()


class Link:
    """One direction of a connection: source socket -> chain of toxic stubs -> destination socket."""

    def __init__(self, conn: Connection, direction: str, source: Side, dest: Side) -> None:
        self.conn = conn
        self.direction = direction
        self.source = source
        self.dest = dest
        self.sink = Sink(self)
        self.head: Outlet = self.sink  # where the reader puts data: the first stub's input, or the sink
        self.stubs: list[Stub] = []
        self.source_done = False
        self.finished = False
        self.closed = False  # a toxic closed it, or it finished: toxic changes no longer matter
        self.received = 0
        self.sent = 0

    # data from the source
    def feed(self, data: bytes) -> None:
        head = self.head
        head.push(Chunk(data, monotonic()))
        if head.over():
            self.source.set_reading(False)

    def source_ended(self) -> None:
        if self.source_done:
            return
        self.source_done = True
        self.source.set_reading(False)
        self.head.resolve().push(EOF)

    def update_reading(self) -> None:
        if self.source_done:
            return
        self.source.set_reading(self.closed or not self.head.resolve().over())

    def finish(self) -> None:
        """End-of-stream reached the destination: close it (full close, as Toxiproxy does)."""
        if self.finished:
            return
        self.finished = True
        self.closed = True
        self.dest.close()
        other = self.dest.out_link
        if other is not None:
            other.source_ended()

    # chain changes
    def _set_head(self, outlet: Outlet) -> None:
        old = self.head
        if isinstance(old, Channel):
            old.on_space = None
        self.head = outlet
        if isinstance(outlet, Channel):
            outlet.on_space = self.update_reading
        self.update_reading()

    def add_stub(self, wrapper: ToxicWrapper) -> None:
        """Append a toxic at the end of the chain (its toxicity is drawn now)."""
        if self.closed:
            return
        stub = Stub(self, wrapper)
        if self.stubs:
            self.stubs[-1].output = stub.input
        else:
            self._set_head(stub.input)
        self.stubs.append(stub)
        stub.start()

    def update_stub(self, wrapper: ToxicWrapper) -> None:
        stub = self._find(wrapper)
        if stub is None or self.closed or stub.closed:
            return
        stub.interrupt()
        stub.start()

    def remove_stub(self, wrapper: ToxicWrapper) -> None:
        stub = self._find(wrapper)
        if stub is None:
            return
        index = self.stubs.index(stub)
        del self.stubs[index]
        if self.closed or stub.closed:
            stub.cancel()  # nothing flows any more: there is nowhere to deliver what it held
            return
        stub.interrupt()
        wrapper.toxic.cleanup(stub)
        if stub.closed:
            return
        # Splice the stub out: what waited for it moves on, and its input now leads straight to its output.
        for item in stub.input.take_all():
            stub.output.resolve().push(item)
        stub.input.redirect = stub.output
        if index > 0:
            self.stubs[index - 1].output = stub.output
        else:
            self._set_head(stub.output)

    def _find(self, wrapper: ToxicWrapper) -> Stub | None:
        for stub in self.stubs:
            if stub.wrapper is wrapper:
                return stub
        return None

    def stop(self) -> None:
        for stub in self.stubs:
            stub.cancel()
        self.stubs.clear()


class Connection:
    """A client connection to a proxy and its upstream connection."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.client = Side(self, "client")
        self.upstream: Side | None = None
        self.links: list[Link] = []
        self._connecting: asyncio.Task[None] | None = None
        self._done = False

    def client_connected(self, client: Side) -> None:
        self.proxy.connections.add(self)
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        proxy = self.proxy
        host, port = proxy.upstream_address()
        loop = asyncio.get_running_loop()
        upstream = Side(self, "upstream")
        try:
            await asyncio.wait_for(loop.create_connection(lambda: upstream, host, port), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            log.warning("upstream unreachable proxy=%s upstream=%s error=%s", proxy.name, proxy.upstream, exc)
            self.client.close()
            self._finish()
            return
        finally:
            self._connecting = None
        self.upstream = upstream
        if self.client.closed:
            upstream.close()
            return
        up = Link(self, UPSTREAM, self.client, upstream)
        down = Link(self, DOWNSTREAM, upstream, self.client)
        self.links = [up, down]
        proxy.toxics.start_link(up)
        proxy.toxics.start_link(down)
        self.client.attach(up, down)
        upstream.attach(down, up)

    def side_lost(self, side: Side) -> None:
        if side.out_link is not None:
            side.out_link.source_ended()
        if side.in_link is not None:
            side.in_link.closed = True
        up = self.upstream
        if self.client.closed and (up is None or up.closed) and self._connecting is None:
            self._finish()

    def linger_zero(self) -> None:
        self.client.linger_zero()
        if self.upstream is not None:
            self.upstream.linger_zero()

    def abort(self) -> None:
        """Drop the connection now (the proxy went down or was deleted)."""
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        self.client.abort()
        if self.upstream is not None:
            self.upstream.abort()
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        for link in self.links:
            link.stop()
            self.proxy.toxics.remove_link(link)
            counts = self.proxy.finished_bytes[link.direction]
            counts[0] += link.received
            counts[1] += link.sent
        self.proxy.connections.discard(self)
