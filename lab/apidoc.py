"""The lab's /openapi.json lists every status code its routes really answer (schemathesis checks it).

FastAPI documents a route's success and, with parameters, its 422. The rest come from two places:
- the guard in front of every route (lab/apiguard.py): 421 for a foreign Host on every operation, 401 when the lab
  has a token; for POST/PUT/PATCH/DELETE 403 (foreign Origin), 413 (too large), 415 (wrong Content-Type) and, under
  /api, 400 (not JSON, nested too deeply, or a body for a route that takes none);
- each route's own refusals, listed in ROUTE_ERRORS by (method, path) — the components raise them as
  `XError(message, status)` or the lab's exception handlers map them (lab/server.py): UnknownService 404,
  StackError/SupervisorClosed/PortInUse 409, ToxiproxyError 502, a bad grep 400.
Every one of these answers is `{"detail": "..."}` (a 422 from pydantic may carry its list instead).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

_UNSAFE = {"post", "put", "patch", "delete"}
_STACK = {409: "the stack refused (starting, stopping, shutting down, a port in use)"}
_SERVICE = {404: "no service of that name", **_STACK}
_ATTEMPT = {404: "no attempt of that id", 409: "the attempt has ended, or is not the running one"}
_CONSOLE = {400: "a bad argument (e.g. a log filter that is not a regular expression)",
            403: "kill: not a process a scenario started", 404: "no such operation, service, replica or version",
            409: "refused in this state (traffic during an attempt, the lab shutting down)",
            422: "args that do not fit the operation", 502: "a service answered with an error",
            503: "a service is unavailable", 504: "a service did not answer in time"}
_FAULT = {404: "no active fault of that id", 409: "an attempt is running, or the stack refused",
          422: "a fault the sandbox cannot apply (the message names the field)",
          502: "the Toxiproxy server or a service refused", 504: "a service did not answer in time"}

# Route-specific refusals beyond what FastAPI documents (its 422 for parameters) and the guard adds.
ROUTE_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("POST", "/api/scale"): _STACK,
    ("POST", "/api/services/{name}/restart"): _SERVICE,
    ("POST", "/api/services/{name}/stop"): _SERVICE,
    ("POST", "/api/services/{name}/start"): _SERVICE,
    ("PATCH", "/api/services/{name}"): _SERVICE,
    ("GET", "/api/services/{name}/logs"): {400: "grep is not a valid regular expression", 404: "no such service"},
    ("POST", "/api/traffic"): _STACK,
    ("GET", "/api/drift"): {503: "the drift refresh failed (the message says why)"},
    ("GET", "/api/series"): {404: "no series of that name"},
    ("POST", "/api/monitor/attempts/{attempt_id}/begin"): {404: "not the running attempt"},
    ("POST", "/api/monitor/attempts/{attempt_id}/end"): {404: "the monitor has no such attempt"},
    ("GET", "/api/monitor/attempts/{attempt_id}"): {404: "the monitor has no such attempt"},
    ("POST", "/api/faults"): _FAULT,
    ("GET", "/api/faults/{fault_id}"): {404: "no fault of that id"},
    ("DELETE", "/api/faults/{fault_id}"): _FAULT,
    ("DELETE", "/api/faults"): _FAULT,
    ("POST", "/api/faults/processes/{pid}/kill"): {403: "not a process a scenario started",
                                                   404: "no such process", 409: "an attempt is running"},
    ("GET", "/api/scenarios/{scenario_id}"): {404: "no scenario of that id", 422: "the scenario file is invalid"},
    ("POST", "/api/attempts"): {201: "started (it prepares in the background)", 404: "no scenario of that id",
                                409: "an attempt is already running, the lab is shutting down, or an inline "
                                     "scenario's id is taken by another scenario",
                                422: "an invalid seed or inline scenario document (the problems are listed)",
                                503: "the stack is not ready"},
    ("GET", "/api/attempts/{attempt_id}"): {404: "no attempt of that id"},
    ("POST", "/api/attempts/{attempt_id}/hint"): _ATTEMPT,
    ("POST", "/api/attempts/{attempt_id}/diagnosis"): _ATTEMPT,
    ("POST", "/api/attempts/{attempt_id}/declare"): _ATTEMPT,
    ("POST", "/api/attempts/{attempt_id}/pin"): _ATTEMPT,
    ("POST", "/api/attempts/{attempt_id}/fixed"): _ATTEMPT,
    ("POST", "/api/attempts/{attempt_id}/abort"): _ATTEMPT,
    ("GET", "/api/attempts/{attempt_id}/debrief"): {**_ATTEMPT, 422: "the scenario it ran no longer renders"},
    ("GET", "/api/attempts/{attempt_id}/scenario"): {**_ATTEMPT, 422: "the scenario it ran no longer renders"},
    ("GET", "/api/attempts/{attempt_id}/events"): _ATTEMPT,
    ("POST", "/api/console/{op}"): _CONSOLE,
}

_DETAIL_SCHEMA = {"type": "object", "properties": {"detail": {"title": "Detail"}}, "required": ["detail"]}


def _guard_errors(method: str, path: str, token: bool) -> dict[int, str]:
    codes = {421: "the Host header is not this lab's (DNS rebinding)"}
    if token:
        codes[401] = "missing or wrong token"
    if method in _UNSAFE:
        codes |= {403: "cross-origin request (Origin or Sec-Fetch-Site)", 413: "body larger than 1 MiB",
                  415: "wrong Content-Type"}
        if path.startswith("/api"):
            codes[400] = "body not JSON, nested too deeply, or sent to a route that takes none"
    return codes


def document_errors(app: FastAPI, token: bool) -> None:
    """Patch app.openapi() (once, when first generated) to add the guard's and each route's error answers."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        first = app.openapi_schema is None
        schema = generate()
        if first:
            for path, item in schema.get("paths", {}).items():
                for method, op in item.items():
                    if method not in _UNSAFE | {"get"}:
                        continue
                    codes = {**_guard_errors(method, path, token), **ROUTE_ERRORS.get((method.upper(), path), {})}
                    responses = op.setdefault("responses", {})
                    for code, why in sorted(codes.items()):
                        if str(code) in responses:
                            continue
                        content = ({"application/json": {"schema": {}}} if code < 300 else
                                   {"application/json": {"schema": _DETAIL_SCHEMA}})
                        responses[str(code)] = {"description": why, "content": content}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
