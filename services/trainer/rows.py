"""Labelled training rows: their contract, checked without torch or numpy, and a summary of what they hold.

A labelled row is what the gateway's recent ring holds once a late label arrived (`GET /v1/recent?labelled=1`):
every feature of `schema.MODEL_FEATURES` as the model saw it, plus `label` 0/1. Other keys (`ts`, `labelled_at`,
`transaction_id`, `score`, ...) are allowed and ignored for training; `ts` (unix seconds the row was scored), when
every row has one, gives the data's time span for the new version's lineage.

The registry's HTTP service checks rows with this module before it starts a trainer child, so a bad body is a
422 naming the row and the field in a fraction of a second; the trainer checks them again (it may be run alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from services.common.schema import CATEGORICAL_FEATURES, NUMERIC_FEATURES

MIN_ROWS = 200
# Each split (train, validation, test) is stratified and needs a few of each class, or its AUC is undefined.
MIN_PER_CLASS = 10
MAX_ROWS = 200_000


class RowsError(ValueError):
    """Rows that cannot be trained on; the message names the row and field, or says what is missing."""


@dataclass(frozen=True)
class RowsSummary:
    rows: int
    fraud: int
    ts_from: float | None
    ts_to: float | None

    def time_span(self) -> dict[str, float] | None:
        if self.ts_from is None or self.ts_to is None:
            return None
        return {"from": round(self.ts_from, 3), "to": round(self.ts_to, 3),
                "seconds": round(self.ts_to - self.ts_from, 3)}


def _number(v: Any) -> bool:
    return type(v) is float or type(v) is int


def check_rows(rows: Any) -> RowsSummary:
    """Validate labelled rows; RowsError on the first problem. Returns how many rows and fraud cases they hold."""
    if not isinstance(rows, list) or not rows:
        raise RowsError("rows: must be a non-empty list of labelled rows")
    if len(rows) > MAX_ROWS:
        raise RowsError(f"rows: {len(rows)} rows, at most {MAX_ROWS} per training")
    fraud = 0
    ts_from = ts_to = None
    every_ts = True
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RowsError(f"rows[{i}]: must be an object with the model features and label")
        for name in NUMERIC_FEATURES:
            if name not in row:
                raise RowsError(f"rows[{i}].{name}: missing")
            v = row[name]
            if v is not None and (not _number(v) or not math.isfinite(v)):
                raise RowsError(f"rows[{i}].{name}: must be a finite number or null")
        for name in CATEGORICAL_FEATURES:
            if name not in row:
                raise RowsError(f"rows[{i}].{name}: missing")
            v = row[name]
            if v is not None and not isinstance(v, str | bool):
                raise RowsError(f"rows[{i}].{name}: must be a string (or a bool for card_present) or null")
        if "label" not in row:
            raise RowsError(f"rows[{i}].label: missing")
        label = row["label"]
        if type(label) is not int or label not in (0, 1):
            raise RowsError(f"rows[{i}].label: must be 0 or 1")
        fraud += label
        ts = row.get("ts")
        if every_ts and _number(ts) and math.isfinite(ts):
            ts_from = ts if ts_from is None else min(ts_from, ts)
            ts_to = ts if ts_to is None else max(ts_to, ts)
        else:
            every_ts = False
    n = len(rows)
    if n < MIN_ROWS:
        raise RowsError(f"rows: need at least {MIN_ROWS} labelled rows, got {n}")
    if fraud == 0 or fraud == n:
        kind = "legitimate" if fraud == 0 else "fraud"
        raise RowsError(f"rows: all {n} rows are {kind} (a single class): nothing to learn to tell apart")
    if min(fraud, n - fraud) < MIN_PER_CLASS:
        raise RowsError(f"rows: {fraud} fraud and {n - fraud} legitimate rows; need at least {MIN_PER_CLASS} of each")
    return RowsSummary(n, fraud, ts_from if every_ts else None, ts_to if every_ts else None)
