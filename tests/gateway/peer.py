"""A scriptable model-replica stand-in for testing the gateway's resilience logic in isolation.

Run as its own process: `python tests/gateway/peer.py --port P --replica model-1`. It speaks the model
server's /v1/predict wire format, but its behaviour is set through `POST /script`:
  {"mode": "ok" | "error" | "nan" | "garbage" | "truncate" | "hang", "delay_ms": 0, "version": "v1", "score": null}
- ok: 200 with a score (fixed `score`, or a deterministic function of the row), echoing the requested version
- error: 500; nan: 200 with the bare NaN token; garbage: 200 with a non-JSON body
- truncate: start a 200 answer and drop the connection mid-body; hang: never answer
GET /stats returns how many predictions it received, by version. It is a test peer, not a model server: the
end-to-end tests use the real one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from typing import Any

import uvicorn

STATE: dict[str, Any] = {"mode": "ok", "delay_ms": 0.0, "version": "v1", "score": None}
STATS: Counter[str] = Counter()
REPLICA = "peer"


async def _read(receive: Any) -> bytes:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def _send(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    body = await _read(receive)
    if path == "/script":
        STATE.update(json.loads(body))
        STATS.clear()
        await _send(send, 200, json.dumps(STATE).encode())
    elif path == "/stats":
        await _send(send, 200, json.dumps(dict(STATS)).encode())
    elif path in ("/healthz", "/readyz"):
        status = 503 if STATE["mode"] == "hang" else 200
        await _send(send, status, b'{"status": "ok"}')
    elif path == "/v1/predict":
        await _predict(body, send)
    else:
        await _send(send, 404, b'{"detail": "not found"}')


async def _predict(body: bytes, send: Any) -> None:
    request = json.loads(body)
    version = request.get("version") or STATE["version"]
    STATS[version] += 1
    if STATE["delay_ms"]:
        await asyncio.sleep(STATE["delay_ms"] / 1000.0)
    mode = STATE["mode"]
    if mode == "hang":
        await asyncio.sleep(3600)
    if mode == "truncate":
        # Promise 100 bytes, send 10, then fail: uvicorn can only drop the connection mid-response.
        headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"scores":', "more_body": True})
        raise RuntimeError("scripted connection drop")
    if mode == "error":
        await _send(send, 500, b'{"detail": "scripted error"}')
        return
    if mode == "garbage":
        await _send(send, 200, b"<html>not json")
        return
    rows = request["rows"]
    if mode == "nan":
        scores = "[" + ",".join("NaN" for _ in rows) + "]"
    else:
        fixed = STATE["score"]
        scores = json.dumps([fixed if fixed is not None else round((row["hour"] % 10) / 10, 2) for row in rows])
    answer = (
        f'{{"scores": {scores}, "model_version": "{version}", "sha256": "0", "replica": "{REPLICA}",'
        f' "queue_ms": 0.0, "compute_ms": 0.1}}'
    )
    await _send(send, 200, answer.encode())


def main() -> None:
    global REPLICA
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replica", default="peer")
    args = parser.parse_args()
    REPLICA = args.replica
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="critical", access_log=False,
                loop="uvloop", http="httptools", timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
