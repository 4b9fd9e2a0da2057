"""The sandbox's fault routes on the lab server (`/api/faults...`): list the kinds, apply now, list, revert.

A fault is posted in the scenario's format without `when` (the sandbox applies it now); `until` is optional
(`{"duration_s": S}` reverts it after S seconds; absent or "fixed": until deleted) and so is `id` (one is made
up). Errors are 4xx with a `detail` naming the field or saying what the stack refused.

While an attempt runs, its faults are the puzzle: the list hides them, and applying, reverting or killing through
these routes is refused (409). The learner acts through the console, which journals every operation; the attempt's
own end (fixed, given up, aborted) reverts what it injected.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse

from lab.faults.base import FaultError, all_injectors
from lab.faults.context import FaultContext
from lab.faults.manager import FaultManager
from lab.faults.parse import parse_fault
from lab.rules import attempt_refusal

_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def catalog(ctx: FaultContext) -> list[dict[str, Any]]:
    """Every registered kind's catalog entry, with the live stack's names as target choices (the sandbox's
    forms, in the UI and at GET /api/faults/kinds)."""
    return [i.catalog_entry(ctx.stack.target_choices()) for i in all_injectors()]


def fault_from_body(body: Any, counter: itertools.count) -> Any:
    if not isinstance(body, dict):
        raise FaultError("body must be a JSON object: a fault in the scenario format, without `when`", 422)
    if "when" in body:
        raise FaultError("when: the sandbox applies a fault at once; leave `when` out", 422)
    data = dict(body)
    kind, action = data.get("kind"), data.get("action")
    if "id" not in data and isinstance(kind, str) and isinstance(action, str):
        data["id"] = f"{kind}-{action}-{next(counter)}".replace("_", "-").lower()
    data["when"] = {"at_s": 0}
    data.setdefault("until", "fixed")
    return parse_fault(data)


def router(manager: FaultManager, running_attempt: Callable[[], str | None] = lambda: None) -> APIRouter:
    """`running_attempt()` names the attempt in progress, if any (its faults stay hidden and untouchable here)."""
    r = APIRouter(prefix="/api/faults")
    counter = itertools.count(1)

    def refused(action: str) -> JSONResponse | None:
        message = attempt_refusal(action, running_attempt())  # lab/rules.py decides what an attempt forbids
        return None if message is None else _error(409, message)

    @r.get("/kinds")
    def kinds() -> list[dict[str, Any]]:
        return catalog(manager.ctx)

    @r.get("")
    def active() -> dict[str, Any]:
        attempt_id = running_attempt()
        if attempt_id is not None:
            return {"active": [], "reverted": [], "hidden": True,
                    "detail": f"attempt {attempt_id} is running: its faults are shown in its debrief once it ends"}
        return {"active": [a.to_dict() for a in manager.active()],
                "reverted": [a.to_dict() for a in manager.history()[-50:]]}

    @r.post("", status_code=201)
    def apply(body: Any = Body(...)) -> Any:
        if (no := refused("fault.inject")) is not None:
            return no
        try:
            fault = fault_from_body(body, counter)
            return manager.apply(fault).to_dict()
        except FaultError as exc:
            return _error(exc.status, str(exc))

    @r.get("/processes")
    def processes() -> list[dict[str, Any]]:
        listed = manager.ctx.scenario_pids()
        if running_attempt() is not None:  # which fault started a process is part of the answer
            return [{k: v for k, v in p.items() if k not in ("fault_id", "name")} for p in listed]
        return listed

    @r.post("/processes/{pid}/kill")
    def kill(pid: int, body: dict[str, Any] | None = Body(default=None)) -> Any:
        name = (body or {}).get("signal", "KILL")
        if name not in _SIGNALS:
            return _error(422, f"signal: one of {', '.join(_SIGNALS)}")
        if (no := refused("fault.kill")) is not None:
            return no
        try:
            return manager.ctx.kill_scenario_process(pid, _SIGNALS[name])
        except FaultError as exc:
            return _error(exc.status, str(exc))

    @r.get("/{fault_id}")
    def one(fault_id: str) -> Any:
        if (no := refused("fault.inspect")) is not None:
            return no
        found = manager.find(fault_id)
        return found.to_dict() if found else _error(404, f"no fault {fault_id!r} was applied in this lab")

    @r.delete("/{fault_id}")
    def revert(fault_id: str) -> Any:
        if (no := refused("fault.revert")) is not None:
            return no
        try:
            return manager.revert(fault_id).to_dict()
        except KeyError:
            return _error(404, f"no fault {fault_id!r} was applied in this lab")

    @r.delete("")
    def revert_all() -> Any:
        if (no := refused("fault.revert")) is not None:
            return no
        return {"reverted": [a.to_dict() for a in manager.revert_all()]}

    return r
