"""The sandbox: every fault kind as a form, applied to the live stack through the lab's FaultManager; traffic.

Forms come from the injectors' own catalog (their params' JSON Schemas, with the live stack's names as choices);
what a fault does, and whether its parameters are acceptable, is decided by lab.faults alone.
"""

from __future__ import annotations

import itertools
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from lab.scenario.vocab import TRAFFIC_PROFILES
from ui import stackmap
from ui.app import UI, read_form
from ui.forms import FormError, FormField, field_from, fields_from_schema, values_from_form, variants
from ui.routes.attempts import console_context
from ui.security import Refused


def _manager(ui: UI) -> Any:
    manager = ui.lab.components.get("faults")
    if manager is None:
        raise Refused(503, "fault injection is not available in this lab (the faults component did not attach)")
    return manager


def fault_kinds(ui: UI) -> list[dict[str, Any]]:
    """The injectors' catalog with the live stack's names as target choices (as GET /api/faults/kinds)."""
    from lab.faults import all_injectors

    ctx = _manager(ui).ctx
    choices = ctx.stack.target_choices()
    return [i.catalog_entry(choices) for i in all_injectors()]


def fault_form(entry: dict[str, Any], variant: str | None = None) -> dict[str, Any]:
    """Fields for one fault kind: its target, then its params (for a union of toxics, the chosen type's)."""
    schema = entry["params_schema"]
    found = variants(schema)
    chosen = None
    if found:
        chosen = variant if variant in found else next(iter(found))
        params = fields_from_schema(found[chosen], skip=("type",))
    else:
        params = fields_from_schema(schema)
    fields: list[FormField] = []
    target = entry.get("target")
    if target is not None:
        f = field_from("target", target["schema"], target["required"], {}, {"target": target.get("choices") or []})
        f.label = f"Target ({target['kind']})"
        f.default = target.get("default")
        fields.append(f)
    return {"name": entry["name"], "summary": entry["summary"], "fields": fields, "params": params,
            "variants": list(found), "variant": chosen}


def router(ui: UI, route_class: type) -> APIRouter:
    r = APIRouter(route_class=route_class, include_in_schema=False)
    counter = itertools.count(1)

    async def act(fn: Any, *args: Any) -> Any:
        try:
            return await _run(fn, *args)
        finally:
            ui.live.invalidate()

    def entry_for(name: str) -> dict[str, Any]:
        entry = next((k for k in fault_kinds(ui) if k["name"] == name), None)
        if entry is None:
            raise Refused(404, f"no fault kind {name!r}; kinds are kind.action names such as network.toxic")
        return entry

    @r.get("/sandbox")
    def sandbox(request: Request) -> Response:
        kinds = fault_kinds(ui)
        frame = ui.live.current()
        form = fault_form(kinds[0])
        return ui.page(request, "sandbox.html", nav="sandbox", title="Sandbox", kinds=kinds, form=_merged(form),
                       profiles=TRAFFIC_PROFILES, running=ui.engine.running_attempt(),
                       stackmap=stackmap.from_frame(frame, reveal_faults=frame.attempt_id is None),
                       history=ui.live.history(frame),
                       console=console_context(ui), post_base="/sandbox/console")

    @r.get("/sandbox/forms")
    def form(request: Request) -> Response:
        name = request.query_params.get("name", "")
        form = fault_form(entry_for(name), request.query_params.get("type"))
        return ui.fragment("_fault_form.html", form=_merged(form))

    @r.post("/sandbox/faults")
    async def inject(request: Request) -> Response:
        from lab.faults import FaultError
        from lab.faults.api import fault_from_body

        if ui.engine.running_attempt() is not None:
            raise Refused(409, "an attempt is running: the sandbox injects nothing until it ends")
        data = await read_form(request)
        entry = entry_for(data.get("name", ""))
        form = fault_form(entry, data.get("type"))
        body: dict[str, Any] = {"kind": entry["kind"], "action": entry["action"]}
        target = values_from_form(form["fields"], data)
        if "target" in target:
            body["target"] = target["target"]
        params = values_from_form(form["params"], data)
        if form["variant"]:
            params["type"] = form["variant"]
        if params or entry["params_required"]:
            body["params"] = params
        duration = values_from_form([FormField("duration_s", "Revert after", "number")], data).get("duration_s")
        if duration is not None:
            if duration <= 0:
                raise FormError("duration_s", "must be more than 0 seconds")
            body["until"] = {"duration_s": duration}
        try:
            applied = await act(_manager(ui).apply, fault_from_body(body, counter))
        except FaultError as exc:
            return ui.fragment("_result.html", status=exc.status, level="error", message=str(exc))
        return ui.fragment("_result.html", level="ok", message=f"injected {applied.fault_id}: {applied.description}")

    @r.delete("/sandbox/faults/{fault_id}")
    async def revert(fault_id: str, request: Request) -> Response:
        if ui.engine.running_attempt() is not None:
            raise Refused(409, "an attempt is running: its faults are reverted when it ends (fixed or given up)")
        try:
            applied = await act(_manager(ui).revert, fault_id)
        except KeyError:
            return ui.error(request, 404, f"no fault {fault_id!r} was applied in this lab")
        notes = f" ({'; '.join(applied.notes)})" if applied.notes else ""
        return ui.fragment("_result.html", level="ok", message=f"reverted {applied.fault_id}{notes}")

    @r.delete("/sandbox/faults")
    async def revert_all(request: Request) -> Response:
        if ui.engine.running_attempt() is not None:
            raise Refused(409, "an attempt is running: its faults are reverted when it ends (fixed or given up)")
        reverted = await act(_manager(ui).revert_all)
        names = ", ".join(a.fault_id for a in reverted) or "nothing was active"
        return ui.fragment("_result.html", level="ok", message=f"reverted: {names}")

    @r.post("/sandbox/traffic")
    async def traffic(request: Request) -> Response:
        from lab.stack import StackError

        data = await read_form(request)
        fields = [FormField("rps", "Requests per second", "number", required=True),
                  FormField("profile", "Profile", "select", choices=list(TRAFFIC_PROFILES))]
        values = values_from_form(fields, data)
        if not 0 < values["rps"] <= 2000:
            raise FormError("rps", "between 0 and 2000 requests per second")
        profile = values.get("profile")
        if profile is not None and profile not in TRAFFIC_PROFILES:
            raise FormError("profile", f"one of {', '.join(TRAFFIC_PROFILES)}")
        try:
            state = await act(ui.lab.stack.traffic, values["rps"], profile)
        except StackError as exc:
            return ui.fragment("_result.html", status=409, level="error", message=str(exc))
        return ui.fragment("_result.html", level="ok",
                           message=f"traffic: {state.get('target_rps')} rps, profile {state.get('profile')}")

    @r.delete("/sandbox/traffic")
    async def stop_traffic(request: Request) -> Response:
        await act(ui.lab.stack.stop_traffic)
        return ui.fragment("_result.html", level="ok", message="traffic stopped")

    return r


def _merged(form: dict[str, Any]) -> dict[str, Any]:
    return {**form, "fields": [*form["fields"], *form["params"]]}


async def _run(fn: Any, *args: Any) -> Any:
    """Faults and traffic block for seconds (a variant is trained, a process restarts): off the event loop."""
    return await run_in_threadpool(fn, *args)
