"""The sandbox: every fault kind as a form, applied to the live stack through the lab's FaultManager; traffic.

Forms come from the fault registry's catalog (`lab.faults.catalog`: each kind's params JSON Schema, help and
example params, with the live stack's names as choices); what a fault does, and whether its parameters are
acceptable, is decided by lab.faults alone.
"""

from __future__ import annotations

import importlib
import itertools
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from lab import parts
from lab.parts import DEFAULT_TRACK
from lab.rules import MAX_TRAFFIC_RPS, RuleError, attempt_refusal
from lab.scenario.vocab import TRAFFIC_PROFILES
from ui import stackmap
from ui.app import UI, read_form
from ui.forms import FormError, FormField, field_from, fields_from_schema, values_from_form, variants, with_example
from ui.routes.attempts import console_context
from ui.security import Refused


def traffic_profiles(tracks: tuple[str, ...]) -> list[str]:
    """The built-in traffic profiles of the tracks the stack runs (the fraud track's first)."""
    from services.loadgen.profiles import profile_names

    out = list(TRAFFIC_PROFILES) if DEFAULT_TRACK in tracks else []
    for track in tracks:
        out += [p for p in profile_names(track) if p not in out]
    return out


def refuse_during_attempt(ui: UI, action: str) -> None:
    """lab/rules.py decides what an attempt in progress forbids; here it becomes the UI's 409."""
    running = ui.engine.running_attempt()
    message = attempt_refusal(action, running["id"] if running else None)
    if message is not None:
        raise Refused(409, message)


def _manager(ui: UI) -> Any:
    manager = ui.lab.components.get("faults")
    if manager is None:
        raise Refused(503, "fault injection is not available in this lab (the faults component did not attach)")
    return manager


def fault_kinds(ui: UI) -> list[dict[str, Any]]:
    """The registry's catalog with the live stack's names as target choices (as GET /api/faults/kinds)."""
    from lab.faults import catalog

    return catalog(_manager(ui).ctx)


