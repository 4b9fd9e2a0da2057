"""services.common.httpclient against real TCP servers on loopback that misbehave on purpose.

Each server is a few lines of asyncio with a scripted reply per request, so every failure the gateway's retry
logic depends on (refused, timeout, partial answer, garbage, peer closing a pooled connection) is real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from services.common.httpclient import ConnectError, ConnectionClosed, HttpClient, ProtocolError, UpstreamTimeout

Reply = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


def ok(body: bytes = b'{"ok": true}', extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


class Server:
    """Counts connections and requests; `reply(n, reader, writer)` answers request n, False closes."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                if not await self.reply(self.requests, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run the scenario on asyncio's own loop and on uvloop (what the services use): transports differ."""
    for factory in (asyncio.new_event_loop, uvloop.new_event_loop):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(asyncio.wait_for(main(), timeout=30))  # type: ignore[arg-type]


def test_keep_alive_reuses_one_connection() -> None:
    async def reply(n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(ok(f'{{"n": {n}}}'.encode()))
        return True

    async def main() -> None:
        async with Server(reply) as server:
            client = HttpClient()
            for i in range(1, 6):
                resp = await client.request("POST", "127.0.0.1", server.port, "/x", b'{"a": 1}', timeout=2)
                assert resp.status == 200 and resp.body == f'{{"n": {i}}}'.encode()
            assert server.connections == 1
            assert client.idle_connections("127.0.0.1", server.port) == 1
            await client.aclose()

    run(main)


def test_reconnects_when_peer_closed_a_pooled_connection() -> None:
    async def reply(n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(ok())
        await w.drain()
        return False  # close right after answering, without saying Connection: close (a proxy drop)

    async def main() -> None:
        async with Server(reply) as server:
            client = HttpClient()
            for _ in range(3):
                await asyncio.sleep(0.05)  # let the close arrive, or race it: both must work
                resp = await client.request("GET", "127.0.0.1", server.port, "/", timeout=2)
                assert resp.status == 200
            for _ in range(3):  # back to back: the stale-connection retry path
                assert (await client.request("GET", "127.0.0.1", server.port, "/", timeout=2)).status == 200
            assert server.connections == 6
            await client.aclose()

    run(main)


def test_connection_close_header_is_honoured_and_chunked_bodies_assembled() -> None:
    async def reply(n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nX-A: b\r\n\r\n"
                b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.2)  # keep the socket open: the client must close on its own accord
        return False

    async def main() -> None:
        async with Server(reply) as server:
            client = HttpClient()
            resp = await client.request("GET", "127.0.0.1", server.port, "/", timeout=2)
            assert (resp.status, resp.body, resp.headers["x-a"]) == (201, b"abcdefg", "b")
            assert client.idle_connections("127.0.0.1", server.port) == 0
            await client.aclose()

    run(main)


def test_timeout_then_fresh_connection() -> None:
    async def reply(n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if n == 1:
            await asyncio.sleep(1.0)  # answer late: must never be read as the next request's answer
            w.write(ok(b'"late"'))
            return True
        w.write(ok(b'"second"'))
        return True

    async def main() -> None:
        async with Server(reply) as server:
            client = HttpClient()
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout):
                await client.request("GET", "127.0.0.1", server.port, "/", timeout=0.2)
            assert 0.15 <= time.monotonic() - started < 0.9
            resp = await client.request("GET", "127.0.0.1", server.port, "/", timeout=3)
            assert resp.body == b'"second"'
            assert server.connections == 2
            await client.aclose()

    run(main)


def test_refused_is_connect_error() -> None:
    async def main() -> None:
        async with Server(lambda *a: asyncio.sleep(0, True)) as server:
            port = server.port
        await asyncio.sleep(0.05)
        with pytest.raises(ConnectError):
            await HttpClient().request("GET", "127.0.0.1", port, "/", timeout=2)

    run(main)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", ConnectionClosed),  # truncated body
        (b"HTTP/1.1 200 OK\r\nContent-Le", ConnectionClosed),  # truncated headers
        (b"SSH-2.0-OpenSSH_9.6\r\n", ProtocolError),  # not HTTP
        (b"", ConnectionClosed),  # closed before any byte, on a fresh connection: not retried
    ],
)
def test_partial_or_garbage_answers_are_protocol_errors(raw: bytes, error: type[Exception]) -> None:
    async def reply(n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(raw)
        await w.drain()
        return False

    async def main() -> None:
        async with Server(reply) as server:
            client = HttpClient()
            with pytest.raises(ProtocolError) as caught:
                await client.request("GET", "127.0.0.1", server.port, "/", timeout=2)
            assert type(caught.value) is error
            assert server.requests == 1
            await client.aclose()

    run(main)


def test_concurrent_requests_use_separate_connections() -> None:
    async def reply(n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        w.write(ok(str(n).encode()))
        return True

    async def main() -> None:
        async with Server(reply) as server:
            client = HttpClient()
            results = await asyncio.gather(
                *(client.request("GET", "127.0.0.1", server.port, "/", timeout=3) for _ in range(20))
            )
            assert all(r.status == 200 for r in results)
            assert server.connections == 20
            # Now pooled: another round reuses them instead of opening new ones.
            await asyncio.gather(*(client.request("GET", "127.0.0.1", server.port, "/", timeout=3) for _ in range(20)))
            assert server.connections == 20
            await client.aclose()

    run(main)
