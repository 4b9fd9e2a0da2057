"""Every debrief cites evidence the lab shows: each ideal-path step that quotes a figure or a field (a decline rate,
a median, PSI, a status code, scores, accuracy/recall/precision, restarts) names a console operation whose output
shows it (lab/console/evidence.py's SHOWS, checked against real output by tests/attempts/test_console_evidence.py);
every backticked command that looks like an operation is one; and measured figures (`[[ measured.SERIES.AGG ]]`)
name series the monitor records, never numbers typed into the scenario file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lab.console.evidence import SHOWS, quoted_evidence
from lab.monitor.measured import FIGURE, KNOWN_SERIES
from lab.scenario.ops import OP_ARGS

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
CLI_NAMES = {"status-codes": "status_codes"}
TICKED = re.compile(r"`([^`]+)`")


def named_ops(step: str) -> list[str]:
    ops = []
    for span in TICKED.findall(step):
        word = span.split()[0] if span.split() else ""
        word = CLI_NAMES.get(word, word)
        if word in OP_ARGS:
            ops.append(word)
    return ops


def _debrief(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["debrief"]


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_quoted_piece_of_evidence_is_shown_by_the_operation_the_step_names(path: Path) -> None:
    problems = []
    for i, step in enumerate(_debrief(path)["ideal_path"]):
        ops = named_ops(step)
        quoted = quoted_evidence(FIGURE.sub("", TICKED.sub(lambda m: "" if named_ops(m.group(0)) else m.group(0),
                                                           step)))
        shown = set().union(*(SHOWS.get(op, {}).keys() for op in ops)) if ops else set()
        missing = quoted - shown
        if missing:
            problems.append(f"step {i + 1} ({', '.join(ops) or 'no operation'}) quotes {sorted(missing)}, which "
                            f"{'none of its operations shows' if ops else 'it names no operation for'}: {step!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_measured_figures_name_recorded_series(path: Path) -> None:
    d = _debrief(path)
    for text in [d["what_happened"], *d["ideal_path"]]:
        for m in FIGURE.finditer(text):
            assert any(re.fullmatch(p, m.group(1)) for p in KNOWN_SERIES), (path.stem, m.group(0))


def test_the_checker_catches_a_step_quoting_what_its_operation_does_not_show() -> None:
    assert named_ops("`status_codes gateway` and `metrics gateway`: x") == ["status_codes", "metrics"]
    assert named_ops("`137 OOMKilled` and `feature_fallback: fail`") == []
    assert quoted_evidence("`deploys`: rolled out when the declines stopped") == {"decline"}
    assert "decline" not in SHOWS["deploys"] if "deploys" in SHOWS else True
    assert quoted_evidence("a few percent of requests are 422s") == {"status code"}
    assert quoted_evidence("waits 450 ms on the replica") == set()


def test_unit_change_quotes_this_attempts_figures_not_the_files() -> None:
    text = (ROOT / "scenarios" / "unit-change.yaml").read_text()
    d = _debrief(ROOT / "scenarios" / "unit-change.yaml")
    assert "PSI ~8" not in text and "about 100" not in text
    assert FIGURE.search(d["what_happened"]) and any(FIGURE.search(s) for s in d["ideal_path"])
