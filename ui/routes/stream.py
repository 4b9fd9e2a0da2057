"""Server-sent events: one stream per open page, one frame a second from the shared live state.

Each stream sends `snapshot` (JSON: the charts' next point) every frame, and HTML fragments (`stackmap`, `slo`,
`faults`, `traffic`, `attempt`) only when their HTML changed since this stream last sent them — so a swap never
happens under a learner's keyboard focus without a reason, and an idle page costs a few hundred bytes a second.
htmx's SSE extension swaps the fragments into the elements with the matching `sse-swap`; ui/static/charts.js
reads the snapshots.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from markupsafe import escape
from starlette.concurrency import run_in_threadpool

from ui import stackmap
from ui.app import UI
from ui.live import Frame
from ui.security import Refused

VIEWS = ("sandbox", "attempt", "plain")
# The incident view's live parts, each its own event so that one changing (the clock, every second) never
# re-renders another (the diagnosis form the learner is filling in).
ATTEMPT_PARTS = {"clock": "_attempt_clock.html", "attempt": "_attempt_status.html", "steady": "_attempt_steady.html",
                 "hints": "_hints.html", "diagnosis": "_diagnosis.html", "verify": "_verify.html"}
POLL_S = 0.25


def sse(event: str, data: str) -> str:
    lines = data.splitlines() or [""]
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def fragments(ui: UI, view: str, attempt_id: str | None) -> dict[str, Callable[[Frame], str]]:
    out: dict[str, Callable[[Frame], str]] = {
        "stackmap": lambda f: ui.render(
            "_stackmap.html", map=stackmap.from_frame(f, reveal_faults=view == "sandbox" and f.attempt_id is None)),
        "slo": lambda f: ui.render("_slo.html", frame=f),
    }
    if view == "sandbox":
        out["faults"] = lambda f: ui.render("_faults_active.html", frame=f)
        out["traffic"] = lambda f: ui.render("_traffic_state.html", frame=f)
    if view == "attempt" and attempt_id is not None:
        from ui.routes.attempts import _full

        def state(f: Frame) -> dict:
            key = f"state:{attempt_id}"
            if key not in f.cache:
                try:
                    f.cache[key] = _full(ui, ui.engine.state(attempt_id))
                except Refused as exc:
                    f.cache[key] = exc
            found = f.cache[key]
            if isinstance(found, Refused):
                raise found
            return found

        for event, template in ATTEMPT_PARTS.items():
            out[event] = lambda f, t=template: ui.render(t, a=state(f))
    return out


def _cached(frame: Frame, key: str, make: Callable[[Frame], str]) -> str:
    """Every stream on the same frame shares one rendering of each fragment."""
    if key not in frame.cache:
        frame.cache[key] = make(frame)
    return frame.cache[key]


def router(ui: UI, route_class: type) -> APIRouter:
    r = APIRouter(route_class=route_class, include_in_schema=False)

    @r.get("/events")
    async def events(request: Request) -> Response:
        view = request.query_params.get("view", "plain")
        if view not in VIEWS:
            raise Refused(400, f"unknown view {view!r}: one of {', '.join(VIEWS)}")
        attempt_id = request.query_params.get("attempt")
        if view == "attempt":
            if not attempt_id:
                raise Refused(400, "view=attempt needs attempt=<id>")
            ui.engine.attempt_or_404(attempt_id)
        makers = fragments(ui, view, attempt_id)

        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            sent: dict[str, str] = {}
            last = 0
            while not await request.is_disconnected():
                frame = await run_in_threadpool(ui.live.current, False)
                if frame.id != last:
                    last = frame.id
                    chunks = await run_in_threadpool(_render, frame, makers, sent, f"{view}:{attempt_id}")
                    for chunk in chunks:
                        yield chunk
                await asyncio.sleep(POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return r


def _render(frame: Frame, makers: dict[str, Callable[[Frame], str]], sent: dict[str, str], scope: str) -> list[str]:
    chunks = [sse("snapshot", json.dumps(frame.chart_point(), default=str))]
    for name, make in makers.items():
        try:
            html = _cached(frame, f"{name}:{scope}", make)
        except Refused as exc:
            html = f'<p class="alert error">{escape(exc.message)}</p>'
        except Exception as exc:  # noqa: BLE001 - one broken fragment must not end the stream
            html = f'<p class="alert error">could not render {name}: {type(exc).__name__}</p>'
        if sent.get(name) != html:
            sent[name] = html
            chunks.append(sse(name, html))
    return chunks
