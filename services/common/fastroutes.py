"""Raw ASGI handling for a service's hot routes, in front of its FastAPI app.

FastAPI's routing, dependency injection and response machinery cost more CPU per request than the gateway's
own work; at the lab's target rate (1,000+ scored transactions a second on 2 shared cores) that matters. Hot
routes therefore get a plain `async (method, path, query, body) -> (status, body_bytes, headers)` handler;
everything else (health, metrics, admin, docs) falls through to the FastAPI app unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.common import fastjson

Handler = Callable[[str, str, bytes, bytes], Awaitable[tuple[int, bytes]]]
ASGIApp = Callable[[dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
MAX_BODY_BYTES = 64 * 1024

log = logging.getLogger("fastroutes")


def json_error(status: int, detail: str, **extra: Any) -> tuple[int, bytes]:
    return status, fastjson.dumps({"detail": detail, **extra})


class FastRoutes:
    """Dispatch exact paths and path prefixes to raw handlers; anything else goes to `app`.

    A handler gets (method, path, query_string, body). It must not raise for bad input; an unexpected
    exception is logged and answered with a 500 so one bug never takes the connection down.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._exact: dict[str, Handler] = {}
        self._prefix: list[tuple[str, Handler]] = []

    def exact(self, path: str, handler: Handler) -> None:
        self._exact[path] = handler

    def prefix(self, prefix: str, handler: Handler) -> None:
        self._prefix.append((prefix, handler))

    def _find(self, path: str) -> Handler | None:
        handler = self._exact.get(path)
        if handler is not None:
            return handler
        for prefix, h in self._prefix:
            if path.startswith(prefix):
                return h
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handler = self._find(scope["path"])
        if handler is None:
            await self.app(scope, receive, send)
            return
        body = b""
        if scope["method"] in ("POST", "PUT", "PATCH"):
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    await _respond(send, *json_error(413, f"request body larger than {MAX_BODY_BYTES} bytes"))
                    return
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)
        try:
            status, payload = await handler(scope["method"], scope["path"], scope["query_string"], body)
        except Exception:
            log.exception("unhandled error path=%s", scope["path"])
            status, payload = json_error(500, "internal error (see the service log)")
        await _respond(send, status, payload)


async def _respond(send: Any, status: int, payload: bytes) -> None:
    # An explicit Content-Length keeps uvicorn from switching to chunked encoding.
    headers = [*JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
