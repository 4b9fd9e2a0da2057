"""A small real HTTP peer standing in for the gateway: answers /v1/score and /v1/feedback and records both.

Run as its own process (`python tests/loadgen/lgpeer.py --port P`) so the load generator talks real HTTP to a
real server. Like the gateway, feedback for a transaction it never scored is a 404. Knobs (POST /peer/config):
  score_delay_ms        added latency on /v1/score
  feedback_fail_first   every Nth scored transaction's first feedback attempt gets a 503 (exercises retries)
  feedback_reject_every every Nth scored transaction's feedback is a permanent 404
GET /peer/log?since_score=i&since_feedback=j returns what was received (bodies, monotonic receive times).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs

import uvicorn

State = dict[str, Any]


def new_state() -> State:
    return {
        "config": {"score_delay_ms": 0, "feedback_fail_first": 0, "feedback_reject_every": 0},
        "scores": [],
        "feedback": [],
        "index": {},
        "attempts": {},
    }


STATE = new_state()


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(chunks)


async def _send_json(send: Any, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _score(body: dict[str, Any]) -> tuple[int, Any]:
    txn = body.get("transaction_id")
    if not isinstance(txn, str):
        return 422, {"detail": "transaction_id: field required"}
    STATE["index"][txn] = len(STATE["scores"])
    STATE["scores"].append({"t": time.monotonic(), "body": body})
    return 200, {"transaction_id": txn, "score": 0.01, "decision": "approve", "model_version": "peer"}


def _feedback(body: dict[str, Any]) -> tuple[int, Any]:
    cfg = STATE["config"]
    txn = body.get("transaction_id")
    idx = STATE["index"].get(txn)
    attempt = STATE["attempts"].get(txn, 0) + 1
    STATE["attempts"][txn] = attempt
    if idx is None or cfg["feedback_reject_every"] and idx % cfg["feedback_reject_every"] == 0:
        status = 404
    elif cfg["feedback_fail_first"] and idx % cfg["feedback_fail_first"] == 0 and attempt == 1:
        status = 503
    else:
        status = 202
    STATE["feedback"].append(
        {"t": time.monotonic(), "transaction_id": txn, "label": body.get("label"), "status": status}
    )
    if status == 202:
        return 202, {"status": "accepted"}
    return status, {"detail": f"peer answered {status}"}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    raw = await _body(receive)
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        await _send_json(send, 400, {"detail": "bad json"})
        return
    if method == "POST" and path == "/v1/score":
        delay = STATE["config"]["score_delay_ms"]
        if delay:
            await asyncio.sleep(delay / 1000)
        status, payload = _score(body)
    elif method == "POST" and path == "/v1/feedback":
        status, payload = _feedback(body)
    elif method == "GET" and path == "/peer/log":
        qs = parse_qs(scope.get("query_string", b"").decode())
        i = int(qs.get("since_score", ["0"])[0])
        j = int(qs.get("since_feedback", ["0"])[0])
        status, payload = (
            200,
            {
                "now": time.monotonic(),
                "n_scores": len(STATE["scores"]),
                "n_feedback": len(STATE["feedback"]),
                "scores": STATE["scores"][i:],
                "feedback": STATE["feedback"][j:],
            },
        )
    elif method == "POST" and path == "/peer/config":
        STATE["config"].update(body)
        status, payload = 200, STATE["config"]
    elif method == "GET" and path == "/healthz":
        status, payload = 200, {"status": "ok"}
    else:
        status, payload = 404, {"detail": f"no route {method} {path}"}
    await _send_json(send, status, payload)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, loop="uvloop", http="httptools"
    )


if __name__ == "__main__":
    main()
