"""What the gateway remembers about what it scored: the feedback map, the recent-inputs ring and labelled rows.

Feedback: transaction_id -> (score, decision, model_version, replica), bounded (oldest dropped first), so
late ground-truth labels can be matched to the decision that was made. One label per transaction: a second
one is a 409 (the counters would otherwise double count).
Recent: the last 10,000 scored rows as the model saw them (after amount_scale), with score and version:
the monitor's live window for drift. A late label is stamped into its row there (`label`, `labelled_at`).
Labelled: every row that got its label, in the order labels arrived, kept far longer than the recent ring
(`LABELLED_CAPACITY`) because retraining on recent traffic needs a long window of labelled rows (30 minutes at
the catalog's busiest labelled traffic, 50 rps, is 90,000 rows). Stored column-wise (the `array`
module, strings as codes), ~130 bytes a row besides the ids' strings, against ~1 KiB as dicts; the columns grow
as labels arrive. A full ring of 100,000 rows added ~16 MiB to the gateway's RSS (docs/gateway.md).
"""

from __future__ import annotations

import math
import time
from array import array
from collections import OrderedDict, deque
from itertools import islice
from typing import Any

from services.common.schema import CATEGORICAL_FEATURES, NUMERIC_FEATURES

FEEDBACK_CAPACITY = 200_000
RECENT_CAPACITY = 10_000
LABELLED_CAPACITY = 100_000

UNKNOWN, ALREADY, RECORDED = "unknown", "already", "recorded"

# Request and feature-store fields that are whole numbers: answered as JSON integers, as in the recent ring.
_INTEGER_FEATURES = frozenset({"hour", "txn_count_24h", "account_age_days"})
# Strings stored as codes: categories, versions, replicas, fallbacks. The table is bounded so that a client
# inventing categories cannot grow it without limit; past it, rows with new strings are not kept.
MAX_CODES = 65_535
_NO_CODE = 0xFFFF


class LabelledRing:
    """The last `capacity` labelled rows, oldest first, as parallel arrays (a ring: `_start` is the oldest)."""

    _FLOATS = (*NUMERIC_FEATURES, "score", "ts", "labelled_at")
    _CODED = (*(n for n in CATEGORICAL_FEATURES if n != "card_present"), "decision", "model_version", "replica",
              "fallback")

    def __init__(self, capacity: int = LABELLED_CAPACITY) -> None:
        self.capacity = capacity
        # The columns grow as labels arrive (an idle gateway holds nothing) and are overwritten in place once full.
        self._floats = {name: array("d") for name in self._FLOATS}
        self._codes = {name: array("H") for name in self._CODED}
        self._card_present = array("b")  # 0, 1, or -1 for null
        self._label = array("b")
        self._ids: list[str | None] = []
        self._cards: list[str | None] = []
        self._code_of: dict[str, int] = {}
        self._strings: list[str] = []
        self._start = 0
        self.size = 0
        self.total = 0  # rows ever added
        self.skipped = 0  # labelled rows whose features could not be kept (odd types, string table full)

    def _code(self, value: Any) -> int | None:
        if value is None:
            return _NO_CODE
        if not isinstance(value, str):
            return None
        code = self._code_of.get(value)
        if code is None:
            if len(self._strings) >= MAX_CODES:
                return None
            code = self._code_of[value] = len(self._strings)
            self._strings.append(value)
        return code

    def append(self, row: dict[str, Any]) -> bool:
        """Keep one labelled row (a recent-ring row with `label` and `labelled_at`); False if it cannot be kept."""
        floats: list[float] = []
        for name in self._FLOATS:
            v = row.get(name)
            if v is None:
                floats.append(math.nan)
            elif type(v) is float or type(v) is int:
                floats.append(float(v))
            else:
                self.skipped += 1
                return False
        codes = [self._code(row.get(name)) for name in self._CODED]
        present = row.get("card_present")
        if None in codes or not (present is None or isinstance(present, bool)):
            self.skipped += 1
            return False
        values = (-1 if present is None else int(present), int(row["label"]), row.get("transaction_id"),
                  row.get("card_id"))
        if self.size < self.capacity:  # still growing: the oldest row is slot 0
            for name, v in zip(self._FLOATS, floats, strict=True):
                self._floats[name].append(v)
            for name, c in zip(self._CODED, codes, strict=True):
                self._codes[name].append(c)  # type: ignore[arg-type]  # None was ruled out above
            for column, v in zip(self._others(), values, strict=True):
                column.append(v)
            self.size += 1
        else:  # full: overwrite the oldest
            i = self._start
            self._start = (i + 1) % self.capacity
            for name, v in zip(self._FLOATS, floats, strict=True):
                self._floats[name][i] = v
            for name, c in zip(self._CODED, codes, strict=True):
                self._codes[name][i] = c  # type: ignore[assignment]
            for column, v in zip(self._others(), values, strict=True):
                column[i] = v
        self.total += 1
        return True

    def _others(self) -> tuple[Any, ...]:
        return self._card_present, self._label, self._ids, self._cards

    def _slot(self, k: int) -> int:
        """Ring slot of the k-th oldest row."""
        return (self._start + k) % self.capacity

    def row(self, i: int) -> dict[str, Any]:
        """The row in slot i, with the keys (and order) of a recent-ring row plus label and labelled_at."""
        out: dict[str, Any] = {}
        strings = self._strings
        for name in NUMERIC_FEATURES:
            v = self._floats[name][i]
            out[name] = None if v != v else (int(v) if name in _INTEGER_FEATURES and v.is_integer() else v)
        for name in CATEGORICAL_FEATURES:
            if name == "card_present":
                p = self._card_present[i]
                out[name] = None if p < 0 else bool(p)
            else:
                c = self._codes[name][i]
                out[name] = None if c == _NO_CODE else strings[c]
        out["transaction_id"] = self._ids[i]
        out["card_id"] = self._cards[i]
        out["score"] = self._floats["score"][i]
        for name in ("decision", "model_version", "replica", "fallback"):
            c = self._codes[name][i]
            out[name] = None if c == _NO_CODE else strings[c]
        out["ts"] = self._floats["ts"][i]
        out["label"] = self._label[i]
        out["labelled_at"] = self._floats["labelled_at"][i]
        return out

    def last(self, limit: int, since: float | None = None) -> list[dict[str, Any]]:
        """Up to `limit` most recently labelled rows, oldest first; only rows scored after `since` when given."""
        ts, labelled_at = self._floats["ts"], self._floats["labelled_at"]
        slots: list[int] = []
        for k in range(self.size - 1, -1, -1):
            if len(slots) >= limit:
                break
            i = self._slot(k)
            if since is not None:
                if labelled_at[i] <= since:
                    break  # labelled before `since`, so scored before it too; older rows were labelled earlier still
                if ts[i] <= since:
                    continue
            slots.append(i)
        slots.reverse()
        return [self.row(i) for i in slots]


