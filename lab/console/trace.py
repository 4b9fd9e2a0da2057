"""`trace`: send a few real scoring requests through the public endpoint (the gateway's proxy) and show the
slowest, hop by hop — feature lookup, model call, and every attempt at a replica — as a tracing tool would.

The requests are ordinary transactions on known cards, asked of the feature store (`GET /v1/sample`, through its
part's client: it knows the population that seeded it) with ids of their own (`trace-...`), so they never collide
with the load generator's feedback.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import httpx

from lab import parts
from lab.console.base import ConsoleContext, ConsoleError, OpResult, num, operation, table
from lab.parts.client import PartError
from lab.stackclients import lab_clients

DEFAULT_LIMIT = 5
PARALLEL = 4
TIMEOUT_S = 10.0
POOL_SIZE = 100  # the most `trace` sends
_POOLS: dict[str, list[dict[str, Any]]] = {}


def _pool(ctx: Any) -> list[dict[str, Any]]:
    """A fresh sample from the feature store, kept per store: when it does not answer (stopped by a fault, the
    very incident being traced), the last sample it gave stands in."""
    source = parts.providing("transactions").name  # the feature store: it knows the cards that seeded it
    url = ctx.stack.topology.service_url(source)
    try:
        rows = ctx.http.client(source).sample(POOL_SIZE)
    except PartError as exc:
        if url in _POOLS:
            return _POOLS[url]
        raise ConsoleError(f"trace needs sample transactions from {source}: {exc.message}", 503) from exc
    _POOLS[url] = rows
    return rows


def warm(lab: Any, timeout_s: float = 600.0) -> threading.Thread:
    """Fetch a first sample as soon as the stack runs (in the background), so `trace` works even when the feature
    store is down before anyone traced."""

    def run() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if getattr(lab.stack, "phase", None) in ("running", "degraded"):
                with contextlib.suppress(ConsoleError):
                    _pool(SimpleNamespace(stack=lab.stack, http=lab_clients(lab)))
                    return
            time.sleep(1.0)

    thread = threading.Thread(target=run, name="trace-warm", daemon=True)
    thread.start()
    return thread


def _requests(ctx: ConsoleContext, n: int) -> list[dict[str, Any]]:
    rows = list(_pool(ctx))
    random.shuffle(rows)
    tag = secrets.token_hex(3)
    out = []
    for i, row in enumerate(rows[:n]):
        body = {k: v for k, v in row.items() if k != "label"}
        body["transaction_id"] = f"trace-{tag}-{i}"
        out.append(body)
    return out


def _send(client: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        r = client.post(url, json=body)
    except httpx.HTTPError as exc:
        return {"transaction_id": body["transaction_id"], "ok": False, "status": None,
                "error": f"{type(exc).__name__}: {exc}"[:200], "total_ms": None}
    elapsed_ms = r.elapsed.total_seconds() * 1000
    if r.status_code != 200:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        return {"transaction_id": body["transaction_id"], "ok": False, "status": r.status_code,
                "error": str(detail)[:200], "total_ms": round(elapsed_ms, 2)}
    got = r.json()
    timings = got.get("timings") or {}
    return {"transaction_id": body["transaction_id"], "ok": True, "status": 200,
            "client_ms": round(elapsed_ms, 2), "total_ms": timings.get("total_ms"),
            "features_ms": timings.get("features_ms"), "model_ms": timings.get("model_ms"),
            "attempts": timings.get("attempts") or [], "replica": got.get("replica"),
            "model_version": got.get("model_version"), "fallback": got.get("fallback")}


def _by_replica(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        for a in r.get("attempts") or []:
            d = out.setdefault(a.get("replica") or "?", {"attempts": 0, "ms": [], "outcomes": {}})
            d["attempts"] += 1
            if a.get("ms") is not None:
                d["ms"].append(float(a["ms"]))
            d["outcomes"][a.get("outcome")] = d["outcomes"].get(a.get("outcome"), 0) + 1
    return {name: {"attempts": d["attempts"], "mean_ms": round(sum(d["ms"]) / len(d["ms"]), 2) if d["ms"] else None,
                   "max_ms": round(max(d["ms"]), 2) if d["ms"] else None, "outcomes": d["outcomes"]}
            for name, d in sorted(out.items())}


@operation("trace")
def trace(ctx: ConsoleContext, args: Any) -> OpResult:
    limit = args.limit or DEFAULT_LIMIT
    sent = min(POOL_SIZE, max(4 * limit, 12))
    url = ctx.stack.topology.public_url + "/v1/score"
    with httpx.Client(timeout=TIMEOUT_S, trust_env=False) as client, ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda body: _send(client, url, body), _requests(ctx, sent)))
    if not any(r["ok"] for r in results) and all(r["status"] is None for r in results):
        raise ConsoleError(f"no answer from the scoring endpoint {url}: {results[0]['error']}", 503)
    ranked = sorted(results, key=lambda r: -(r.get("total_ms") or r.get("client_ms") or 0.0))
    slowest = ranked[:limit]
    totals = sorted(r["total_ms"] for r in results if r.get("total_ms") is not None)
    by_replica = _by_replica(results)
    data = {"sent": sent, "ok": sum(1 for r in results if r["ok"]), "errors": [r for r in results if not r["ok"]],
            "p50_ms": totals[len(totals) // 2] if totals else None, "max_ms": totals[-1] if totals else None,
            "slowest": slowest, "by_replica": by_replica}
    rows = [["TRANSACTION", "TOTAL MS", "FEATURES MS", "MODEL MS", "REPLICA", "VERSION", "ATTEMPTS"]]
    for r in slowest:
        attempts = ", ".join(f"{a.get('replica')} {num(a.get('ms'))}ms {a.get('outcome')}" for a in r.get("attempts")
                             or []) or (r.get("error") or "-")
        rows.append([r["transaction_id"], num(r.get("total_ms")), num(r.get("features_ms")), num(r.get("model_ms")),
                     str(r.get("replica") or "-"), str(r.get("model_version") or "-"), attempts])
    rrows = [["REPLICA", "ATTEMPTS", "MEAN MS", "MAX MS", "OUTCOMES"]]
    rrows += [[name, str(d["attempts"]), num(d["mean_ms"]), num(d["max_ms"]),
               ", ".join(f"{k} {v}" for k, v in d["outcomes"].items())] for name, d in by_replica.items()]
    text = [f"traced {sent} requests through {url}: {data['ok']} ok, p50 {num(data['p50_ms'])} ms, "
            f"max {num(data['max_ms'])} ms; the {len(slowest)} slowest:", table(rows), "", "per replica:",
            table(rrows)]
    return OpResult(data, "\n".join(text))
