"""The UI's plumbing: templates, responses (pages, fragments, errors), form parsing and the checked route class.

`UI` is created once per lab by `ui.attach(lab)` and holds everything routes share: the lab, the template
environment (autoescaping every template), the CSRF guard, the shared live state and the scenario catalog.
Routes (ui/routes/*.py) are thin: parse input, call the lab's Python API, render a template.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from ui import markdown
from ui.catalog import Catalog
from ui.console import resend_query
from ui.forms import FormError
from ui.live import Live
from ui.security import CSRF_FIELD, Guard, Refused

UI_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = UI_DIR / "templates"
STATIC_DIR = UI_DIR / "static"
MAX_FORM_BYTES = 64 * 1024
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Pages run only our own scripts (no inline script, no eval: htmx's allowEval is off) and load nothing from
# elsewhere; inline styles stay allowed for bar widths and uPlot.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _mib(value: Any) -> str:
    return "–" if value is None else f"{value / 1024 / 1024:.0f} MiB"


def _ms(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _pct(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if abs(value) >= 1e6:
            return f"{value:.3g}"
        text = f"{value:.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)


def _clock(seconds: Any) -> str:
    if seconds is None:
        return "–"
    s = max(0, int(seconds))
    return f"{s // 60}:{s % 60:02d}"


def _when(epoch: Any) -> str:
    if not epoch:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(epoch)))


def _hms(epoch: Any) -> str:
    """A time of day to the second (the canary panel's "generated at")."""
    if not epoch:
        return "–"
    return time.strftime("%H:%M:%S", time.localtime(float(epoch)))


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(md=markdown.render, mib=_mib, ms=_ms, pct=_pct, num=_num, clock=_clock, when=_when, hms=_hms,
                       pretty=_json_text)
    env.filters["jsonscript"] = safe_json
    env.filters["resend_query"] = resend_query  # the inspector's "Send this request"
    env.globals["static"] = static_url
    return env


def static_url(path: str) -> str:
    """/static/... with the file's mtime as a cache-buster (vendored files never change in place)."""
    try:
        stamp = int((STATIC_DIR / path).stat().st_mtime)
    except OSError:
        stamp = 0
    return f"/static/{path}?v={stamp}"


class UI:
    def __init__(self, lab: Any, scenarios_dir: Path | str | None = None) -> None:
        self.lab = lab
        self.env = make_environment()
        self.guard = Guard()
        self.live = Live(lab)
        # the same directory the attempt engine starts scenarios from
        attempts = lab.components.get("attempts")
        directory = scenarios_dir or getattr(attempts, "scenarios_dir", None)
        self.catalog = Catalog(directory) if directory else Catalog()
        self.engine: Any = None  # set by ui.attach: the attempt engine adapter (ui/engine.py)

    # --- responses --------------------------------------------------------------------------------------------

    def render(self, template: str, **ctx: Any) -> str:
        return self.env.get_template(template).render(**ctx)

    def page(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        """A full page (or, for an htmx request that asks for one block, still the page: htmx selects)."""
        session = self.guard.session(request)
        frame = self.live.current()
        html = self.render(template, request=request, csrf=session.token, csrf_field=CSRF_FIELD, frame=frame,
                           nav=ctx.pop("nav", ""), **ctx)
        response = HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
        self.guard.remember(response, session)
        return response

    def fragment(self, template: str, status: int = 200, headers: dict[str, str] | None = None,
                 **ctx: Any) -> HTMLResponse:
        html = self.render(template, **ctx)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})

    def error(self, request: Request, status: int, message: str) -> Response:
        """A 4xx with a message: a fragment for htmx requests (swapped where the answer was going), else a page."""
        if request.url.path.startswith("/events"):
            return JSONResponse({"detail": message}, status_code=status)
        if request.headers.get("HX-Request"):
            return self.fragment("_error.html", status=status, message=message, status_code=status)
        return self.page(request, "error.html", status=status, message=message, status_code=status,
                         title=f"{status}")

    def redirect(self, request: Request, url: str) -> Response:
        """Go to another page: HX-Redirect for htmx, 303 otherwise (a form posted without JavaScript)."""
        if request.headers.get("HX-Request"):
            return Response(status_code=204, headers={"HX-Redirect": url})
        return Response(status_code=303, headers={"Location": url})


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form body as {name: value} (the last value of a repeated name wins); 4xx when it is not one."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Refused(413, f"the form is too large ({len(body)} bytes; at most {MAX_FORM_BYTES})")
    if not body:
        return {}
    if ctype not in ("application/x-www-form-urlencoded", ""):
        raise Refused(415, f"send the form urlencoded (got {ctype})")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(400, f"the form could not be read: {exc}") from None


def route_class(ui: UI) -> type[APIRoute]:
    """Every UI route checks CSRF on unsafe methods and turns refusals into 4xx pages or fragments with their
    message (never a 500 for input). Host and Origin were checked before any route: lab/apiguard.py."""

    class UIRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def checked(request: Request) -> Response:
                try:
                    if request.method in UNSAFE_METHODS:
                        form_token = None
                        if not request.headers.get("X-CSRF-Token"):
                            form_token = (await read_form(request)).get(CSRF_FIELD)
                        ui.guard.check_csrf(request, form_token)
                    return await handler(request)
                except Refused as exc:
                    return ui.error(request, exc.status, exc.message)
                except FormError as exc:
                    return ui.error(request, 422, str(exc))

            return checked

    return UIRoute


def safe_json(value: Any) -> Markup:
    """JSON for a <script type="application/json"> block: `<`, `>` and `&` escaped so no text can end the tag."""
    text = json.dumps(value, default=str, allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704 - escaped above for the script-data context
