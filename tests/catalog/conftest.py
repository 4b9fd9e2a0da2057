"""Fixtures for the catalog test: one private lab for every run of every scenario (started once, stopped at the end).

A private lab rather than the session's shared stack: scenario runs scale, retrain and deploy, and the registry
keeps the versions they create; other suites should never see those.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from catalogkit import CatalogLab

from lab.runner import PrivateLab, source_registry


@pytest.fixture(scope="session")
def catalog_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    private = PrivateLab.start(source_registry(), replicas=2, home=tmp_path_factory.mktemp("catalog-home"))
    lab = CatalogLab(private.url)
    try:
        lab.capture_baseline()
        lab.wait_healthy(lab.status()["public_url"])
        yield lab
    finally:
        lab.close()
        private.stop()
