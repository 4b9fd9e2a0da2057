"""The lab in the browser: FastAPI + Jinja2 + htmx pages over the lab's Python API, mounted at `/` on the lab server.

lab/server.py calls `attach(lab)` for every module in COMPONENT_MODULES (`ui` is one): this builds the UI's
routes — catalog, briefing, incident view, debrief, sandbox, history, the live event stream and the static
files — around the running Lab. The JSON API stays under /api. See docs/ui.md.
"""

from __future__ import annotations

from typing import Any


def attach(lab: Any) -> Any:
    from ui.app import UI
    from ui.routes import build_router

    ui = UI(lab)
    lab.add_component("ui", ui)
    return build_router(ui)
