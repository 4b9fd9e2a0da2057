"""The attempt routes on the lab server (thin: each calls one AttemptManager method).

GET  /api/scenarios                      the catalog (with best scores)
GET  /api/scenarios/{id}?seed=           one card and its briefing (no spoilers)
POST /api/attempts {scenario_id | scenario, seed?, time_scale?}   start (201; the attempt prepares in the
                                         background); `scenario`: an inline scenario document (a file's data)
GET  /api/attempts                       history, most recent first
GET  /api/attempts/active                {"attempt": state or null}
GET  /api/attempts/{id}                  state (what the learner may see)
POST /api/attempts/{id}/hint             the next hint
POST /api/attempts/{id}/declare          declare an incident: the diagnosis opens (it opens by itself at the page)
POST /api/attempts/{id}/pin {seq}        pin a console output (its journal seq) as evidence for the diagnosis
POST /api/attempts/{id}/diagnosis {answers: {question: option}}   409 before the page or a declaration
POST /api/attempts/{id}/fixed            claim fixed (verification runs in the background)
POST /api/attempts/{id}/abort {reason?}  give up: faults reverted, graded
GET  /api/attempts/{id}/debrief          once ended: grade, timeline, paths, lesson (+ "text")
GET  /api/attempts/{id}/events           once ended: the raw journal
GET  /api/attempts/{id}/scenario         once ended: the scenario it ran (the journal's copy), sha256, source
GET  /api/progress                       progress by skill
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from lab.attempt.attempt import AttemptError
from lab.attempt.manager import AttemptManager


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenario_id: str | None = Field(default=None, min_length=1, max_length=64)
    scenario: dict[str, Any] | None = Field(default=None, description="an inline scenario document")
    seed: int | None = Field(default=None, ge=0, le=2**31)
    time_scale: float | None = Field(default=None, gt=0, le=10)


class DiagnosisBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answers: dict[str, str]


class PinBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=1, description="the journal seq of a console output of this attempt")


class AbortBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=300)


def _error(exc: AttemptError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=exc.status)


def router(manager: AttemptManager) -> APIRouter:
    r = APIRouter(prefix="/api")

    def call(fn: Any, *args: Any, status: int = 200) -> Any:
        try:
            result = fn(*args)
        except AttemptError as exc:
            return _error(exc)
        return JSONResponse(result, status_code=status) if status != 200 else result

    @r.get("/scenarios")
    def scenarios() -> Any:
        return manager.scenarios()

    @r.get("/scenarios/{scenario_id}")
    def scenario(scenario_id: str, seed: int | None = Query(default=None, ge=0, le=2**31)) -> Any:
        return call(manager.scenario, scenario_id, seed)

    @r.post("/attempts")
    def start(body: StartBody) -> Any:
        return call(manager.start, body.scenario_id, body.seed, body.time_scale, body.scenario, status=201)

    @r.get("/attempts")
    def history(limit: int = Query(default=100, ge=1, le=10_000)) -> Any:
        return manager.history(limit)

    @r.get("/attempts/active")
    def active() -> Any:
        a = manager.active()
        return {"attempt": a.state() if a is not None else None}

    @r.get("/attempts/{attempt_id}")
    def state(attempt_id: str) -> Any:
        return call(manager.state, attempt_id)

    @r.post("/attempts/{attempt_id}/hint")
    def hint(attempt_id: str) -> Any:
        return call(manager.take_hint, attempt_id)

    @r.post("/attempts/{attempt_id}/declare")
    def declare(attempt_id: str) -> Any:
        return call(manager.declare, attempt_id)

    @r.post("/attempts/{attempt_id}/pin")
    def pin(attempt_id: str, body: PinBody) -> Any:
        return call(manager.pin, attempt_id, body.seq)

    @r.post("/attempts/{attempt_id}/diagnosis")
    def diagnosis(attempt_id: str, body: DiagnosisBody) -> Any:
        return call(manager.submit_diagnosis, attempt_id, body.answers)

    @r.post("/attempts/{attempt_id}/fixed")
    def fixed(attempt_id: str) -> Any:
        return call(manager.claim_fixed, attempt_id)

    @r.post("/attempts/{attempt_id}/abort")
    def abort(attempt_id: str, body: AbortBody | None = Body(default=None)) -> Any:
        return call(manager.abort, attempt_id, body.reason if body else None)

    @r.get("/attempts/{attempt_id}/debrief")
    def debrief(attempt_id: str) -> Any:
        return call(manager.debrief, attempt_id)

    @r.get("/attempts/{attempt_id}/events")
    def events(attempt_id: str) -> Any:
        return call(manager.events, attempt_id)

    @r.get("/attempts/{attempt_id}/scenario")
    def scenario_of(attempt_id: str) -> Any:
        return call(manager.scenario_of, attempt_id)

    @r.get("/progress")
    def progress() -> Any:
        return manager.progress()

    return r
