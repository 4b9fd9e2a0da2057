"""How the lab starts and steers the load generator: its command line, and a small HTTP client for /control.

Plain httpx, no locust or gevent import: the lab process must never be monkey-patched. The supervisor builds
the process with `loadgen_argv(...)`; `faultline traffic --rps N --profile NAME` goes through `LoadgenClient`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx


class LoadgenError(RuntimeError):
    """The load generator refused a request (message from its `detail`) or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def loadgen_argv(
    target_url: str,
    rps: float,
    profile: str,
    web_port: int,
    *,
    feedback_delay_s: float = 2.0,
    seed: int | None = None,
    data_seed: int = 7,
    profiles_file: str | Path | None = None,
    timeout_s: float | None = None,
    max_users: int | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The argv (no shell) that starts the load generator; its control API is on http://127.0.0.1:web_port."""
    argv = [
        python,
        "-m",
        "services.loadgen",
        "--target",
        target_url,
        "--rps",
        f"{float(rps):g}",
        "--profile",
        profile,
        "--web-port",
        str(int(web_port)),
        "--feedback-delay-s",
        f"{float(feedback_delay_s):g}",
        "--data-seed",
        str(int(data_seed)),
    ]
    if seed is not None:
        argv += ["--seed", str(int(seed))]
    if profiles_file is not None:
        argv += ["--profiles-file", str(profiles_file)]
    if timeout_s is not None:
        argv += ["--timeout-s", f"{float(timeout_s):g}"]
    if max_users is not None:
        argv += ["--max-users", str(int(max_users))]
    return argv


class LoadgenClient:
    """Talks to a running load generator's control API (the same port as locust's web UI)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LoadgenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise LoadgenError(f"load generator at {self.url} unreachable: {exc}") from exc
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise LoadgenError(str(detail), status=resp.status_code)
        return resp.json()

    def state(self) -> dict[str, Any]:
        """{"target_rps", "achieved_rps", "profile", "users", "feedback": {...}, "requests": {...}, ...}"""
        return self._call("GET", "/control/state")

    def set_rate(self, rps: float) -> dict[str, Any]:
        return self._call("POST", "/control/rate", {"rps": rps})

    def set_profile(self, name: str) -> dict[str, Any]:
        return self._call("POST", "/control/profile", {"name": name})

    def configure(
        self, rps: float | None = None, profile: str | None = None, feedback_delay_s: float | None = None
    ) -> dict[str, Any]:
        """Change several things at once; nothing changes unless all are valid."""
        body = {
            k: v
            for k, v in (("rps", rps), ("profile", profile), ("feedback_delay_s", feedback_delay_s))
            if v is not None
        }
        return self._call("POST", "/control", body)

    def profiles(self) -> dict[str, dict[str, Any]]:
        return self._call("GET", "/control/profiles")

    def add_profiles(self, profiles: dict[str, Any]) -> list[str]:
        """Register scenario profiles ({name: {shift, rate_multiplier, description}}); returns their names."""
        return self._call("POST", "/control/profiles", profiles)["registered"]

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready():
                return
            time.sleep(0.1)
        raise LoadgenError(f"load generator at {self.url} not ready after {timeout_s:g}s")
