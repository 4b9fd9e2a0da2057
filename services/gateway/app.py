"""The gateway's request handling: POST /v1/score, POST /v1/feedback, GET /v1/recent, plus the common routes.

One scored transaction = validate the contract -> GET features (feature store, via its proxy) -> POST
/v1/predict to a replica picked by the ReplicaPool, retrying failed attempts on another replica within the
retry budget -> decision against `decision_threshold`. When the feature store fails, `feature_fallback`
decides (503 or default features); when no replica answers, `model_fallback` decides (503 or rules). Every
answer carries a small trace: per-hop timings and each model attempt's replica, time and outcome.

Late labels (POST /v1/feedback) are stamped into the scored row; GET /v1/recent?labelled=1 serves the labelled
rows (services/gateway/ledger.py), which the lab's `retrain` trains on.

The three /v1 routes are raw ASGI handlers (services.common.fastroutes) to keep the hot path lean. The LLM track's
OpenAI-compatible routes (/v1/chat/completions, /v1/completions, /v1/models) are services/gateway/llm.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI
from pydantic import BaseModel, ValidationError

from services.common import fastjson
from services.common.fastroutes import FastRoutes, json_error
from services.common.httpclient import ConnectError, ConnectionClosed, HttpClient, HttpError, UpstreamTimeout
from services.common.schema import DEFAULT_CARD_FEATURES, STORE_CATEGORICAL, STORE_NUMERIC
from services.common.service import create_app
from services.gateway.config import GatewayConfig, GatewayConfigHolder, parse_loopback_url
from services.gateway.contract import KNOWN_CATEGORIES, KNOWN_COUNTRIES, FeedbackRequest, ScoreRequest, describe
from services.gateway.ledger import ALREADY, LABELLED_CAPACITY, RECENT_CAPACITY, UNKNOWN, Ledger
from services.gateway.llm import LLMRoutes
from services.gateway.llm import attach as attach_llm
from services.gateway.metrics import GatewayMetrics, register_collector
from services.gateway.openapi import document_hot_routes
from services.gateway.replicas import Replica, ReplicaPool, RetryBudget, VersionRouter
from services.gateway.rules import RULES_VERSION, rule_score

log = logging.getLogger("gateway")

STORE_FIELDS = STORE_NUMERIC + STORE_CATEGORICAL
FEATURE_STORE = "feature-store"


class FeatureFailure(Exception):
    """The feature store did not give usable features; `outcome` is the metric label."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class UnknownCard(Exception):
    pass


