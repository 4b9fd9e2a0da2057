"""Helpers for the reliability tests: raw HTTP (paths sent exactly as written), hostile bodies, waiting, health.

`raw()` uses http.client because httpx (like browsers) normalises `..` segments out of a URL before sending it,
which would hide exactly what a path-traversal test must send.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from kit import status_problems
from kit import wait_until as wait_until

MiB = 1024 * 1024
TEN_MB_JSON = b'{"a": "' + b"x" * (10 * MiB) + b'"}'
DEEP_ARRAYS = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECTS = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
# NaN and Infinity are not JSON, though Python's json module reads them: one in a body once made the lab's 422
# (which echoes the input) a 500.
NON_FINITE = b'{"replicas": NaN, "rps": Infinity, "seed": -Infinity, "x": [NaN]}'
HOSTILE_BODIES = {"10MB": TEN_MB_JSON, "deep-arrays": DEEP_ARRAYS, "deep-objects": DEEP_OBJECTS,
                  "non-finite": NON_FINITE}
PASSWD_MARKERS = ("root:x:0:0", "root:*:0:0", "/bin/bash", "/usr/sbin/nologin")


@dataclass
class RawResponse:
    status: int
    body: bytes
    headers: dict[str, str]
    seconds: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


def raw(method: str, port: int, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
        timeout: float = 60.0) -> RawResponse:
    """One request to 127.0.0.1:port with `path` sent byte for byte (no `..` removal, no re-encoding)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        sent = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", **(headers or {})}
        for name, value in sent.items():
            if name.lower() != "host":
                conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or b"")
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, data, {k.lower(): v for k, v in resp.getheaders()},
                           time.monotonic() - started)
    finally:
        conn.close()


def stack_healthy(status: dict[str, Any]) -> bool:
    """Every service running and ready, every proxy enabled and without toxics."""
    return status["phase"] == "running" and not status_problems(status)


def score_ok(public_url: str, transaction: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """A real transaction through the gateway proxy; asserts a 200 scored by a model (no fallback)."""
    r = httpx.post(public_url + "/v1/score", json=transaction, timeout=timeout, trust_env=False)
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert body["fallback"] is None and 0.0 <= body["score"] <= 1.0, body
    return body


@contextlib.contextmanager
def token_in_env(token: str) -> Iterator[None]:
    """FAULTLINE_TOKEN for the CLI calls in this block only (`faultline down` must send it)."""
    before = os.environ.get("FAULTLINE_TOKEN")
    os.environ["FAULTLINE_TOKEN"] = token
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FAULTLINE_TOKEN", None)
        else:
            os.environ["FAULTLINE_TOKEN"] = before
