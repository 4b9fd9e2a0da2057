"""Fixtures for the fault tests: the session's shared stack (tests/conftest.py), seen through `faultkit.Lab`.

Every test leaves the stack as it found it: after each test, whatever is still active is reverted through the
API and the stack must be healthy again (which is itself part of what these tests check).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from faultkit import Lab


@pytest.fixture(scope="session")
def lab(stack: Any) -> Iterator[Lab]:
    handle = Lab(stack)
    handle.wait_healthy()
    yield handle
    handle.http.close()


@pytest.fixture
def flab(lab: Lab) -> Iterator[Lab]:
    """The lab, checked healthy after the test (anything left active is reverted first)."""
    yield lab
    if lab.active():
        lab.http.delete(lab.api(""))
    lab.wait_healthy()
