"""The LLM benchmark's streaming client against a real loopback server that answers with canned bytes.

What it must get right: a request whose stream ends as the protocol says (a finish_reason, then `[DONE]`) is a
success even with 0 tokens (the model's end-of-text first: the "failed" requests of the first runs); a stream
cut before `[DONE]` and an error status are failures, counted by cause; SSE events split across chunked-encoding
chunks (and chunks holding several events) are parsed whole; the connection is kept alive between requests.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bench.llm import drive


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _text(text: str, finish: str | None = None) -> bytes:
    return _event({"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": text,
                                                                       "finish_reason": finish}]})


def _usage(n: int) -> bytes:
    return _event({"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n,
                                                       "total_tokens": 3 + n}})


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
# by prompt: what the server sends back (the body as a list of chunks of the chunked encoding)
ANSWERS: dict[str, list[bytes]] = {
    # three tokens; one event split over two chunks, two events in one chunk
    "three": [_text("a")[:9], _text("a")[9:] + _text("b"), _text("c"), _text("", "length") + _usage(3),
              b"data: [DONE]\n\n"],
    # the model's end-of-text first: no content, 0 tokens, finish_reason stop: a success
    "at-once": [_text("", "stop"), _usage(0), b"data: [DONE]\n\n"],
    # the body ends before [DONE] (a finish_reason came, the protocol's end did not): a failure
    "cut": [_text("a"), _text("", "length")],
    # the server drops the connection mid-stream: a failure, the next request on a new connection
    "dropped": [_text("a")],
}


async def _serve(connections: list[int]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            prompt = json.loads(await reader.readexactly(length))["prompt"]
            if prompt == "busy":
                body = b'{"error": "busy"}'
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                continue
            writer.write(HEAD)
            for part in ANSWERS[prompt]:
                writer.write(_chunk(part))
                await writer.drain()
            if prompt == "dropped":
                writer.close()
                return
            writer.write(_chunk(b""))
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_client_counts_protocol_ends_as_successes_and_the_rest_by_cause() -> None:
    async def main() -> tuple[dict[str, Any], int]:
        connections: list[int] = []
        server = await _serve(connections)
        port = server.sockets[0].getsockname()[1]
        async with server:
            prompts = ["three", "at-once", "three", "busy", "cut", "dropped", "three"]
            r = await drive(f"http://127.0.0.1:{port}", prompts, 1, 8)
        return r, len(connections)

    r, connections = asyncio.run(main())
    assert r["requests"] == 7
    assert r["failed"] == 3, r
    assert r["failures"] == {"503": 1, "stream ended without [DONE]": 1, "IncompleteReadError": 1}, r
    assert r["output_tokens"] == 9 and r["finished_at_once"] == 1, r
    assert r["finish_reasons"] == {"length": 3, "stop": 1}, r
    assert r["itl_ms"]["p50"] is not None and r["client_cpu_us_per_token"] > 0
    # kept alive through an error status and a short body; a new connection only after the dropped one
    assert connections == 2, connections
