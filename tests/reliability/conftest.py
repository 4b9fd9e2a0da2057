"""Fixtures for the reliability tests: the session's shared stack (tests/conftest.py), and a private lab that
requires a token (for the token checks and for fuzzing the lab's own API, which may stop services)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from relkit import token_in_env

TOKEN = "reliability-token-3f9a"
ALLOWED_HOST = "lab.test"  # a name the guarded lab answers to besides its own (`--allowed-host`)


@dataclass
class GuardedLab:
    handle: Any  # tests/conftest.py's StackHandle
    token: str
    http: httpx.Client  # sends the token

    @property
    def url(self) -> str:
        return self.handle.lab_url

    @property
    def port(self) -> int:
        return self.handle.topology.ports.lab


@pytest.fixture(scope="session")
def guarded_lab(root_conftest: Any, trained_registry: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardedLab]:
    """A private one-replica stack whose lab was started with `--token` and `--allowed-host lab.test` (on
    127.0.0.1, as always in tests)."""
    home = tmp_path_factory.mktemp("guarded-home")
    with token_in_env(TOKEN):
        handle = root_conftest.start_stack(home, trained_registry, replicas=1,
                                           extra=("--token", TOKEN, "--allowed-host", ALLOWED_HOST))
    client = httpx.Client(base_url=handle.lab_url, timeout=60, trust_env=False,
                          headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        yield GuardedLab(handle=handle, token=TOKEN, http=client)
    finally:
        client.close()
        with token_in_env(TOKEN):
            handle.stop()
