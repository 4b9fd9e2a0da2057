"""Wiring the monitor into the lab: its own thread and event loop, providers over the supervisor and HTTP,
and the JSON routes (`/api/metrics`, `/api/drift`, `/api/slo`, `/api/series`, `/api/monitor/...`).

lab/server.py calls `attach(lab)` for every component module; the monitor runs on a dedicated thread so a
slow tick never delays the API, and the API's threads only read what the loop publishes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from pydantic import Field, TypeAdapter, ValidationError

from lab import parts
from lab.monitor.monitor import Monitor, MonitorConfig
from lab.monitor.providers import GatewayRecent, RegistryReference
from lab.monitor.slo import SLOSpec
from lab.parts import gateway as gateway_part
from lab.parts import registry as registry_part

log = logging.getLogger("faultline.monitor")

MAX_SLOS = 50
_SPECS = TypeAdapter(Annotated[list[SLOSpec], Field(max_length=MAX_SLOS)])


class MonitorRunner:
    """Runs `monitor.run()` on a private event loop in a daemon thread; `close()` stops it (the lab calls it)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="faultline-monitor", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> MonitorRunner:
        self._thread.start()
        return self

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._run())
        finally:
            self.loop.close()
            self._stopped.set()

    async def _run(self) -> None:
        await self.monitor.start()
        try:
            while self.monitor._task is not None and not self.monitor._task.done():
                await asyncio.sleep(0.2)
        finally:
            await self.monitor.stop()

    def call(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 30.0) -> Any:
        """Run a coroutine on the monitor's loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        if self._stopped.is_set() or not self._thread.is_alive():
            return
        try:
            self.call(self.monitor.stop(), timeout_s=10)
        except Exception as exc:  # noqa: BLE001 - closing must not fail the lab's shutdown
            log.warning("monitor stop failed: %r", exc)
        self._thread.join(timeout=10)


def lab_monitor(lab: Any, config: MonitorConfig | None = None) -> Monitor:
    """A Monitor over a `lab.core.Lab`: targets and process stats from its supervisor, the drift reference
    from the registry service, the live window from the gateway (direct URLs: toxics must not blind it)."""

    def supervisor_status() -> list[dict[str, Any]]:
        stack = lab.stack
        if stack.phase == "idle":
            return []
        services = stack.supervisor.status(stack.service_names())
        # parts declared not scraped (the netproxy speaks the Toxiproxy API only: no /metrics) still count by their
        # process stats
        return [dict(s, metrics=(p := parts.part_for(s["name"])) is None or p.scraped) for s in services]

    async def targets() -> list[dict[str, Any]]:
        return await asyncio.to_thread(supervisor_status)

    reference = RegistryReference(lab.stack.topology.service_url(registry_part.NAME))
    recent = GatewayRecent(lab.stack.topology.service_url(gateway_part.NAME))
    return Monitor(targets, reference_provider=reference, live_window_provider=recent, config=config)


def router(runner: MonitorRunner, live_attempt: Callable[[], str | None] = lambda: None) -> APIRouter:
    """The monitor's routes; `live_attempt()` is the running attempt's id (the attempts component knows it)."""
    mon = runner.monitor
    r = APIRouter(prefix="/api")

    @r.get("/metrics")
    def metrics() -> dict[str, Any]:
        return mon.metrics()

    @r.get("/drift")
    def drift(refresh: bool = False) -> Any:
        if refresh:
            try:
                runner.call(mon.refresh_drift(), timeout_s=30)
            except Exception as exc:  # noqa: BLE001 - the reason is the answer
                return JSONResponse({"detail": f"drift refresh failed: {exc}"}, status_code=503)
        return mon.drift()

    @r.get("/slo")
    def slo() -> dict[str, Any]:
        return mon.slo()

    @r.put("/slo")
    def put_slo(body: Any = Body(...)) -> Any:
        try:
            specs = _SPECS.validate_python(body)
            names = [s.name for s in specs]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:  # one tracker per name: the second spec would silently replace the first
                raise ValueError(f"name: each objective needs its own name; given twice: {', '.join(twice)}")
            mon.set_slos(specs)
        except ValidationError as exc:
            return JSONResponse({"detail": _message(exc)}, status_code=422)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return mon.slo()

    @r.get("/series")
    def series(name: str | None = Query(default=None, max_length=300), since: float | None = None,
               until: float | None = None) -> Any:
        if name is None:
            return {"names": mon.series_names()}
        if name not in mon.series_names():
            return JSONResponse({"detail": f"no series named {name!r}; GET /api/series lists them"},
                                status_code=404)
        return {"name": name, "points": mon.series(name, since, until)}

    @r.get("/monitor/export")
    def export(since: float | None = None, until: float | None = None,
               prefix: str | None = Query(default=None, max_length=300)) -> dict[str, Any]:
        return mon.export(since, until, prefix)

    @r.post("/monitor/attempts/{attempt_id}/begin")
    def begin(attempt_id: str) -> Any:
        # Only the running attempt may be marked (any id used to grow the map); marking it twice keeps the
        # first start, which the attempt itself set when it began.
        if live_attempt() != attempt_id:
            return JSONResponse({"detail": f"no running attempt {attempt_id!r}: only the running attempt "
                                           "(GET /api/attempts/active) can be marked"}, status_code=404)
        began = mon.attempt_began(attempt_id)
        if began is None:
            mon.begin_attempt(attempt_id)
            began = mon.attempt_began(attempt_id)
        return {"id": attempt_id, "from": began}

    @r.post("/monitor/attempts/{attempt_id}/end")
    def end(attempt_id: str) -> Any:
        try:
            return mon.end_attempt(attempt_id)
        except KeyError as exc:
            return JSONResponse({"detail": str(exc.args[0])}, status_code=404)

    @r.get("/monitor/attempts/{attempt_id}")
    def attempt(attempt_id: str) -> Any:
        try:
            return mon.attempt(attempt_id)
        except KeyError as exc:
            return JSONResponse({"detail": str(exc.args[0])}, status_code=404)

    @r.get("/monitor/overhead")
    def overhead() -> dict[str, Any]:
        return mon.overhead()

    return r


def _message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def attach(lab: Any) -> APIRouter:
    """Called by lab/server.py: start the monitor next to the lab's stack and serve its routes."""
    runner = MonitorRunner(lab_monitor(lab)).start()
    lab.add_component("monitor", runner)

    def live_attempt() -> str | None:
        attempts = lab.components.get("attempts")  # attached after the monitor: looked up per request
        return attempts.active_id() if attempts is not None else None

    return router(runner, live_attempt)
