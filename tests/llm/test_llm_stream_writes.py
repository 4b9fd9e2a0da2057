"""Streams written straight to the connection (services/llm/app.py `_Stream`): the raw HTTP bytes are well-formed
chunked SSE whose events add up to what the same request answers whole; a client reading slowly (the server's
buffer over its high-water mark: the stream waits, then writes what piled up as one chunk) still gets every byte;
a client that never reads and hangs up aborts the request and frees its KV blocks; many streams at once each get
their own bytes."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kit import wait_until

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def _request(path: str, body: dict, rcvbuf: int | None = None) -> tuple[socket.socket, bytes, str]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connecting: the window the server sees stays small
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(60)
    return s, json.dumps(body).encode(), path


def _send(s: socket.socket, port: int, path: str, data: bytes) -> None:
    s.connect(("127.0.0.1", port))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)


def _read_all(s: socket.socket, pause_s: float = 0.0, size: int = 65536) -> bytes:
    out = bytearray()
    while True:
        if pause_s:
            time.sleep(pause_s)
        data = s.recv(size)
        if not data:
            return bytes(out)
        out += data


def _dechunk(raw: bytes) -> tuple[bytes, list[bytes]]:
    """The head and the chunks of a chunked response; asserts the framing, the zero-length last chunk included."""
    head, chunks, rest = _dechunk_one(raw)
    assert rest == b"", rest[:100]
    return head, chunks


def _dechunk_one(raw: bytes) -> tuple[bytes, list[bytes], bytes]:
    """The first response in `raw` (head, chunks) and the bytes after it."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 200"), raw[:300]
    assert b"transfer-encoding: chunked" in head.lower(), head
    chunks = []
    while True:
        size, sep, body = body.partition(b"\r\n")
        assert sep, "a chunk size line"
        n = int(size, 16)
        if n == 0:
            assert body[:2] == b"\r\n", body[:100]
            return head, chunks, body[2:]
        assert body[n:n + 2] == b"\r\n", "a chunk ends with CRLF"
        chunks.append(body[:n])
        body = body[n + 2:]


def _events(chunks: list[bytes]) -> list[bytes]:
    """SSE events; each chunk holds whole events only."""
    events = []
    for c in chunks:
        assert c.endswith(b"\n\n"), c[-80:]
        events += [e for e in c.split(b"\n\n") if e]
    return events


def _text(events: list[bytes], chat: bool) -> tuple[str, str | None, int]:
    """The streamed text, the finish reason and the number of token log-probabilities."""
    assert events[-1] == b"data: [DONE]", events[-3:]
    text, finish, n = "", None, 0
    for e in events[:-1]:
        assert e.startswith(b"data: {"), e[:100]
        choice = json.loads(e[6:])["choices"][0]
        text += (choice["delta"].get("content") or "") if chat else choice["text"]
        finish = choice["finish_reason"] or finish
        lps = choice["logprobs"]
        n += len(lps["content"] if chat else lps["tokens"]) if lps else 0
    return text, finish, n


