"""The model replica's HTTP app: POST /v1/predict, GET /v1/models, POST /admin/reload, plus the common routes.

Start-up: the HTTP server comes up at once (/healthz 200), and a background task imports torch, loads and
verifies the configured versions, warms them up and only then flips /readyz to 200 (unless config
`readiness` is "process", the lying kind). A version whose artifact fails its sha256 check is never served:
at start-up the replica stays up but unready, with the CorruptArtifact message as the /readyz reason (and in
the log); on /admin/reload it answers 409 and keeps serving the versions it had.

POST /v1/predict is answered by `PredictFront`, a raw ASGI front that skips FastAPI's middleware and router
(at saturation they cost about as much CPU as the prediction itself); the body is parsed with orjson and
validated by the shared transform's row encoder, which is far cheaper than pydantic per row.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from services.common.service import ConfigHolder, create_app
from services.modelserver import metrics
from services.modelserver.batcher import Batcher, QueueFull
from services.modelserver.cache import PredictionCache
from services.modelserver.config import ModelServerConfig
from services.modelserver.runtime import LoadedModel, load_version, reserve_workspace, warm_up, workspace_width
from services.registry.store import CorruptArtifact, Registry, RegistryError, VersionNotFound, check_version_name
from services.trainer.transform import RowError

log = logging.getLogger("modelserver")
MAX_VERSIONS = 8
RETRY_AFTER_S = "1"


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # orjson writes NaN as null: a NaN score reaches the client as null (and is counted in metrics)
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


# A predict answer: status, JSON body, retry-after or not. PredictFront sends it without building a starlette
# Response (its header handling was ≈ 1 % of a replica's CPU at saturation).
Answer = tuple[int, bytes, bool]
JSON_TYPE = (b"content-type", b"application/json")
RETRY_AFTER = (b"retry-after", RETRY_AFTER_S.encode())


def _answer(payload: Any, status: int = 200, retry: bool = False) -> Answer:
    return status, orjson.dumps(payload), retry


def _response(answer: Answer) -> Response:
    status, body, retry = answer
    return Response(body, status_code=status, media_type="application/json",
                    headers={"Retry-After": RETRY_AFTER_S} if retry else None)


class ModelServer:
    """The replica's state: loaded versions, batcher, cache and readiness."""

    def __init__(self, registry: Registry, replica: str, versions: list[str], config: ModelServerConfig) -> None:
        self.registry = registry
        self.replica = replica
        self.initial_versions = versions
        self.holder = ConfigHolder(config, self._on_config_change)
        self.models: dict[str, LoadedModel] = {}
        self.default: LoadedModel | None = None
        self.ready = False
        self.reason = "loading model"
        self.cache = PredictionCache(config.cache_size, _kib(config.cache_entry_kb))
        self.compute_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compute")
        self.load_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load")
        self.batcher: Batcher | None = None
        self._reload_lock = asyncio.Lock()
        self._torch_configured = False
        metrics.CACHE_ENTRIES.set_function(lambda: len(self.cache))
        metrics.QUEUE_DEPTH.set_function(lambda: self.batcher.queued_rows if self.batcher else 0)
        # read at scrape time: a plain int on the hot path instead of two locked gauge updates per request
        self.inflight = 0
        metrics.INFLIGHT.set_function(lambda: self.inflight)

    @property
    def config(self) -> ModelServerConfig:
        return self.holder.value  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------------ readiness
    def readiness(self) -> tuple[bool, str]:
        if self.config.readiness == "process":
            return True, ""
        return self.ready, self.reason

    def _on_config_change(self, old: Any, new: Any) -> None:
        # torch_threads needs nothing here: the computing thread applies it before its next batch
        if old.cache_size != new.cache_size:
            self.cache.resize(new.cache_size)
        if old.cache_entry_kb != new.cache_entry_kb:
            self.cache.payload_bytes = _kib(new.cache_entry_kb)  # new entries; those cached keep their size
        if old.max_batch_size != new.max_batch_size:
            for model in list(self.models.values()):
                self._reserve(model, new.max_batch_size)

    # --------------------------------------------------------------------------------------------- loading
    def _configure_torch(self) -> None:
        import torch

        if not self._torch_configured:
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass  # already fixed by an earlier parallel op; harmless
            self._torch_configured = True
        torch.set_num_threads(self.config.torch_threads)

    def _load_all(self, versions: list[str]) -> dict[str, LoadedModel]:
        self._configure_torch()
        loaded = {}
        for v in versions:
            model = load_version(self.registry, v)
            warm_up(model, (1, 8, self.config.max_batch_size))
            self._reserve(model, self.config.max_batch_size)
            loaded[v] = model
        return loaded

    def _reserve(self, model: LoadedModel, max_batch_size: int) -> None:
        # logged before and after: when the reservation gets the process killed, the log says what it asked for
        mib = max_batch_size * 4 * workspace_width(model) / 2**20
        if mib >= 1:
            log.info("reserving batch workspace version=%s max_batch_size=%d mib=%.0f", model.version,
                     max_batch_size, mib)
        reserve_workspace(model, max_batch_size)
        if mib >= 1:
            log.info("batch workspace reserved version=%s mib=%.0f", model.version, mib)

    def _install(self, models: dict[str, LoadedModel], versions: list[str]) -> None:
        for old in self.models.values():
            with contextlib.suppress(KeyError):
                metrics.INFO.remove(old.version, old.sha256)
        # requests already queued keep a reference to their model object, so they finish on the old one
        self.models = models
        self.default = models[versions[0]]
        for m in models.values():
            metrics.INFO.labels(m.version, m.sha256).set(1)
        self.cache.clear()

    async def startup_load(self) -> None:
        cfg = self.config
        if cfg.startup_delay_ms:
            self.reason = f"loading model (simulated slow load, {cfg.startup_delay_ms:.0f} ms)"
            await asyncio.sleep(cfg.startup_delay_ms / 1000.0)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            models = await loop.run_in_executor(self.load_pool, self._load_all, self.initial_versions)
        except CorruptArtifact as exc:
            self.reason = str(exc)
            log.error("%s", exc)
            return
        except Exception as exc:  # whatever went wrong, say it in /readyz rather than stay "loading" forever
            self.reason = f"cannot load {','.join(self.initial_versions)}: {exc}"
            log.exception("%s", self.reason)
            return
        self._install(models, self.initial_versions)
        # torch and the web stack leave ~2e5 long-lived objects; freezing them keeps full GC passes short (tail latency)
        gc.collect()
        gc.freeze()
        if cfg.warmup_ms:
            self.reason = f"warming up (simulated, {cfg.warmup_ms:.0f} ms)"
            await asyncio.sleep(cfg.warmup_ms / 1000.0)
        self.ready, self.reason = True, ""
        metrics.READY.set(1)
        log.info(
            "ready replica=%s versions=%s sha256=%s load_s=%.2f",
            self.replica,
            ",".join(self.models),
            ",".join(m.sha256[:12] for m in self.models.values()),
            time.perf_counter() - started,
        )

    async def reload(self, versions: list[str]) -> Response:
        loop = asyncio.get_running_loop()
        async with self._reload_lock:
            try:
                models = await loop.run_in_executor(self.load_pool, self._load_all, versions)
            except CorruptArtifact as exc:
                metrics.RELOADS.labels("refused").inc()
                log.error("reload refused: %s", exc)
                return _json({"detail": str(exc)}, 409)
            except VersionNotFound as exc:
                metrics.RELOADS.labels("refused").inc()
                return _json({"detail": str(exc)}, 404)
            except Exception as exc:  # a broken artifact of any kind: refuse it, keep serving the old versions
                metrics.RELOADS.labels("refused").inc()
                log.exception("reload refused: %s", exc)
                return _json({"detail": f"cannot load {','.join(versions)}: {exc}"}, 409)
            previous = list(self.models)
            self._install(models, versions)
            if not self.ready:
                self.ready, self.reason = True, ""
                metrics.READY.set(1)
        metrics.RELOADS.labels("ok").inc()
        log.info("reloaded replica=%s from=%s to=%s", self.replica, ",".join(previous), ",".join(versions))
        return _json(self.describe())

    def describe(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "ready": self.readiness()[0],
            "default": self.default.version if self.default else None,
            "versions": [m.describe() for m in self.models.values()],
        }

    # --------------------------------------------------------------------------------------------- predict
    async def predict(self, request: Request) -> Response:
        return _response(await self.predict_body(await request.body()))

    async def predict_body(self, body: bytes) -> Answer:
        started = time.perf_counter()
        self.inflight += 1
        code = 500
        try:
            answer = await self._predict(body)
            code = answer[0]
            return answer
        finally:
            self.inflight -= 1
            metrics.TALLY.request(code, time.perf_counter() - started)

    async def _predict(self, body: bytes) -> Answer:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _answer({"detail": "body must be valid JSON"}, 400)
        if not isinstance(payload, dict):
            return _answer({"detail": 'body must be a JSON object {"rows": [...]}'}, 422)
        extra = set(payload) - {"rows", "version"}
        if extra:
            return _answer({"detail": f"unknown field(s): {', '.join(sorted(map(str, extra)))}"}, 422)
        rows = payload.get("rows")
        if not isinstance(rows, list) or not rows:
            return _answer({"detail": "rows: must be a non-empty list of objects"}, 422)
        cfg = self.config
        if len(rows) > cfg.max_rows_per_request:
            return _answer({"detail": f"rows: at most {cfg.max_rows_per_request} rows per request"}, 413)
        model = self.default
        if model is None:
            metrics.REJECTED.labels("not_loaded").inc()
            return _answer({"detail": f"model not loaded: {self.reason}"}, 503, True)
        version = payload.get("version")
        if version is not None:
            if not isinstance(version, str):
                return _answer({"detail": 'version: must be a string such as "v2"'}, 422)
            found = self.models.get(version)
            if found is None:
                loaded = ", ".join(self.models)
                return _answer({"detail": f"version {version!r} is not loaded on this replica (loaded: {loaded})"}, 404)
            model = found
        try:
            encoded = model.preprocessor.encode_rows(rows)
        except RowError as exc:
            return _answer({"detail": str(exc)}, 422)

        keys = None
        scores = None
        queue_ms = compute_ms = 0.0
        if self.cache.enabled:
            keys = encoded.keys()
            scores = self.cache.get_all(model.version, keys)
            metrics.CACHE_LOOKUPS.labels("hit" if scores is not None else "miss").inc()
        if scores is None:
            assert self.batcher is not None
            try:
                future = self.batcher.submit(model, encoded)
            except QueueFull:
                metrics.REJECTED.labels("queue_full").inc()
                return _answer(
                    {"detail": f"overloaded: queue holds {self.batcher.queued_rows} rows (max_queue {cfg.max_queue})"},
                    503,
                    True,
                )
            result = await future
            scores, queue_ms, compute_ms = result.scores, result.queue_ms, result.compute_ms
            if keys is not None:
                self.cache.put_all(model.version, keys, scores)
        if cfg.extra_latency_ms:
            await asyncio.sleep(cfg.extra_latency_ms / 1000.0)
        return _answer(
            {
                "scores": scores,
                "model_version": model.version,
                "sha256": model.sha256,
                "replica": self.replica,
                "queue_ms": queue_ms,
                "compute_ms": compute_ms,
            }
        )


