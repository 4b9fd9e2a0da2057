"""The one client of the running lab's JSON API, for the `faultline` commands and the headless runner.

`find_lab` says where the lab is (--lab-url, else FAULTLINE_LAB_URL, else the live lab in HOME/lab.json);
`LabClient` calls it with the API token (FAULTLINE_TOKEN) and turns every failure into one `LabError`: the lab's
own message and HTTP status when it refused, "no lab is running at URL" when nothing listens there, "did not
answer" on a timeout or a broken connection. `api(args, ...)` is the one-call form the CLIs use.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from lab.state import lab_url, resolve_home

TOKEN_ENV = "FAULTLINE_TOKEN"
# The lab's slowest requests (an attempt's start resets the stack; `retrain` trains a model) take minutes.
DEFAULT_TIMEOUT_S = 660.0
START_HINT = "start one with `faultline up -d`"


class LabError(Exception):
    """A failure to report to the user as one message, without a traceback.

    `status` is the lab's HTTP status when it refused a request (`request` then says which: "POST /api/scale");
    None when the lab could not be reached or a command's own check failed. `message` is the lab's own words
    (what the CLIs print); str() puts the request and status in front, for logs of requests the user did not type.
    """

    def __init__(self, message: str, status: int | None = None, request: str | None = None) -> None:
        self.message = message
        self.status = status
        self.request = request
        super().__init__(f"{request}: {status} {message}" if status is not None and request else message)


def find_lab(home: str | os.PathLike[str] | None = None, explicit_url: str | None = None) -> str:
    """The running lab's URL, or a LabError telling how to start one."""
    resolved = resolve_home(home)
    url = lab_url(resolved, explicit_url)
    if url is None:
        raise LabError(f"no lab is running for {resolved} — {START_HINT}")
    return url


def _detail(r: httpx.Response) -> str:
    """The lab's message from an error response: FastAPI's `detail` (a string, or JSON for validation errors)."""
    try:
        detail = r.json().get("detail", r.text)
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
        detail = r.text
    return detail if isinstance(detail, str) else json.dumps(detail)


class LabClient:
    """An HTTP client of one lab; `http` is the underlying httpx.Client for the rare caller that needs raw access."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_S, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        token = token or os.environ.get(TOKEN_ENV) or None  # a lab listening beyond loopback requires it
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.http = httpx.Client(base_url=self.url, timeout=timeout, trust_env=False, headers=headers)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LabClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
             timeout: float | None = None, allow: tuple[int, ...] = ()) -> Any:
        """`method path` with `body` as JSON; the decoded JSON answer. An error status not in `allow` (statuses
        that are an answer here, not a failure: 409 "already ended") raises LabError with the lab's message."""
        request = f"{method} {path}"
        extra = {} if timeout is None else {"timeout": timeout}
        try:
            r = self.http.request(method, path, json=body, params=params, **extra)
        except httpx.ConnectError as exc:
            raise LabError(f"no lab is running at {self.url}; {START_HINT}", request=request) from exc
        except httpx.HTTPError as exc:  # a timeout, or a connection that broke mid-request
            raise LabError(f"the lab at {self.url} did not answer {request}: {str(exc) or type(exc).__name__}",
                           request=request) from exc
        if r.status_code >= 400 and r.status_code not in allow:
            raise LabError(_detail(r), status=r.status_code, request=request)
        try:
            return r.json()
        except ValueError as exc:
            raise LabError(f"the lab at {self.url} answered {request} with something that is not JSON "
                           f"({r.status_code}): {r.text[:200]!r}", request=request) from exc


def api(args: Any, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S, allow: tuple[int, ...] = ()) -> Any:
    """One request to the lab the command's flags name (`args.home`, `args.lab_url`; both optional)."""
    url = find_lab(getattr(args, "home", None), getattr(args, "lab_url", None))
    with LabClient(url, timeout) as client:
        return client.call(method, path, body, params=params, allow=allow)
