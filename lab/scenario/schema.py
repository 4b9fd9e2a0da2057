"""Exports the scenario JSON Schema for editors: `python -m lab.scenario.schema` writes scenarios/schema.json.

`--check` exits 1 if the committed file differs from the models (CI and a test use it). The schema is the models'
own, with one addition: wherever a number, a true/false, an enum or a patterned string is expected, a
`{{ variable }}` reference is accepted too, as the loader substitutes it before validating.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lab.scenario.loader import CATALOG_DIR
from lab.scenario.models import Scenario

SCHEMA_PATH = CATALOG_DIR / "schema.json"
REFERENCE = {
    "type": "string",
    "pattern": r"^\s*\{\{\s*[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\s*\}\}\s*$",
    "description": "a variable reference, substituted before validation",
}
_OUTER = ("title", "description", "default")
_NESTED = ("anyOf", "oneOf", "allOf", "prefixItems")


def _templatable(node: dict[str, Any]) -> bool:
    if "const" in node:  # discriminators (kind, action, op, type) stay literal
        return False
    kind = node.get("type")
    if kind in ("integer", "number", "boolean"):
        return True
    return kind == "string" and ("enum" in node or "pattern" in node)


def _allow_references(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    # pydantic's `discriminator` is OpenAPI, not JSON Schema, and nested unions give it non-string mappings.
    out = {k: v for k, v in node.items() if k != "discriminator"}
    for key in ("properties", "patternProperties"):
        if key in out:
            out[key] = {name: _allow_references(sub) for name, sub in out[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _allow_references(out[key])
    for key in _NESTED:
        if key in out:
            out[key] = [_allow_references(sub) for sub in out[key]]
    if _templatable(out):
        outer = {k: out.pop(k) for k in _OUTER if k in out}
        return {**outer, "anyOf": [out, {"$ref": "#/$defs/VariableReference"}]}
    return out


def build_schema() -> dict[str, Any]:
    schema = Scenario.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})
    # Neither the id (it names the file) nor the variable declarations are substituted.
    untouched = {"Variable"}
    defs = {name: (d if name in untouched else _allow_references(d)) for name, d in defs.items()}
    props = schema["properties"]
    schema["properties"] = {
        name: (sub if name in ("id", "variables") else _allow_references(sub)) for name, sub in props.items()
    }
    defs["VariableReference"] = REFERENCE
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Faultline scenario",
        **{k: v for k, v in schema.items() if k != "title"},
        "$defs": dict(sorted(defs.items())),
    }


def render_schema() -> str:
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.scenario.schema", description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=SCHEMA_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is not up to date")
    args = parser.parse_args(argv)
    text = render_schema()
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.exists() else ""
        if current != text:
            print(f"{args.path} is out of date; run: python -m lab.scenario.schema", file=sys.stderr)
            return 1
        return 0
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
