"""Fixtures for the monitor's tests (helpers live in monhelpers.py: a uniquely named module, because every
test directory has a `conftest` and only one of them can be `import conftest`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from monhelpers import FakeClock, ServiceProc, start_featurestore


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("monitor-logs")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def featurestore(log_dir: Path) -> Iterator[ServiceProc]:
    proc = start_featurestore(log_dir)
    yield proc
    proc.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
