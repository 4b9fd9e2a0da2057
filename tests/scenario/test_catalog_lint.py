"""The catalog gives no answer away (issue 13): titles and summaries do not name the faulty component or the
cause; the correct option is not the conspicuous one (the longest) in more than a third of the questions; and a
scripted learner who always picks the longest option averages < 40 over the catalog.

The options are the shared taxonomy's (lab/scenario/taxonomy.py) shuffled per seed, exactly what the attempt
shows (`taxonomy.questions`); the scripted learner is graded by the real grader over a journal of what it did.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from lab.grader import grade
from lab.scenario import load_catalog, render, taxonomy

T0 = 1_800_000_000.0
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def catalog() -> list[Any]:
    scenarios = list(load_catalog())
    assert len(scenarios) >= 12
    return [render(s, seed) for s in scenarios for seed in SEEDS]


def _terms(s: Any) -> list[str]:
    """What would name the answer: each accepted component and cause id (as written and with spaces), and each
    accepted cause's label. The host is no part's name, so 'host' alone is not held against a summary."""
    a = s.diagnosis.answer
    out = []
    for ident in [*a.component, *a.cause]:
        if ident != taxonomy.HOST:
            out += [ident, ident.replace("-", " ")]
    labels = taxonomy.causes(s.diagnosis.track)
    out += [labels[c] for c in a.cause if c in labels]
    return [t.lower() for t in out]


def test_titles_and_summaries_do_not_name_the_component_or_the_cause(catalog: list[Any]) -> None:
    named = []
    for s in catalog:
        for field in ("title", "summary"):
            text = getattr(s, field).lower()
            for term in _terms(s):
                if re.search(rf"(?<![a-z0-9-]){re.escape(term)}(?![a-z0-9])", text):
                    named.append(f"{s.id} {field} names {term!r}: {getattr(s, field)!r}")
    assert not named, "\n".join(sorted(set(named)))


def _longest(question: dict[str, Any]) -> str:
    """The option a learner who reads for length picks: the longest label, the first shown on a tie."""
    return max(question["options"], key=lambda o: len(o["label"]))["id"]


def test_the_correct_option_is_rarely_the_longest(catalog: list[Any]) -> None:
    total = longest_right = 0
    for s in catalog:
        accepted = taxonomy.answers(s)
        for q in taxonomy.questions(s, s.seed):
            total += 1
            longest_right += _longest(q) in accepted[q["id"]]
    assert longest_right <= total / 3, f"the longest option is correct in {longest_right} of {total} questions"


def _journal(s: Any, answers: dict[str, str]) -> list[dict[str, Any]]:
    ev = [("attempt_started", 0, {}), ("stack_ready", 1, {}), ("fault_applied", 60, {"fault_id": s.faults[0].id}),
          ("probe_result", 65, {"probe": s.steady_state[0].id, "ok": False}),
          ("diagnosis_submitted", 90, {"answers": answers}), ("attempt_aborted", 400, {"reason": "gave up"})]
    return [{"seq": i + 1, "at": T0 + t, "type": k, "data": d} for i, (k, t, d) in enumerate(ev)]


def test_a_learner_who_picks_the_longest_option_averages_below_40(catalog: list[Any]) -> None:
    scores = []
    for s in catalog:
        answers = {q["id"]: _longest(q) for q in taxonomy.questions(s, s.seed)}
        scores.append(grade(s, _journal(s, answers))["score"])
    assert sum(scores) / len(scores) < 40, scores


def test_the_right_answers_alone_are_not_enough_without_evidence_and_a_fix(catalog: list[Any]) -> None:
    """The control for the test above: the same journal with the right answers earns the three questions' share
    of the diagnosis weight (no pinned evidence, no fix): the grader does read the answers."""
    for s in catalog[:: len(SEEDS)]:
        right = {k: v[0] for k, v in taxonomy.answers(s).items()}
        g = grade(s, _journal(s, right))
        assert g["breakdown"]["diagnosis"]["points"] == pytest.approx(s.scoring.weights.diagnosis * 0.8)
        assert g["breakdown"]["diagnosis"]["evidence"]["points"] == 0
