"""The load generator: locust in its own process sending to the stack's public URL, started by
`faultline traffic`. Its declaration, its command line and its typed client for the /control API.
One load generator drives one track (`--track fraud`: scored transactions; `--track llm`: streamed chats).

Plain httpx, no locust or gevent import: the lab process must never be monkey-patched.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lab.parts import register
from lab.parts.base import TRACKS, Launch, MiB, Part
from lab.parts.client import PartClient, PartError

NAME = "loadgen"
DEFAULT_RPS = 20.0
DEFAULT_PROFILE = "baseline"
DEFAULT_FEEDBACK_DELAY_S = 2.0
DEFAULT_PROFILES = {"fraud": DEFAULT_PROFILE, "llm": "chat"}


def default_track(topology: Any) -> str:
    """The track a load generator drives when none is named: fraud when the stack runs it, else llm."""
    from lab import parts

    return "fraud" if topology.runs(parts.replica_part("fraud")) else "llm"


class LoadgenError(PartError):
    """The load generator refused a request (message from its `detail`) or could not be reached."""


def loadgen_argv(
    target_url: str,
    rps: float,
    profile: str,
    web_port: int,
    *,
    feedback_delay_s: float = DEFAULT_FEEDBACK_DELAY_S,
    seed: int | None = None,
    data_seed: int = 7,
    profiles_file: str | Path | None = None,
    timeout_s: float | None = None,
    max_users: int | None = None,
    track: str = "fraud",
    retry_policy: str | None = None,
    retries: int | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The argv (no shell) that starts the load generator; its control API is on http://127.0.0.1:web_port."""
    argv = [
        python, "-m", "services.loadgen",
        "--target", target_url,
        "--rps", f"{float(rps):g}",
        "--profile", profile,
        "--web-port", str(int(web_port)),
        "--feedback-delay-s", f"{float(feedback_delay_s):g}",
        "--data-seed", str(int(data_seed)),
    ]
    if seed is not None:
        argv += ["--seed", str(int(seed))]
    if profiles_file is not None:
        argv += ["--profiles-file", str(profiles_file)]
    if timeout_s is not None:
        argv += ["--timeout-s", f"{float(timeout_s):g}"]
    if max_users is not None:
        argv += ["--max-users", str(int(max_users))]
    if track != "fraud":
        argv += ["--track", track]
    if retry_policy is not None:
        argv += ["--retry-policy", retry_policy]
    if retries is not None:
        argv += ["--retries", str(int(retries))]
    return argv


def _custom_argv(name: str, launch: Launch) -> list[str] | None:
    """The argv at the default rate (what the compose file runs); `faultline traffic` passes its own."""
    t = launch.topology
    track = default_track(t)
    return loadgen_argv(t.public_url, DEFAULT_RPS, DEFAULT_PROFILES[track], t.ports.port(name),
                        feedback_delay_s=DEFAULT_FEEDBACK_DELAY_S, data_seed=launch.settings.feature_seed,
                        track=track, python=launch.settings.python)


class LoadgenClient(PartClient):
    """Talks to a running load generator's control API (the same port as locust's web UI)."""

    what = "load generator"

    def __init__(self, url: str, timeout_s: float = 5.0, **kw: Any) -> None:
        super().__init__(url, timeout_s=timeout_s, **kw)

    def __enter__(self) -> LoadgenClient:
        return self

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return self.call(method, path, body)
        except PartError as exc:
            if exc.status is None:
                raise LoadgenError(f"load generator at {self.url} unreachable: {exc}") from exc
            raise LoadgenError(_detail(exc), status=exc.status) from exc

    def state(self) -> dict[str, Any]:
        """{"target_rps", "achieved_rps", "profile", "users", "feedback": {...}, "requests": {...}, ...}"""
        return self._call("GET", "/control/state")

    def set_rate(self, rps: float) -> dict[str, Any]:
        return self._call("POST", "/control/rate", {"rps": rps})

    def set_profile(self, name: str) -> dict[str, Any]:
        return self._call("POST", "/control/profile", {"name": name})

    def configure(
        self, rps: float | None = None, profile: str | None = None, feedback_delay_s: float | None = None,
        retry_policy: str | None = None, retries: int | None = None, max_users: int | None = None,
    ) -> dict[str, Any]:
        """Change several things at once; nothing changes unless all are valid. The retry policy is the LLM
        clients'; max_users caps the requests in flight (concurrency)."""
        body = {k: v for k, v in (("rps", rps), ("profile", profile), ("feedback_delay_s", feedback_delay_s),
                                  ("retry_policy", retry_policy), ("retries", retries), ("max_users", max_users))
                if v is not None}
        return self._call("POST", "/control", body)

    def canary(self) -> dict[str, Any]:
        """The LLM track's canary set: {"corpus", "split", "canaries": [{"id", "prompt", "reference"}]}."""
        return self._call("GET", "/control/canary")

    def profiles(self) -> dict[str, dict[str, Any]]:
        return self._call("GET", "/control/profiles")

    def add_profiles(self, profiles: dict[str, Any]) -> list[str]:
        """Register scenario profiles ({name: {shift, rate_multiplier, description}}); returns their names."""
        return self._call("POST", "/control/profiles", profiles)["registered"]

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        try:
            super().wait_ready(timeout_s)
        except PartError as exc:
            raise LoadgenError(f"load generator at {self.url} not ready after {timeout_s:g}s") from exc


def _detail(exc: PartError) -> str:
    """The service's own `detail` (what the old client raised), not our 'refused ...' framing."""
    import json

    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return str(exc.body or exc.message)
    return str(body.get("detail", exc.body)) if isinstance(body, dict) else str(exc.body)


PART = register(Part(
    name=NAME,
    module="services.loadgen",
    doc="locust sending generated transactions to the public URL (`faultline traffic`)",
    port_offset=89,
    custom_argv=_custom_argv,
    on_demand=True,
    tracks=frozenset(TRACKS),
    memory_limit=512 * MiB,
    status_rank=95,
    metrics_prefix="loadgen",
    target=False,
    port_aliases=("locust_web",),
    compose_extra={"profiles": ["traffic"]},
    client=LoadgenClient,
))
