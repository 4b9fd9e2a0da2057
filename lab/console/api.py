"""The console's HTTP route on the lab server: `POST /api/console/{op}` (args as a JSON object) and
`GET /api/console` (the operations and their argument schemas). Thin: it calls `lab.console.run`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from lab.apiguard import TAKES_BODY
from lab.console.base import ConsoleError


def router(lab: Any) -> APIRouter:
    from lab.console import operations, run

    r = APIRouter(prefix="/api/console")

    @r.get("")
    def listing() -> list[dict[str, Any]]:
        return operations()

    @r.post("/{op}", openapi_extra={TAKES_BODY: True})  # reads its JSON body itself
    async def operation(op: str, request: Request) -> Any:
        raw = await request.body()
        args: Any = None
        if raw.strip():
            try:
                args = await request.json()
            except ValueError:
                return JSONResponse({"detail": "body must be a JSON object of the operation's args"}, 400)
        attempt_id = request.query_params.get("attempt_id") or None
        try:
            result = await run_in_threadpool(run, lab, attempt_id, op, args)
        except ConsoleError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=exc.status)
        active = lab.components.get("attempts")
        current = active.active_id() if active is not None else None
        return {"op": op, "attempt_id": current, **result.to_dict()}

    return r