class PredictFront:
    """POST /v1/predict straight to the server; every other request goes to the FastAPI app.

    At saturation FastAPI's middleware stack and router cost about as much CPU as scoring a request (py-spy, see
    docs/benchmarks.md), so the hot route skips them; the route stays registered on the app for everything
    else (other methods get FastAPI's 405). Unexpected errors are logged and answered 500, as FastAPI would.
    """

    def __init__(self, app: FastAPI, server: ModelServer) -> None:
        self.app = app
        self.server = server
        self.state = app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            status, body, retry = await self.server.predict_body(b"".join(chunks))
        except Exception:
            log.exception("predict failed")
            status, body, retry = _answer({"detail": "internal error (see the replica's log)"}, 500)
        headers = [JSON_TYPE, (b"content-length", str(len(body)).encode())]
        if retry:
            headers.append(RETRY_AFTER)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _kib(kb: float) -> int:
    return int(kb * 1024)


def build_app(
    registry_root: str | Path, replica: str, versions: list[str], config: ModelServerConfig | None = None
) -> PredictFront:
    for v in versions:
        check_version_name(v)
    if not 1 <= len(versions) <= MAX_VERSIONS:
        raise ValueError(f"give 1..{MAX_VERSIONS} versions")
    server = ModelServer(Registry(registry_root), replica, versions, config or ModelServerConfig())

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        server.batcher = Batcher(lambda: server.config, server.compute_pool)
        server.batcher.start()
        loader = asyncio.get_running_loop().create_task(server.startup_load(), name="startup-load")
        try:
            yield
        finally:
            loader.cancel()
            await server.batcher.stop()
            server.compute_pool.shutdown(wait=False, cancel_futures=True)
            server.load_pool.shutdown(wait=False, cancel_futures=True)

    app = create_app("modelserver", server.holder, server.readiness, lifespan=lifespan)
    app.state.server = server
    app.router.add_route("/v1/predict", server.predict, methods=["POST"])

    @app.get("/v1/models")
    async def loaded_models() -> Response:
        return _json(server.describe())

    @app.post("/admin/reload")
    async def admin_reload(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _json({"detail": "body must be valid JSON"}, 400)
        wanted = body.get("versions") if isinstance(body, dict) else None
        if isinstance(wanted, str):
            wanted = [v for v in wanted.split(",") if v]
        if not isinstance(wanted, list) or not 1 <= len(wanted) <= MAX_VERSIONS:
            hint = f'versions: give a list of 1..{MAX_VERSIONS} versions, e.g. {{"versions": ["v1"]}}'
            return _json({"detail": hint}, 422)
        try:
            for v in wanted:
                check_version_name(v)
        except RegistryError as exc:
            return _json({"detail": f"versions: {exc}"}, 422)
        if len(set(wanted)) != len(wanted):
            return _json({"detail": "versions: duplicates"}, 422)
        return await server.reload(wanted)

    return PredictFront(app, server)
