"""Attempts in the browser: start from a briefing, the incident view (console, hints, diagnosis, fix claim, give
up), the debrief, and the console forms (also used by the sandbox, without an attempt).

Each route calls one engine method (ui/engine.py over lab.attempt and lab.console) and renders its answer.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from lab import parts
from lab.parts.gateway import NAME as GATEWAY
from lab.parts.loadgen import NAME as LOADGEN
from lab.scenario import check_file
from lab.scenario.loader import SUFFIX
from lab.scenario.ops import OP_ARGS
from ui import console, stackmap
from ui.app import UI, read_form
from ui.forms import FormError, FormField, values_from_form
from ui.security import Refused

PASTED_ID = re.compile(r"^id:[ \t]*[\"']?([a-z0-9][a-z0-9-]{0,63})[\"']?[ \t]*(#.*)?$", re.MULTILINE)


def pasted_document(text: str) -> dict[str, Any]:
    """The data of a pasted scenario file, checked by the loader exactly as a file is (its limits included: the
    text goes through a temporary file named after its `id`); 422 with every problem otherwise."""
    if not text.strip():
        raise Refused(422, "paste a scenario file (YAML) to run it")
    found = PASTED_ID.search(text)
    name = f"{found.group(1) if found else 'pasted'}{SUFFIX}"
    with tempfile.TemporaryDirectory(prefix="faultline-pasted-") as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        scenario, problems = check_file(path)
        if scenario is None or problems:
            shown = [p.replace(str(path), "pasted scenario") for p in problems[:20]]
            more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
            raise Refused(422, "the scenario is invalid: " + "; ".join(shown) + more)
        return dict(scenario._template or {})


def _known_op(op: str) -> None:
    if op not in OP_ARGS:
        raise Refused(404, f"no console operation {op!r}; operations are: {', '.join(OP_ARGS)}")


def _optional_number(data: dict[str, str], name: str, kind: str) -> Any:
    return values_from_form([FormField(name, name, kind)], data).get(name)


def console_context(ui: UI) -> dict[str, Any]:
    return {"ops": console.op_list(), "first": console.op_form("status", console.live_choices(ui.lab, "status"))}


# A steady-state probe kind -> (the monitor series it is measured from, its unit on the debrief chart).
PROBE_SERIES: dict[str, tuple[str, str]] = {
    "latency_p99_ms": ("{target}.p99_ms", "ms"),
    "error_rate": ("{target}.error_rate_5xx", "ratio"),
    "accuracy": ("quality.accuracy", "ratio"),
    "recall": ("quality.recall", "ratio"),
    "precision": ("quality.precision", "ratio"),
    "drift_psi": ("drift.{target}.psi", "psi"),
}


# The LLM track's probe kinds (lab/monitor/llm.py) -> ({target: series}, unit): a replica's own series when the
# target is one of its replicas (REPLICA; "{target}"), the gateway's or the clients' for those targets, else the
# replicas together (`*`).
REPLICA = "a replica"
LLM_PROBE_SERIES: dict[str, tuple[dict[str, str], str]] = {
    "ttft_p99_ms": ({REPLICA: "{target}.ttft_p99_ms", GATEWAY: "gateway.llm_ttft_p99_ms",
                     LOADGEN: "loadgen.client_ttft_p99_ms", "*": "llm.ttft_p99_ms"}, "ms"),
    "itl_p99_ms": ({REPLICA: "{target}.itl_p99_ms", LOADGEN: "loadgen.client_itl_p99_ms", "*": "llm.itl_p99_ms"},
                   "ms"),
    "goodput_ratio": ({"*": "llm.goodput_ratio"}, "ratio"),
    "kv_cache_usage": ({REPLICA: "{target}.kv_cache_usage_max"}, "ratio"),
    "prefix_cache_hit_rate": ({REPLICA: "{target}.prefix_cache_hit_rate"}, "ratio"),
    "spec_acceptance_rate": ({REPLICA: "{target}.spec_acceptance_rate"}, "ratio"),
    "rate_limited_rate": ({GATEWAY: "gateway.rate_limited_rate", "*": "gateway.rate_limited_rate"}, "ratio"),
}


def _probe_series(kind: str, target: Any) -> tuple[str, str] | None:
    """The monitor series a steady-state probe is charted from, and its unit; None: not charted."""
    found = PROBE_SERIES.get(kind)
    if found is not None:
        return found[0].format(target=target or GATEWAY), found[1]
    llm = LLM_PROBE_SERIES.get(kind)
    if llm is None:
        return None
    by, unit = llm
    part = parts.part_for(str(target)) if target else None
    key = REPLICA if part is not None and part.replicated else (target if target in by else "*")
    pattern = by.get(key)
    return None if pattern is None else (pattern.format(target=target), unit)


def probe_lines(probes: list[dict[str, Any]], points: dict[str, list[list[Any]]]) -> list[dict[str, Any]]:
    """The scenario's own numeric steady-state probes as chart lines: {"id", "unit", "tolerance", "series"}."""
    out = []
    for p in probes:
        found = _probe_series(p.get("kind", ""), p.get("target"))
        if found is None:
            continue
        name = found[0]
        if name in points:
            out.append({"id": p["id"], "unit": found[1], "tolerance": p.get("tolerance") or {}, "series": name})
    return out


