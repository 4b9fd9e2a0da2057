"""Turns pydantic validation errors into scenario problems: a location as the author wrote it, and a plain message.

Pydantic's error locations include the tags of discriminated unions (`faults.0.network.toxic.params...`); they
are dropped by walking the model types alongside the location, which also tells which fields an object allows
when it meets an unknown one.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Discriminator, Tag, ValidationError
from pydantic.fields import FieldInfo

from lab.scenario import vocab
from lab.scenario.variables import Loc

Problem = tuple[Loc, str]

_PATTERNS = {
    vocab.SLUG_PATTERN: "must be a lowercase slug such as 'slow-replica' (a-z, 0-9, single '-')",
    vocab.ID_PATTERN: "must be an id of lowercase letters, digits, '-' and '_'",
    vocab.CONFIG_KEY_PATTERN: "must be a config key such as 'max_batch_size'",
    vocab.CONFIG_PATH_PATTERN: "must be a config key such as 'drained', or a dotted path such as 'routing.v2'",
}


def format_loc(loc: Loc) -> str:
    """`faults[0].params.latency`: keys joined by dots, list indices in brackets."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# ---- walking model types along an error location ----


def _unwrap(tp: Any, disc: Any = None) -> tuple[Any, Any]:
    """Strip Annotated and Optional, keeping any discriminator found on the way."""
    while True:
        if get_origin(tp) is Annotated:
            base, *meta = get_args(tp)
            for m in meta:
                if isinstance(m, FieldInfo) and m.discriminator is not None:
                    disc = m.discriminator
                elif isinstance(m, Discriminator):
                    disc = m
            tp = base
        elif _is_union(tp) and type(None) in get_args(tp):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp, disc
            tp = rest[0]
        else:
            return tp, disc


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _field_type(info: FieldInfo) -> Any:
    tp = info.annotation
    meta = list(info.metadata)
    if info.discriminator is not None:
        meta.append(FieldInfo(discriminator=info.discriminator))
    return Annotated[(tp, *meta)] if meta else tp


def _tags(member: Any, field: str) -> set[str]:
    tp, _ = _unwrap(member)
    if isinstance(tp, type) and issubclass(tp, BaseModel) and field in tp.model_fields:
        ann = tp.model_fields[field].annotation
        return {str(a) for a in get_args(ann)} if get_origin(ann) is Literal else set()
    if _is_union(tp):
        return set().union(*(_tags(m, field) for m in get_args(tp)))
    return set()


def _member(tp: Any, disc: Any, tag: Any) -> Any | None:
    for m in get_args(tp):
        if isinstance(disc, str):
            if str(tag) in _tags(m, disc):
                return m
        elif get_origin(m) is Annotated and any(isinstance(x, Tag) and x.tag == tag for x in get_args(m)[1:]):
            return m
    return None


def _field_by_alias(model: type[BaseModel], name: Any) -> FieldInfo | None:
    for fname, info in model.model_fields.items():
        if (info.alias or fname) == name:
            return info
    return None


def clean_loc(root: type[BaseModel], loc: Loc) -> tuple[Loc, Any]:
    """The location without union tags, and the type the location's parent has (for field listings)."""
    out: list[Any] = []
    tp: Any = root
    parent: Any = None
    i = 0
    while i < len(loc):
        el = loc[i]
        tp, disc = _unwrap(tp)
        if _is_union(tp) and disc is not None:
            member = _member(tp, disc, el)
            if member is None:
                break
            tp = member
            i += 1
            continue
        parent = tp
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = _field_by_alias(tp, el)
            tp = _field_type(info) if info is not None else None
        elif get_origin(tp) in (list, tuple):
            tp = get_args(tp)[0] if get_args(tp) else None
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
            if i + 1 < len(loc) and loc[i + 1] == "[key]":
                out.append(el)
                i += 2
                continue
        else:
            tp = None
        out.append(el)
        i += 1
        if tp is None:
            out.extend(x for x in loc[i:] if x != "[key]")
            break
    return tuple(out), _unwrap(parent)[0] if parent is not None else None


# ---- messages ----


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    return type_name(value)


def _bound(ctx: dict[str, Any], key: str) -> str:
    value = ctx[key]
    return f"{value:g}" if isinstance(value, float) else str(value)


def _allowed(parent: Any) -> str:
    if isinstance(parent, type) and issubclass(parent, BaseModel):
        return ", ".join(info.alias or name for name, info in parent.model_fields.items())
    return ""


def message(err: dict[str, Any], parent: Any, data_at: Any) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        if not isinstance(parent, type) or not issubclass(parent, BaseModel):
            return "unknown field"
        allowed = _allowed(parent)
        return f"unknown field; expected one of: {allowed}" if allowed else "unknown field; nothing is allowed here"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {type_name(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {type_name(value)}"
    if kind == "string_type":
        return f"expected a string, got {type_name(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_shown(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {_shown(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {_shown(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {_shown(value)}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', 'one of the allowed values')}, got {_shown(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        key = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}[kind]
        return f"must be {op} {_bound(ctx, key)}, got {_shown(value)}"
    if kind == "too_short":
        return f"needs at least {ctx['min_length']} item(s), got {ctx.get('actual_length', 0)}"
    if kind == "too_long":
        return f"takes at most {ctx['max_length']} item(s), got {ctx.get('actual_length')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "string_pattern_mismatch":
        described = _PATTERNS.get(ctx.get("pattern", ""), f"must match {ctx.get('pattern')}")
        return f"{described}, got {_shown(value)}"
    if kind == "union_tag_invalid":
        field = str(ctx.get("discriminator", "")).strip("'")
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        owner = ""
        if field == "action" and isinstance(data_at, dict) and "kind" in data_at:
            owner = f" for kind {data_at['kind']}"
        return f"unknown {field} {_shown(ctx.get('tag'))}{owner}; expected one of: {expected}"
    if kind == "union_tag_not_found":
        return "required field is missing"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    return err["msg"]


def problems_from(exc: ValidationError, root: type[BaseModel], data: Any, prefix: Loc = ()) -> list[Problem]:
    """One problem per pydantic error; `prefix` places errors of a part validated alone (e.g. `variables`)."""
    out: list[Problem] = []
    for err in exc.errors():
        loc, parent = clean_loc(root, (*prefix, *err["loc"]))
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field = str((err.get("ctx") or {}).get("discriminator", "")).strip("'")
            out.append(((*loc, field), message(err, parent, data_at(data, loc))))
        else:
            out.append((loc, message(err, parent, None)))
    return out


def data_at(data: Any, loc: Loc) -> Any:
    for el in loc:
        in_dict = isinstance(data, dict) and el in data
        in_list = isinstance(data, list) and isinstance(el, int) and 0 <= el < len(data)
        if not (in_dict or in_list):
            return None
        data = data[el]
    return data
