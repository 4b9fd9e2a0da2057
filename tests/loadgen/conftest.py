"""Fixtures for the load generator tests: one recording peer process per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lgharness import Peer, start_peer


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    p = start_peer(tmp_path_factory.mktemp("lgpeer"))
    try:
        yield p
    finally:
        p.stop()
