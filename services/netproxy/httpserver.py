"""A minimal asyncio HTTP/1.1 server for the control API: keep-alive, Content-Length or chunked bodies, limits.

Small on purpose: the API is a handful of JSON routes, and the netproxy must run on the standard library alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

log = logging.getLogger("netproxy.http")

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
IDLE_TIMEOUT = 60.0
READ_TIMEOUT = 15.0
LINGER_BYTES = 64 * 1024 * 1024  # after refusing a request, drop at most this much of its body ...
LINGER_SECONDS = 5.0  # ... for at most this long, then close


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def segments(self) -> list[str]:
        return [unquote(part) for part in self.path.split("/")[1:]]


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def serve(handler: Handler, host: str, port: int) -> asyncio.AbstractServer:
    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(handler, reader, writer)

    return await asyncio.start_server(on_client, host, port, limit=MAX_HEADER_BYTES)


async def _serve_connection(handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                await _write(writer, _plain(431, "request header too large"), keep_alive=False)
                return
            try:
                request, keep_alive = _parse_head(head)
                request.body = await asyncio.wait_for(_read_body(request, reader, writer), READ_TIMEOUT)
            except BadRequest as exc:
                await _write(writer, _plain(exc.status, exc.message), keep_alive=False)
                await _linger(reader)
                return
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            try:
                response = await handler(request)
            except Exception:
                log.exception("handler failed method=%s path=%s", request.method, request.path)
                response = _plain(500, "internal error")
            await _write(writer, response, keep_alive)
            if not keep_alive:
                return
    finally:
        writer.close()


def _parse_head(head: bytes) -> tuple[Request, bool]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest(400, "bad request") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "malformed header line")
        headers[name.lower()] = value.strip()
    path = urlsplit(target).path or "/"
    connection = headers.get("connection", "").lower()
    keep_alive = ("keep-alive" in connection) if version == "HTTP/1.0" else ("close" not in connection)
    return Request(method.upper(), path, headers), keep_alive


async def _read_body(request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    headers = request.headers
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length_text = headers.get("content-length")
    if not chunked and length_text is None:
        return b""
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if chunked:
        return await _read_chunked(reader)
    if not length_text.isdigit():  # type: ignore[union-attr]
        raise BadRequest(400, "invalid Content-Length")
    length = int(length_text)  # type: ignore[arg-type]
    if length > MAX_BODY_BYTES:
        raise BadRequest(413, "request body too large")
    return await reader.readexactly(length)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise BadRequest(400, "malformed chunk size") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise BadRequest(413, "request body too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _linger(reader: asyncio.StreamReader) -> None:
    """Read and drop what a refused client is still sending (bounded), like Go's lingering close: closing with
    unread data resets the connection, and the client would see "connection reset" instead of our 413/400."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_SECONDS
    dropped = 0
    try:
        while dropped < LINGER_BYTES and (left := deadline - loop.time()) > 0:
            chunk = await asyncio.wait_for(reader.read(64 * 1024), left)
            if not chunk:
                return
            dropped += len(chunk)
    except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
        return


def _plain(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode(), "text/plain; charset=utf-8")


async def _write(writer: asyncio.StreamWriter, response: Response, keep_alive: bool) -> None:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    if response.status != 204:
        lines.append(f"Content-Type: {response.content_type}")
        lines.append(f"Content-Length: {len(response.body)}")
    for name, value in response.headers.items():
        lines.append(f"{name}: {value}")
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    try:
        writer.write(head + (response.body if response.status != 204 else b""))
        await writer.drain()
    except ConnectionError:
        pass
