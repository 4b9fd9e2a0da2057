"""The exported JSON Schema: committed file up to date, strict about unknown keys, and open to variable references."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lab.scenario.schema import SCHEMA_PATH, build_schema, render_schema

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_is_up_to_date() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render_schema(), "run: python -m lab.scenario.schema"


def test_check_mode_in_a_real_process(tmp_path: Path) -> None:
    stale = tmp_path / "schema.json"
    stale.write_text("{}\n")
    run = [sys.executable, "-m", "lab.scenario.schema"]
    bad = subprocess.run([*run, "--check", str(stale)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "out of date" in bad.stderr
    stale.write_text(render_schema())
    good = subprocess.run([*run, "--check", str(stale)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr


def test_every_object_rejects_unknown_keys() -> None:
    schema = build_schema()
    objects = [schema, *(d for d in schema["$defs"].values() if d.get("type") == "object")]
    assert len(objects) > 50
    open_ones = [d.get("title") for d in objects if d.get("additionalProperties") is not False and "properties" in d]
    assert open_ones == []


def test_typed_fields_accept_a_variable_reference_but_ids_do_not() -> None:
    schema = build_schema()
    latency = schema["$defs"]["LatencyToxic"]["properties"]["latency"]
    assert {"$ref": "#/$defs/VariableReference"} in latency["anyOf"]
    kind = schema["$defs"]["LatencyToxic"]["properties"]["type"]
    assert kind["const"] == "latency" and "anyOf" not in kind
    assert "anyOf" not in schema["properties"]["id"]
    assert "discriminator" not in json.dumps(schema)  # OpenAPI-only keyword, with non-string mappings
