"""An attempt embeds the scenario it ran (the rendered document, its sha256, the source file's path and sha256), so
an old run never changes: its debrief — through the lab's real HTTP API and the UI's page — is the same after the
scenario file was edited and after it was deleted. Also: the embedded document rebuilds the Scenario model exactly,
and a journal written by the previous version (schema 1, no embedded scenario) still opens, loses nothing, and its
attempts still show (read from the file, and marked so).

The lab here is a private one whose catalog is a temporary folder (FAULTLINE_SCENARIOS), holding a copy of
slow-replica.yaml this module edits and then deletes; its home starts with an old-format journal.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from attemptkit import LabApi
from markupsafe import escape

from lab.journal import Journal, JournalError
from lab.scenario import Scenario, check_file, load_scenario, render
from lab.scenario.loader import CATALOG_DIR

SEED = 3
SCALE = 0.2
OLD_ID = "slow-replica-20260101-120000-0ld1"

# The journal's schema before scenarios were embedded (schema version 1), verbatim.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    id TEXT PRIMARY KEY,
    scenario_id TEXT NOT NULL,
    seed INTEGER NOT NULL,
    time_scale REAL NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'aborted')),
    score REAL
);
CREATE TABLE IF NOT EXISTS events (
    attempt_id TEXT NOT NULL REFERENCES attempts(id),
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (attempt_id, seq)
);
CREATE INDEX IF NOT EXISTS attempts_started ON attempts(started_at);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the journal is append-only: events cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the journal is append-only: events cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS attempts_no_delete BEFORE DELETE ON attempts
BEGIN SELECT RAISE(ABORT, 'the journal is append-only: attempts cannot be deleted'); END;
"""