class Ledger:
    def __init__(self, feedback_capacity: int = FEEDBACK_CAPACITY, recent_capacity: int = RECENT_CAPACITY,
                 labelled_capacity: int = LABELLED_CAPACITY) -> None:
        self._scored: OrderedDict[str, tuple[float, str, str, str | None, bool]] = OrderedDict()
        self._capacity = feedback_capacity
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent_capacity)
        self._recent_by_id: dict[str, dict[str, Any]] = {}  # rows still in the recent ring, to stamp labels into
        self.labelled = LabelledRing(labelled_capacity)
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
        recent = self.recent
        if len(recent) == recent.maxlen:
            leaving = recent[0]
            tid = leaving["transaction_id"]
            if self._recent_by_id.get(tid) is leaving:
                del self._recent_by_id[tid]
        recent.append(recent_row)
        self._recent_by_id[transaction_id] = recent_row
        self.total_scored += 1

    def label(self, transaction_id: str, label: int) -> tuple[str, str | None, str | None]:
        """(status, model_version, outcome tp|fp|tn|fn) for one ground-truth label.

        The label is also stamped into the transaction's recent row, and that row joins the labelled ring, when
        the row is still in the recent ring (a label later than 10,000 scored requests finds its features gone).
        """
        entry = self._scored.get(transaction_id)
        if entry is None:
            return UNKNOWN, None, None
        score, decision, version, replica, labelled = entry
        if labelled:
            return ALREADY, version, None
        self._scored[transaction_id] = (score, decision, version, replica, True)
        row = self._recent_by_id.get(transaction_id)
        if row is not None:
            row["label"] = label
            row["labelled_at"] = time.time()
            self.labelled.append(row)
        flagged = decision == "decline"
        outcome = ("tp" if flagged else "fn") if label == 1 else ("fp" if flagged else "tn")
        return RECORDED, version, outcome

    def last(self, limit: int, since: float | None = None, labelled: bool | None = None) -> list[dict[str, Any]]:
        """Up to `limit` most recent rows, oldest first; only those with ts > since when given.

        labelled=True: rows that got their label, from the labelled ring (longer than the recent one);
        labelled=False: rows of the recent ring still waiting for theirs; None: the recent ring as it is.
        """
        if labelled:
            return self.labelled.last(limit, since)
        source = reversed(self.recent)
        if labelled is False:
            source = (r for r in source if "label" not in r)
        rows = list(islice(source, limit))
        if since is not None:
            rows = [r for r in rows if r["ts"] > since]
        rows.reverse()
        return rows
