"""The `spec_acceptance_rate` probe kind: accepted / proposed draft tokens over the probe's window, read from the
replicas' `vllm:spec_decode_*` counters through the monitor's parser and rings; the lowest replica's rate (a stale
draft on one replica is not averaged away), None without enough proposals (speculation off)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import TypeAdapter

from lab.monitor import prom
from lab.monitor.llm import MIN_DRAFT_TOKENS, probe_value, server_signals
from lab.monitor.series import ScrapeRing
from lab.monitor.signals import window
from lab.scenario.probes import Probe

PROBES: TypeAdapter[Probe] = TypeAdapter(Probe)


def exposition(drafted: float, accepted: float) -> str:
    return ("# TYPE vllm:spec_decode_num_draft_tokens_total counter\n"
            f"vllm:spec_decode_num_draft_tokens_total {drafted}\n"
            "# TYPE vllm:spec_decode_num_accepted_tokens_total counter\n"
            f"vllm:spec_decode_num_accepted_tokens_total {accepted}\n")


def ring(*points: tuple[float, float, float]) -> ScrapeRing:
    """A replica's scrapes: (time, drafted so far, accepted so far)."""
    r = ScrapeRing(32)
    for t, drafted, accepted in points:
        r.add(t, prom.parse(exposition(drafted, accepted)).samples)
    return r


def probe(rings: dict[str, ScrapeRing], seconds: float, now: float, **spec: object) -> float | None:
    p = PROBES.validate_python({"id": "acc", "kind": "spec_acceptance_rate", "tolerance": {"min": 0.6}, **spec})
    return probe_value(SimpleNamespace(rings=rings, canaries={}), p, seconds, now)


def test_the_lowest_replica_over_the_window() -> None:
    good = ring((0, 0, 0), (10, 400, 390), (20, 800, 780))  # the matching draft: ~0.98 accepted
    # a stale draft from t=10: before it 0.95, within the last 10 s 4 of 400 accepted
    stale = ring((0, 0, 0), (10, 400, 380), (20, 800, 384))
    rings = {"llm-1": good, "llm-2": stale}
    assert probe(rings, 10, 20) == pytest.approx(4 / 400)
    assert probe(rings, 10, 20, target="llm-1") == pytest.approx(390 / 400)
    assert probe(rings, 20, 20, target="llm-2") == pytest.approx(384 / 800)
    # the replica's own signals (metrics, charts, the debrief's llm-N.spec_acceptance_rate) agree
    assert server_signals(window(stale, 10, 20))["spec_acceptance_rate"] == pytest.approx(4 / 400)


def test_no_value_without_enough_proposals() -> None:
    off = ring((0, 1000, 990), (10, 1000, 990))  # speculation turned off at t=0: nothing proposed since
    few = ring((0, 0, 0), (10, MIN_DRAFT_TOKENS - 1, 0))
    assert probe({"llm-1": off}, 10, 10) is None
    assert probe({"llm-1": few}, 10, 10) is None
    # a replica that stopped speculating does not hide one that still speculates badly
    bad = ring((0, 0, 0), (10, 200, 2))
    assert probe({"llm-1": off, "llm-2": bad}, 10, 10) == pytest.approx(0.01)


def test_the_kind_validates() -> None:
    for bad, words in [({"tolerance": {"min": 1.5}}, "between 0 and 1"),
                       ({"target": "gateway"}, "unknown target 'gateway'"),
                       ({"tolerance": {"equals": 1}}, "takes max / min")]:
        with pytest.raises(ValueError, match=words):
            PROBES.validate_python({"id": "a", "kind": "spec_acceptance_rate", "tolerance": {"min": 0.5}, **bad})