def _sha(doc: Any) -> str:
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def make_old_journal(path: Path) -> list[str]:
    """A journal as the previous version wrote it: one ended, graded attempt of slow-replica, one left running."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(OLD_SCHEMA)
    t0 = 1_767_268_800.0
    rows = [(OLD_ID, "finished", t0, [
        ("attempt_started", {"scenario_id": "slow-replica", "seed": 1, "time_scale": 0.2,
                             "title": "One replica's link degrades", "values": {}, "lab_run_id": "old"}),
        ("stack_ready", {"steady_state": []}),
        ("fault_applied", {"fault_id": "slow-link", "description": "latency on the link", "labels": {}}),
        ("probe_result", {"probe": "p99", "kind": "latency_p99_ms", "ok": False, "value": 480.0}),
        ("console_op", {"op": "trace", "args": {}, "ok": True}),
        ("attempt_aborted", {"reason": "given up"}),
        ("graded", {"score": 0.0})]),
        ("other-20260101-130000-0ld2", "running", t0 + 3600, [
            ("attempt_started", {"scenario_id": "other", "seed": 2, "time_scale": 1.0, "title": "Another one"})])]
    for attempt_id, status, at, events in rows:
        db.execute("INSERT INTO attempts (id, scenario_id, seed, time_scale, started_at, status) VALUES "
                   "(?, ?, ?, ?, ?, 'running')", (attempt_id, events[0][1]["scenario_id"], events[0][1]["seed"],
                                                  events[0][1]["time_scale"], at))
        for seq, (type_, data) in enumerate(events, 1):
            db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)", (attempt_id, seq, at + seq, type_,
                                                                     json.dumps(data)))
        if status != "running":
            db.execute("UPDATE attempts SET status='aborted', ended_at=?, score=0.0 WHERE id=?", (at + 9, attempt_id))
    db.close()
    return [r[0] for r in rows]


def _dump(path: Path) -> tuple[list[tuple], list[tuple]]:
    db = sqlite3.connect(path)
    attempts = db.execute("SELECT id, scenario_id, seed, time_scale, started_at, ended_at, status, score "
                          "FROM attempts ORDER BY id").fetchall()
    events = db.execute("SELECT * FROM events ORDER BY attempt_id, seq").fetchall()
    db.close()
    return attempts, events


# --- without a lab ------------------------------------------------------------------------------------------------

def test_the_rendered_scenario_round_trips_exactly(tmp_path: Path) -> None:
    """Every catalog scenario, several seeds: journal the document, read it back, rebuild the model, compare."""
    from lab.attempt.manager import AttemptManager

    journal = Journal(tmp_path / "journal.db")
    manager = AttemptManager(SimpleNamespace(), journal, CATALOG_DIR)
    for path in sorted(CATALOG_DIR.glob("*.yaml")):
        template = load_scenario(path)
        for seed in (1, 7, 4242):
            ran = render(template, seed, 0.5)
            doc = ran.model_dump(mode="json", by_alias=True)
            attempt = journal.open_attempt(ran.id, seed, ran.time_scale, {"values": ran.values}, scenario=doc,
                                           source={"path": str(path), "sha256": "x"})
            embedded = journal.embedded_scenario(attempt)
            assert embedded is not None and embedded["scenario"] == doc
            rebuilt, origin = manager._ran(journal.attempt(attempt))
            assert origin["scenario_from"] == "journal" and origin["scenario_note"] is None
            assert rebuilt.model_dump(mode="json", by_alias=True) == doc, (ran.id, seed)
            for field in Scenario.model_fields:
                assert getattr(rebuilt, field) == getattr(ran, field), (ran.id, seed, field)
            assert rebuilt.seed == ran.seed == seed and rebuilt.values == ran.values
            # and the pydantic model alone, cross-checks included, accepts the document as it is
            assert Scenario.model_validate(embedded["scenario"]).model_dump(mode="json", by_alias=True) == doc
    journal.close()


def test_the_embedded_sha256_is_the_documents_and_tampering_is_caught(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    ran = render(load_scenario(CATALOG_DIR / "slow-replica.yaml"), SEED, SCALE)
    doc = ran.model_dump(mode="json", by_alias=True)
    attempt = journal.open_attempt(ran.id, SEED, SCALE, scenario=doc)
    started = journal.events(attempt)[0]["data"]
    assert started["scenario_sha256"] == _sha(doc) == journal.attempt(attempt)["scenario_sha256"]
    assert journal.attempt(attempt)["title"] == ran.title and journal.attempt(attempt)["skills"] == list(ran.skills)
    with pytest.raises(JournalError, match="embedded scenario is 'other'"):
        journal.open_attempt(ran.id, SEED, SCALE, scenario={**doc, "id": "other"})
    journal.close()

    db = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE attempts SET title = 'renamed' WHERE id = ?", (attempt,))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE attempts SET scenario_sha256 = 'x' WHERE id = ?", (attempt,))
    db.execute("UPDATE attempts SET status = 'aborted' WHERE id = ?", (attempt,))  # the cache still may change
    # someone who drops the triggers and edits the document behind the journal's back is found out
    db.execute("DROP TRIGGER events_no_update")
    forged = {**started, "scenario": {**doc, "title": "forged"}}
    db.execute("UPDATE events SET data = ? WHERE attempt_id = ? AND seq = 1", (json.dumps(forged), attempt))
    db.close()
    journal = Journal(tmp_path / "journal.db")
    with pytest.raises(JournalError, match="does not match its sha256"):
        journal.embedded_scenario(attempt)
    journal.close()


def test_an_old_format_journal_opens_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    ids = make_old_journal(path)
    before = _dump(path)
    journal = Journal(path)
    assert _dump(path) == before  # migrated: columns added, every row and event as it was
    rows = {r["id"]: r for r in journal.attempts()}
    assert set(rows) == set(ids)
    assert rows[OLD_ID]["title"] == "One replica's link degrades"  # copied from its attempt_started event
    assert rows[OLD_ID]["skills"] is None and rows[OLD_ID]["scenario_sha256"] is None
    assert journal.embedded_scenario(OLD_ID) is None
    assert [e["type"] for e in journal.events(OLD_ID)][-1] == "graded"
    journal.append(ids[1], "stack_ready")  # still writable
    assert journal.recover() == [ids[1]]
    journal.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()
    again = Journal(path)  # opening a migrated journal again changes nothing
    assert [r["id"] for r in again.attempts()] == [ids[1], OLD_ID]
    again.close()


# --- on a real lab ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(root_conftest: Any, trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("embedded")
    catalog = base / "catalog"
    catalog.mkdir()
    shutil.copy(CATALOG_DIR / "slow-replica.yaml", catalog / "slow-replica.yaml")
    home = base / "home"
    home.mkdir()
    make_old_journal(home / "journal.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAULTLINE_SCENARIOS", str(catalog))
        stack = root_conftest.start_stack(home, trained_registry)
    api = LabApi(stack)
    web = httpx.Client(base_url=stack.lab_url, timeout=120, trust_env=False)
    try:
        yield SimpleNamespace(stack=stack, api=api, web=web, catalog=catalog, file=catalog / "slow-replica.yaml")
    finally:
        web.close()
        try:
            api.abort_active()
            api.http.close()
        finally:
            stack.stop()


def _page(lab: Any, path: str) -> str:
    r = lab.web.get(path)
    assert r.status_code == 200, (path, r.status_code, r.text[:500])
    # the CSRF token is the session's, not the attempt's
    return re.sub(r"[0-9a-f]{32,}", "TOKEN", r.text)


def test_an_old_journal_still_shows_its_attempts_read_from_the_file(lab: Any) -> None:
    listed = {a["id"]: a for a in lab.api.call("GET", "/api/attempts")}
    assert listed[OLD_ID]["status"] == "aborted" and listed[OLD_ID]["score"] == 0.0
    assert listed[OLD_ID]["title"] == "One replica's link degrades"
    assert listed["other-20260101-130000-0ld2"]["status"] == "aborted"  # the lab that left it running is gone
    d = lab.api.call("GET", f"/api/attempts/{OLD_ID}/debrief")
    assert d["scenario_from"] == "file" and "before scenarios were embedded" in d["scenario_note"]
    assert d["scenario_sha256"] is None and d["scenario_source"]["path"] == str(lab.file)
    assert d["seed"] == 1 and d["time_scale"] == 0.2 and d["faults"][0]["id"] == "slow-link"
    assert d["text"].splitlines()[2].startswith("note: this attempt was journaled before")
    assert OLD_ID in _page(lab, "/history")
    page = _page(lab, f"/attempts/{OLD_ID}/debrief")
    assert 'data-scenario-from="file"' in page and "before scenarios were embedded" in page


def test_an_inline_scenario_document_is_validated_and_never_swapped(lab: Any, tmp_path: Path,
                                                                   faultline_cli: Any) -> None:
    api = lab.api
    template = load_scenario(lab.file)._template
    bad = copy.deepcopy(template)
    bad["scoring"]["weights"]["fix"] = 50
    detail = api.call("POST", "/api/attempts", {"scenario": bad}, 422)["detail"]
    assert "the scenario document is invalid" in detail and "scoring.weights" in detail and "100" in detail
    assert "not the document's id" in api.call("POST", "/api/attempts", {"scenario_id": "other",
                                                                          "scenario": template}, 422)["detail"]
    assert "a scenario_id or a scenario document" in api.call("POST", "/api/attempts", {}, 422)["detail"]
    # the catalog's id with other content is refused, never swapped for the catalog's (nor the other way round)
    detail = api.call("POST", "/api/attempts", {"scenario": {**template, "title": "Not the catalog's"}}, 409)["detail"]
    assert "belongs to the catalog (slow-replica.yaml)" in detail and "differs" in detail
    assert api.call("GET", "/api/attempts/active")["attempt"] is None

    # `faultline run PATH` for a file outside the catalog sends the document; the lab journals it like any other
    path = tmp_path / "slow-replica-inline.yaml"
    path.write_text(lab.file.read_text().replace("id: slow-replica\n", "id: slow-replica-inline\n", 1)
                    .replace("title: Fraud checks that sometimes hang", "title: An inline variant", 1))
    sent = load_scenario(path)._template
    proc = faultline_cli("run", str(path), "--seed", "2", "--time-scale", str(SCALE), "--lab-url",
                         lab.stack.lab_url, "--give-up-after", "1", "--json", timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["scenario"] == "slow-replica-inline" and out["broke"] and not out["fixed"]
    embedded = api.call("GET", f"/api/attempts/{out['attempt_id']}/scenario")
    assert embedded["scenario_source"] == {"kind": "document", "path": None, "sha256": _sha(sent)}
    assert embedded["scenario"] == render(load_scenario(path), 2, SCALE).model_dump(mode="json", by_alias=True)
    d = api.call("GET", f"/api/attempts/{out['attempt_id']}/debrief")
    assert d["title"] == "An inline variant" and d["scenario_from"] == "journal"
    assert "slow-replica-inline" not in [c["id"] for c in api.call("GET", "/api/scenarios")]


def test_a_debrief_never_changes_when_its_scenario_file_does(lab: Any) -> None:
    api = lab.api
    source_sha = hashlib.sha256(lab.file.read_bytes()).hexdigest()
    st = api.call("POST", "/api/attempts", {"scenario_id": "slow-replica", "seed": SEED, "time_scale": SCALE}, 201)
    attempt = st["attempt_id"]
    assert "shown once it ends" in api.call("GET", f"/api/attempts/{attempt}/scenario", expect=409)["detail"]
    api.wait(attempt, lambda s: s["paged"], 180, "the page")
    ran = render(load_scenario(lab.file), SEED, SCALE)
    slow = ran.values["layout"]["slow"]
    api.console("trace", limit=3)
    api.call("POST", f"/api/attempts/{attempt}/hint")
    api.call("POST", f"/api/attempts/{attempt}/diagnosis",
             {"answers": {"category": "network", "component": slow, "cause": "link-latency"}})
    api.call("POST", f"/api/attempts/{attempt}/abort", {"reason": "test gives up"})

    before = api.call("GET", f"/api/attempts/{attempt}/debrief")
    page_before = _page(lab, f"/attempts/{attempt}/debrief")
    assert before["scenario_from"] == "journal" and before["scenario_note"] is None
    assert before["title"] == ran.title and before["ideal_path"] == list(ran.debrief.ideal_path)
    assert before["breakdown"]["diagnosis"]["max"] == 35 and before["breakdown"]["diagnosis"]["points"] > 0
    assert escape(ran.title) in page_before and "data-scenario-from" not in page_before

    # (2) what was embedded: the rendered document, its sha256, the source file's path and sha256
    embedded = api.call("GET", f"/api/attempts/{attempt}/scenario")
    started = api.call("GET", f"/api/attempts/{attempt}/events")[0]
    assert started["type"] == "attempt_started"
    assert embedded["scenario"] == started["data"]["scenario"] == ran.model_dump(mode="json", by_alias=True)
    assert embedded["scenario_sha256"] == started["data"]["scenario_sha256"] == _sha(embedded["scenario"])
    assert before["scenario_sha256"] == embedded["scenario_sha256"]
    assert embedded["scenario_source"] == {"kind": "file", "path": str(lab.file), "sha256": source_sha}
    history = {a["id"]: a for a in api.call("GET", "/api/attempts")}
    assert history[attempt]["scenario_sha256"] == embedded["scenario_sha256"]

    # (1) edit the file: title, ideal path, solution, scoring weights — still a valid scenario the lab serves
    text = lab.file.read_text()
    edits = [("title: Fraud checks that sometimes hang", "title: An edited title"),
             ("weights: {diagnosis: 35, fix: 35, time: 10, hints: 20}",
              "weights: {diagnosis: 10, fix: 10, time: 40, hints: 40}"),
             ("    - \"`slo`: the p99 objective", "    - \"`status` first. `slo`: the p99 objective"),
             ("  - {op: drain, args: {replica: \"{{ layout.slow }}\"}}",
              "  - {op: drain, args: {replica: \"{{ layout.slow }}\"}}\n  - {op: status}")]
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    lab.file.write_text(text)
    assert check_file(lab.file)[1] == []
    assert api.call("GET", "/api/scenarios/slow-replica")["title"] == "An edited title"  # the lab reads this file
    assert api.call("GET", f"/api/attempts/{attempt}/debrief") == before
    assert _page(lab, f"/attempts/{attempt}/debrief") == page_before
    assert api.call("GET", f"/api/attempts/{attempt}/scenario") == embedded
    assert api.call("GET", f"/api/attempts/{attempt}")["title"] == ran.title

    # ... and delete it
    lab.file.unlink()
    assert api.call("GET", "/api/scenarios/slow-replica", expect=404)
    assert api.call("GET", f"/api/attempts/{attempt}/debrief") == before
    assert _page(lab, f"/attempts/{attempt}/debrief") == page_before
    history = {a["id"]: a for a in api.call("GET", "/api/attempts")}
    assert history[attempt]["title"] == ran.title and history[attempt]["skills"] == list(ran.skills)
    assert escape(ran.title) in _page(lab, "/history")
    skills = {s["skill"]: s for s in api.call("GET", "/api/progress")["skills"]}
    assert skills["networking"]["attempts"] >= 1  # counted under the skills it ran, though the file is gone
    # the old attempt had nothing but the file: it says so, clearly
    gone = api.call("GET", f"/api/attempts/{OLD_ID}/debrief", expect=404)["detail"]
    assert "journaled before scenarios were embedded" in gone and "file is gone" in gone
