"""The locust user: one scored transaction per send permit, its label queued as late feedback.

Run through `python -m services.loadgen` (which builds the Controller this user reads); the user only sends,
the Controller decides rate and profile. Waiting for a permit happens in `wait_time`, where locust considers
the user idle, so a pool resize never interrupts a request in flight (its label would be lost).
"""

from __future__ import annotations

import json
from typing import ClassVar

from locust import FastHttpUser, task

from services.loadgen.controller import SCORE_PATH, Controller

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class ScoringUser(FastHttpUser):
    controller: ClassVar[Controller | None] = None
    # Overridden from the command line; short enough that a blackholed gateway fails requests visibly.
    network_timeout = 10.0
    connection_timeout = 5.0

    def wait_time(self) -> float:
        assert self.controller is not None, "ScoringUser needs ScoringUser.controller (run python -m services.loadgen)"
        self.controller.pacer.acquire()
        return 0.0

    def on_start(self) -> None:
        # Locust runs the first task immediately on spawn; a new pool would fire all at once. Pace it too.
        self.wait()

    @task
    def score(self) -> None:
        controller = self.controller
        assert controller is not None
        row, label = controller.source.next()
        body = json.dumps(row).encode()
        controller.inflight += 1
        try:
            with self.client.post(
                SCORE_PATH, data=body, headers=JSON_HEADERS, name=SCORE_PATH, catch_response=True
            ) as resp:
                code = int(resp.status_code or 0)
                controller.record(code)
                if code == 200:
                    controller.feedback.add(row["transaction_id"], label)
                elif code:
                    resp.failure(f"HTTP {code}: {_detail(resp.text)}")
        finally:
            controller.inflight -= 1


def _detail(text: str | None) -> str:
    """The gateway's `detail` (e.g. which field broke the contract), so locust's failure table says why."""
    if not text:
        return ""
    try:
        detail = json.loads(text).get("detail", text)
    except (ValueError, AttributeError):
        detail = text
    return str(detail)[:200]
