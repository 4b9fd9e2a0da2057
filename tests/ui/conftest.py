"""Fixtures for the UI tests: the session's shared real lab (tests/conftest.py `stack`, started with `faultline
up -d`, which mounts the UI) seen through a browser-like httpx session, and a lab of the LLM track for its views."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit import llm_track, registry_with_llm
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


@pytest.fixture(scope="session")
def llm_lab(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second real lab, running the LLM track (`faultline up -d --track llm --llm-replicas 2`), for the LLM views:
    the LLM versions of `make setup` when the registry has them, else a tiny LLM trained once by the real trainer."""
    registry = registry_with_llm(trained_registry, tmp_path_factory.mktemp("ui-llm-registry"))
    with llm_track(registry, tmp_path_factory.mktemp("ui-llm-home"), llm_replicas=2) as handle:
        yield handle


@pytest.fixture
def llm_web(llm_lab: Any) -> Iterator[Session]:
    """A browser-like session on the LLM-track lab; faults it left active are reverted."""
    s = Session(llm_lab.lab_url)
    s.page("/")
    yield s
    if s.api("GET", "/api/faults")["active"]:
        s.http.delete("/api/faults")
    s.close()


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