class Gateway:
    def __init__(self, feature_store_url: str | None, config: GatewayConfig) -> None:
        # None: the fraud track is not running (an LLM-track gateway); scoring finds no features then.
        self.fs_host, self.fs_port = parse_loopback_url(feature_store_url) if feature_store_url else ("", 0)
        self.metrics = GatewayMetrics()
        self.pool = ReplicaPool(on_event=lambda event, name: self.metrics.replica_events(name, event).inc())
        self.budget = RetryBudget()
        self.router = VersionRouter()
        self.ledger = Ledger()
        self.holder = GatewayConfigHolder(config, on_change=self._on_change)
        self.cfg = config
        self.pool.sync(config)
        self.router.sync(config.routing)
        self.client = HttpClient(user_agent="faultline-gateway")
        self.llm = LLMRoutes(lambda: self.cfg)
        self._health_task: asyncio.Task[None] | None = None
        self._health_wakeup = asyncio.Event()
        register_collector(self.pool, self.budget)

    def _on_change(self, old: BaseModel, new: BaseModel) -> None:
        assert isinstance(new, GatewayConfig)
        if isinstance(old, GatewayConfig) and old.retry_budget_ratio != new.retry_budget_ratio:
            self.budget.refill()  # a new budget starts full rather than inheriting the old one's debt
        self.cfg = new
        self.pool.sync(new)
        self.router.sync(new.routing)
        self.llm.sync(new)
        self._health_wakeup.set()  # check new replicas (or a new interval) at once

    # ----- POST /v1/score -------------------------------------------------------------------------------------

    async def handle_score(self, method: str, path: str, query: bytes, body: bytes) -> tuple[int, bytes]:
        started = time.perf_counter()
        if method != "POST":
            status, payload = json_error(405, "use POST with a JSON transaction")
        else:
            status, payload = await self._score(body, started)
        elapsed = time.perf_counter() - started
        self.metrics.requests("score", str(status)).inc()
        self.metrics.latency("score").observe(elapsed)
        return status, payload

    async def _score(self, body: bytes, started: float) -> tuple[int, bytes]:
        metrics = self.metrics
        try:
            req = ScoreRequest.model_validate_json(body)
        except ValidationError as exc:
            message, errors, nulls = describe(exc)
            for name in nulls:
                metrics.null_inputs(name).inc()
            return json_error(422, message, errors=errors)
        cfg = self.cfg
        amount = req.amount * cfg.amount_scale
        if amount > cfg.amount_max:
            return json_error(
                422,
                f"amount: {amount:g} (after amount_scale {cfg.amount_scale:g}) exceeds amount_max {cfg.amount_max:g}",
                errors=[{"field": "amount", "message": f"must be <= amount_max {cfg.amount_max:g}"}],
            )
        if req.device_age_days is None:
            metrics.null_inputs("device_age_days").inc()
        if req.merchant_category not in KNOWN_CATEGORIES:
            metrics.unknown_category("merchant_category").inc()
        if req.country not in KNOWN_COUNTRIES:
            metrics.unknown_category("country").inc()
        self.budget.deposit(cfg.retry_budget_ratio)

        fallback: str | None = None
        t_features = time.perf_counter()
        try:
            features = await self._features(req.card_id, cfg)
        except UnknownCard:
            return json_error(
                422,
                f"card_id: unknown card {req.card_id!r}",
                errors=[{"field": "card_id", "message": "unknown card"}],
            )
        except FeatureFailure as exc:
            if cfg.feature_fallback == "fail":
                metrics.unavailable("features").inc()
                return json_error(
                    503,
                    f"feature store unavailable ({exc}); feature_fallback is 'fail'",
                    timings={"features_ms": _ms(time.perf_counter() - t_features)},
                )
            features = DEFAULT_CARD_FEATURES
            fallback = "default_features"
            metrics.fallbacks("default_features").inc()
        features_ms = _ms(time.perf_counter() - t_features)

        row = {
            "amount": amount,
            "hour": req.hour,
            "device_age_days": req.device_age_days,
            "txn_count_24h": features["txn_count_24h"],
            "avg_amount_30d": features["avg_amount_30d"],
            "account_age_days": features["account_age_days"],
            "merchant_category": req.merchant_category,
            "country": req.country,
            "card_present": req.card_present,
            "home_country": features["home_country"],
        }

        t_model = time.perf_counter()
        attempts: list[dict[str, Any]] = []
        result = await self._predict(row, cfg, attempts)
        model_ms = _ms(time.perf_counter() - t_model)
        reasons: list[str] | None = None
        if result is None:
            if cfg.model_fallback == "fail":
                metrics.unavailable("model").inc()
                tried = ", ".join(f"{a['replica']}: {a['outcome']}" for a in attempts) or "no routable replica"
                return json_error(
                    503,
                    f"model unavailable ({tried}); model_fallback is 'fail'",
                    timings={"features_ms": features_ms, "model_ms": model_ms, "attempts": attempts},
                )
            score, reasons = rule_score(row)
            version, replica = RULES_VERSION, None
            fallback = "rule_based"
            metrics.fallbacks("rule_based").inc()
        else:
            score, version, replica = result

        decision = "decline" if score >= cfg.decision_threshold else "approve"
        version = self.ledger.intern(version)
        metrics.predictions(version, replica or "none", decision).inc()
        metrics.score(version).observe(score)
        now = time.time()
        answer: dict[str, Any] = {
            "transaction_id": req.transaction_id,
            "score": score,
            "decision": decision,
            "model_version": version,
            "replica": replica,
            "fallback": fallback,
            "timings": {
                "features_ms": features_ms,
                "model_ms": model_ms,
                "total_ms": _ms(time.perf_counter() - started),
                "attempts": attempts,
            },
        }
        if reasons is not None:
            answer["rules"] = reasons
        recent = {
            **row,
            "transaction_id": req.transaction_id,
            "card_id": req.card_id,
            "score": score,
            "decision": decision,
            "model_version": version,
            "replica": replica,
            "fallback": fallback,
            "ts": now,
        }
        self.ledger.remember(req.transaction_id, score, decision, version, replica, recent)
        return 200, fastjson.dumps(answer)

    async def _features(self, card_id: str, cfg: GatewayConfig) -> dict[str, Any]:
        started = time.perf_counter()
        outcome = "ok"
        if not self.fs_host:
            self.metrics.upstream(FEATURE_STORE, FEATURE_STORE, "not_configured").inc()
            raise FeatureFailure("not_configured", "no feature store (the fraud track is not running)")
        try:
            response = await self.client.request(
                "GET", self.fs_host, self.fs_port, "/v1/features/" + card_id, timeout=cfg.feature_timeout_ms / 1000.0
            )
            if response.status == 404:
                outcome = "not_found"
                raise UnknownCard(card_id)
            if response.status != 200:
                outcome = "error"
                raise FeatureFailure(outcome, f"HTTP {response.status}")
            try:
                data = fastjson.loads(response.body)
                features = {name: data[name] for name in STORE_FIELDS}
            except (ValueError, KeyError, TypeError):
                outcome = "bad_response"
                raise FeatureFailure(outcome, "malformed features answer") from None
            return features
        except UpstreamTimeout:
            outcome = "timeout"
            raise FeatureFailure(outcome, f"no answer within feature_timeout_ms {cfg.feature_timeout_ms:g}") from None
        except ConnectError as exc:
            outcome = "connect_error"
            raise FeatureFailure(outcome, str(exc)) from None
        except ConnectionClosed as exc:
            outcome = "connection_closed"
            raise FeatureFailure(outcome, str(exc)) from None
        except HttpError as exc:
            outcome = "bad_response"
            raise FeatureFailure(outcome, str(exc)) from None
        finally:
            self.metrics.upstream(FEATURE_STORE, FEATURE_STORE, outcome).inc()
            self.metrics.upstream_latency(FEATURE_STORE, FEATURE_STORE).observe(time.perf_counter() - started)

    async def _predict(
        self, row: dict[str, Any], cfg: GatewayConfig, attempts: list[dict[str, Any]]
    ) -> tuple[float, str, str] | None:
        """(score, model_version, replica) from the first attempt that succeeds, or None."""
        version = self.router.choose()
        payload: dict[str, Any] = {"rows": [row]}
        if version is not None:
            payload["version"] = version
        body = fastjson.dumps(payload)
        tried: set[str] = set()
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                if not self.budget.try_spend():
                    self.metrics.budget_exhausted.inc()
                    break
                self.metrics.retries.inc()
                if cfg.retry_backoff_ms > 0:
                    # Exponential backoff with jitter: retries from many requests must not arrive in lockstep.
                    delay = cfg.retry_backoff_ms * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                    await asyncio.sleep(delay / 1000.0)
            replica = self.pool.pick(tried)
            if replica is None:
                break
            tried.add(replica.name)
            outcome, elapsed, parsed = await self._attempt(replica, body, cfg)
            attempts.append({"replica": replica.name, "ms": _ms(elapsed), "outcome": outcome})
            if parsed is not None:
                return parsed[0], parsed[1], replica.name
        return None

    async def _attempt(
        self, replica: Replica, body: bytes, cfg: GatewayConfig
    ) -> tuple[str, float, tuple[float, str] | None]:
        """(outcome, seconds, (score, version) when the outcome is "ok")."""
        started = time.perf_counter()
        parsed = None
        replica.inflight += 1
        try:
            response = await self.client.request(
                "POST", replica.host, replica.port, "/v1/predict", body, timeout=cfg.model_timeout_ms / 1000.0
            )
            outcome, parsed = _parse_prediction(response.status, response.body)
        except UpstreamTimeout:
            outcome = "timeout"
        except ConnectError:
            outcome = "connect_error"
        except ConnectionClosed:
            outcome = "connection_closed"
        except HttpError:
            outcome = "bad_response"
        except BaseException:
            self.pool.release(replica)  # cancelled: free a half-open probe slot
            raise
        finally:
            replica.inflight -= 1
        elapsed = time.perf_counter() - started
        self.pool.record(replica, outcome, cfg)
        self.metrics.upstream("model", replica.name, outcome).inc()
        self.metrics.upstream_latency("model", replica.name).observe(elapsed)
        return outcome, elapsed, parsed

    # ----- POST /v1/feedback ----------------------------------------------------------------------------------

    async def handle_feedback(self, method: str, path: str, query: bytes, body: bytes) -> tuple[int, bytes]:
        if method != "POST":
            status, payload = json_error(405, "use POST with {transaction_id, label}")
        else:
            status, payload = self._feedback(body)
        self.metrics.requests("feedback", str(status)).inc()
        return status, payload

    def _feedback(self, body: bytes) -> tuple[int, bytes]:
        try:
            req = FeedbackRequest.model_validate_json(body)
        except ValidationError as exc:
            message, errors, _ = describe(exc)
            return json_error(422, message, errors=errors)
        status, version, outcome = self.ledger.label(req.transaction_id, req.label)
        if status == UNKNOWN:
            return json_error(
                404,
                f"unknown transaction_id {req.transaction_id!r}: never scored here, or older than the last "
                f"{self.ledger._capacity} scored transactions",
            )
        if status == ALREADY:
            return json_error(409, f"feedback for {req.transaction_id!r} was already recorded")
        assert version is not None and outcome is not None
        self.metrics.feedback(version, outcome).inc()
        return 202, fastjson.dumps({"transaction_id": req.transaction_id, "model_version": version, "outcome": outcome})

    # ----- GET /v1/recent -------------------------------------------------------------------------------------

    async def handle_recent(self, method: str, path: str, query: bytes, body: bytes) -> tuple[int, bytes]:
        if method != "GET":
            status, payload = json_error(405, "use GET")
        else:
            status, payload = self._recent(query)
        self.metrics.requests("recent", str(status)).inc()
        return status, payload

    def _recent(self, query: bytes) -> tuple[int, bytes]:
        try:
            params = parse_qs(query.decode("latin-1"), keep_blank_values=True)
        except ValueError:
            return json_error(400, "malformed query string")
        unknown = sorted(set(params) - {"limit", "since", "labelled"})
        if unknown:
            return json_error(422, f"unknown query parameter(s): {', '.join(unknown)}; use limit, since and labelled")
        limit = 100
        since: float | None = None
        labelled: bool | None = None
        if "labelled" in params:
            value = params["labelled"][-1]
            if value not in ("0", "1"):
                return json_error(422, f"labelled must be 1 (rows with their label) or 0 (rows still without one), "
                                       f"got {value[:20]!r}")
            labelled = value == "1"
        try:
            if "limit" in params:
                limit = int(params["limit"][-1])
            if "since" in params:
                since = float(params["since"][-1])
        except ValueError:
            return json_error(422, "limit must be an integer and since a number (unix seconds)")
        most = LABELLED_CAPACITY if labelled else RECENT_CAPACITY
        if not 1 <= limit <= most:
            which = " with labelled=1" if labelled else ""
            return json_error(422, f"limit must be between 1 and {most}{which}")
        if since is not None and not math.isfinite(since):
            return json_error(422, "since must be a finite number (unix seconds)")
        ledger = self.ledger
        items = ledger.last(limit, since, labelled)
        answer: dict[str, Any] = {"items": items, "count": len(items), "total_scored": ledger.total_scored}
        if labelled:
            answer["total_labelled"] = ledger.labelled.total
            answer["labelled_held"] = ledger.labelled.size
        return 200, fastjson.dumps(answer)

    # ----- health checks --------------------------------------------------------------------------------------

    async def health_loop(self) -> None:
        """Poll every replica's /readyz (through its proxy) every `health_check_ms`; 0 turns checking off."""
        while True:
            interval = self.cfg.health_check_ms / 1000.0
            if interval > 0:
                replicas = list(self.pool.replicas.values())
                timeout = min(1.0, max(interval, 0.05))
                await asyncio.gather(*(self._check(r, timeout) for r in replicas))
            else:
                for replica in self.pool.replicas.values():
                    self.pool.set_health(replica.name, True, "health checks off")
            self._health_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._health_wakeup.wait(), timeout=interval if interval > 0 else 3600)

    async def _check(self, replica: Replica, timeout: float) -> None:
        try:
            response = await self.client.request("GET", replica.host, replica.port, "/readyz", timeout=timeout)
            ok, reason = response.status == 200, f"readyz HTTP {response.status}"
        except HttpError as exc:
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        self.pool.set_health(replica.name, ok, reason)

    def ready(self) -> tuple[bool, str]:
        if self.pool.replicas or self.cfg.model_fallback == "rule_based" or self.cfg.llm_replicas:
            return True, ""
        return False, "no model replicas configured (PATCH /admin/config replicas or llm_replicas)"


