"""`faultline scenarios validate|list|show` through the real CLI entry point (a subprocess, as a user runs it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MALFORMED = Path(__file__).parent / "malformed"


def faultline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_catalog_validates_and_lists_every_file() -> None:
    ok = faultline("scenarios", "validate")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    listed = json.loads(faultline("scenarios", "list", "--json").stdout)
    ids = {entry["id"] for entry in listed}
    assert ids == {p.stem for p in (ROOT / "scenarios").glob("*.yaml")}
    assert len(ids) >= 12


def test_malformed_file_reports_file_line_field() -> None:
    bad = MALFORMED / "duplicate-key.yaml"
    out = faultline("scenarios", "validate", str(bad))
    assert out.returncode == 1
    assert f"{bad}:5: difficulty: duplicate key 'difficulty' (first at line 4)" in out.stdout


def test_show_unknown_scenario_is_a_clear_error() -> None:
    out = faultline("scenarios", "show", "no-such-scenario")
    assert out.returncode == 1
    assert "no-such-scenario" in (out.stdout + out.stderr)
