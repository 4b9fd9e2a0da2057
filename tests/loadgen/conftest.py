"""Fixtures for the load generator tests: one recording peer process per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lgharness import Peer, start_peer, stop_process


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    p = start_peer()
    try:
        yield p
    finally:
        p.http.close()
        stop_process(p.proc)
