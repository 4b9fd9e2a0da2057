"""The attempt and console tests' handle on the session's shared stack: no attempt is running when a module starts,
and none is left running when it ends."""

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
    handle.abort_active()
    handle.close()