def test_a_slow_reader_gets_every_byte_and_the_whole_answer(server) -> None:
    """Big chunks (5 alternatives per token) pipelined on one connection to a client that reads nothing until the
    server is stuck, then a little at a time. The kernel's send buffer grows to tcp_wmem's maximum on loopback, so
    the requests add up to more than that: the later responses find the transport's buffer over its high-water
    mark, their streams wait and then write what piled up as one chunk. Nothing is lost or reordered, and each
    response is the answer its request gets whole."""
    bodies = [{"messages": [{"role": "user", "content": f"Tell a story {i}"}], "max_tokens": 90, "temperature": 0,
               "logprobs": True, "top_logprobs": 5} for i in range(4)]
    whole = []
    for body in bodies:
        r = server.client.post(CHAT, json=body)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        whole.append((choice["message"]["content"], choice["finish_reason"]))
    try:
        wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        wmem_max = 4 << 20
    n = (wmem_max + (1 << 20)) // 40_000 + 1  # a response is 60-90 kB
    done = lambda: server.metric("vllm:request_success_total")  # noqa: E731
    before = done()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connecting: the window stays small
    s.settimeout(60)
    with s:
        s.connect(("127.0.0.1", server.port))
        for i in range(n):  # HTTP/1.1 pipelining: the server answers them in turn
            data = json.dumps({**bodies[i % 4], "stream": True}).encode()
            close = "close" if i == n - 1 else "keep-alive"
            s.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(data)}\r\nConnection: {close}\r\n\r\n".encode() + data)
        last, still = done(), 0
        while still < 5:  # until the server stopped answering: its buffers are full
            time.sleep(0.2)
            now = done()
            still = still + 1 if now == last else 0
            last = now
        assert last - before < n, "every response fitted in the buffers: nothing waited for the reader"
        raw = _read_all(s, pause_s=0.001, size=8192)
    coalesced = 0
    for i in range(n):
        _, chunks, raw = _dechunk_one(raw)
        text, finish, n_lps = _text(_events(chunks), chat=True)
        assert (text, finish) == whole[i % 4], i
        assert n_lps >= len(text), "every token's log-probability arrived"
        coalesced += len(chunks) < n_lps + 1  # the opening chunk (the role) aside
    assert raw == b""
    assert coalesced, "no stream waited for its reader: the back-pressure path was not taken"
    assert wait_until(lambda: server.engine()["kv_blocks_used"] == 0, 10, what="blocks freed")


def test_a_reader_that_never_reads_and_hangs_up_aborts_it_and_frees_its_blocks(server) -> None:
    server.patch(step_delay_ms=25)  # 90 tokens take over 2 s: the hang-up comes before the end
    s, data, path = _request(CHAT, {"messages": [{"role": "user", "content": "Tell a long story"}],
                                    "max_tokens": 90, "stream": True, "logprobs": True, "top_logprobs": 5},
                             rcvbuf=2048)
    _send(s, server.port, path, data)
    wait_until(lambda: server.engine()["running"] == 1, 10, what="the stream running")
    time.sleep(0.8)  # never read
    assert server.engine()["running"] == 1
    s.close()
    started = time.monotonic()
    wait_until(lambda: (e := server.engine())["running"] == 0 and e["waiting"] == 0, 10,
               what="the abandoned stream aborted")
    assert time.monotonic() - started < 1.5, "ran on to max_tokens instead of aborting"
    assert wait_until(lambda: server.engine()["kv_blocks_used"] == 0, 10, what="its KV blocks freed")
    assert server.complete("In the beginning", max_tokens=4)["choices"][0]["finish_reason"]


def test_many_streams_at_once_each_get_their_own_bytes(server) -> None:
    """32 concurrent streams (seeded, so each answer is known): each connection carries well-formed chunks of its
    own request only, with the usage chunk and [DONE] last; keep-alive connections serve a second stream too."""
    import httpx

    def body(i: int) -> dict:
        return {"prompt": f"And it came to pass {i}", "max_tokens": 40, "seed": i, "temperature": 0.9}

    whole = [server.client.post(COMPLETIONS, json=body(i)).json()["choices"][0]["text"] for i in range(32)]

    def stream(i: int) -> str:
        s, data, path = _request(COMPLETIONS, {**body(i), "stream": True,
                                               "stream_options": {"include_usage": True}})
        with s:
            _send(s, server.port, path, data)
            _, chunks = _dechunk(_read_all(s))
        events = _events(chunks)
        usage = json.loads(events[-2][6:])
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 0, events[-2]
        ids = {json.loads(e[6:])["id"] for e in events[:-1]}
        assert len(ids) == 1, ids
        return _text(events[:-2] + events[-1:], chat=False)[0]

    with ThreadPoolExecutor(32) as pool:
        assert list(pool.map(stream, range(32))) == whole
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
        for i in range(2):  # one connection, two streams in turn
            with client.stream("POST", COMPLETIONS, json={**body(i), "stream": True}) as r:
                text = "".join(json.loads(line[6:])["choices"][0]["text"] for line in r.iter_lines()
                               if line.startswith("data: {"))
            assert text == whole[i]
