"""A fault in the scenario format (a dict, from YAML or the sandbox API) -> its pydantic model, or a FaultError
422 naming each bad field as the YAML reads (`params.latency: Field required`)."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from lab.faults.base import FaultError, all_injectors
from lab.scenario import faults as models
from lab.scenario.faultspec import UNTIL_TAGS

_FAULT = TypeAdapter(models.Fault)


def parse_fault(data: Any) -> Any:
    try:
        return _FAULT.validate_python(data)
    except ValidationError as exc:
        raise FaultError(validation_message(exc), 422) from None


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(_field_path(err["loc"]))
        msg = err["msg"] if len(err["msg"]) <= 300 else err["msg"][:297] + "..."  # pydantic may quote the input
        parts.append(f"{loc or 'fault'}: {msg}")
    return "; ".join(parts)


def _params_tags() -> set[str]:
    return {tag for injector in all_injectors() for tag in injector.params_tags}


def _field_path(loc: tuple[Any, ...]) -> list[str]:
    """The error's location as the YAML reads, without the union tags pydantic inserts (kind, action, the
    params' own union tags such as a toxic's type after `params`, `duration` after `until`)."""
    parts = [str(p) for p in loc]
    params_tags = _params_tags()
    out: list[str] = []
    i = 0
    if parts and parts[0] in models.ACTIONS:
        kind = parts[0]
        i = 1
        if len(models.ACTIONS[kind]) > 1 and len(parts) > 1 and parts[1] in models.ACTIONS[kind]:
            i = 2
    while i < len(parts):
        out.append(parts[i])
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        if (parts[i] == "params" and nxt in params_tags) or (parts[i] == "until" and nxt in UNTIL_TAGS):
            i += 1
        i += 1
    return out
