"""The bodies of `faultline scenarios validate|list|show`: exit codes, output, and no spoilers in `show`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lab.scenario import validate_paths
from lab.scenario.cli import cmd_list, cmd_show, cmd_validate
from lab.scenario.loader import CATALOG_DIR

HERE = Path(__file__).resolve().parent
MALFORMED = HERE / "malformed"


def test_validate_catalog_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_validate([]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("ok: ")


def test_validate_prints_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_validate([MALFORMED, HERE / "valid"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == validate_paths([MALFORMED])
    assert "problem(s) in" in err


def test_validate_missing_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cmd_validate([tmp_path / "nope.yaml"]) == 1
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'nope.yaml'}:1: <file>: no such file"
    assert cmd_validate([tmp_path]) == 1  # an empty directory validates nothing
    assert "no scenario files" in capsys.readouterr().err


def test_list_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_list(CATALOG_DIR, True) == 0
    entries = {e["id"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["slow-replica"] == {
        "id": "slow-replica",
        "title": "Fraud checks that sometimes hang",
        "difficulty": "intro",
        "skills": ["networking", "observability", "resilience"],
        "estimated_minutes": 10,
        "summary": entries["slow-replica"]["summary"],
        "track": "fraud",
    }
    assert entries["frozen-streams"]["track"] == "llm"
    assert cmd_list(CATALOG_DIR) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "TRACK", "DIFFICULTY", "MIN", "SKILLS", "TITLE"]
    assert any(r.split()[:4] == ["slow-replica", "fraud", "intro", "10"] for r in rows)
    assert any(r.split()[:2] == ["frozen-streams", "llm"] for r in rows)
    assert cmd_list(CATALOG_DIR, track="llm") == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert rows and {r.split()[1] for r in rows} == {"llm"}
    assert any(r.split()[0] == "frozen-streams" for r in rows)
    assert cmd_list(CATALOG_DIR, True, track="fraud") == 0
    fraud = json.loads(capsys.readouterr().out)
    assert fraud and {e["track"] for e in fraud} == {"fraud"} and "slow-replica" in {e["id"] for e in fraud}


def test_list_reports_broken_files_but_lists_the_rest(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    shutil.copy(HERE / "valid" / "minimal-valid.yaml", tmp_path)
    shutil.copy(MALFORMED / "wrong-type.yaml", tmp_path)
    assert cmd_list(tmp_path, True) == 1
    out, err = capsys.readouterr()
    assert [e["id"] for e in json.loads(out)] == ["minimal-valid"]
    assert f"{tmp_path / 'wrong-type.yaml'}:6: estimated_minutes:" in err


def test_show_gives_the_briefing_without_spoilers(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_show("slow-replica") == 0
    out = capsys.readouterr().out
    assert out.startswith("Fraud checks that sometimes hang  [slow-replica]")
    assert "p99 latency SLO burning" in out
    for spoiler in ("slow-link", "toxic", "drain", "latency on", "model-1", "model-2", "{{"):
        assert spoiler not in out
    assert cmd_show("slow-replica", as_json=True, seed=4) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["stack"]["replicas"] == 2 and "briefing" in card and "faults" not in card and "solution" not in card


def test_show_unknown_or_bad_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_show("no-such-thing") == 1
    assert "known: " in capsys.readouterr().err
    assert cmd_show("../etc/passwd") == 1
    assert "not a scenario id" in capsys.readouterr().err
