"""Fixtures for the catalog test: one private lab for every run of every scenario (started once, stopped at the end).

With `-n 3` (pytest-xdist, as `make test` runs it) each worker starts its own lab and the runs spread over them.
A private lab rather than the session's shared stack: scenario runs scale, retrain and deploy, and the registry
keeps the versions they create; other suites should never see those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from catalogkit import CatalogLab, run_group, run_takes_the_machine
from xdist.scheduler import LoadScopeScheduling

from lab.runner import PrivateLab, source_registry


class CatalogScheduling(LoadScopeScheduling):
    """`--dist loadgroup` for the catalog: a run of a grouped scenario goes with its group (`run_group`), any other
    test is a unit of its own; the biggest units are handed out first (xdist's `--loadscope-reorder`)."""

    def _split_scope(self, nodeid: str) -> str:
        return run_group(nodeid) or nodeid


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The runs that take the machine alone (the CPU lock held exclusively) first, in their order; then the rest, in
    theirs (a stable sort). Spread through the session, each such run first waits for the other workers' runs in
    progress to end, and every worker behind the lock's turnstile waits with it: in a whole catalog (2026-12-07,
    three workers) the gaps between one worker's runs added up to 4-11 min, almost all around these runs. Queued
    first (xdist hands out the units, and a worker runs its group's runs, in this order), they follow one another,
    the machine drained once."""
    items.sort(key=lambda item: not run_takes_the_machine(item.nodeid))


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist 3.8 groups `xdist_group` tests by rewriting `item._nodeid`, which pytest 9 no longer reads (a
    node's id is computed): the groups were silently ignored and every worker started an LLM lab. So the catalog
    schedules its groups itself, off the test ids (any other test of the run is a unit of its own); with another
    `--dist`, xdist's own scheduler."""
    if config.getvalue("dist") != "loadgroup":
        return None
    return CatalogScheduling(config, log)


@pytest.fixture(scope="session")
def catalog_labs(tmp_path_factory: pytest.TempPathFactory, cpu_lock_dir: Path) -> Iterator[Callable[[str], Any]]:
    """`lab_for(track)`: the private lab of one track (`faultline up --track`), started the first time a scenario of
    that track runs, so a fraud-only selection (`-k`) never starts the LLM track and the fraud scenarios run on the
    stack they always did."""
    started: dict[str, tuple[Any, Any]] = {}

    def lab_for(track: str) -> Any:
        if track not in started:
            private = PrivateLab.start(source_registry(), replicas=2, track=track,
                                       home=tmp_path_factory.mktemp(f"catalog-home-{track}"))
            lab = CatalogLab(private.url, cpu_lock_dir)
            started[track] = (private, lab)
            lab.capture_baseline()
            lab.wait_healthy(lab.status()["public_url"])
        return started[track][1]

    try:
        yield lab_for
    finally:
        for private, lab in started.values():
            lab.close()
            private.stop()


@pytest.fixture(scope="session")
def catalog_lab(catalog_labs: Callable[[str], Any]) -> Any:
    """The fraud track's lab (the catalog's scenarios before the LLM track)."""
    return catalog_labs("fraud")
