"""Each part of the stack is named in at most 2 Python files of lab/ and ui/: its declaration (lab/parts/) and at
most one fault that only makes sense for it. Everything else reads the declarations.

"Named" means a string literal holding the part's name ("feature-store", or "model-..." for the replicated
part). KNOWN lists the files that still hold such a string, with why: none of them is about the part itself (a
directory called `registry`, a CLI command, help texts and SLO names that read like a replica's name).
A file not listed here that starts naming a part fails this test; so does a listed file that no longer does
(then remove it from the list).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab import parts

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 2

KNOWN: dict[str, dict[str, str]] = {
    "registry": {
        "lab/specs.py": "the registry directory (StackSettings.registry_dir)",
        "lab/privatelab.py": "the registry directory a private lab copies",
    },
    "netproxy": {
        "lab/cli.py": "the `faultline netproxy` command",
    },
    "llm": {
        "lab/monitor/measured.py": "the series names a debrief may quote (`llm-N.ttft_p99_ms`), a list of figures",
        "lab/monitor/slo.py": "SLO names (llm-ttft, llm-itl, llm-goodput), not replicas",
    },
    "model": {
        "lab/faults/__init__.py": "the module docstring's example",
        "lab/monitor/slo.py": "SLO names (model-accuracy, model-recall), not replicas",
        "lab/console/cli.py": "help texts",
        "ui/console.py": "form placeholders",
        "ui/forms.py": "form placeholders",
    },
}


def _needle(part: parts.Part) -> re.Pattern[str]:
    if part.replicated:
        return re.compile(rf"""["']{re.escape(part.name)}-""")
    return re.compile(rf"""["']{re.escape(part.name)}["']""")


def _files() -> list[Path]:
    return sorted(p for d in ("lab", "ui") for p in (ROOT / d).rglob("*.py"))


def _naming(part: parts.Part) -> set[str]:
    needle = _needle(part)
    return {str(p.relative_to(ROOT)) for p in _files() if needle.search(p.read_text())}


@pytest.mark.parametrize("part", parts.parts(), ids=lambda p: p.name)
def test_a_part_is_named_in_its_declaration_and_at_most_one_other_file(part: parts.Part) -> None:
    named = _naming(part)
    declarations = {f for f in named if f.startswith("lab/parts/")}
    known = KNOWN.get(part.name, {})
    others = named - declarations - set(known)
    assert len(declarations) <= 1, f"{part.name} is named by other parts' declarations: {sorted(declarations)}"
    assert not others, f"{part.name!r} is named outside its declaration in {sorted(others)}: read lab/parts/ instead"
    stale = set(known) - named
    assert not stale, f"{sorted(stale)} no longer name {part.name!r}: remove them from KNOWN"


def test_the_feature_store_is_down_to_its_declaration_and_one_fault() -> None:
    part = parts.get("feature-store")
    named = _naming(part) | {str(p.relative_to(ROOT)) for p in _files()
                              if re.search(r"feature_store|featurestore", p.read_text())}
    assert named <= {"lab/parts/featurestore.py", "lab/scenario/faults.py"}, sorted(named)
    assert len(named) <= LIMIT


def test_the_check_would_catch_a_file_naming_a_part(tmp_path: Path) -> None:
    text = 'names = ["gateway", "feature-store", *["model-%d" % n for n in (1, 2)]]\n'
    for name in ("gateway", "feature-store", "model"):
        assert _needle(parts.get(name)).search(text)
    assert not _needle(parts.get("registry")).search(text)
