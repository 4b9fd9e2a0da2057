"""What the gateway remembers about what it scored: the feedback map and the recent-inputs ring buffer.

Feedback: transaction_id -> (score, decision, model_version, replica), bounded (oldest dropped first), so
late ground-truth labels can be matched to the decision that was made. One label per transaction: a second
one is a 409 (the counters would otherwise double count).
Recent: the last 10,000 scored rows as the model saw them (after amount_scale), with score and version:
the monitor's live window for drift.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from itertools import islice
from typing import Any

FEEDBACK_CAPACITY = 200_000
RECENT_CAPACITY = 10_000

UNKNOWN, ALREADY, RECORDED = "unknown", "already", "recorded"


class Ledger:
    def __init__(self, feedback_capacity: int = FEEDBACK_CAPACITY, recent_capacity: int = RECENT_CAPACITY) -> None:
        self._scored: OrderedDict[str, tuple[float, str, str, str | None, bool]] = OrderedDict()
        self._capacity = feedback_capacity
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent_capacity)
        self.total_scored = 0
        self._interned: dict[str, str] = {}

    def intern(self, value: str) -> str:
        """One string object per distinct version/replica: 200,000 entries must not hold 200,000 copies."""
        return self._interned.setdefault(value, value)

    def remember(self, transaction_id: str, score: float, decision: str, version: str, replica: str | None,
                 recent_row: dict[str, Any]) -> None:
        scored = self._scored
        if transaction_id in scored:
            scored.move_to_end(transaction_id)
        scored[transaction_id] = (score, decision, version, replica, False)
        if len(scored) > self._capacity:
            scored.popitem(last=False)
        self.recent.append(recent_row)
        self.total_scored += 1

    def label(self, transaction_id: str, label: int) -> tuple[str, str | None, str | None]:
        """(status, model_version, outcome tp|fp|tn|fn) for one ground-truth label."""
        entry = self._scored.get(transaction_id)
        if entry is None:
            return UNKNOWN, None, None
        score, decision, version, replica, labelled = entry
        if labelled:
            return ALREADY, version, None
        self._scored[transaction_id] = (score, decision, version, replica, True)
        flagged = decision == "decline"
        outcome = ("tp" if flagged else "fn") if label == 1 else ("fp" if flagged else "tn")
        return RECORDED, version, outcome

    def last(self, limit: int, since: float | None = None) -> list[dict[str, Any]]:
        """Up to `limit` most recent rows, oldest first; only those with ts > since when given."""
        rows = list(islice(reversed(self.recent), limit))
        if since is not None:
            rows = [r for r in rows if r["ts"] > since]
        rows.reverse()
        return rows
