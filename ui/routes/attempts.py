"""Attempts in the browser: start from a briefing, the incident view (console, hints, diagnosis, fix claim, give
up), the debrief, and the console forms (also used by the sandbox, without an attempt).

Each route calls one engine method (ui/engine.py over lab.attempt and lab.console) and renders its answer.
"""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from lab.scenario.ops import OP_ARGS
from ui import console, stackmap
from ui.app import UI, read_form
from ui.forms import FormError, FormField, values_from_form
from ui.security import Refused


def _known_op(op: str) -> None:
    if op not in OP_ARGS:
        raise Refused(404, f"no console operation {op!r}; operations are: {', '.join(OP_ARGS)}")


def _optional_number(data: dict[str, str], name: str, kind: str) -> Any:
    return values_from_form([FormField(name, name, kind)], data).get(name)


def console_context(ui: UI) -> dict[str, Any]:
    return {"ops": console.op_list(), "first": console.op_form("status", console.live_choices(ui.lab, "status"))}


def timeline_view(d: dict[str, Any], series: dict[str, Any] | None) -> tuple[list[dict[str, Any]], float, Any]:
    """Timeline markers relative to the scenario clock (T+0 = the stack was healthy), and the chart's data."""
    entries = d.get("timeline") or []
    ready = next((e for e in entries if e["type"] == "stack_ready"), None)
    offset = ready["t"] if ready else 0.0
    markers = [{**e, "t_rel": e["t"] - offset} for e in entries]
    chart = None
    if series and series.get("series"):
        points = series["series"]
        p99 = {t: v for t, v in points.get("gateway.p99_ms", [])}
        err = {t: v for t, v in points.get("gateway.error_rate", [])}
        times = sorted(set(p99) | set(err))
        clean = [None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for v in
                 (p99.get(t) for t in times)]
        latency_slo = next((e.get("threshold") for e in series.get("events", []) if e.get("slo") == "gateway-latency"),
                           None)
        chart = {"t": times, "p99": clean, "errors": [err.get(t) for t in times], "latency_slo": latency_slo or 250,
                 "markers": [{"at": e["at"], "kind": e["kind"], "n": i + 1} for i, e in enumerate(markers)]}
    return markers, offset, chart


def router(ui: UI, route_class: type) -> APIRouter:
    r = APIRouter(route_class=route_class, include_in_schema=False)

    async def run(fn: Any, *args: Any) -> Any:
        return await run_in_threadpool(fn, *args)

    async def act(fn: Any, *args: Any) -> Any:
        try:
            return await run(fn, *args)
        finally:
            ui.live.invalidate()

    @r.post("/scenarios/{scenario_id}/start")
    async def start(scenario_id: str, request: Request) -> Response:
        if ui.catalog.get(scenario_id) is None:
            raise Refused(404, f"no scenario {scenario_id!r} in the catalog")
        data = await read_form(request)
        seed = _optional_number(data, "seed", "integer")
        time_scale = _optional_number(data, "time_scale", "number")
        if seed is None:
            seed = ui.engine.new_seed()
        state = await act(ui.engine.start, scenario_id, seed, time_scale)
        return ui.redirect(request, f"/attempts/{state['attempt_id']}")

    @r.get("/attempts/{attempt_id}")
    async def incident(attempt_id: str, request: Request) -> Response:
        a = await run(ui.engine.state, attempt_id)
        if a["status"] != "running" and a.get("score") is not None:
            return Response(status_code=303, headers={"Location": f"/attempts/{attempt_id}/debrief"})
        frame = ui.live.current()
        return ui.page(request, "incident.html", nav="", title=a.get("title", attempt_id), a=_full(ui, a),
                       post_base=f"/attempts/{attempt_id}/console", console=console_context(ui),
                       stackmap=stackmap.from_frame(frame, reveal_faults=False), history=ui.live.history(frame))

    @r.get("/attempts/{attempt_id}/ended")
    async def ended(attempt_id: str, request: Request) -> Response:
        a = await run(ui.engine.state, attempt_id)
        if a["status"] == "running" or a.get("score") is None:
            return Response(status_code=204)
        return ui.redirect(request, f"/attempts/{attempt_id}/debrief")

    @r.post("/attempts/{attempt_id}/hint")
    async def hint(attempt_id: str, request: Request) -> Response:
        await act(ui.engine.take_hint, attempt_id)
        return ui.fragment("_hints.html", a=_full(ui, await run(ui.engine.state, attempt_id)))

    @r.post("/attempts/{attempt_id}/diagnosis")
    async def diagnosis(attempt_id: str, request: Request) -> Response:
        data = await read_form(request)
        answers = {k: v for k, v in data.items() if k != "csrf_token"}
        await act(ui.engine.submit_diagnosis, attempt_id, answers)
        return ui.fragment("_diagnosis.html", a=_full(ui, await run(ui.engine.state, attempt_id)))

    @r.post("/attempts/{attempt_id}/declare")
    async def declare(attempt_id: str, request: Request) -> Response:
        await act(ui.engine.declare, attempt_id)
        return ui.fragment("_diagnosis.html", a=_full(ui, await run(ui.engine.state, attempt_id)))

    @r.post("/attempts/{attempt_id}/pin/{seq}")
    async def pin(attempt_id: str, seq: int, request: Request) -> Response:
        await act(ui.engine.pin, attempt_id, seq)
        return HTMLResponse(f'<span class="pinned" data-pinned="{seq}">Pinned as evidence</span>')

    @r.post("/attempts/{attempt_id}/fixed")
    async def fixed(attempt_id: str, request: Request) -> Response:
        claim = await act(ui.engine.claim_fixed, attempt_id)
        hold = max(claim.get("hold_s") or [0])
        return ui.fragment("_result.html", level="warn",
                           message=f"Claim received: the lab waits {claim.get('settle_s', 0):g} s for fresh "
                                   f"measurements, then the steady state must hold for {hold:g} s. A claim that "
                                   "cannot hold is rejected sooner.")

    @r.post("/attempts/{attempt_id}/abort")
    async def abort(attempt_id: str, request: Request) -> Response:
        await act(ui.engine.abort, attempt_id)
        return ui.redirect(request, f"/attempts/{attempt_id}/debrief")

    @r.get("/attempts/{attempt_id}/debrief")
    async def debrief(attempt_id: str, request: Request) -> Response:
        d = await run(ui.engine.debrief, attempt_id)
        markers, offset, chart = timeline_view(d, ui.engine.attempt_series(attempt_id))
        return ui.page(request, "debrief.html", nav="", title=f"Debrief: {d['title']}", d=d, markers=markers,
                       offset=offset, chart=chart)

    @r.post("/attempts/{attempt_id}/retry")
    async def retry(attempt_id: str, request: Request) -> Response:
        a = await run(ui.engine.state, attempt_id)
        state = await act(ui.engine.start, a["scenario_id"], ui.engine.new_seed(avoid=a.get("seed")),
                          a.get("time_scale"))
        return ui.redirect(request, f"/attempts/{state['attempt_id']}")

    # --- the console (an attempt's, or the sandbox's) -----------------------------------------------------------

    @r.get("/attempts/{attempt_id}/console/{op}")
    async def attempt_op_form(attempt_id: str, op: str, request: Request) -> Response:
        _known_op(op)
        await run(ui.engine.state, attempt_id)
        form = await run(console.op_form, op, await run(console.live_choices, ui.lab, op))
        return ui.fragment("_op_form.html", form=form, post_base=f"/attempts/{attempt_id}/console", focus=True)

    @r.post("/attempts/{attempt_id}/console/{op}")
    async def attempt_op(attempt_id: str, op: str, request: Request) -> Response:
        _known_op(op)
        await run(ui.engine.state, attempt_id)  # 404 for an attempt that never existed
        return await _op(ui, request, attempt_id, op)

    @r.get("/sandbox/console/{op}")
    async def sandbox_op_form(op: str, request: Request) -> Response:
        _known_op(op)
        form = await run(console.op_form, op, await run(console.live_choices, ui.lab, op))
        return ui.fragment("_op_form.html", form=form, post_base="/sandbox/console", focus=True)

    @r.post("/sandbox/console/{op}")
    async def sandbox_op(op: str, request: Request) -> Response:
        running = ui.engine.running_attempt()
        if running is not None:
            raise Refused(409, f"attempt {running['id']} is running: use its console, so the operation counts there")
        return await _op(ui, request, None, op)

    return r


