"""The gateway's LLM routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models[/{id}]`, proxied
to the LLM replicas (`llm_replicas`, each through its hop) — the LLM track's entry (docs/gateway.md, docs/llm.md).

- Routing: the replica with the fewest outstanding requests (ties at random); one that refused a connection (or
  whose hop closed it before any answer: the proxy could not reach the replica) is skipped for `DOWN_S` unless
  every replica is, and the request tries the next one.
- Streams pass through unbuffered by default: every chunk the replica sends is forwarded as it arrives
  (`X-Accel-Buffering: no` for any proxy in front). `llm_stream_buffer_bytes` > 0 holds the bytes until that many
  are in hand or the stream ends (nginx's `proxy_buffering`: the text then arrives in bursts).
  `llm_stream_timeout_ms` bounds the wait for the upstream's next bytes: a stalled stream ends with an
  OpenAI-shaped error event (`data: {"error": ...}`), a stalled plain answer is a 504.
- Request rewrites, each off by default: `llm_system_timestamp` strips a timestamp from the start of system
  messages or moves it to their end (a fixed, anchored pattern over the first 64 characters, no user regex);
  `llm_trim_history` drops a chat's oldest turns and `llm_clamp_max_tokens` lowers `max_tokens` until the
  request fits the context, both counting with the replica's own tokenizer (`POST /tokenize`, vLLM's route).
- Per-client rate limits (`llm_rate_limit_rps`, `llm_rate_limit_burst`; a token bucket per API key, or per
  address without one): 429 with `Retry-After` and an OpenAI-shaped error.
- No LLM replicas (the gateway of the fraud track alone): an OpenAI-shaped 503 saying the LLM track is not running.
- One log line per request (route, replica, status, TTFT, tokens, time) and `gateway_llm_*` metrics.

httpx (asyncio) carries these calls: the scoring path's lean client (services/common/httpclient.py) reads whole
answers, and a stream must be forwarded piece by piece.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import httpx
from fastapi import FastAPI
from fastapi.exception_handlers import http_exception_handler
from prometheus_client import Counter, Gauge, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from services.common.bodies import BodyTooLarge, read_body
from services.gateway.config import GatewayConfig

log = logging.getLogger("gateway")
logging.getLogger("httpx").setLevel(logging.WARNING)  # our own line per request says more than httpx's

ROUTES = {"/v1/chat/completions": "chat_completions", "/v1/completions": "completions", "/v1/models": "models"}
MAX_BODY_BYTES = 1024 * 1024
DOWN_S = 1.0
MAX_CLIENTS = 10_000
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# A timestamp at the very start of a system message: epoch digits or ISO 8601, optionally in brackets. Fixed and
# anchored, applied to at most TIMESTAMP_SCAN characters: linear, no user-supplied pattern.
TIMESTAMP = re.compile(r"\s*[\[(]?(?:\d{9,20}(?:\.\d{1,9})?|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?"
                       r"(?:Z|[+-]\d{2}:?\d{2})?)[\])]?[ \t]*")
TIMESTAMP_SCAN = 64
MAX_TRIM_ROUNDS = 32  # /tokenize probes one request may spend on trimming (a binary search: ~log2(turns) + 1)
NOT_RUNNING = ("the LLM track is not running: this gateway has no LLM replicas "
               "(start it with `faultline up -d --track llm` or `--track all`)")


def openai_error(status: int, message: str, type_: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _sse_error(message: str, code: str) -> bytes:
    body = {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


@dataclass
class Upstream:
    name: str
    url: str
    inflight: int = 0
    down_until: float = 0.0


class TokenBucket:
    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.at = now

    def take(self, rate: float, burst: int, now: float) -> float:
        """0.0 when a request may go now (one token taken), else the seconds until one is available."""
        self.tokens = min(float(burst), self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


class LLMMetrics:
    def __init__(self) -> None:
        self.requests = Counter("gateway_llm_requests_total", "LLM requests by route, replica and HTTP status",
                                ["route", "replica", "code"])
        self.ttft = Histogram("gateway_llm_ttft_seconds", "Gateway arrival to the first streamed bytes",
                              ["route"], buckets=TTFT_BUCKETS)
        self.latency = Histogram("gateway_llm_request_latency_seconds", "Gateway arrival to the last byte",
                                 ["route"], buckets=E2E_BUCKETS)
        self.tokens = Counter("gateway_llm_tokens_total", "Tokens of answered LLM requests (from usage)", ["kind"])
        self.rate_limited = Counter("gateway_llm_rate_limited_total", "LLM requests refused by the rate limit")
        self.stream_timeouts = Counter("gateway_llm_stream_timeouts_total", "Streams ended by llm_stream_timeout_ms")
        self.inflight = Gauge("gateway_llm_inflight", "Outstanding LLM requests per replica", ["replica"])
        self.rewrites = Counter("gateway_llm_rewrites_total", "Requests changed by a rewrite knob",
                                ["kind"])  # timestamp | trim | clamp


class LLMRoutes:
    """The routing state: upstreams (from `llm_replicas`), outstanding counts, clients' buckets."""

    def __init__(self, config: Callable[[], GatewayConfig]) -> None:
        self.config = config
        self.upstreams: dict[str, Upstream] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.metrics = LLMMetrics()
        self.http = httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_connections=1000,
                                                                           max_keepalive_connections=64))
        self.sync(config())

    def sync(self, cfg: GatewayConfig) -> None:
        fresh: dict[str, Upstream] = {}
        for name, url in cfg.llm_replicas.items():
            old = self.upstreams.get(name)
            fresh[name] = old if old is not None and old.url == url else Upstream(name, url.rstrip("/"))
        self.upstreams = fresh

    async def aclose(self) -> None:
        await self.http.aclose()

    # --- decisions ------------------------------------------------------------------------------------------------

    def pick(self, exclude: set[str]) -> Upstream | None:
        """Least outstanding requests among replicas not tried yet and not drained, preferring ones not marked
        down."""
        now = time.monotonic()
        drained = set(self.config().drained)
        left = [u for u in self.upstreams.values() if u.name not in exclude and u.name not in drained]
        found = [u for u in left if now >= u.down_until] or left
        if not found:
            return None
        least = min(u.inflight for u in found)
        return random.choice([u for u in found if u.inflight == least])

    def client_key(self, request: Request) -> str:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and auth[7:].strip():
            # a digest: up to MAX_CLIENTS keys are held, and a header may be a megabyte long
            return "key:" + hashlib.sha256(auth[7:].strip().encode("latin-1", "replace")).hexdigest()
        return "addr:" + (request.client.host if request.client else "unknown")

    def throttle(self, key: str) -> float:
        """Seconds the client must wait (0: go)."""
        cfg = self.config()
        if cfg.llm_rate_limit_rps <= 0:
            return 0.0
        now = time.monotonic()
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_CLIENTS:
                self.buckets.clear()  # a flood of distinct keys: start over rather than grow without bound
            bucket = self.buckets[key] = TokenBucket(cfg.llm_rate_limit_burst, now)
        return bucket.take(cfg.llm_rate_limit_rps, cfg.llm_rate_limit_burst, now)

    # --- the route --------------------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        route = ROUTES.get(request.url.path, "models")  # else GET /v1/models/{model_id}
        started = time.perf_counter()
        cfg = self.config()
        if not self.upstreams:
            self.metrics.requests.labels(route, "", "503").inc()
            return openai_error(503, NOT_RUNNING, "service_unavailable", "llm_track_not_running")
        wait = self.throttle(self.client_key(request))
        if wait > 0:
            self.metrics.rate_limited.inc()
            self.metrics.requests.labels(route, "", "429").inc()
            retry = max(1, math.ceil(wait))
            return openai_error(
                429, f"rate limit reached for this client: {cfg.llm_rate_limit_rps:g} requests/s "
                     f"(burst {cfg.llm_rate_limit_burst}); retry after {retry} s",
                "rate_limit_error", "rate_limit_exceeded", headers={"Retry-After": str(retry)})
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except BodyTooLarge:
            self.metrics.requests.labels(route, "", "413").inc()
            return openai_error(413, f"request body larger than {MAX_BODY_BYTES} bytes", "invalid_request_error",
                                "body_too_large")
        timeout = httpx.Timeout(connect=cfg.llm_connect_timeout_ms / 1000, read=cfg.llm_stream_timeout_ms / 1000,
                                write=cfg.llm_connect_timeout_ms / 1000, pool=cfg.llm_connect_timeout_ms / 1000)
        tried: set[str] = set()
        rewritten = False
        while True:
            upstream = self.pick(tried)
            if upstream is None and not tried:  # every LLM replica is drained
                self._done(route, "", 503, started, None, {}, request)
                return openai_error(503, "every LLM replica is drained (gateway config `drained`)",
                                    "service_unavailable", "all_replicas_drained")
            if upstream is None:
                self._done(route, "", 502, started, None, {}, request)
                return openai_error(502, f"no LLM replica accepted the connection (tried {', '.join(sorted(tried))})",
                                    "upstream_error", "upstream_unreachable")
            tried.add(upstream.name)
            if not rewritten and (cfg.llm_clamp_max_tokens or cfg.llm_trim_history
                                  or cfg.llm_system_timestamp != "keep"):
                rewritten = True
                body = await self._rewrite(body, route, upstream, cfg, timeout)
            self._enter(upstream)
            sent = self.http.build_request(request.method, upstream.url + _upstream_path(request), content=body or None,
                                           headers={"content-type": "application/json"} if body else None,
                                           timeout=timeout)
            try:
                answer = await self.http.send(sent, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                self._leave(upstream)
                upstream.down_until = time.monotonic() + DOWN_S
                log.warning("llm upstream=%s connect failed: %s", upstream.name, exc or type(exc).__name__)
                continue
            except httpx.TimeoutException:
                self._leave(upstream)
                self._done(route, upstream.name, 504, started, None, {}, request)
                return openai_error(504, f"{upstream.name} did not answer within llm_stream_timeout_ms "
                                         f"{cfg.llm_stream_timeout_ms:g}", "upstream_error", "upstream_timeout")
            except httpx.HTTPError as exc:
                self._leave(upstream)
                self._done(route, upstream.name, 502, started, None, {}, request)
                return openai_error(502, f"{upstream.name} failed: {exc or type(exc).__name__}", "upstream_error",
                                    "upstream_error")
            if answer.headers.get("content-type", "").startswith("text/event-stream"):
                return StreamingResponse(
                    self._relay(answer, upstream, route, started, request, cfg), status_code=answer.status_code,
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Replica": upstream.name})
            return await self._whole(answer, upstream, route, started, request, cfg)

    # --- rewrites (llm_system_timestamp, llm_trim_history, llm_clamp_max_tokens) ----------------------------------

    async def _rewrite(self, body: bytes, route: str, upstream: Upstream, cfg: GatewayConfig,
                       timeout: httpx.Timeout) -> bytes:
        """The body after the rewrite knobs; unchanged when it is not a JSON object of the route's shape or the
        replica cannot count it (the replica then answers it as it is, errors included)."""
        if route not in ("chat_completions", "completions"):
            return body
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply: the replica refuses it in its words
            return body
        if not isinstance(data, dict):
            return body
        messages = data.get("messages") if route == "chat_completions" else None
        chat = isinstance(messages, list) and all(isinstance(m, dict) for m in messages)
        changed = False
        if chat and cfg.llm_system_timestamp != "keep":
            for m in messages:
                if m.get("role") == "system" and isinstance(m.get("content"), str):
                    new = _move_timestamp(m["content"], cfg.llm_system_timestamp)
                    if new != m["content"]:
                        m["content"] = new
                        changed = True
            if changed:
                self.metrics.rewrites.labels("timestamp").inc()
        if cfg.llm_trim_history or cfg.llm_clamp_max_tokens:
            key = "max_completion_tokens" if chat and isinstance(data.get("max_completion_tokens"), int) \
                else "max_tokens"
            want = data.get(key)
            want = want if isinstance(want, int) and not isinstance(want, bool) and want > 0 else None
            counted = await self._count(upstream, data, chat, timeout)
            if counted is not None and chat and cfg.llm_trim_history and counted[0] + (want or 1) > counted[1]:
                counted, dropped = await self._trim(upstream, data, want or 1, counted, timeout)
                if dropped:
                    changed = True
                    self.metrics.rewrites.labels("trim").inc()
            if counted is not None and cfg.llm_clamp_max_tokens and want is not None:
                count, n_ctx = counted
                if count + want > n_ctx and count < n_ctx:
                    data[key] = n_ctx - count
                    changed = True
                    self.metrics.rewrites.labels("clamp").inc()
        return json.dumps(data).encode() if changed else body

    async def _trim(self, upstream: Upstream, data: dict[str, Any], room: int, counted: tuple[int, int],
                    timeout: httpx.Timeout) -> tuple[tuple[int, int] | None, int]:
        """Drop the fewest oldest turns (never a system message nor the last message) so that the prompt plus
        `room` fits the context, all of them if even that does not: a binary search over how many, each probe
        counted by the replica (about log2(turns) + 1 calls). (The count of what is left, turns dropped.)"""
        messages: list[dict[str, Any]] = data["messages"]
        droppable = [i for i, m in enumerate(messages[:-1]) if m.get("role") != "system"]
        if not droppable:
            return counted, 0

        def without(k: int) -> list[dict[str, Any]]:
            gone = set(droppable[:k])
            return [m for i, m in enumerate(messages) if i not in gone]

        lo, hi = 1, len(droppable)  # the fewest that fit is in lo..hi (hi: all of them, fitting or not)
        measured: dict[int, tuple[int, int]] = {}
        rounds = 0
        while lo < hi and rounds < MAX_TRIM_ROUNDS:
            rounds += 1
            mid = (lo + hi) // 2
            probe = await self._count(upstream, {**data, "messages": without(mid)}, True, timeout)
            if probe is None:
                break
            measured[mid] = probe
            if probe[0] + room <= probe[1]:
                hi = mid
            else:
                lo = mid + 1
        data["messages"] = without(hi)
        found = measured.get(hi) or await self._count(upstream, data, True, timeout)
        return found, hi

    async def _count(self, upstream: Upstream, data: dict[str, Any], chat: bool,
                     timeout: httpx.Timeout) -> tuple[int, int] | None:
        """(prompt tokens, context length) by the replica's tokenizer, or None if it could not say."""
        if chat:
            ask: dict[str, Any] = {"messages": data["messages"]}
        elif isinstance(data.get("prompt"), str):
            ask = {"prompt": data["prompt"]}
        elif isinstance(data.get("prompt"), list) and data["prompt"] and all(
                isinstance(t, int) for t in data["prompt"]):
            ask = {"prompt": ""}  # token ids: counted here; only the context length is asked for
        else:
            return None
        if isinstance(data.get("model"), str):
            ask["model"] = data["model"]
        try:
            answer = await self.http.post(upstream.url + "/tokenize", json=ask, timeout=timeout)
            found = answer.json() if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(found, dict) or not isinstance(found.get("count"), int) or \
                not isinstance(found.get("max_model_len"), int):
            return None
        count = len(data["prompt"]) if ask.get("prompt") == "" else found["count"]
        return count, found["max_model_len"]

    async def _whole(self, answer: httpx.Response, upstream: Upstream, route: str, started: float,
                     request: Request, cfg: GatewayConfig) -> Response:
        try:
            content = await answer.aread()
        except httpx.TimeoutException:
            self._done(route, upstream.name, 504, started, None, {}, request)
            return openai_error(504, f"{upstream.name} stalled: no bytes within llm_stream_timeout_ms "
                                     f"{cfg.llm_stream_timeout_ms:g}", "upstream_error", "upstream_timeout")
        except httpx.HTTPError as exc:
            self._done(route, upstream.name, 502, started, None, {}, request)
            return openai_error(502, f"{upstream.name} broke off its answer: {exc or type(exc).__name__}",
                                "upstream_error", "upstream_error")
        finally:
            await answer.aclose()
            self._leave(upstream)
        usage: dict[str, Any] = {}
        try:
            data = json.loads(content)
            if isinstance(data, dict) and isinstance(data.get("usage"), dict):
                usage = data["usage"]
        except ValueError:
            pass
        self._done(route, upstream.name, answer.status_code, started, None, usage, request)
        headers = {k: v for k, v in answer.headers.items() if k.lower() in ("retry-after",)}
        return Response(content, status_code=answer.status_code,
                        media_type=answer.headers.get("content-type", "application/json"),
                        headers={**headers, "X-Replica": upstream.name})

    async def _relay(self, answer: httpx.Response, upstream: Upstream, route: str, started: float,
                     request: Request, cfg: GatewayConfig) -> AsyncIterator[bytes]:
        ttft: float | None = None
        usage: dict[str, Any] = {}
        pieces = 0
        tail = b""
        status = answer.status_code
        hold = cfg.llm_stream_buffer_bytes
        held: list[bytes] = []
        held_size = 0
        try:
            async for chunk in answer.aiter_raw():
                if ttft is None:
                    ttft = time.perf_counter() - started  # the upstream's first bytes (buffering does not move it)
                if hold:
                    held.append(chunk)
                    held_size += len(chunk)
                    if held_size >= hold:
                        yield b"".join(held)
                        held, held_size = [], 0
                else:
                    yield chunk
                # Count what went by (the usage chunk when the client asked for one, else content chunks).
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    if line.startswith(b"data: {"):
                        pieces += 1
                        if b'"usage"' in line:
                            try:
                                found = json.loads(line[6:]).get("usage")
                            except ValueError:
                                found = None
                            if isinstance(found, dict):
                                usage = found
            if held:
                yield b"".join(held)
        except httpx.TimeoutException:
            status = 504
            self.metrics.stream_timeouts.inc()
            if held:
                yield b"".join(held)
            yield _sse_error(f"{upstream.name} stalled: no bytes within llm_stream_timeout_ms "
                             f"{cfg.llm_stream_timeout_ms:g}; the stream was ended", "stream_timeout")
        except httpx.HTTPError as exc:
            status = 502
            if held:
                yield b"".join(held)
            yield _sse_error(f"{upstream.name} broke off the stream: {exc or type(exc).__name__}", "upstream_error")
        finally:
            # Also on a client disconnect (the generator is cancelled): closing the upstream lets the replica
            # abort; shielded, or the cancellation would stop the close half-way.
            with anyio.CancelScope(shield=True):
                await answer.aclose()
            self._leave(upstream)
            if not usage and pieces:
                usage = {"completion_chunks": pieces}
            self._done(route, upstream.name, status, started, ttft, usage, request)

    # --- bookkeeping --------------------------------------------------------------------------------------------

    def _enter(self, upstream: Upstream) -> None:
        upstream.inflight += 1
        self.metrics.inflight.labels(upstream.name).set(upstream.inflight)

    def _leave(self, upstream: Upstream) -> None:
        upstream.inflight -= 1
        self.metrics.inflight.labels(upstream.name).set(upstream.inflight)

    def _done(self, route: str, replica: str, status: int, started: float, ttft: float | None,
              usage: dict[str, Any], request: Request) -> None:
        elapsed = time.perf_counter() - started
        self.metrics.requests.labels(route, replica, str(status)).inc()
        self.metrics.latency.labels(route).observe(elapsed)
        if ttft is not None:
            self.metrics.ttft.labels(route).observe(ttft)
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int):
            self.metrics.tokens.labels("prompt").inc(prompt)
        if isinstance(completion, int):
            self.metrics.tokens.labels("completion").inc(completion)
        log.info("llm route=%s replica=%s status=%d ttft_ms=%s prompt_tokens=%s completion_tokens=%s total_ms=%.1f "
                 "client=%s", route, replica or "-", status, f"{ttft * 1000:.1f}" if ttft is not None else "-",
                 prompt if prompt is not None else "-",
                 completion if completion is not None else usage.get("completion_chunks", "-"), elapsed * 1000,
                 request.client.host if request.client else "-")


def _move_timestamp(content: str, how: str) -> str:
    """`content` without the timestamp at its start ("strip"), or with it moved to its end ("move_to_end")."""
    found = TIMESTAMP.match(content[:TIMESTAMP_SCAN])
    if found is None or not found.group().strip():
        return content
    rest = content[found.end():]
    if how == "strip":
        return rest
    return rest.rstrip() + " " + found.group().strip()


def _upstream_path(request: Request) -> str:
    """The path to ask the replica: a model id re-quoted, so that `..` or `/` in it stay part of the id (httpx
    would resolve a decoded `../..` away and ask the replica for another path)."""
    model_id = request.path_params.get("model_id")
    return request.url.path if model_id is None else "/v1/models/" + quote(model_id, safe="")


def _is_openai_path(path: str) -> bool:
    return path in ROUTES or path.startswith("/v1/models/")


def attach(app: FastAPI, routes: LLMRoutes) -> None:
    """Add the LLM routes to the gateway's FastAPI app (the scoring fast path never sees these paths): the three
    of ROUTES and `GET /v1/models/{model_id}` (OpenAI's "retrieve model", answered by a replica). A wrong method
    on them, or an unknown path under /v1, is an OpenAI-shaped 405 / 404: OpenAI's clients read `error.message`."""
    for path in ROUTES:
        app.add_api_route(path, routes.handle, methods=["GET"] if path == "/v1/models" else ["POST"],
                          include_in_schema=True, response_class=Response,
                          summary=f"OpenAI-compatible {path}, proxied to the LLM replicas")
    app.add_api_route("/v1/models/{model_id:path}", routes.handle, methods=["GET"], include_in_schema=True,
                      response_class=Response, summary="OpenAI-compatible model retrieval, from an LLM replica")

    async def openai_shaped(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        path = request.url.path
        if not (_is_openai_path(path) or exc.status_code == 404 and path.startswith("/v1/")):
            return await http_exception_handler(request, exc)
        what = "Invalid method for URL" if exc.status_code == 405 else "Invalid URL"
        return openai_error(exc.status_code, f"{what} ({request.method} {path})", "invalid_request_error",
                            headers=exc.headers)

    app.add_exception_handler(StarletteHTTPException, openai_shaped)
    # `POST /v1/completions/` would be a 307 to the route (which OpenAI's clients do not follow): a 404 instead
    app.router.redirect_slashes = False
