"""The UI's view of the attempt engine: history and best scores from the journal, attempts through lab.attempt.

Every decision — what an attempt is, what a hint costs, whether a diagnosis is right, the score — belongs to
lab.attempt, lab.journal and lab.grader; this module only finds them on the Lab and shapes their answers for
templates. If the engine is missing from a lab, attempt pages answer 503 with that message.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ui.security import Refused


class Engine:
    def __init__(self, lab: Any) -> None:
        self.lab = lab

    @property
    def journal(self) -> Any | None:
        journal = self.lab.components.get("journal")
        if journal is None:
            try:
                from lab.journal import lab_journal
            except ImportError:
                return None
            journal = lab_journal(self.lab)
        return journal

    # --- history ------------------------------------------------------------------------------------------------

    def history(self, limit: int = 100, scenario_id: str | None = None) -> list[dict[str, Any]]:
        journal = self.journal
        return journal.attempts(limit=limit, scenario_id=scenario_id) if journal is not None else []

    def best_scores(self) -> dict[str, float]:
        best: dict[str, float] = {}
        for a in self.history(limit=10_000):
            score = a.get("score")
            if score is not None and score > best.get(a["scenario_id"], -1):
                best[a["scenario_id"]] = score
        return best

    def progress_by_skill(self, scenarios: list[Any]) -> list[dict[str, Any]]:
        """Per skill: scenarios exercising it, how many were tried and how many scored >= 70, and the mean best."""
        best = self.best_scores()
        by_skill: dict[str, list[Any]] = defaultdict(list)
        for s in scenarios:
            for skill in s.skills:
                by_skill[skill].append(s)
        out = []
        for skill, items in sorted(by_skill.items()):
            scores = [best[s.id] for s in items if s.id in best]
            out.append({"skill": skill, "scenarios": len(items), "tried": len(scores),
                        "passed": sum(1 for v in scores if v >= 70),
                        "mean_best": sum(scores) / len(scores) if scores else None})
        return out

    # --- attempts -----------------------------------------------------------------------------------------------

    def running_attempt(self) -> dict[str, Any] | None:
        for a in self.history(limit=20):
            if a.get("status") == "running":
                return a
        return None

    def require(self, name: str) -> Any:
        raise Refused(503, f"the attempt engine is not available in this lab ({name})")
