"""Declarative SLOs evaluated over sliding windows, with "violated since / restored since" events.

An `SLOSpec` says what is measured (kind + target), the threshold, the window, and how long a breach (or a
recovery) must last before the state flips (`for_s`, hysteresis against one noisy tick). `SLOTracker` is the
per-SLO state machine; the monitor feeds it one value per tick and hands emitted events to subscribers (the
journal). No value (no traffic, no labels yet) never flips a state: silence is not evidence.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lab.parts.gateway import NAME as GATEWAY

Kind = Literal[
    "latency_p99", "error_rate", "accuracy_min", "precision_min", "recall_min", "drift_max", "availability",
    "ttft_p99", "itl_p99", "goodput_min",
]
State = Literal["unknown", "ok", "violated"]
Event = dict[str, Any]
Subscriber = Callable[[Event], None]

# Which direction breaks the objective: "above" the threshold (latency, errors, drift) or "below" it.
BREACH_ABOVE = {"latency_p99", "error_rate", "drift_max", "ttft_p99", "itl_p99"}

log = logging.getLogger("faultline.monitor.slo")


class SLOSpec(BaseModel):
    """One objective. `target` is a service or replica name (latency, errors, availability), a model version
    or "all" (quality), a feature name or "all" (drift)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    kind: Kind
    # a name (service, replica, version, feature, "all"): bounded, as nothing longer or stranger names anything
    target: str = Field(default=GATEWAY, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    threshold: float
    window_s: float = Field(default=10.0, gt=0, le=24 * 3600)
    for_s: float = Field(default=0.0, ge=0, le=3600)
    min_samples: float = Field(
        default=0.0, ge=0,
        description="the ratio's denominator needed for a value: requests (latency, errors), labels (accuracy), "
        "actual frauds tp+fn (recall), declines tp+fp (precision)",
    )
    description: str = Field(default="", max_length=300)
    track: Literal["fraud", "llm"] | None = Field(default=None, description="the track whose objective it is (judged "
                                                  "and shown only while that track runs); None: every stack's")

    @model_validator(mode="after")
    def _check_threshold(self) -> SLOSpec:
        if self.kind in ("error_rate", "accuracy_min", "precision_min", "recall_min", "availability",
                         "goodput_min") and not (
            0.0 <= self.threshold <= 1.0
        ):
            raise ValueError(f"{self.kind} threshold is a fraction in 0..1, got {self.threshold}")
        if self.kind in ("latency_p99", "drift_max", "ttft_p99", "itl_p99") and self.threshold <= 0:
            raise ValueError(f"{self.kind} threshold must be > 0, got {self.threshold}")
        return self

    def breached(self, value: float) -> bool:
        if self.kind in BREACH_ABOVE:
            return value > self.threshold
        return value < self.threshold


def default_slos(model_metrics: dict[str, Any] | None = None) -> list[SLOSpec]:
    """The stack's default objectives (docs/monitoring.md explains each number).

    Fraud is rare (about 3% of transactions), so accuracy stays high even when the model catches nothing;
    the recall floor is what reveals a concept shift. It is half the production model's offline recall
    (`model_metrics`, from its registry meta) when known, else a conservative constant, and it needs 50 actual
    frauds in the window before it judges. Precision is measured but not an objective by default: at ~3%
    declines its window estimate is too noisy to page on.
    """
    metrics = model_metrics or {}
    recall_floor = _half_of(metrics.get("recall"), 0.1)
    return [
        SLOSpec(name="gateway-latency", kind="latency_p99", target=GATEWAY, threshold=250.0, window_s=10.0,
                min_samples=20, description="gateway /v1/score p99 <= 250 ms over 10 s", track="fraud"),
        SLOSpec(name="gateway-errors", kind="error_rate", target=GATEWAY, threshold=0.02, window_s=10.0,
                min_samples=20, description="gateway /v1/score non-2xx <= 2% over 10 s", track="fraud"),
        SLOSpec(name="gateway-availability", kind="availability", target=GATEWAY, threshold=0.99,
                window_s=60.0, description="gateway up (scraped and not down) >= 99% of the last 60 s"),
        SLOSpec(name="model-accuracy", kind="accuracy_min", target="all", threshold=0.8, window_s=120.0,
                min_samples=200, for_s=10.0, description="accuracy on feedback labels >= 0.8 over 120 s",
                track="fraud"),
        SLOSpec(name="model-recall", kind="recall_min", target="all", threshold=recall_floor, window_s=120.0,
                min_samples=50, for_s=10.0,
                description=f"recall on feedback labels >= {recall_floor:.3f} over 120 s (half the offline recall)",
                track="fraud"),
        SLOSpec(name="input-drift", kind="drift_max", target="all", threshold=0.25, window_s=30.0,
                description="no request feature drifted (PSI < 0.25, null rate steady) in the live window",
                track="fraud"),
        # The LLM track's (issue 16's defaults, as `vllm bench serve` judges goodput): every replica's streams.
        SLOSpec(name="llm-ttft", kind="ttft_p99", target="all", threshold=1000.0, window_s=30.0, track="llm",
                description="LLM time to first token p99 <= 1 s over 30 s (the replicas')"),
        SLOSpec(name="llm-itl", kind="itl_p99", target="all", threshold=200.0, window_s=30.0, track="llm",
                description="LLM inter-token latency p99 <= 200 ms over 30 s (the replicas')"),
        SLOSpec(name="llm-goodput", kind="goodput_min", target="all", threshold=0.9, window_s=30.0, track="llm",
                description="LLM goodput >= 90% over 30 s (requests within the TTFT and ITL objectives)"),
    ]


def _half_of(value: Any, fallback: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return fallback
    if not 0.0 < v <= 1.0:
        return fallback
    return round(max(0.01, v / 2.0), 4)


class SLOTracker:
    """The state machine of one SLO: unknown -> ok | violated, with `for_s` hysteresis both ways."""

    def __init__(self, spec: SLOSpec) -> None:
        self.spec = spec
        self.state: State = "unknown"
        self.since: float | None = None  # when the current state began (start of the breach / recovery)
        self.value: float | None = None
        self.updated_at: float | None = None
        self._pending: tuple[State, float] | None = None  # (candidate state, since) while for_s runs

    def update(self, now: float, value: float | None, breached: bool | None = None) -> Event | None:
        """Feed one evaluation; returns an event when the state flips to violated or back to ok.

        `breached` overrides the threshold comparison (the drift SLO is also breached by a null-rate jump).
        """
        self.value = value
        self.updated_at = now
        if value is None:
            return None
        if breached is None:
            breached = self.spec.breached(value)
        candidate: State = "violated" if breached else "ok"
        if candidate == self.state:
            self._pending = None
            return None
        if self._pending is None or self._pending[0] != candidate:
            self._pending = (candidate, now)
        started = self._pending[1]
        # from "unknown" the first verdict is taken at once for ok, but a breach still has to last for_s
        if not (self.state == "unknown" and candidate == "ok") and now - started < self.spec.for_s:
            return None
        previous = self.state
        self.state, self.since, self._pending = candidate, started, None
        if candidate == "violated":
            return self._event("violated", now, started)
        if previous == "violated":
            return self._event("restored", now, started)
        return None

    def _event(self, state: str, now: float, since: float) -> Event:
        return {
            "slo": self.spec.name,
            "kind": self.spec.kind,
            "target": self.spec.target,
            "state": state,
            "at": now,
            "since": since,
            "value": self.value,
            "threshold": self.spec.threshold,
        }

    def status(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "kind": self.spec.kind,
            "target": self.spec.target,
            "state": self.state,
            "value": self.value,
            "threshold": self.spec.threshold,
            "window_s": self.spec.window_s,
            "since": self.since,
            "description": self.spec.description,
        }


class SLOBook:
    """All trackers, the recent event log, and the subscribers to notify."""

    def __init__(self, specs: list[SLOSpec], max_events: int = 1000) -> None:
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate SLO name(s): {', '.join(dupes)}")
        self.trackers = {s.name: SLOTracker(s) for s in specs}
        self.events: deque[Event] = deque(maxlen=max_events)
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Register a callback for every event; returns a function that unsubscribes it."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def update(self, name: str, now: float, value: float | None, breached: bool | None = None) -> Event | None:
        event = self.trackers[name].update(now, value, breached)
        if event is not None:
            self.events.append(event)
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception:  # a broken subscriber must not stop SLO evaluation
                    log.exception("SLO subscriber failed event=%s", event)
        return event

    def status(self) -> dict[str, Any]:
        return {
            "slos": [t.status() for t in self.trackers.values()],
            "events": list(self.events),
        }
