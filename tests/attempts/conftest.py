"""The console tests' handle on the session's shared stack (test_attempt_api.py keeps its own, which also aborts the
attempt it leaves behind)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from attemptkit import LabApi


@pytest.fixture(scope="module")
def api(stack: Any) -> Iterator[LabApi]:
    handle = LabApi(stack)
    handle.abort_active()
    yield handle
    handle.close()
