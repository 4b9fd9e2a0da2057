"""The LLM clients' retry policy, a live setting: what a client does when the gateway answers 429 or 503.

`honour-retry-after`: wait what the answer's `Retry-After` says (capped), then retry, up to `retries` times.
`immediate`: retry at once, up to `retries` times — with many clients this is a real retry storm against a rate
limit. `retries: 0` never retries. Kept free of locust and gevent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

POLICIES = ("honour-retry-after", "immediate")
MAX_RETRIES = 20
MAX_RETRY_AFTER_S = 60.0
RETRYABLE = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    policy: str = "honour-retry-after"
    retries: int = 3

    def delay_s(self, retry_after: str | None) -> float:
        """How long to wait before the next try, given the answer's Retry-After header (seconds)."""
        if self.policy == "immediate":
            return 0.0
        try:
            wanted = float(retry_after) if retry_after is not None else 1.0
        except ValueError:
            wanted = 1.0
        return min(MAX_RETRY_AFTER_S, max(0.0, wanted))

    def to_dict(self) -> dict[str, Any]:
        return {"retry_policy": self.policy, "retries": self.retries}


def check_retry(policy: Any = None, retries: Any = None, current: RetryPolicy | None = None) -> RetryPolicy:
    """A new policy from the fields given (others kept from `current`); ValueError naming the bad field."""
    base = current or RetryPolicy()
    if policy is not None and policy not in POLICIES:
        raise ValueError(f"retry_policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)
                                or not 0 <= retries <= MAX_RETRIES):
        raise ValueError(f"retries must be an integer in 0..{MAX_RETRIES}, got {retries!r}")
    return RetryPolicy(policy if policy is not None else base.policy,
                       retries if retries is not None else base.retries)
