"""Where the lab's scenarios come from: the catalog folder, plus local folders (`faultline serve --scenarios DIR`).

Local folders are named in the environment variable FAULTLINE_LOCAL_SCENARIOS (folders separated by the path
separator, `:` on Linux), which `faultline serve` sets from its repeatable `--scenarios` flag before the lab
starts; the attempt engine and the UI's catalog both read this index, so they agree on which file an id means.
An id is its file's name: the catalog's files come first, then each local folder in order. A file whose id is
already taken (by the catalog or an earlier folder) is refused — left out, with a message naming both files —
never swapped in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lab.scenario.loader import CATALOG_DIR, SUFFIX

LOCAL_ENV = "FAULTLINE_LOCAL_SCENARIOS"
CATALOG_ENV = "FAULTLINE_SCENARIOS"  # another catalog folder than scenarios/ (lab/attempt reads it too)


@dataclass(frozen=True)
class Source:
    path: Path
    local: bool


def local_dirs() -> list[Path]:
    raw = os.environ.get(LOCAL_ENV, "")
    return [Path(p) for p in raw.split(os.pathsep) if p.strip()]


def collision_message(path: Path, first: Path) -> str:
    return (f"{path}: scenario id '{path.stem}' is already {first} — refused, not swapped in; give this scenario an "
            "id (and file name) of its own")


def index(catalog_dir: Path | None = None, local: list[Path] | None = None) -> tuple[dict[str, Source], list[str]]:
    """({id: Source}, [collision messages]) over the catalog folder and the local folders."""
    catalog = catalog_dir or os.environ.get(CATALOG_ENV) or CATALOG_DIR
    folders = [(Path(catalog), False)] + [(d, True) for d in (local_dirs() if local is None
                                                                                  else local)]
    found: dict[str, Source] = {}
    refused: list[str] = []
    seen: set[Path] = set()
    for folder, is_local in folders:
        try:
            resolved = folder.resolve()
        except OSError:
            continue
        if resolved in seen or not folder.is_dir():
            continue  # the same folder named twice (or the catalog again) adds nothing
        seen.add(resolved)
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            taken = found.get(path.stem)
            if taken is not None:
                refused.append(collision_message(path, taken.path))
                continue
            found[path.stem] = Source(path, is_local)
    return found, refused
