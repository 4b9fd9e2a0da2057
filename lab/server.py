"""The lab server: the Lab's JSON API on 127.0.0.1, run by `faultline up` / `faultline serve`.

Routes are thin: each calls one Lab/Stack method. Other lab components add their own routes by defining
`attach(lab) -> APIRouter | None` in their module and being listed in COMPONENT_MODULES; a component that fails
to import is reported in the lab log and in /api/status instead of taking the stack down.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import threading
import time
from typing import Any, Literal

import uvicorn
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from lab.apidoc import document_errors
from lab.apiguard import Guard, HostRule, allowed_hosts_from_env
from lab.core import Lab
from lab.logsearch import MAX_PATTERN_CHARS, BadSearch
from lab.ports import PortInUse
from lab.rules import MAX_FEEDBACK_DELAY_S, MAX_TRAFFIC_RPS, MAX_TRAFFIC_SEED, RuleError, refuse_during_attempt
from lab.stack import StackError
from lab.state import remove_lab_info, write_lab_info
from lab.supervisor import SupervisorClosed, UnknownService
from lab.topology import MAX_REPLICAS
from lab.toxiproxy import ToxiproxyError

log = logging.getLogger("faultline.lab")

# Modules that may plug routes into the lab, in this order. Each may define `attach(lab) -> APIRouter | None`.
COMPONENT_MODULES: tuple[str, ...] = (
    "lab.monitor", "lab.faults", "lab.journal", "lab.scenario", "lab.grader", "lab.attempt", "lab.console", "ui",
)


class ScaleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(ge=1, le=MAX_REPLICAS)
    track: Literal["fraud", "llm"] | None = None  # required when the stack runs both tracks


class ServicePatch(BaseModel):
    """Live changes to how the supervisor runs a service."""

    model_config = ConfigDict(extra="forbid")
    memory_limit_bytes: int | None = Field(default=None, ge=1)
    clear_memory_limit: bool = False
    restart_policy: Literal["no", "on-failure", "always"] | None = None


class TrafficBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rps: float = Field(ge=0, le=MAX_TRAFFIC_RPS)
    profile: str | None = Field(default=None, min_length=1, max_length=100)
    feedback_delay_s: float | None = Field(default=None, ge=0, le=MAX_FEEDBACK_DELAY_S)
    seed: int | None = Field(default=None, ge=0, le=MAX_TRAFFIC_SEED)
    # The LLM track's settings (docs/loadgen.md): which track, the clients' retry policy, the concurrency cap.
    track: str | None = Field(default=None, min_length=1, max_length=20)
    retry_policy: str | None = Field(default=None, min_length=1, max_length=40)
    retries: int | None = Field(default=None, ge=0, le=20)
    max_users: int | None = Field(default=None, ge=4, le=5000)


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def core_router(lab: Lab) -> APIRouter:
    r = APIRouter(prefix="/api")

    @r.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "run_id": lab.run_id}

    @r.get("/status")
    def status() -> dict[str, Any]:
        return lab.status()

    @r.post("/scale")
    def scale(body: ScaleBody) -> dict[str, Any]:
        if body.track is None and len(lab.stack.topology.tracks) > 1:  # never a silent pick (docs/console.md)
            raise StackError(f"this lab runs the fraud and LLM tracks: say which one to scale with "
                             f"`faultline scale {body.replicas} --track llm` (or --track fraud; API: \"track\")")
        return {"track": body.track or lab.stack.topology.tracks[0],
                **lab.stack.scale(body.replicas, track=body.track)}

    @r.post("/services/{name}/restart")
    def restart(name: str) -> dict[str, Any]:
        return lab.stack.restart(name)

    @r.post("/services/{name}/stop")
    def stop(name: str) -> dict[str, Any]:
        return lab.stack.stop_service(name)

    @r.post("/services/{name}/start")
    def start(name: str) -> dict[str, Any]:
        return lab.stack.start_service(name)

    @r.patch("/services/{name}")
    def patch_service(name: str, body: ServicePatch) -> dict[str, Any]:
        return lab.stack.set_limits(name, body.memory_limit_bytes, body.restart_policy, body.clear_memory_limit)

    @r.get("/services/{name}/logs")
    def logs(
        name: str,
        grep: str | None = Query(default=None, max_length=MAX_PATTERN_CHARS),
        tail: int | None = Query(default=None, ge=0, le=100_000),
        since: float | None = None,
        regex: bool = False,
    ) -> dict[str, Any]:
        # A plain def: FastAPI runs it on a worker thread, and the search (lab/logsearch.py) is bounded and
        # linear-time, so /api/health and the rest keep answering meanwhile.
        lines = lab.stack.logs(name, grep or None, tail, since, regex=regex)
        path = lab.stack.log_path(name)
        return {"name": name, "file": str(path) if path else None, "lines": lines}

    @r.get("/traffic")
    def traffic_state() -> dict[str, Any]:
        return lab.stack.traffic_state()

    @r.post("/traffic")
    def traffic(body: TrafficBody) -> dict[str, Any]:
        refuse_during_attempt(lab, "traffic")
        return lab.stack.traffic(body.rps, body.profile, body.feedback_delay_s, body.seed, track=body.track,
                                 retry_policy=body.retry_policy, retries=body.retries, max_users=body.max_users)

    @r.delete("/traffic")
    def stop_traffic() -> dict[str, Any]:
        refuse_during_attempt(lab, "traffic")
        return lab.stack.stop_traffic()

    @r.post("/down")
    def down(request: Request) -> dict[str, Any]:
        lab.shutdown()
        server = getattr(request.app.state, "server", None)
        if server is not None:
            server.should_exit = True
        return {"stopped": True}

    return r


def _attach_components(app: FastAPI, lab: Lab) -> None:
    errors: list[str] = []
    for module_name in COMPONENT_MODULES:
        if importlib.util.find_spec(module_name) is None:
            continue
        try:
            module = importlib.import_module(module_name)
            attach = getattr(module, "attach", None)
            router = attach(lab) if callable(attach) else None
        except Exception as exc:  # noqa: BLE001 - one broken component must not stop the lab
            errors.append(f"{module_name}: {exc!r}")
            log.error("component %s failed to attach: %r", module_name, exc)
            continue
        if router is not None:
            app.include_router(router)
    lab.component_errors = errors


def create_app(lab: Lab, token: str | None = None, host: str | None = None,
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The lab's app, every route behind lab/apiguard.py's one Guard: Host (loopback names, the bound `host`,
    `allowed_hosts` or FAULTLINE_ALLOWED_HOSTS), `token` when set, Origin, body size and type."""
    app = FastAPI(title="faultline lab")
    app.state.lab = lab
    allowed = allowed_hosts if allowed_hosts is not None else allowed_hosts_from_env()
    hosts = HostRule(lab.settings.ports.lab, host or lab.topology.host, allowed)
    # Middleware wraps everything the router holds, the UI's routes and /static included; the guard reads the
    # routes at the first request because components attach below.
    app.add_middleware(Guard, routes=lambda: app.routes, hosts=hosts, token=token)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 without each error's `input`: the refused value came back whole (a 900 KB string)
        errors = [{k: v for k, v in e.items() if k not in ("input", "url")} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    @app.exception_handler(RecursionError)
    async def too_deep(_: Request, __: RecursionError) -> JSONResponse:
        # json.loads of a body nested thousands of levels deep raises RecursionError: bad input, not a bug
        return _error(400, "body: JSON nested too deeply")

    @app.exception_handler(UnknownService)
    async def unknown_service(_: Request, exc: UnknownService) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(StackError)
    async def stack_error(_: Request, exc: StackError) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(PortInUse)
    async def port_in_use(_: Request, exc: PortInUse) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(SupervisorClosed)
    async def closed(_: Request, exc: SupervisorClosed) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(ToxiproxyError)
    async def toxiproxy_error(_: Request, exc: ToxiproxyError) -> JSONResponse:
        return _error(502, f"the Toxiproxy server refused: {exc}")

    @app.exception_handler(BadSearch)
    async def bad_search(_: Request, exc: BadSearch) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(RuleError)
    async def refused(_: Request, exc: RuleError) -> JSONResponse:
        return _error(exc.status, str(exc))

    app.include_router(core_router(lab))
    _attach_components(app, lab)
    _document_error_detail(app)
    document_errors(app, token=bool(token))
    return app


def _document_error_detail(app: FastAPI) -> None:
    """/openapi.json: a 422's `detail` is pydantic's list (body validation) or our one-line message (the routes'
    own checks, e.g. "'x' is not a scenario id"); FastAPI documents only the list."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        first = app.openapi_schema is None
        schema = generate()  # cached by FastAPI after the first call: patch it once
        error = schema.get("components", {}).get("schemas", {}).get("HTTPValidationError")
        if first and error is not None:
            listed = error["properties"]["detail"]
            error["properties"]["detail"] = {"anyOf": [{"type": "string"}, {k: v for k, v in listed.items()
                                                                             if k != "title"}], "title": "Detail"}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def serve(lab: Lab, log_level: str = "warning", exit_with: int | None = None, host: str | None = None,
          token: str | None = None, allowed_hosts: list[str] | None = None) -> int:
    """Run the lab in the foreground until SIGINT/SIGTERM or POST /api/down; stop the stack on the way out.

    The stack starts at once; the API answers as soon as it is bound (lab.json is written then), so
    `faultline up -d` and the UI can show start-up progress. `host` defaults to the topology's (127.0.0.1); the
    CLI allows another address only with a `token`.
    """
    # The stack starts before the API exists: importing and attaching components takes about a second that
    # the services' start-up (torch imports) can overlap.
    lab.start_stack_in_background()
    app = create_app(lab, token=token, host=host, allowed_hosts=allowed_hosts)
    config = uvicorn.Config(
        app, host=host or lab.topology.host, port=lab.settings.ports.lab, log_level=log_level, access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    app.state.server = server

    def when_bound() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.01)
        write_lab_info(lab.home, lab.url, lab.run_id)

    threading.Thread(target=when_bound, name="faultline-lab-bound", daemon=True).start()
    if exit_with:
        threading.Thread(target=_exit_with, args=(server, exit_with), name="faultline-exit-with", daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl-C after its own shutdown; for a foreground lab it is the normal way out
    finally:
        try:
            lab.shutdown()
        except BaseException:
            # A second Ctrl-C mid-shutdown: still leave nothing behind.
            with contextlib.suppress(Exception):
                lab.supervisor.kill_all()
            raise
        finally:
            remove_lab_info(lab.home, pid=os.getpid())
    return 0 if server.started else 1


def _exit_with(server: uvicorn.Server, pid: int) -> None:
    """Stop the lab once `pid` is gone: a killed test runner must not leave a stack behind."""
    import psutil

    while not server.should_exit:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            log.warning("process %d is gone (--exit-with): stopping the lab", pid)
            server.should_exit = True
            return
        time.sleep(1)