def _parse_prediction(status: int, body: bytes) -> tuple[str, tuple[float, str] | None]:
    """Classify a /v1/predict answer: ok (with score and version), rejected (4xx), error (5xx), nan, bad_response."""
    if status >= 500:
        return "error", None
    if status != 200:
        return "rejected", None
    try:
        data = fastjson.loads(body)
        raw = data["scores"][0]
        version = data["model_version"]
    except ValueError:
        # A NaN score may be serialised as the bare token NaN, which is not JSON.
        return ("nan" if b"NaN" in body else "bad_response"), None
    except (KeyError, IndexError, TypeError):
        return "bad_response", None
    if raw is None or not isinstance(raw, int | float) or not math.isfinite(raw):
        return "nan", None
    if not 0.0 <= raw <= 1.0 or not isinstance(version, str):
        return "bad_response", None
    return "ok", (float(raw), version)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def build_app(feature_store_url: str | None, config: GatewayConfig) -> FastRoutes:
    gateway = Gateway(feature_store_url, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(gateway.health_loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await gateway.client.aclose()
            await gateway.llm.aclose()

    app = create_app("gateway", gateway.holder, ready=gateway.ready, lifespan=lifespan)
    app.state.gateway = gateway

    @app.get("/v1/replicas")
    async def replicas() -> dict[str, Any]:
        """Live routing state per replica (healthy, drained, ejected, breaker, in-flight)."""
        return {"replicas": gateway.pool.describe(), "retry_budget_tokens": round(gateway.budget.tokens, 3)}

    attach_llm(app, gateway.llm)
    document_hot_routes(app, gateway)  # /openapi.json describes the routes the fast path answers
    fast = FastRoutes(app)
    fast.exact("/v1/score", gateway.handle_score)
    fast.exact("/v1/feedback", gateway.handle_feedback)
    fast.exact("/v1/recent", gateway.handle_recent)
    return fast
