"""A lean asyncio HTTP/1.1 client with keep-alive pools, for service-to-service calls over loopback.

Why not httpx: on the gateway's hot path (two upstream calls per scored transaction) httpx's per-request
overhead costs several times more CPU than the whole rest of the request (see docs/gateway.md for figures).
This client does only what our hops need: one request per connection at a time, Content-Length or chunked
responses (parsed by httptools, which uvicorn already depends on), per-request deadlines, and a pool of idle
connections per (host, port).

Failure semantics (what the gateway's retry logic relies on):
- `ConnectError`: the TCP connection could not be opened (refused, proxy disabled...).
- `UpstreamTimeout`: no complete response before the deadline; the connection is closed, never reused.
- `ConnectionClosed` (a `ProtocolError`): the peer closed or reset the connection before a complete response
  (e.g. a proxy whose upstream is down accepts, then closes).
- `ProtocolError`: the bytes were not HTTP.
A pooled connection the server (or a proxy) closed while it sat idle is detected, and a request that fails on
such a reused connection before any response byte arrived is retried once on a fresh connection: that is the
normal keep-alive race, not an upstream failure.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import httptools

__all__ = [
    "ConnectError",
    "ConnectionClosed",
    "HttpClient",
    "HttpError",
    "ProtocolError",
    "Response",
    "UpstreamTimeout",
]


class HttpError(Exception):
    """Base of every failure this client raises."""


class ConnectError(HttpError):
    pass


class UpstreamTimeout(HttpError):
    pass


class ProtocolError(HttpError):
    pass


class ConnectionClosed(ProtocolError):
    """The peer closed (or reset) the connection before the response was complete."""


class _StaleConnection(HttpError):
    """A reused connection died before any response byte: safe to retry once on a fresh one."""


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; httptools parser callbacks assemble the current response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._chunks: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._got_bytes = False
        self._keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Bytes nobody asked for (e.g. a 408 before closing): the connection's state is unknown now.
            self.close()
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self.reused and not self._got_bytes:
                self._fail(_StaleConnection("keep-alive connection closed by peer"))
            else:
                reason = f" ({exc})" if exc else ""
                self._fail(ConnectionClosed(f"connection closed before the response was complete{reason}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._parser.get_status_code(), b"".join(self._chunks), self._headers))

    # ours
    def send(self, data: bytes, waiter: asyncio.Future[Response]) -> None:
        self._waiter = waiter
        self._chunks = []
        self._headers = {}
        self._got_bytes = False
        if self.closed or self.transport is None or self.transport.is_closing():
            if self.reused:
                self._fail(_StaleConnection("pooled connection closed before sending"))
            else:
                self._fail(ConnectionClosed("connection closed by the peer right after connecting"))
            return
        self.transport.write(data)

    def finished_cleanly(self) -> bool:
        return not self.closed and self._keep_alive

    def _fail(self, exc: HttpError) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """Keep-alive pools per (host, port). Create one per process, inside the running event loop."""

    def __init__(self, max_idle_per_host: int = 128, user_agent: str = "faultline") -> None:
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}
        self._max_idle = max_idle_per_host
        self._user_agent = user_agent

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        path: str,
        body: bytes | None = None,
        timeout: float = 5.0,
        content_type: str = "application/json",
    ) -> Response:
        """One request with a deadline covering connect, send and the whole response."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {self._user_agent}\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode("latin-1") + (body or b"")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            return await self._attempt(loop, host, port, data, deadline)
        except _StaleConnection:
            return await self._attempt(loop, host, port, data, deadline, fresh=True)

    async def _attempt(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        data: bytes,
        deadline: float,
        fresh: bool = False,
    ) -> Response:
        key = (host, port)
        conn = None if fresh else self._take_idle(key)
        if conn is None:
            conn = await self._connect(loop, host, port, deadline)
        waiter: asyncio.Future[Response] = loop.create_future()
        conn.send(data, waiter)
        handle = loop.call_at(deadline, _expire, waiter)
        try:
            response = await waiter
        except BaseException:
            # Timeout, protocol error or cancellation: a late response could land on the next request.
            conn.close()
            raise
        finally:
            handle.cancel()
        if conn.finished_cleanly():
            self._give_back(key, conn)
        else:
            conn.close()
        return response

    async def _connect(self, loop: asyncio.AbstractEventLoop, host: str, port: int, deadline: float) -> _Connection:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise UpstreamTimeout(f"deadline passed before connecting to {host}:{port}")
        try:
            async with asyncio.timeout(remaining):
                _, conn = await loop.create_connection(_Connection, host, port)
        except TimeoutError:
            raise UpstreamTimeout(f"connect to {host}:{port} timed out") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        return conn

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        pool = self._idle.get(key)
        while pool:
            conn = pool.pop()  # most recently used first: least likely to have been closed by the peer
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                conn.reused = True
                return conn
        return None

    def _give_back(self, key: tuple[str, int], conn: _Connection) -> None:
        pool = self._idle.get(key)
        if pool is None:
            pool = self._idle[key] = deque()
        if len(pool) >= self._max_idle:
            pool.popleft().close()
        pool.append(conn)

    def idle_connections(self, host: str, port: int) -> int:
        return sum(1 for c in self._idle.get((host, port), ()) if not c.closed)

    async def aclose(self) -> None:
        for pool in self._idle.values():
            while pool:
                pool.pop().close()
        self._idle.clear()


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("no complete response before the deadline"))
