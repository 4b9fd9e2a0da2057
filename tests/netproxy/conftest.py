"""Fixtures for the network proxy tests (helpers live in `support.py`).

`api_url` is a Toxiproxy at TOXIPROXY_URL when set (so the conformance and data-plane tests run unchanged
against the real one), else our embedded server started as a subprocess. `embedded_url` is always ours.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import requests

from lab.toxiproxy import ToxiproxyClient, ToxiproxyError
from tests.netproxy.support import EXTERNAL_URL, EchoServer, free_port, hold, start_embedded, stop


@pytest.fixture(scope="session")
def embedded_url() -> Iterator[str]:
    port = free_port()
    proc = start_embedded(port)
    yield f"http://127.0.0.1:{port}"
    stop(proc)


@pytest.fixture(scope="session")
def api_url(request: pytest.FixtureRequest) -> str:
    if EXTERNAL_URL:
        return EXTERNAL_URL
    return request.getfixturevalue("embedded_url")


@pytest.fixture
def client(api_url: str) -> ToxiproxyClient:
    return ToxiproxyClient(api_url, timeout=10)


@pytest.fixture
def http(api_url: str) -> Callable[..., requests.Response]:
    """Raw HTTP to the API (status codes and bodies exactly as sent)."""

    def call(method: str, path: str, **kwargs: object) -> requests.Response:
        return requests.request(method, api_url + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    return call


@pytest.fixture
def names(client: ToxiproxyClient) -> Iterator[Callable[[], str]]:
    """Unique proxy names; every proxy created under them is deleted after the test (shared servers stay clean)."""
    made: list[str] = []

    def new() -> str:
        name = f"t-{uuid.uuid4().hex[:10]}"
        made.append(name)
        return name

    yield new
    for name in made:
        try:
            client.delete_proxy(name)
        except ToxiproxyError:
            pass


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def held_server() -> Iterator[EchoServer]:
    server = EchoServer(hold)
    yield server
    server.close()
