"""Fixtures for the gateway and feature-store tests: module-scoped real processes (see gwstack.py).

Module-scoped stacks are shared by a test module's tests, so each test restores any config it changes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The repo root on sys.path lets these tests import `services` without an editable install.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gwstack import Proc, start_featurestore, start_peer  # noqa: E402


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def featurestore(log_dir: Path) -> Iterator[Proc]:
    proc = start_featurestore(log_dir, log_dir / "features.db")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def peers(log_dir: Path) -> Iterator[dict[str, Proc]]:
    procs: dict[str, Proc] = {}
    try:
        for name in ("model-1", "model-2"):
            procs[name] = start_peer(log_dir, name)
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()
