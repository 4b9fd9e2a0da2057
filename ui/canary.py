"""The "canary output" panel of the LLM track: what one replica generates right now for a fixed prompt.

A learner sees gibberish when a replica serves a broken model. The sample is lab.console.llm's `canary_sample`
(the first clause of the monitor's canary text, greedy, 32 tokens, straight to the replica): one short request
per panel refresh (~10 s, and only while the panel is on screen, app.js). One sample per replica is in flight at a
time: a frozen replica never piles up waiting threads, its panel says it is still waiting. The perplexity shown is
the monitor's own canary figure for that replica. Nothing here knows a scenario: it shows live output only.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from lab.console.base import ConsoleError
from lab.console.llm import canary_sample
from ui.security import Refused

REFRESH_S = 10.0
# A sample younger than this is served again to another tab or a quick re-render instead of sending a new one.
FRESH_S = 5.0


class CanaryPanel:
    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._last: dict[str, dict[str, Any]] = {}

    def sample(self, replica: str, replicas: list[str]) -> dict[str, Any]:
        """The replica's latest sample: {"sample"|"error", "waiting", "replica"}; 404 for a name not in `replicas`."""
        if replica not in replicas:
            raise Refused(404, f"no LLM replica {replica!r} in this stack; LLM replicas are: "
                               f"{', '.join(replicas) or 'none'}")
        with self._lock:
            last = self._last.get(replica)
            if replica in self._busy or (last is not None and time.time() - last["asked_at"] < FRESH_S):
                return {**(last or {"replica": replica}), "waiting": replica in self._busy}
            self._busy.add(replica)
        asked = time.time()
        try:
            out: dict[str, Any] = {"replica": replica, "sample": canary_sample(self.lab, replica)}
        except ConsoleError as exc:
            out = {"replica": replica, "error": str(exc)}
        finally:
            with self._lock:
                self._busy.discard(replica)
        out.update(asked_at=asked, waiting=False)
        with self._lock:
            self._last[replica] = out
        return out
