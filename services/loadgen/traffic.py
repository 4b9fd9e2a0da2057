"""Where the load generator's transactions come from: the trainer's seeded generator under the current profile.

Rows are drawn in batches (numpy is cheap per batch, costly per row) and handed out one at a time. Changing the
profile discards the rest of the batch so the new shift shows up in the very next request. No locust, no gevent:
this is plain data, tested on its own.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import numpy as np

from services.loadgen.profiles import Profile
from services.trainer.generator import Generator

DEFAULT_BATCH = 256


class TrafficSource:
    """Transactions for POST /v1/score, each with its hidden label.

    data_seed fixes the card population (it must match the feature store's seed); seed fixes the stream of
    transactions (None: fresh entropy). Transaction ids carry a per-run tag so that a restarted load generator
    never reuses an id the gateway still remembers from the previous run.
    """

    def __init__(
        self, profile: Profile, data_seed: int = 7, seed: int | None = None, batch: int = DEFAULT_BATCH
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.generator = Generator(seed=data_seed)
        self.rng = np.random.default_rng(seed)
        self.batch = batch
        self.run_tag = os.urandom(3).hex()
        self._profile = profile
        self._rows: deque[tuple[dict[str, Any], int]] = deque()

    @property
    def profile(self) -> Profile:
        return self._profile

    def set_profile(self, profile: Profile) -> None:
        self._profile = profile
        self._rows.clear()

    def next(self) -> tuple[dict[str, Any], int]:
        """The next transaction (request body) and its ground-truth label."""
        if not self._rows:
            self._refill()
        return self._rows.popleft()

    def _refill(self) -> None:
        for row in self.generator.sample(self.batch, self._profile.shift, rng=self.rng):
            label = row.pop("label")
            row["transaction_id"] = f"{self.run_tag}-{row['transaction_id']}"
            self._rows.append((row, label))
