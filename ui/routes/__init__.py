"""The UI's routes, one module per area; each defines `router(ui, route_class) -> APIRouter`."""

from __future__ import annotations

from fastapi import APIRouter

from ui.app import UI, route_class
from ui.engine import Engine


def build_router(ui: UI) -> APIRouter:
    from ui.routes import attempts, llm, pages, sandbox, static, stream

    ui.engine = Engine(ui.lab)
    checked = route_class(ui)
    r = APIRouter(include_in_schema=False)
    for module in (static, pages, sandbox, attempts, stream, llm):
        r.include_router(module.router(ui, checked))
    return r
