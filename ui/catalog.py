"""The scenario catalog as the UI shows it: every valid scenario file, re-read when a file changes.

A broken file does not hide the others: it is left out of the cards and its problems (as
`file:line: field: message`, from lab.scenario) are listed on the catalog page for the author. Besides the catalog
folder, the local folders of `faultline serve --scenarios DIR` (lab/scenario/folders.py) are read; their scenarios
are marked local, and a file whose id is already taken is refused (listed with the problems), never swapped in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.parts import DEFAULT_TRACK, TRACKS
from lab.scenario import check_file
from lab.scenario.folders import index
from lab.scenario.loader import CATALOG_DIR
from lab.scenario.vocab import DIFFICULTIES, SKILLS


@dataclass
class Entry:
    path: Path
    mtime: float
    scenario: Any | None
    problems: list[str]
    local: bool = False


class Catalog:
    def __init__(self, directory: Path | str = CATALOG_DIR) -> None:
        self.directory = Path(directory)
        self._entries: dict[Path, Entry] = {}
        self._refused: list[str] = []
        self._lock = threading.Lock()

    def _refresh(self) -> list[Entry]:
        found, refused = index(self.directory)
        local = {s.path for s in found.values() if s.local}
        paths = [s.path for s in found.values()]
        with self._lock:
            self._refused = refused
            fresh: dict[Path, Entry] = {}
            for path in paths:
                try:
                    mtime = path.stat().st_mtime
                except OSError:
                    continue
                entry = self._entries.get(path)
                if entry is None or entry.mtime != mtime:
                    scenario, problems = check_file(path)
                    entry = Entry(path, mtime, scenario, problems, path in local)
                fresh[path] = entry
            self._entries = fresh
            return list(fresh.values())

    def scenarios(self) -> list[Any]:
        return [e.scenario for e in self._refresh() if e.scenario is not None]

    def problems(self) -> list[str]:
        entries = self._refresh()
        return [p for e in entries for p in e.problems] + list(self._refused)

    def local_ids(self) -> set[str]:
        """Ids of the scenarios that come from a local folder (`faultline serve --scenarios DIR`)."""
        return {e.scenario.id for e in self._refresh() if e.local and e.scenario is not None}

    def get(self, scenario_id: str) -> Any | None:
        return next((s for s in self.scenarios() if s.id == scenario_id), None)

    def filtered(self, skill: str | None, difficulty: str | None, track: str | None = None) -> list[Any]:
        order = {d: i for i, d in enumerate(DIFFICULTIES)}
        found = [s for s in self.scenarios()
                 if (not skill or skill in s.skills) and (not difficulty or s.difficulty == difficulty)
                 and (not track or track_of(s) == track)]
        return sorted(found, key=lambda s: (order.get(s.difficulty, 99), s.title.lower()))


def track_of(scenario: Any) -> str:
    """The track a scenario runs (`stack.track`: fraud | llm; fraud when the scenario format does not say)."""
    track = getattr(getattr(scenario, "stack", None), "track", None)
    return str(track) if track in TRACKS else DEFAULT_TRACK


def clean_filter(value: str | None, allowed: tuple[str, ...]) -> str | None:
    """A filter value from the query string: one of the allowed values, or None (shown as "any")."""
    return value if value in allowed else None


FILTERS = {"skill": SKILLS, "difficulty": DIFFICULTIES}