def applicable(kinds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kinds this stack can take: a kind whose required target has no choice here (e.g. a model-replica fault
    on a stack of the LLM track only) is left out of the sandbox's list."""
    return [k for k in kinds if not (k.get("target") and k["target"].get("required")
                                     and k["target"].get("choices") == [])]


def config_keys(target: str | None) -> tuple[list[str], dict[str, Any]]:
    """The keys `target`'s part lets a learner change (its declaration's `settable`, lab/parts/) and, from its config
    model's defaults, an example value for the first of them: what a config-values field offers for that target."""
    part = parts.part_for(target) if target else None
    if part is None or not part.settable:
        return [], {}
    keys = sorted(part.settable)
    example: dict[str, Any] = {}
    if part.config_model:
        try:
            module, _, cls = part.config_model.partition(":")
            fields = getattr(importlib.import_module(module), cls).model_fields
            example = next(({k: fields[k].default} for k in keys if k in fields
                            and isinstance(fields[k].default, int | float | str | bool)), {})
        except (ImportError, AttributeError):
            example = {}
    return keys, example


def fault_form(entry: dict[str, Any], variant: str | None = None, target: str | None = None) -> dict[str, Any]:
    """Fields for one fault kind: its target, then its params (for a union of toxics, the chosen type's). A config
    push's values (a service target, an object of keys) list the keys the chosen `target` takes; changing the target
    re-renders the form."""
    schema = entry["params_schema"]
    example = entry.get("params_example") or {}
    found = variants(schema)
    chosen = None
    if found:
        preferred = [v for v in (variant, example.get("type")) if v in found]
        chosen = preferred[0] if preferred else next(iter(found))
        params = fields_from_schema(found[chosen], skip=("type",))
        if example.get("type") != chosen:  # the example is one toxic's: another type starts from its own defaults
            example = {}
    else:
        params = fields_from_schema(schema)
    with_example(params, example)
    fields: list[FormField] = []
    declared = entry.get("target")
    if declared is not None:
        choices = declared.get("choices") or []
        f = field_from("target", declared["schema"], declared["required"], {}, {"target": choices})
        f.label = f"Target ({declared['kind']})"
        f.default = target if target in choices else declared.get("default")
        fields.append(f)
        values = [p for p in params if p.json_type == "object"] if declared["kind"] == "service" else []
        if values and choices:
            service = f.default if f.default in choices else choices[0]
            keys, key_example = config_keys(service)
            f.refresh_url, f.refresh_target = "/sandbox/forms", "#fault-form"
            for p in values:
                if keys:
                    p.help = f"a JSON object of keys {service} takes: {', '.join(keys)}"
                    shown = p.default if isinstance(p.default, dict) else {}
                    if key_example and not set(shown) <= set(keys):
                        p.default = key_example
    return {"name": entry["name"], "label": entry.get("label"), "summary": entry["summary"], "fields": fields,
            "params": params, "variants": list(found), "variant": chosen}


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
        kinds = applicable(fault_kinds(ui))
        frame = ui.live.current()
        form = fault_form(kinds[0])
        return ui.page(request, "sandbox.html", nav="sandbox", title="Sandbox", kinds=kinds, form=_merged(form),
                       profiles=traffic_profiles(frame.tracks), max_rps=MAX_TRAFFIC_RPS,
                       running=ui.engine.running_attempt(),
                       stackmap=stackmap.from_frame(frame, reveal_faults=frame.attempt_id is None),
                       history=ui.live.history(frame),
                       console=console_context(ui), post_base="/sandbox/console")

    @r.get("/sandbox/forms")
    def form(request: Request) -> Response:
        name = request.query_params.get("name", "")
        form = fault_form(entry_for(name), request.query_params.get("type"), request.query_params.get("target"))
        return ui.fragment("_fault_form.html", form=_merged(form))

    @r.post("/sandbox/faults")
    async def inject(request: Request) -> Response:
        from lab.faults import FaultError
        from lab.faults.api import fault_from_body

        refuse_during_attempt(ui, "fault.inject")
        data = await read_form(request)
        entry = entry_for(data.get("name", ""))
        form = fault_form(entry, data.get("type"), data.get("target"))
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
        refuse_during_attempt(ui, "fault.revert")
        try:
            applied = await act(_manager(ui).revert, fault_id)
        except KeyError:
            return ui.error(request, 404, f"no fault {fault_id!r} was applied in this lab")
        notes = f" ({'; '.join(applied.notes)})" if applied.notes else ""
        return ui.fragment("_result.html", level="ok", message=f"reverted {applied.fault_id}{notes}")

    @r.delete("/sandbox/faults")
    async def revert_all(request: Request) -> Response:
        refuse_during_attempt(ui, "fault.revert")
        reverted = await act(_manager(ui).revert_all)
        names = ", ".join(a.fault_id for a in reverted) or "nothing was active"
        return ui.fragment("_result.html", level="ok", message=f"reverted: {names}")

    @r.post("/sandbox/traffic")
    async def traffic(request: Request) -> Response:
        from lab.stack import StackError

        refuse_during_attempt(ui, "traffic")
        data = await read_form(request)
        fields = [FormField("rps", "Requests per second", "number", required=True),
                  FormField("profile", "Profile", "select",
                            choices=traffic_profiles(ui.live.current(wait=False).tracks))]
        values = values_from_form(fields, data)
        if not 0 < values["rps"] <= MAX_TRAFFIC_RPS:
            raise FormError("rps", f"between 0 and {MAX_TRAFFIC_RPS:,} requests per second")
        try:  # the profile (and the rate, again) are Stack.traffic's to check: lab/rules.py
            state = await act(ui.lab.stack.traffic, values["rps"], values.get("profile"))
        except RuleError as exc:
            return ui.fragment("_result.html", status=exc.status, level="error", message=str(exc))
        except StackError as exc:
            return ui.fragment("_result.html", status=409, level="error", message=str(exc))
        return ui.fragment("_result.html", level="ok",
                           message=f"traffic: {state.get('target_rps')} rps, profile {state.get('profile')}")

    @r.delete("/sandbox/traffic")
    async def stop_traffic(request: Request) -> Response:
        refuse_during_attempt(ui, "traffic")
        await act(ui.lab.stack.stop_traffic)
        return ui.fragment("_result.html", level="ok", message="traffic stopped")

    return r


def _merged(form: dict[str, Any]) -> dict[str, Any]:
    return {**form, "fields": [*form["fields"], *form["params"]]}


async def _run(fn: Any, *args: Any) -> Any:
    """Faults and traffic block for seconds (a variant is trained, a process restarts): off the event loop."""
    return await run_in_threadpool(fn, *args)
