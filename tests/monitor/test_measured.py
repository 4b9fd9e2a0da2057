"""Measured figures: a series summary over the scenario clock only, and `[[ measured.SERIES.AGG ]]` filled from it
(an unmeasured figure says so instead of inventing one)."""

from __future__ import annotations

from lab.monitor.measured import NOT_MEASURED, fill, references, summarize


def test_summary_counts_only_points_after_the_clock_started() -> None:
    export = {"series": {"drift.amount.psi": [[1.0, 9.0], [2.0, 0.1], [3.0, 7.5], [4.0, None]],
                         "decisions.decline_rate": [[3.0, 0.5], [4.0, 0.97]],
                         "model-1.rss_bytes": [[3.0, 1e9]]}}
    s = summarize(export, since=2.0)
    assert s["drift.amount.psi"] == {"max": 7.5, "min": 0.1, "mean": 3.8, "last": 7.5, "points": 2.0}
    assert "model-1.rss_bytes" not in s  # not a figure a debrief quotes
    assert summarize(None) == {}


def test_fill_replaces_every_reference_and_marks_the_unmeasured() -> None:
    measured = {"drift.amount.psi": {"max": 7.93, "min": 0.01, "mean": 2.0, "last": 3.0},
                "decisions.decline_rate": {"max": 0.973, "min": 0.02, "mean": 0.5, "last": 0.9},
                "drift.amount.median_ratio": {"max": 101.4, "min": 1.0, "mean": 50.0, "last": 100.0}}
    text = ("PSI [[ measured.drift.amount.psi.max ]], declines [[measured.decisions.decline_rate.max_pct]], "
            "median x[[ measured.drift.amount.median_ratio.max ]], recall [[ measured.quality.recall.min_pct ]]")
    assert fill(text, measured) == f"PSI 7.93, declines 97.3 %, median x101, recall {NOT_MEASURED}"
    assert references(text)[1] == ("decisions.decline_rate", "max_pct")
    assert fill("no figures {{ here }}", measured) == "no figures {{ here }}"
