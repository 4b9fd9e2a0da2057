"""The lab's rules in one place, so the JSON API, the CLI, the console and the UI cannot disagree.

- Traffic: one rate bound (MAX_TRAFFIC_RPS, requests per second before a profile's multiplier), the profile must
  be one the load generator knows, the feedback delay and seed within what it accepts. `check_traffic` runs in
  `Stack.traffic` before the load generator is started or changed: a refusal is fast and changes nothing.
- While an attempt runs, the scenario owns its faults and the traffic: `refuse_during_attempt(lab, action)` is
  what every route, console operation and UI form that would touch them calls first.

Kept free of the stack and of services (lab/scenario imports the rate bound for its own schema).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

# 2,000 rps is far beyond what the 2-core lab serves (docs/benchmarks.md) and what scenarios use; the load
# generator's own ceiling (services/loadgen, 5,000) stays a guard for direct use.
MAX_TRAFFIC_RPS = 2000
MAX_FEEDBACK_DELAY_S = 3600
MAX_TRAFFIC_SEED = 2**32 - 1


class RuleError(ValueError):
    """A request the lab refuses by rule; `status` is the HTTP status it is answered with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def check_traffic_rate(rps: Any) -> float:
    if isinstance(rps, bool) or not isinstance(rps, int | float) or not math.isfinite(rps):
        raise RuleError(f"rps must be a number, got {rps!r}")
    if not 0 <= rps <= MAX_TRAFFIC_RPS:
        raise RuleError(f"rps must be between 0 and {MAX_TRAFFIC_RPS:,} requests per second, got {rps:g}")
    return float(rps)


def check_traffic_track(track: Any, retry_policy: Any = None, retries: Any = None, max_users: Any = None) -> None:
    """Refuse (RuleError 422) a track the load generator cannot drive, a bad retry policy or concurrency cap."""
    from services.loadgen.profiles import TRAFFIC_TRACKS
    from services.loadgen.retry import check_retry

    if track == "all":
        raise RuleError("one load generator drives one track at a time; `--track all` is not a traffic track: "
                        f"pick one of {', '.join(TRAFFIC_TRACKS)} (naming the other later switches it)")
    if track is not None and track not in TRAFFIC_TRACKS:
        raise RuleError(f"unknown traffic track {track!r}; tracks: {', '.join(TRAFFIC_TRACKS)}")
    try:
        check_retry(retry_policy, retries)
    except ValueError as exc:
        raise RuleError(str(exc)) from None
    if max_users is not None and (isinstance(max_users, bool) or not isinstance(max_users, int)
                                  or not 4 <= max_users <= 5000):
        raise RuleError(f"max_users (the concurrency cap) must be an integer in 4..5000, got {max_users!r}")


def check_traffic(rps: Any, profile: str | None, known_profiles: Iterable[str],
                  feedback_delay_s: Any = None, seed: Any = None) -> None:
    """Refuse (RuleError 422, naming the valid choices) what the load generator would refuse or crash on."""
    check_traffic_rate(rps)
    known = list(known_profiles)
    if profile is not None and profile not in known:
        raise RuleError(f"unknown traffic profile {profile!r}; known profiles: {', '.join(known)}")
    if feedback_delay_s is not None and (
        isinstance(feedback_delay_s, bool) or not isinstance(feedback_delay_s, int | float)
        or not math.isfinite(feedback_delay_s) or not 0 <= feedback_delay_s <= MAX_FEEDBACK_DELAY_S
    ):
        raise RuleError(f"feedback_delay_s must be between 0 and {MAX_FEEDBACK_DELAY_S} seconds, "
                        f"got {feedback_delay_s!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_TRAFFIC_SEED):
        raise RuleError(f"seed must be an integer between 0 and {MAX_TRAFFIC_SEED}, got {seed!r}")


# What is refused while an attempt runs, and how the refusal names it.
DURING_ATTEMPT: dict[str, str] = {
    "fault.inject": "injecting a fault",
    "fault.inspect": "looking up a fault",
    "fault.revert": "reverting a fault",
    "fault.kill": "killing through /api/faults (use the console's `kill`)",
    "traffic": "changing the traffic",
}
_WHY = {
    "traffic": "the scenario owns the traffic during an attempt; `traffic` is a sandbox operation",
}
_WHY_FAULTS = "its faults are the incident; act through the console, or give up to revert them"


def running_attempt(lab: Any) -> str | None:
    """The id of the attempt in progress, or None (also in a lab without attempts)."""
    attempts = getattr(lab, "components", {}).get("attempts")
    return attempts.active_id() if attempts is not None else None


def attempt_refusal(action: str, attempt_id: str | None) -> str | None:
    """The refusal's message for `action` while `attempt_id` runs, or None when it is allowed."""
    if action not in DURING_ATTEMPT:
        raise KeyError(f"no rule for {action!r}; actions: {', '.join(DURING_ATTEMPT)}")
    if attempt_id is None:
        return None
    why = _WHY.get(action, _WHY_FAULTS)
    return f"attempt {attempt_id} is running: {DURING_ATTEMPT[action]} is refused until it ends ({why})"


def refuse_during_attempt(lab: Any, action: str) -> None:
    """RuleError 409 when an attempt runs and `action` is one of DURING_ATTEMPT's."""
    message = attempt_refusal(action, running_attempt(lab))
    if message is not None:
        raise RuleError(message, 409)
