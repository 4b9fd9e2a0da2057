"""Fixtures for the UI tests: the session's shared real lab (tests/conftest.py `stack`, started with `faultline
up -d`, which mounts the UI) seen through a browser-like httpx session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from uikit import Session


@pytest.fixture(scope="session")
def ui_lab(stack: Any) -> Any:
    """The shared stack, with no attempt running (an earlier test may have left one ending)."""
    s = Session(stack.lab_url)
    try:
        s.wait_no_attempt()
    finally:
        s.close()
    return stack


@pytest.fixture
def web(ui_lab: Any) -> Iterator[Session]:
    """A fresh browser-like session (its own cookie and CSRF token); faults it left active are reverted."""
    s = Session(ui_lab.lab_url)
    s.page("/")
    yield s
    if s.api("GET", "/api/faults")["active"] and s.api("GET", "/api/attempts/active")["attempt"] is None:
        s.http.delete("/api/faults")
    s.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """Keep each phase's report on the test item, so a fixture can tell whether its test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
