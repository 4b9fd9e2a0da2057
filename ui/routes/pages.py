"""Catalog, briefing, history, and the small fragments every page polls (stack phase, start-up progress)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lab.parts import TRACKS
from lab.scenario.vocab import DIFFICULTIES, SKILLS
from ui import stackmap
from ui.app import UI
from ui.catalog import track_of
from ui.forms import FormError, FormField, values_from_form
from ui.security import Refused


def _filter(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name, "")
    if value == "":
        return None
    if value not in allowed:
        raise Refused(400, f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
    return value


def router(ui: UI, route_class: type) -> APIRouter:
    r = APIRouter(route_class=route_class, include_in_schema=False)

    @r.get("/")
    def catalog(request: Request) -> Response:
        skill = _filter(request, "skill", SKILLS)
        difficulty = _filter(request, "difficulty", DIFFICULTIES)
        track = _filter(request, "track", (*TRACKS, "all"))
        track = None if track == "all" else track
        return ui.page(request, "catalog.html", nav="catalog", title="Scenarios",
                       scenarios=ui.catalog.filtered(skill, difficulty, track), problems=ui.catalog.problems(),
                       local=ui.catalog.local_ids(), tracks=TRACKS, track=track, track_of=track_of,
                       skills=SKILLS, difficulties=DIFFICULTIES, skill=skill, difficulty=difficulty,
                       best=ui.engine.best_scores())

    @r.get("/scenarios/{scenario_id}")
    def briefing(scenario_id: str, request: Request) -> Response:
        scenario = ui.catalog.get(scenario_id)
        if scenario is None:
            return ui.error(request, 404, f"no scenario {scenario_id!r} in the catalog")
        # ?seed= and ?time_scale= pin a run (authors, tests, "try again"); they go into the Start form
        given = {k: request.query_params.get(k, "") for k in ("seed", "time_scale")}
        pinned = values_from_form([FormField("seed", "seed", "integer"),
                                   FormField("time_scale", "time scale", "number")], given)
        if "time_scale" in pinned and not 0 < pinned["time_scale"] <= 10:
            raise FormError("time_scale", "must be more than 0 and at most 10")
        return ui.page(request, "briefing.html", nav="catalog", title=scenario.title, scenario=scenario, pinned=pinned,
                       diagram=stackmap.planned(scenario.stack.replicas, track_of(scenario)), engine=ui.engine,
                       attempts=ui.engine.history(limit=5, scenario_id=scenario.id),
                       running=ui.engine.running_attempt())

    @r.get("/history")
    def history(request: Request) -> Response:
        attempts = ui.engine.history(limit=200)
        titles = {s.id: s.title for s in ui.catalog.scenarios()}
        return ui.page(request, "history.html", nav="history", title="History", attempts=attempts, titles=titles,
                       skills=ui.engine.progress_by_skill(ui.catalog.scenarios()))

    @r.get("/ui/phase")
    def phase(request: Request) -> Response:
        return ui.fragment("_phase.html", frame=ui.live.current())

    @r.get("/ui/startup")
    def startup(request: Request) -> Response:
        """Start-up progress (services ready out of all), polled by the briefing until the stack runs."""
        return ui.fragment("_startup.html", frame=ui.live.current())

    return r
