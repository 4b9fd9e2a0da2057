"""HTML forms from JSON Schemas, and typed values back from submitted forms.

Sandbox faults (the fault registry's catalog entries, as `/api/faults/kinds` serves them: params schema, label,
help, example params) and console operations (the scenario format's typed op
arguments) are described by pydantic models; their JSON Schemas become forms here, with the choices for names
(services, replicas, hops, versions) filled from the live stack. Submitted text is converted back to the
schema's types (a number field gives a number), and anything beyond types — ranges, names that must exist — is
left to the models themselves, whose messages are shown to the learner.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Field names whose choices come from the live stack rather than from the schema.
LIVE_CHOICES = ("service", "replica", "hop", "version", "feature", "dependency")


class FormError(ValueError):
    """A submitted value that does not fit its field; the message names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class FormField:
    name: str
    label: str
    kind: str  # integer | number | text | select | checkbox | json | hidden
    required: bool = False
    default: Any = None
    choices: list[str] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""
    nullable: bool = False
    json_type: str = "string"
    # A field whose value changes the rest of its form (a toxic's type, a fault's target): a change re-renders the
    # form from `refresh_url` into `refresh_target` (htmx), keeping what was typed.
    refresh_url: str = ""
    refresh_target: str = ""

    @property
    def input_id(self) -> str:
        return f"f-{self.name}"

    @property
    def step(self) -> str:
        return "1" if self.kind == "integer" else "any"

    @property
    def shown_default(self) -> str:
        if self.default is None:
            return ""
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, dict | list):
            return json.dumps(self.default)
        return str(self.default)


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return root.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
    return schema


def _label(name: str, prop: Mapping[str, Any]) -> str:
    title = prop.get("title") or name.replace("_", " ").capitalize()
    title = str(title)
    for unit in ("Ms", "Mb", "Kb", "S"):
        if title.endswith(f" {unit}"):
            title = f"{title[: -len(unit)]}({unit.lower()})"
    return title[0].upper() + title[1:]


def variants(schema: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """A discriminated union (`oneOf`/`anyOf` of objects with a `type` const) as {type value: object schema}."""
    options = schema.get("oneOf") or schema.get("anyOf") or []
    out: dict[str, Mapping[str, Any]] = {}
    for option in options:
        resolved = _resolve(option, schema)
        const = resolved.get("properties", {}).get("type", {}).get("const")
        if isinstance(const, str):
            out[const] = resolved
    return out if len(out) == len(options) and out else {}


def field_from(name: str, prop: Mapping[str, Any], required: bool, root: Mapping[str, Any],
               choices: Mapping[str, list[str]] | None = None) -> FormField:
    prop = _resolve(prop, root)
    nullable = False
    options = prop.get("anyOf")
    if isinstance(options, list):
        non_null = [_resolve(o, root) for o in options if o.get("type") != "null"]
        nullable = len(non_null) < len(options)
        if len(non_null) == 1:
            prop = {**non_null[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
    f = FormField(name=name, label=_label(name, prop), kind="text", required=required and not nullable,
                  default=prop.get("default"), help=str(prop.get("description") or ""), nullable=nullable)
    live = (choices or {}).get(name)
    jtype = prop.get("type")
    f.json_type = jtype if isinstance(jtype, str) else "any"
    if "const" in prop:
        f.kind, f.default = "hidden", prop["const"]
    elif "enum" in prop:
        f.kind, f.choices = "select", [str(c) for c in prop["enum"]]
    elif live:
        f.kind, f.choices = "select", list(live)
    elif jtype in ("integer", "number"):
        f.kind = jtype
        f.minimum = prop.get("minimum", prop.get("exclusiveMinimum"))
        f.maximum = prop.get("maximum", prop.get("exclusiveMaximum"))
    elif jtype == "boolean":
        f.kind = "checkbox"
    elif jtype in ("object", "array"):
        f.kind = "json"
        f.help = f.help or ("a JSON object, e.g. {\"max_retries\": 0}" if jtype == "object" else "a JSON list")
    elif jtype is None:
        f.kind = "json"  # `Any`: a number, true/false, a list or plain text
        f.help = f.help or "a number, true/false, a JSON list/object, or text"
    return f


def fields_from_schema(schema: Mapping[str, Any], choices: Mapping[str, list[str]] | None = None,
                       skip: tuple[str, ...] = ()) -> list[FormField]:
    """The form of an object schema, in the schema's property order."""
    schema = _resolve(schema, schema)
    required = set(schema.get("required", []))
    return [field_from(name, prop, name in required, schema, choices)
            for name, prop in schema.get("properties", {}).items() if name not in skip]


def with_example(fields: list[FormField], example: Mapping[str, Any]) -> list[FormField]:
    """Pre-fill the fields the schema gives no default with a fault kind's example params (its catalog entry's
    `params_example`, declared in its module of lab/faults/kinds/): what the form starts from, not what is sent
    — a field the learner empties is still left out, and the model's own default applies."""
    for f in fields:
        if f.name in example and f.default is None and f.kind not in ("hidden", "checkbox"):
            f.default = example[f.name]
    return fields


def _number(f: FormField, text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise FormError(f.name, f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise FormError(f.name, "must be a finite number")
    if f.kind == "integer" or f.json_type == "integer":
        if value != int(value):
            raise FormError(f.name, f"{text!r} is not a whole number")
        return int(value)
    return value


def _loose(text: str) -> Any:
    """`Any` fields: JSON when it parses (0, true, ["model-1"]), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def values_from_form(fields: list[FormField], form: Mapping[str, str]) -> dict[str, Any]:
    """Typed values for the fields that were filled in; empty optional fields are left out (model defaults)."""
    out: dict[str, Any] = {}
    for f in fields:
        if f.kind == "checkbox":
            if f.name in form:
                out[f.name] = form[f.name] not in ("", "false", "off", "0")
            elif f.required or f.default is not None:
                out[f.name] = False
            continue
        text = (form.get(f.name) or "").strip()
        if f.kind == "hidden":
            out[f.name] = f.default  # a const: whatever was sent, the schema says what it is
            continue
        if not text:
            if f.required:
                raise FormError(f.name, "required")
            continue
        if f.kind in ("integer", "number") or (f.kind == "select" and f.json_type in ("integer", "number")):
            out[f.name] = _number(f, text)
        elif f.kind == "json":
            if f.json_type in ("object", "array"):
                try:
                    value = json.loads(text)
                except ValueError as exc:
                    raise FormError(f.name, f"not valid JSON ({exc.msg})") from None
                want = dict if f.json_type == "object" else list
                if not isinstance(value, want):
                    raise FormError(f.name, f"must be a JSON {f.json_type}")
                out[f.name] = value
            else:
                out[f.name] = _loose(text)
        else:
            out[f.name] = text
    return out
