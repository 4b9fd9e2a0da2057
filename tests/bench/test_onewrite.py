"""services/common/onewrite.py: a response's header block and body leave in one write, nothing is held past the
loop iteration, and a real uvicorn server on it answers plain, HEAD, chunked and keep-alive requests correctly."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn

from lab.ports import free_port
from services.common.onewrite import OneWriteHttpTools, OneWriteTransport


class Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


def test_header_block_and_body_are_one_write_and_nothing_is_held_past_the_iteration() -> None:
    async def scenario() -> list[list[bytes]]:
        loop = asyncio.get_running_loop()
        seen = []
        rec = Recorder()
        t = OneWriteTransport(rec, loop)
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert rec.writes == []  # held for the body
        t.write(b"{}")
        seen.append(list(rec.writes))
        rec.writes.clear()
        t.write(b"HTTP/1.1 204 No Content\r\n\r\n")  # no body follows: flushed at the end of this iteration
        await asyncio.sleep(0)
        seen.append(list(rec.writes))
        rec.writes.clear()
        t.write(b"a chunk")  # not a header block: straight through
        seen.append(list(rec.writes))
        rec.writes.clear()
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.close()  # closing flushes first
        seen.append(list(rec.writes))
        assert rec.closed and t.get_write_buffer_size() == 0
        return seen

    one, alone, chunk, closing = asyncio.run(scenario())
    assert one == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert alone == [b"HTTP/1.1 204 No Content\r\n\r\n"]
    assert chunk == [b"a chunk"]
    assert closing == [b"HTTP/1.1 200 OK\r\n\r\n"]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"ok":true}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    headers = head.lower()
    if b"transfer-encoding: chunked" in headers:
        while not rest.endswith(b"0\r\n\r\n"):
            rest += sock.recv(65536)
    elif b"content-length: " in headers and not head.startswith(b"HEAD"):
        length = int(headers.split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(rest) < length and not head.endswith(b"HEAD"):
            more = sock.recv(65536)
            if not more:
                break
            rest += more
    return head + b"\r\n\r\n" + rest


def test_a_real_uvicorn_server_on_it_answers_plain_head_chunked_and_keep_alive() -> None:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=OneWriteHttpTools, loop="uvloop",
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.02)
        assert server.started
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(3):  # keep-alive: the same connection answers again
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                resp = _read_response(sock)
                assert resp.startswith(b"HTTP/1.1 200 OK\r\n") and resp.endswith(b'\r\n\r\n{"ok":true}'), resp
            sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n"), head
            sock.sendall(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = _read_response(sock)
            assert b"transfer-encoding: chunked" in resp.lower()
            assert resp.endswith(b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"), resp
    finally:
        server.should_exit = True
        thread.join(10)
