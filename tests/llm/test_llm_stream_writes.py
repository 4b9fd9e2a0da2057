"""Streams written straight to the connection (services/llm/app.py `_Stream`): the raw HTTP bytes are well-formed
chunked SSE whose events add up to what the same request answers whole; a client reading slowly (the server's
buffer over its high-water mark: the stream waits, then writes what piled up as one chunk) still gets every byte;
a client hanging up while its stream waits for it aborts the request and frees its KV blocks; many streams at once
each get their own bytes."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

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
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 200"), raw[:300]
    assert b"transfer-encoding: chunked" in head.lower(), head
    chunks = []
    while True:
        size, sep, body = body.partition(b"\r\n")
        assert sep, "a chunk size line"
        n = int(size, 16)
        if n == 0:
            assert body == b"\r\n", body[:100]
            return head, chunks
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
    """Big chunks (5 alternatives per token) to a client with a tiny receive window that reads a little at a time:
    the server's writes back up, its streams wait for them and then coalesce; nothing is lost or reordered."""
    bodies = [(CHAT, {"messages": [{"role": "user", "content": f"Tell a story {i}"}], "max_tokens": 90,
                      "temperature": 0, "logprobs": True, "top_logprobs": 5}, True) for i in range(3)]
    bodies += [(COMPLETIONS, {"prompt": f"And God said {i}", "max_tokens": 100, "temperature": 0, "logprobs": 5},
                False) for i in range(3)]
    whole = {}
    for path, body, chat in bodies:
        r = server.client.post(path, json=body)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        whole[json.dumps(body)] = (choice["message"]["content"] if chat else choice["text"], choice["finish_reason"])

    def slow(item: tuple[str, dict, bool]) -> tuple[int, str, str | None, int]:
        path, body, chat = item
        s, data, path = _request(path, {**body, "stream": True}, rcvbuf=2048)
        with s:
            _send(s, server.port, path, data)
            time.sleep(1.0)  # the whole answer is generated meanwhile: it waits in the server's buffers
            raw = _read_all(s, pause_s=0.002, size=1024)
        _, chunks = _dechunk(raw)
        return (len(chunks), *_text(_events(chunks), chat))

    with ThreadPoolExecutor(len(bodies)) as pool:
        got = list(pool.map(slow, bodies))
    coalesced = 0
    for (path, body, _chat), (n_chunks, text, finish, n_lps) in zip(bodies, got, strict=True):
        assert (text, finish) == whole[json.dumps(body)], (path, body)
        tokens = server.client.post("/tokenize", json={"prompt": text}).json()["count"]
        assert n_lps >= tokens - 1, "every token's log-probability arrived"
        coalesced += n_chunks < n_lps
    assert coalesced, "no stream waited for its reader (the test's buffers are too large to back up?)"
    assert server.engine()["kv_blocks_used"] == 0 or wait_until(
        lambda: server.engine()["kv_blocks_used"] == 0, 10, what="blocks freed")


def test_a_reader_gone_while_its_stream_waits_aborts_it_and_frees_its_blocks(server) -> None:
    server.patch(step_delay_ms=25)  # 90 tokens take over 2 s: the hang-up comes before the end
    s, data, path = _request(CHAT, {"messages": [{"role": "user", "content": "Tell a long story"}],
                                    "max_tokens": 90, "stream": True, "logprobs": True, "top_logprobs": 5},
                             rcvbuf=2048)
    _send(s, server.port, path, data)
    wait_until(lambda: server.engine()["running"] == 1, 10, what="the stream running")
    time.sleep(0.8)  # never read: the server's buffer backs up and the stream waits
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
