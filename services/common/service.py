"""What every Faultline service has in common: liveness, readiness, Prometheus metrics, live config, logging.

A service builds its own FastAPI app with `create_app(...)`, adds its routes, and runs it with `serve(...)`.
Config is a pydantic model with `extra="forbid"`: PATCH /admin/config merges a partial object into the live
config, validates the whole, and hands the new config to the service's `on_change` hook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from services.common.logs import UTCFormatter, setup_logging

# Logging lives in services/common/logs.py (standard library only) so that the lab and the load generator, which
# import it before they start anything, do not pay for the imports above; services import it from either module.
__all__ = ["ConfigHolder", "ReadyCheck", "UTCFormatter", "create_app", "serve", "setup_logging"]

ReadyCheck = Callable[[], tuple[bool, str]]


class ConfigHolder:
    """The live config of a service; replaced atomically on every successful PATCH."""

    def __init__(self, config: BaseModel, on_change: Callable[[BaseModel, BaseModel], None] | None = None):
        self.value = config
        self._on_change = on_change

    def patch(self, changes: dict[str, Any]) -> BaseModel:
        merged = {**self.value.model_dump(), **changes}
        new = type(self.value).model_validate(merged)
        old, self.value = self.value, new
        if self._on_change is not None:
            self._on_change(old, new)
        return new


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def create_app(
    name: str,
    config: ConfigHolder,
    ready: ReadyCheck | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app with /healthz, /readyz, /metrics and /admin/config already routed."""
    app = FastAPI(title=f"faultline {name}", **fastapi_kwargs)
    app.state.config = config
    app.state.service_name = name

    @app.exception_handler(RecursionError)
    async def too_deep(_: Request, __: RecursionError) -> JSONResponse:
        # json.loads on a body nested thousands of levels deep raises RecursionError, not ValueError: input, not a bug
        return JSONResponse({"detail": "body: JSON nested too deeply"}, status_code=400)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": name}

    @app.get("/readyz")
    async def readyz() -> Response:
        ok, reason = ready() if ready is not None else (True, "")
        if ok:
            return JSONResponse({"status": "ready", "service": name})
        return JSONResponse({"status": "not ready", "reason": reason, "service": name}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/admin/config")
    async def get_config() -> dict[str, Any]:
        return config.value.model_dump()

    @app.patch("/admin/config")
    async def patch_config(request: Request) -> Response:
        try:
            body = await request.json()
        except (ValueError, RecursionError):
            return JSONResponse({"detail": "body must be a JSON object"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"detail": "body must be a JSON object"}, status_code=400)
        try:
            new = config.patch(body)
        except ValidationError as exc:
            return JSONResponse({"detail": _validation_message(exc)}, status_code=422)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        logging.getLogger(name).info("config changed keys=%s", ",".join(sorted(body)))
        return JSONResponse(new.model_dump())

    return app


def serve(app: FastAPI, host: str, port: int, log_level: str = "warning") -> None:
    """Run the app with uvicorn on uvloop + httptools, without access logs (they would dominate CPU), one socket
    write per response (services/common/onewrite.py), and without uvicorn's X-Forwarded-For middleware: services
    listen on 127.0.0.1 behind a TCP proxy, nothing forwards client addresses, and the middleware wrapped every
    request (≈ 2 % of a model replica's CPU at saturation, py-spy)."""
    import uvicorn

    from services.common.onewrite import OneWriteHttpTools

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        loop="uvloop",
        http=OneWriteHttpTools,
        proxy_headers=False,
        timeout_graceful_shutdown=2,
    )
