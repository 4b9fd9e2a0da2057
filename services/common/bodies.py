"""A request body read under a size limit, for every service that takes one (the gateway's LLM routes, the LLM
replica, the registry's training requests): refused by its Content-Length before a byte is read, else while a
chunked body streams in, so a huge body is neither waited for nor held in memory."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body is over the limit; the caller answers 413 in its own error shape."""


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
