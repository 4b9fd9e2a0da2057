"""The grader: a deterministic score (0..100, with a breakdown) and the debrief, from a rendered scenario and its
attempt's journal events. Pure functions, no I/O: the same journal always gives the same grade.

    from lab.grader import grade, debrief, debrief_text
    result = grade(render(load_scenario(path), seed, time_scale), journal.events(attempt_id))

In the lab the scenario is the one the attempt ran, rebuilt from the copy its journal embeds (lab/attempt/manager.py
`_ran`), never re-read from the file: an edited scenario file changes no old grade.

The rules are in lab/grader/score.py and docs/grading.md.
"""

from lab.grader.debrief import debrief, debrief_text, learner_path, timeline
from lab.grader.score import grade

__all__ = ["debrief", "debrief_text", "grade", "learner_path", "timeline"]