def _full(ui: UI, a: dict[str, Any]) -> dict[str, Any]:
    """An ended attempt's state (from the journal) lacks the live parts; templates get safe defaults."""
    out = dict(a)
    out.setdefault("title", a.get("scenario_id", ""))
    out.setdefault("clock_s", None)
    out.setdefault("deadline_s", None)
    out.setdefault("progress", a.get("status", ""))
    out.setdefault("paged", False)
    out.setdefault("paged_at_s", None)
    out.setdefault("steady_state", [])
    out.setdefault("briefing", "")
    out.setdefault("hints", {"taken": [], "left": 0, "next_cost": None})
    out.setdefault("diagnosis", {"open": False, "questions": [], "submitted": None})
    out.setdefault("fix", {"claims": 0, "verifying": False, "last": None, "verification": None})
    out.setdefault("end_reason", None)
    out.setdefault("score", None)
    return out


async def _op(ui: UI, request: Request, attempt_id: str | None, op: str) -> Response:
    """Run one console operation and render its output (or its refusal) as a block for the output list."""
    _known_op(op)
    data = await read_form(request)
    choices = await run_in_threadpool(console.live_choices, ui.lab, op)
    form = console.op_form(op, choices)
    ctx: dict[str, Any] = {"op": op, "at": time.strftime("%H:%M:%S"), "uid": f"{op}-{time.time_ns()}",
                           "pin_base": f"/attempts/{attempt_id}/pin" if attempt_id else None}
    try:
        args = values_from_form(form["fields"], data)
    except FormError as exc:
        return ui.fragment("_op_output.html", status=422, ok=False, command=op, status_code=422, message=str(exc),
                           output_template=console.output_template(op), **ctx)
    from lab.grader.match import op_text

    command = op_text(op, args)
    try:
        result = await run_in_threadpool(ui.engine.run_op, attempt_id, op, args)
    except Refused as exc:
        ui.live.invalidate()
        return ui.fragment("_op_output.html", status=exc.status, ok=False, command=command, status_code=exc.status,
                           message=exc.message, output_template=console.output_template(op), **ctx)
    ui.live.invalidate()
    return ui.fragment("_op_output.html", ok=True, command=command, result=result,
                       output_template=console.output_template(op), **ctx)
