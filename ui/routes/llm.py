"""The LLM track's own fragment: the canary output panel (`GET /ui/canary?replica=llm-N`), polled by app.js."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ui.app import UI
from ui.canary import CanaryPanel
from ui.security import Refused


def router(ui: UI, route_class: type) -> APIRouter:
    r = APIRouter(route_class=route_class, include_in_schema=False)
    panel = CanaryPanel(ui.lab)

    @r.get("/ui/canary")
    async def canary(request: Request) -> Response:
        frame = ui.live.current(wait=False)
        if not frame.runs_llm:
            raise Refused(409, "the canary output panel needs the LLM track (`faultline up --track llm`)")
        replicas = frame.llm_replicas()
        replica = request.query_params.get("replica") or (replicas[0] if replicas else "")
        got = await run_in_threadpool(panel.sample, replica, replicas)
        perplexity = ((frame.figures(replica).get("canary") or {}).get("perplexity")
                      if got.get("sample") else None)
        return ui.fragment("_canary_output.html", got=got, perplexity=perplexity)

    return r