def timeline_view(d: dict[str, Any], series: dict[str, Any] | None, probes: list[dict[str, Any]] | None = None
                  ) -> tuple[list[dict[str, Any]], float, Any]:
    """Timeline markers relative to the scenario clock (T+0 = the stack was healthy), and the chart's data: the
    scenario's own steady-state probes (its definition of healthy), not a fixed pair of gateway figures."""
    entries = d.get("timeline") or []
    ready = next((e for e in entries if e["type"] == "stack_ready"), None)
    offset = ready["t"] if ready else 0.0
    markers = [{**e, "t_rel": e["t"] - offset} for e in entries]
    chart = None
    if series and series.get("series"):
        points = series["series"]
        lines = probe_lines(probes or [], points)
        by_line = [{t: v for t, v in points.get(line["series"], [])} for line in lines]
        times = sorted(set().union(*by_line)) if by_line else []
        for line, values in zip(lines, by_line, strict=True):
            line["values"] = [None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v
                              for v in (values.get(t) for t in times)]
        chart = {"t": times, "lines": lines,
                 "markers": [{"at": e["at"], "kind": e["kind"], "n": i + 1} for i, e in enumerate(markers)]}
    return markers, offset, chart


def steady_state_of(ui: UI, attempt_id: str) -> list[dict[str, Any]]:
    """The steady-state probes of the scenario an ended attempt ran (none if the lab cannot say)."""
    try:
        return list(ui.engine.manager.scenario_of(attempt_id)["scenario"].get("steady_state") or [])
    except Exception:  # noqa: BLE001 - the chart falls back to no probe lines; the journal still shows
        return []


def attempt_history(ui: UI, frame: Any, a: dict[str, Any]) -> dict[str, Any]:
    """The incident page's charts: from the attempt's start (never an earlier attempt's data), marked there and at
    the scenario clock's T+0."""
    started = a.get("started_at")
    markers = [{"t": started, "label": "attempt"}] if started else []
    if a.get("clock_s") is not None:
        markers.append({"t": time.time() - float(a["clock_s"]), "label": "T+0"})
    return ui.live.history(frame, since=started, markers=markers)


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

    @r.post("/run-document")
    async def start_document(request: Request) -> Response:
        """A scenario pasted on the catalog page: validated with the catalog's loader (problems as line: field:
        message), refused when its id is already a scenario with other content, then started like any other."""
        data = await read_form(request)
        document = await run(pasted_document, data.get("scenario") or "")
        seed = _optional_number(data, "seed", "integer")
        time_scale = _optional_number(data, "time_scale", "number")
        if seed is None:
            seed = ui.engine.new_seed()
        state = await act(ui.engine.start_document, document, seed, time_scale)
        return ui.redirect(request, f"/attempts/{state['attempt_id']}")

    @r.get("/attempts/{attempt_id}")
    async def incident(attempt_id: str, request: Request) -> Response:
        a = await run(ui.engine.state, attempt_id)
        if a["status"] != "running" and a.get("score") is not None:
            return Response(status_code=303, headers={"Location": f"/attempts/{attempt_id}/debrief"})
        frame = ui.live.current()
        return ui.page(request, "incident.html", nav="", title=a.get("title", attempt_id), a=_full(ui, a),
                       post_base=f"/attempts/{attempt_id}/console", console=console_context(ui),
                       stackmap=stackmap.from_frame(frame, reveal_faults=False), history=attempt_history(ui, frame, a))

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
        probes = await run(steady_state_of, ui, attempt_id)
        markers, offset, chart = timeline_view(d, ui.engine.attempt_series(attempt_id), probes)
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
        console.prefill(form, request.query_params)  # e.g. the inspector's "Send this request"
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
        console.prefill(form, request.query_params)
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
                           "pin_base": f"/attempts/{attempt_id}/pin" if attempt_id else None,
                           "post_base": f"/attempts/{attempt_id}/console" if attempt_id else "/sandbox/console"}
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
