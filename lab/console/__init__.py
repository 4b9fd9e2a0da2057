"""The learner's console: typed, whitelisted operations — never a shell — each journaled with its result.

One implementation, three ways in:
- Python (the UI): `lab.console.run(lab, attempt_id, op, args) -> OpResult` (`.data`, `.text`);
- HTTP: `POST /api/console/{op}` with the args as a JSON object -> `{"op", "attempt_id", "data", "text",
  "summary"}`; `GET /api/console` lists the operations and their argument schemas;
- CLI: `faultline status|logs|metrics|trace|...` (lab/console/cli.py), a client of the HTTP route.

Operation names and argument models are lab/scenario/ops.py's. While an attempt is running every operation is
journaled to it (args as carried out, ok or the refusal, a one-line summary) and may trigger faults that wait
on a learner action. See docs/console.md.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
from pydantic import ValidationError

from lab import parts
from lab.console import act, evidence, investigate, llm, reference, trace  # noqa: F401 - registers the operations
from lab.console.base import OPERATIONS, ConsoleContext, ConsoleError, OpResult, first_line
from lab.logsearch import BadSearch
from lab.rules import RuleError
from lab.scenario.ops import INVESTIGATE_OPS, OP_ARGS
from lab.stack import StackError
from lab.stackclients import ServiceCallError
from lab.supervisor import UnknownService

# A concrete version: the fraud registry's vN, or an LLM version (v1, v1-int8: services/registry/llm.py's names).
VERSION_NUMBER = re.compile(r"v[0-9]{1,6}(-[a-z0-9]{1,16})?")
# The schema's service and replica names are the fraud track's; a console may name any part's replica (llm-N),
# which the operation then checks against the running stack.
NAMED_FIELDS = ("service", "replica")

__all__ = ["ConsoleError", "OpResult", "attach", "operations", "parse_args", "run"]

if set(OPERATIONS) != set(OP_ARGS):  # every operation of the schema has exactly one implementation
    raise RuntimeError(f"console operations missing: {sorted(set(OP_ARGS) - set(OPERATIONS))}")


def parse_args(op: str, raw: Any) -> Any:
    """The operation's typed args from a JSON-like object; ConsoleError 404 (unknown op) or 422 (bad args)."""
    if op not in OP_ARGS:
        raise ConsoleError(f"unknown operation {op!r}; operations are: {', '.join(OP_ARGS)}", 404)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConsoleError(f"{op}: args must be a JSON object", 422)
    version = raw.get("version")
    concrete = isinstance(version, str) and VERSION_NUMBER.fullmatch(version) is not None
    named = {k: raw[k] for k in NAMED_FIELDS if isinstance(raw.get(k), str) and _other_replica(raw[k])}
    stand_in = parts.replica_part().instance(1)
    try:
        model = OP_ARGS[op].model_validate({**raw, **({"version": "v1"} if concrete else {}),
                                            **{k: stand_in for k in named}})
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()]
        raise ConsoleError(f"{op}: " + "; ".join(problems), 422) from None
    # The schema's version refs are what a scenario may name (v1, v2, labels); a learner names the vN the
    # registry really holds (v3 after a retrain), which the registry then checks.
    return model.model_copy(update={**({"version": version} if concrete else {}), **named})


def _other_replica(name: str) -> bool:
    """`name` is a replica of a replicated part other than the fraud track's (llm-3), within its bounds."""
    for part in parts.replica_parts():
        if part is parts.replica_part():
            continue
        stem = part.instance(1)[:-1]
        if name.startswith(stem) and name[len(stem):].isdigit():
            return 1 <= int(name[len(stem):]) <= part.max_replicas
    return False


def _attempts(lab: Any) -> Any:
    return lab.components.get("attempts")


def run(lab: Any, attempt_id: str | None, op: str, args: Any = None) -> OpResult:
    """Run one console operation. `attempt_id` None means the running attempt if there is one (else the
    sandbox); an id that is not the running attempt is refused (409)."""
    model = parse_args(op, args)
    manager = _attempts(lab)
    attempt = None
    if manager is not None:
        try:
            attempt = manager.for_console(attempt_id)
        except Exception as exc:  # AttemptError: not the running attempt
            raise ConsoleError(str(exc), getattr(exc, "status", 409)) from None
    elif attempt_id is not None:
        raise ConsoleError("attempts are not available in this lab", 409)
    given = {k: v for k, v in model.model_dump().items() if v is not None}
    ctx = ConsoleContext(lab, attempt)
    t0 = time.monotonic()
    try:
        result = OPERATIONS[op](ctx, model)
    except ConsoleError as exc:
        _journal(attempt, op, given, None, exc)
        raise
    except Exception as exc:  # noqa: BLE001 - translated into a message for the learner, and journaled
        error = _translate(op, exc)
        _journal(attempt, op, given, None, error)
        raise error from exc
    result.summary = result.summary or first_line(result.text)
    result.seq = _journal(attempt, op, given, result, None, time.monotonic() - t0)
    return result


def _translate(op: str, exc: Exception) -> ConsoleError:
    if isinstance(exc, UnknownService):
        return ConsoleError(str(exc), 404)
    if isinstance(exc, StackError):
        return ConsoleError(str(exc), 409)
    if isinstance(exc, BadSearch):
        return ConsoleError(str(exc), 400)
    if isinstance(exc, RuleError):  # lab/rules.py: refused before anything changed
        return ConsoleError(str(exc), exc.status)
    if isinstance(exc, httpx.HTTPError):
        return ConsoleError(f"{op}: a service did not answer: {exc}", 503)
    if isinstance(exc, TimeoutError):
        return ConsoleError(f"{op}: timed out", 504)
    if isinstance(exc, ServiceCallError):  # a service's refusal or silence, through the stack's clients
        return ConsoleError(str(exc), exc.status)
    raise exc


def _journal(attempt: Any, op: str, given: dict[str, Any], result: OpResult | None, error: ConsoleError | None,
             seconds: float | None = None) -> int | None:
    """Journal the operation in the attempt; its event seq (what the learner pins), or None outside attempts."""
    if attempt is None:
        return None
    # versions are journaled as the vN they stood for, so patterns match whatever label a scenario used
    args = {k: attempt.labels.get(v, v) if isinstance(v, str) and k == "version" else v for k, v in given.items()}
    if result is not None and result.resolved:
        args.update({k: v for k, v in result.resolved.items() if v is not None})
    data: dict[str, Any] = {"op": op, "args": args, "ok": error is None,
                            "kind": "investigate" if op in INVESTIGATE_OPS else "act"}
    if args != given:
        data["given"] = given
    if error is not None:
        data.update(error=str(error), status=error.status)
    if result is not None:
        data["summary"] = result.summary
        if result.labels:
            data["labels"] = result.labels
    if seconds is not None:
        data["seconds"] = round(seconds, 3)
    return attempt.record_op(data)


def operations() -> list[dict[str, Any]]:
    """Every operation with its kind and the JSON Schema of its args (for forms and `faultline help`)."""
    return [{"op": name, "kind": "investigate" if name in INVESTIGATE_OPS else "act",
             "args_schema": model.model_json_schema()} for name, model in OP_ARGS.items()]


def attach(lab: Any) -> Any:
    """Called by lab/server.py: serve /api/console (and fetch `trace`'s sample transactions once the stack runs)."""
    from lab.console.api import router
    from lab.console.trace import warm

    warm(lab)
    return router(lab)
