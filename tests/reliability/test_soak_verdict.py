"""The soak's pass/fail rules (bench/soak.py `verdict`, `rss_report`) on made-up figures: each criterion can fail.

The soak itself runs for minutes on a private stack (`make soak`), so it is not part of the default test run; these
checks keep its judgement honest without running it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bench.soak import rss_report, verdict


def _passing() -> dict[str, Any]:
    return {
        "faults_applied": 2, "rps": 30, "healthy_s": 15,
        "cycles": [{"n": 1, "labels_sent": 450}, {"n": 2, "labels_sent": 440}],
        "healthy": {"labels_sent": 5000, "labels_lost": 0, "seconds": 180},
        "whole_run": {"labels_sent": 9000, "labels_failed": 0, "labels_dropped": 0, "pending_at_end": 0,
                      "acknowledged_total": {"loadgen": 9500, "gateway": 9500}},
        "processes": {"start": 8, "end": 8},
        "fds": {"growth": {"lab": -4, "gateway": 2, "netproxy": 4}},
        "restarted": ["model-1"],
        "rss": {"gateway": {"restarted": False, "change": 0.03, "first_minute_median_mib": 60,
                            "last_minute_median_mib": 61.8},
                "model-1": {"restarted": True, "change": -0.4, "first_minute_median_mib": 250,
                            "last_minute_median_mib": 150}},
        "down": {"processes": [], "ports": []},
    }


def test_a_clean_run_passes() -> None:
    assert verdict(_passing()) == []


@pytest.mark.parametrize(("path", "value", "needle"), [
    (("faults_applied",), 0, "no fault"),
    (("healthy", "labels_lost"), 1, "lost while healthy"),
    (("whole_run", "acknowledged_total", "gateway"), 9499, "the gateway 9499"),
    (("whole_run", "pending_at_end"), 3, "still pending"),
    (("processes", "end"), 9, "processes: 8 -> 9"),
    (("fds", "growth", "gateway"), 40, "descriptors grew"),
    (("rss", "gateway", "change"), 0.2, "gateway RSS"),
    (("down", "ports"), [12345], "left after down"),
    (("cycles",), [{"n": 1, "labels_sent": 450}, {"n": 2, "labels_sent": 44}], "traffic stalled"),
    (("restarted",), ["gateway"], "cannot be compared"),
])
def test_each_criterion_can_fail(path: tuple[str, ...], value: Any, needle: str) -> None:
    result = copy.deepcopy(_passing())
    target = result
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    problems = verdict(result)
    assert any(needle in p for p in problems), problems


def test_rss_medians_of_the_first_and_last_minute() -> None:
    start, end = 1000.0, 1300.0
    points = [(start + i * 5, 100 * 2**20 if i < 12 else 130 * 2**20) for i in range(61)]
    report = rss_report({"lab": points}, start, end, restarted=set())
    assert report["lab"]["first_minute_median_mib"] == 100.0
    assert report["lab"]["last_minute_median_mib"] == 130.0
    assert report["lab"]["change"] == pytest.approx(0.3)
    assert not report["lab"]["restarted"] and report["lab"]["samples"] == 61
