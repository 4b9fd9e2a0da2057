"""Fixtures for the catalog test: one private lab for every run of every scenario (started once, stopped at the end).

With `-n 3` (pytest-xdist, as `make test` runs it) each worker starts its own lab and the runs spread over them.
A private lab rather than the session's shared stack: scenario runs scale, retrain and deploy, and the registry
keeps the versions they create; other suites should never see those.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from catalogkit import CatalogLab

from lab.runner import PrivateLab, source_registry


@pytest.fixture(scope="session")
def cpu_lock_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where cpulock.py's locks live: under pytest-xdist, a directory every worker of this run sees."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "catalog-cpu-locks"


@pytest.fixture(scope="session")
def catalog_lab(tmp_path_factory: pytest.TempPathFactory, cpu_lock_dir: Path) -> Iterator[Any]:
    private = PrivateLab.start(source_registry(), replicas=2, home=tmp_path_factory.mktemp("catalog-home"))
    lab = CatalogLab(private.url, cpu_lock_dir)
    try:
        lab.capture_baseline()
        lab.wait_healthy(lab.status()["public_url"])
        yield lab
    finally:
        lab.close()
        private.stop()
