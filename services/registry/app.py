"""The registry's HTTP service over `store.Registry` (no torch in this process).

Broken variants need torch, so POST /v1/variants runs `python -m services.registry.variants` as a child
process (argv list, no shell) and returns the meta it prints: the registry itself stays small in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field

from services.common.service import ConfigHolder, create_app
from services.registry.store import STAGES, CorruptArtifact, Registry, RegistryError, VersionNotFound
from services.registry.variants import check_params

log = logging.getLogger("registry")
PROJECT_ROOT = Path(__file__).resolve().parents[2]

REQUESTS = Counter("registry_requests_total", "Registry requests", ["route", "code"])
LATENCY = Histogram("registry_request_latency_seconds", "Registry request latency", ["route"])


class RegistryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant_timeout_s: float = Field(120.0, gt=0, le=3600)
    latency_ms: float = Field(0.0, ge=0, le=60_000)  # added to every /v1 response (a slow registry)


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
    variant_lock = asyncio.Lock()

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
        async with variant_lock:
            status, payload = await _run_variant(registry.root, base, variant, params, holder.value.variant_timeout_s)
        if status == 201:
            log.info("variant version=%s base=%s variant=%s", payload["version"], base, variant)
        return JSONResponse(payload, status_code=status)

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


async def _run_variant(
    root: Path, base: str, variant: str, params: dict[str, Any], timeout_s: float
) -> tuple[int, dict[str, Any]]:
    argv = [
        sys.executable,
        "-m",
        "services.registry.variants",
        "--root",
        str(root),
        "--base",
        base,
        "--variant",
        variant,
        "--params",
        json.dumps(params),
    ]
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=str(PROJECT_ROOT), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 504, {"detail": f"making variant {variant} of {base} took longer than {timeout_s:.0f} s"}
    try:
        payload = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        log.error("variant child failed rc=%s stderr=%s", proc.returncode, err.decode()[-2000:])
        return 500, {"detail": f"making variant {variant} of {base} failed (exit {proc.returncode})"}
    if proc.returncode != 0:
        return 409, {"detail": payload.get("error", "variant failed")}
    return 201, payload
