"""Guards in front of the lab server's app: a body-size limit and, when the lab listens beyond loopback, a token.

- `BodyLimit`: a request body larger than `max_bytes` is a 413 before anything parses it. FastAPI would
  otherwise buffer and parse any size (and echo a 10 MB input back in its 422).
- `TokenGuard`: with a token configured, every /api request must carry it (`Authorization: Bearer T` or
  `X-Faultline-Token: T`), else 401; so must every other request (the UI's pages) from a non-loopback peer. The
  lab can stop services and start processes on this machine: bound to anything but loopback it must not answer
  strangers. The UI stays usable from a browser on the machine itself (its own loopback Host and CSRF checks
  apply); a Host header is no proof of where a request comes from, the peer address is.
- `is_loopback(host)`: what counts as loopback for `--host` (the CLI refuses anything else without a token).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any

ASGIApp = Callable[[dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]

MAX_BODY_BYTES = 1024 * 1024
TOKEN_HEADER = "x-faultline-token"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _send_json(send: Callable[..., Awaitable[Any]], status: int, detail: str,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over `max_bytes` with a 413 (by Content-Length, or while reading a chunked body)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        # Read the body here (at most max_bytes are ever held) and replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect like the server would

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        await _send_json(send, 413, f"request body larger than {self.max_bytes} bytes")


class TokenGuard:
    """With a token set, /api requests (and any request from a non-loopback peer) without it get a 401."""

    def __init__(self, app: ASGIApp, token: str, prefix: str = "/api") -> None:
        self.app = app
        self.token = token.encode()
        self.prefix = prefix

    def _sent(self, scope: dict[str, Any]) -> bytes | None:
        headers = dict(scope.get("headers") or [])
        direct = headers.get(TOKEN_HEADER.encode())
        if direct is not None:
            return direct.strip()
        auth = headers.get(b"authorization", b"")
        scheme, _, value = auth.partition(b" ")
        return value.strip() if scheme.lower() == b"bearer" and value.strip() else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        client = scope.get("client") or ("", 0)
        api = path == self.prefix or path.startswith(self.prefix + "/")
        if scope["type"] == "http" and (api or not is_loopback(str(client[0]))):
            sent = self._sent(scope)
            if sent is None or not hmac.compare_digest(sent, self.token):
                why = "missing" if sent is None else "wrong"
                await _send_json(send, 401, f"{why} token: this lab requires `Authorization: Bearer <token>` "
                                 "(the token given to `faultline serve/up --token` or FAULTLINE_TOKEN)",
                                 [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)
