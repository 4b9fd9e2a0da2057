"""The registry's HTTP service over `store.Registry` (no torch in this process).

Broken variants and training need torch, so POST /v1/variants runs `python -m services.registry.variants` and
POST /v1/train runs `python -m services.trainer train` as child processes (argv lists, no shell), one at a
time, and answer with the new version's meta: the registry itself stays small in memory.

POST /v1/train takes either generator settings or labelled rows inline (the lab's retrain sends the gateway's
labelled recent traffic). Rows are checked here, before any child starts (services/trainer/rows.py: 422 naming
the row and field, too few rows, a single class), and the body is bounded (`MAX_TRAIN_BODY_BYTES`, else 413).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common import fastjson
from services.common.bodies import BodyTooLarge, read_body
from services.common.service import ConfigHolder, create_app
from services.registry.llm import LLMRegistry
from services.registry.store import STAGES, CorruptArtifact, Registry, RegistryError, VersionNotFound
from services.registry.variants import check_params
from services.trainer.rows import MAX_ROWS, RowsError, RowsSummary, check_rows

log = logging.getLogger("registry")
PROJECT_ROOT = Path(__file__).resolve().parents[2]

REQUESTS = Counter("registry_requests_total", "Registry requests", ["route", "code"])
LATENCY = Histogram("registry_request_latency_seconds", "Registry request latency", ["route"])
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _LIBC.malloc_trim  # noqa: B018 - glibc only
except (OSError, AttributeError):
    _LIBC = None
# 100,000 labelled rows as the gateway serves them are ~40 MiB of JSON; the limit leaves room for that.
MAX_TRAIN_BODY_BYTES = 64 * 1024 * 1024


class RegistryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant_timeout_s: float = Field(120.0, gt=0, le=3600)
    train_timeout_s: float = Field(600.0, gt=0, le=7200)
    latency_ms: float = Field(0.0, ge=0, le=60_000)  # added to every /v1 response (a slow registry)


class TrainRequest(BaseModel):
    """POST /v1/train: generated data (data_seed, n_rows, shift) or labelled `rows` (the lab's retrain)."""

    model_config = ConfigDict(extra="forbid")

    rows: list[Any] | None = Field(None, description=f"labelled rows (services/trainer/rows.py), {MAX_ROWS} at most")
    data_seed: int = Field(7, ge=0, le=2**31)
    n_rows: int = Field(200_000, ge=200, le=2_000_000)
    epochs: int = Field(10, ge=1, le=200)
    seed: int | None = Field(None, ge=0, le=2**31)
    shift: dict[str, Any] | None = None
    parent: str | None = None
    warm_start: bool = Field(False, description="fine-tune `parent` instead of starting from random weights")
    origin: str | None = Field(None, max_length=300, description="where the rows came from (kept in the lineage)")
    stage: Literal["production", "canary", "staging", "archived"] = "staging"


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _registry_error(exc: RegistryError) -> JSONResponse:
    if isinstance(exc, VersionNotFound):
        return _error(404, str(exc))
    if isinstance(exc, CorruptArtifact):
        return _error(409, str(exc))
    return _error(422, str(exc))


async def _json_object(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "body must be valid JSON")
    if not isinstance(body, dict):
        return _error(422, "body must be a JSON object")
    return body


def build_app(root: str | Path, config: RegistryConfig | None = None) -> Any:
    registry = Registry(root)
    holder = ConfigHolder(config or RegistryConfig())
    app = create_app("registry", holder)
    app.state.registry = registry
    heavy = asyncio.Lock()  # one torch child at a time: the machine has few cores

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        if request.url.path.startswith("/v1/") and holder.value.latency_ms:
            await asyncio.sleep(holder.value.latency_ms / 1000.0)
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "other")
        REQUESTS.labels(name, str(response.status_code)).inc()
        LATENCY.labels(name).observe(time.perf_counter() - started)
        return response

    @app.get("/v1/models")
    async def list_models(stage: str | None = None) -> Response:
        if stage is not None and stage not in STAGES:
            return _error(422, f"stage must be one of {', '.join(STAGES)}")
        metas = registry.list()
        if stage is not None:
            metas = [m for m in metas if m.get("stage") == stage]
        return JSONResponse(metas)

    @app.get("/v1/models/{version}")
    async def get_model(version: str) -> Response:
        try:
            return JSONResponse(registry.get(version))
        except RegistryError as exc:
            return _registry_error(exc)

    # the LLM track's versions (registry/llm/versions/, services/registry/llm.py): read-only here
    llm_registry = LLMRegistry(root)

    @app.get("/v1/llm/models")
    async def list_llm_models() -> Response:
        return JSONResponse(llm_registry.list())

    @app.get("/v1/llm/models/{version}")
    async def get_llm_model(version: str) -> Response:
        try:
            return JSONResponse(llm_registry.get(version))
        except RegistryError as exc:
            return _registry_error(exc)

    @app.get("/v1/llm/models/{version}/verify")
    async def verify_llm_model(version: str) -> Response:
        try:
            ok, detail = llm_registry.verify(version)
        except RegistryError as exc:
            return _registry_error(exc)
        return JSONResponse({"version": version, "ok": ok, "detail": detail})

    @app.get("/v1/models/{version}/reference")
    async def get_reference(version: str) -> Response:
        try:
            return JSONResponse(registry.reference(version))
        except RegistryError as exc:
            return _registry_error(exc)

    @app.get("/v1/models/{version}/verify")
    async def verify(version: str) -> Response:
        try:
            ok, detail = registry.verify(version)
        except RegistryError as exc:
            return _registry_error(exc)
        return JSONResponse({"version": version, "ok": ok, "detail": detail})

    @app.post("/v1/models/{version}/stage")
    async def set_stage(version: str, request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        extra = set(body) - {"stage"}
        if extra or "stage" not in body:
            return _error(422, f'body must be {{"stage": one of {", ".join(STAGES)}}}')
        try:
            meta = registry.set_stage(version, body["stage"])
        except RegistryError as exc:
            return _registry_error(exc)
        log.info("stage version=%s stage=%s", version, body["stage"])
        return JSONResponse(meta)

    @app.post("/v1/variants")
    async def make_variant(request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        extra = set(body) - {"base", "variant", "params"}
        if extra:
            return _error(422, f"unknown field(s): {', '.join(sorted(extra))}")
        base, variant, params = body.get("base"), body.get("variant"), body.get("params") or {}
        if not isinstance(base, str) or not isinstance(variant, str):
            return _error(422, 'body must be {"base": "v1", "variant": "...", "params": {...}}')
        try:
            params = check_params(variant, params)
            registry.load(base)
        except RegistryError as exc:
            return _registry_error(exc)
        argv = [
            "-m",
            "services.registry.variants",
            "--root",
            str(registry.root),
            "--base",
            base,
            "--variant",
            variant,
            "--params",
            json.dumps(params),
        ]
        async with heavy:
            status, payload = await _run_child(argv, holder.value.variant_timeout_s, f"making variant {variant}")
        if status == 201:
            log.info("variant version=%s base=%s variant=%s", payload["version"], base, variant)
        return JSONResponse(payload, status_code=status)

    @app.post("/v1/train")
    async def train_route(request: Request) -> Response:
        try:
            return await train(request)
        finally:
            _release_memory()  # the request's rows are garbage by now

    async def train(request: Request) -> Response:
        try:
            raw = await read_body(request, MAX_TRAIN_BODY_BYTES)
        except BodyTooLarge:
            return _error(413, f"body larger than {MAX_TRAIN_BODY_BYTES // 2**20} MiB: send fewer rows "
                               f"(at most {MAX_ROWS}), or only the model features and label of each")
        try:
            body = fastjson.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError) as exc:  # orjson says why: "recursion limit reached", a bad byte...
            return _error(400, f"body must be valid JSON: {str(exc)[:200]}")
        del raw
        if not isinstance(body, dict):
            return _error(422, "body must be a JSON object")
        try:
            req = TrainRequest.model_validate(body)
        except ValidationError as exc:
            return _error(422, _validation_message(exc))
        del body
        if req.parent is not None and not registry.exists(req.parent):
            return _error(422, f"parent version {req.parent!r} is not in the registry")
        if req.warm_start and req.parent is None:
            return _error(422, "warm_start: needs a parent version to fine-tune")
        summary: RowsSummary | None = None
        if req.rows is not None:
            try:
                summary = await asyncio.to_thread(check_rows, req.rows)  # 100,000 rows take a moment
            except RowsError as exc:
                return _error(422, str(exc))
        argv = [
            "-m",
            "services.trainer",
            "train",
            "--registry",
            str(registry.root),
            "--json",
            "--data-seed",
            str(req.data_seed),
            "--rows",
            str(req.n_rows),
            "--epochs",
            str(req.epochs),
            "--stage",
            req.stage,
        ]
        if req.seed is not None:
            argv += ["--seed", str(req.seed)]
        if req.shift is not None:
            argv += ["--shift", json.dumps(req.shift)]
        if req.parent is not None:
            argv += ["--parent", req.parent]
        if req.warm_start:
            argv += ["--warm-start"]
        if req.origin is not None:
            argv += ["--origin", req.origin]
        with tempfile.TemporaryDirectory(prefix="faultline-train-") as tmp:
            if req.rows is not None:
                rows_file = Path(tmp) / "rows.json"
                rows_file.write_bytes(await asyncio.to_thread(fastjson.dumps, req.rows))
                argv += ["--rows-file", str(rows_file)]
                req.rows = None  # the child has them now; the registry stays small
            async with heavy:
                status, payload = await _run_child(argv, holder.value.train_timeout_s, "training")
        if status != 201:
            return JSONResponse(payload, status_code=status)
        meta = registry.get(payload["version"])
        log.info(
            "trained version=%s auc=%.4f source=%s rows=%s fraud=%s warm_start=%s",
            meta["version"],
            meta["metrics"]["auc"],
            meta["lineage"].get("source"),
            summary.rows if summary else meta["lineage"].get("rows"),
            summary.fraud if summary else meta["lineage"].get("fraud"),
            meta["lineage"].get("warm_start"),
        )
        return JSONResponse(meta, status_code=201)

    @app.post("/admin/models/{version}/corrupt")
    async def corrupt(version: str) -> Response:
        try:
            registry.corrupt_artifact(version)
        except RegistryError as exc:
            return _registry_error(exc)
        log.warning("artifact corrupted on purpose version=%s", version)
        return JSONResponse({"version": version, "corrupted": True})

    @app.post("/admin/models/{version}/restore")
    async def restore(version: str) -> Response:
        try:
            restored = registry.restore_artifact(version)
        except RegistryError as exc:
            return _registry_error(exc)
        return JSONResponse({"version": version, "restored": restored})

    return app


def _release_memory() -> None:
    """Give the heap that parsing a large body used back to the OS: 100,000 rows are ~100 MiB of Python objects,
    freed after the request but kept by the allocator otherwise (the registry should stay small)."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


async def _run_child(args: list[str], timeout_s: float, what: str) -> tuple[int, dict[str, Any]]:
    """Run `python <args>`; (201, the JSON object it printed last) or an error status with a detail."""
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=str(PROJECT_ROOT),
        env={**os.environ, "PYTHONPATH": path},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 504, {"detail": f"{what} took longer than {timeout_s:.0f} s"}
    if proc.returncode == 2:  # the child's "bad request": its message says what was wrong
        lines = (out.decode() + err.decode()).strip().splitlines()
        message = lines[-1] if lines else "refused"
        try:
            message = json.loads(message).get("error", message)
        except (ValueError, AttributeError):
            message = message.removeprefix("error: ")
        status = 409 if "sha256 mismatch" in message or "artifact missing" in message else 422
        return status, {"detail": message}
    try:
        payload = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        payload = None
    if proc.returncode != 0 or not isinstance(payload, dict):
        log.error("%s failed rc=%s stderr=%s", what, proc.returncode, err.decode()[-2000:])
        return 500, {"detail": f"{what} failed (exit {proc.returncode}); see the registry log"}
    return 201, payload
