"""The scenario catalog as the UI shows it: every valid scenario file, re-read when a file changes.

A broken file does not hide the others: it is left out of the cards and its problems (as
`file:line: field: message`, from lab.scenario) are listed on the catalog page for the author.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.scenario import check_file
from lab.scenario.loader import CATALOG_DIR, SUFFIX
from lab.scenario.vocab import DIFFICULTIES, SKILLS


@dataclass
class Entry:
    path: Path
    mtime: float
    scenario: Any | None
    problems: list[str]


class Catalog:
    def __init__(self, directory: Path | str = CATALOG_DIR) -> None:
        self.directory = Path(directory)
        self._entries: dict[Path, Entry] = {}
        self._lock = threading.Lock()

    def _refresh(self) -> list[Entry]:
        paths = sorted(self.directory.glob(f"*{SUFFIX}")) if self.directory.is_dir() else []
        with self._lock:
            fresh: dict[Path, Entry] = {}
            for path in paths:
                try:
                    mtime = path.stat().st_mtime
                except OSError:
                    continue
                entry = self._entries.get(path)
                if entry is None or entry.mtime != mtime:
                    scenario, problems = check_file(path)
                    entry = Entry(path, mtime, scenario, problems)
                fresh[path] = entry
            self._entries = fresh
            return list(fresh.values())

    def scenarios(self) -> list[Any]:
        return [e.scenario for e in self._refresh() if e.scenario is not None]

    def problems(self) -> list[str]:
        return [p for e in self._refresh() for p in e.problems]

    def get(self, scenario_id: str) -> Any | None:
        return next((s for s in self.scenarios() if s.id == scenario_id), None)

    def filtered(self, skill: str | None, difficulty: str | None) -> list[Any]:
        order = {d: i for i, d in enumerate(DIFFICULTIES)}
        found = [s for s in self.scenarios()
                 if (not skill or skill in s.skills) and (not difficulty or s.difficulty == difficulty)]
        return sorted(found, key=lambda s: (order.get(s.difficulty, 99), s.title.lower()))


def clean_filter(value: str | None, allowed: tuple[str, ...]) -> str | None:
    """A filter value from the query string: one of the allowed values, or None (shown as "any")."""
    return value if value in allowed else None


FILTERS = {"skill": SKILLS, "difficulty": DIFFICULTIES}
