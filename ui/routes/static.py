"""Static files (our CSS/JS and the vendored libraries) from ui/static, and nothing outside it."""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from ui.app import STATIC_DIR, UI

TYPES = {"": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".json": "application/json"}


def router(ui: UI, route_class: type) -> APIRouter:
    r = APIRouter(route_class=route_class, include_in_schema=False)
    root = STATIC_DIR.resolve()

    @r.get("/static/{path:path}")
    def static(path: str, request: Request) -> Response:
        try:
            target = (root / path).resolve()
            found = target.is_relative_to(root) and target.is_file()
        except (ValueError, OSError):  # a NUL byte or an over-long name: no such file, not a 500
            found = False
        if not found:
            return ui.error(request, 404, f"no static file {path!r}")
        ctype = TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        # URLs carry ?v=<mtime> (see static_url), so a long cache is safe
        cache = "public, max-age=86400" if request.query_params.get("v") else "no-cache"
        return FileResponse(target, media_type=ctype, headers={"Cache-Control": cache,
                                                               "X-Content-Type-Options": "nosniff"})

    return r
