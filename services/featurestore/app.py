"""The feature store's HTTP app: GET /v1/features/{card_id}, GET /v1/sample plus the common service routes.

`GET /v1/sample?n=N` (1..100) answers N fresh transactions on this store's own cards, as the gateway receives
them (from the generator population that seeded it, new randomness each call): what the lab's `trace` sends.

The lookup route is served by a raw ASGI handler (services.common.fastroutes) because it is on every scored
transaction's path. Fault knobs live in the config: `latency_ms` (answer later: "feature store slow") and
`error_rate` (answer 503 for that fraction of requests: a flaky dependency).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from typing import Any

from fastapi import Query
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field

from services.common import fastjson
from services.common.fastroutes import FastRoutes, json_error
from services.common.service import ConfigHolder, create_app
from services.common.tally import CounterTally, HistogramTally
from services.featurestore.store import FeatureStore

ROUTE_PREFIX = "/v1/features/"
MAX_SAMPLE = 100
_CARD_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")

log = logging.getLogger("featurestore")


class FeatureStoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    latency_ms: float = Field(default=0.0, ge=0, le=60_000, description="added delay before every answer")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="fraction of lookups answered with 503")
    cache: bool = Field(default=True, description="serve from the in-memory copy (false: SQLite per request)")


class Metrics:
    """Per-lookup updates go through tallies (services/common/tally.py): added to prometheus at scrape time."""

    def __init__(self) -> None:
        self.requests = Counter("featurestore_requests_total", "Feature lookups by HTTP status", ["code"])
        self.latency = HistogramTally(Histogram(
            "featurestore_request_latency_seconds",
            "Feature lookup latency, including injected latency",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        ))
        self.cards = Gauge("featurestore_cards", "Cards in the store")
        self._codes = {code: CounterTally(self.requests.labels(code=str(code))) for code in (200, 400, 404, 405, 503)}

    def count(self, code: int) -> None:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = CounterTally(self.requests.labels(code=str(code)))
        child.inc()


def build_app(store: FeatureStore, config: FeatureStoreConfig) -> FastRoutes:
    holder = ConfigHolder(config, on_change=lambda old, new: _on_change(store, old, new))
    metrics = Metrics()
    metrics.cards.set(len(store))
    app = create_app("featurestore", holder, ready=lambda: (len(store) > 0, "no cards loaded"))

    async def features(method: str, path: str, query: bytes, body: bytes) -> tuple[int, bytes]:
        started = time.perf_counter()
        status, payload = await _lookup(method, path)
        metrics.count(status)
        metrics.latency.observe(time.perf_counter() - started)
        return status, payload

    async def _lookup(method: str, path: str) -> tuple[int, bytes]:
        if method != "GET":
            return json_error(405, f"method {method} not allowed; use GET")
        card_id = path[len(ROUTE_PREFIX) :]
        cfg: FeatureStoreConfig = holder.value  # type: ignore[assignment]
        if cfg.latency_ms > 0:
            await asyncio.sleep(cfg.latency_ms / 1000.0)
        if cfg.error_rate > 0 and random.random() < cfg.error_rate:
            return json_error(503, "feature store unavailable (injected error_rate)")
        if not _CARD_ID.fullmatch(card_id):
            return json_error(400, "card_id must be 1-64 characters of A-Z a-z 0-9 _ . -")
        if cfg.cache:
            payload = store.cached(card_id)
        else:
            row = store.lookup(card_id)
            payload = None if row is None else fastjson.dumps(row)
        if payload is None:
            return json_error(404, f"unknown card_id {card_id}")
        return 200, payload

    sampler: list[Any] = []  # the generator, made on first use (most stacks never ask)

    @app.get("/v1/sample")
    def sample(n: int = Query(5, ge=1, le=MAX_SAMPLE)) -> dict[str, Any]:
        import numpy as np  # here: a store that is never sampled never loads numpy

        from services.trainer.generator import Generator

        if not sampler:
            meta = store.meta()
            sampler.append(Generator(seed=int(meta.get("seed", 7)), n_cards=int(meta.get("n_cards", 5000))))
        rows = sampler[0].sample(n, rng=np.random.default_rng())
        return {"transactions": [{k: v for k, v in row.items() if k != "label"} for row in rows]}

    fast = FastRoutes(app)
    fast.prefix(ROUTE_PREFIX, features)
    return fast


def _on_change(store: FeatureStore, old: BaseModel, new: BaseModel) -> None:
    if getattr(new, "cache", True) and not getattr(old, "cache", True):
        # Turning the cache back on re-reads SQLite, so edits made meanwhile become visible.
        log.info("cache enabled; reloaded cards=%d", store.reload())
