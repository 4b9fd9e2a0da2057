"""The scenario schema: pydantic v2 models, the single source of truth (scenarios/schema.json is exported from here).

A scenario file is one `Scenario`. Section models live here; faults, probes and console operations have their own
modules because each is a family of per-kind models. Checks that relate one part of a scenario to another (ids
that must exist, replicas that must be in the stack, hint ordering) are in `checks.py`, run by the `Scenario`
validator, so `Scenario.model_validate` alone enforces the whole contract. `checks.py` owns them and never imports
this module at run time (only for type hints): the import goes one way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, PrivateAttr, Tag, ValidationInfo, model_validator

from lab.rules import MAX_TRAFFIC_RPS
from lab.scenario import vocab
from lab.scenario.checks import cross_check
from lab.scenario.faults import Fault
from lab.scenario.fields import Ident, Markdown, Seconds, ServiceName, Slug, Strict, Text
from lab.scenario.ops import Collateral, ConfigKey, Op, OpPattern
from lab.scenario.probes import Probe
from lab.scenario.variables import Variable, VarName

# Validation context key: the loader runs the cross-field checks itself, to report each at its own line.
DEFER_CHECKS = "defer_checks"

BaseVersion = Literal[vocab.BASE_VERSIONS]  # type: ignore[valid-type]
Skill = Literal[vocab.SKILLS]  # type: ignore[valid-type]


class Versions(Strict):
    production: BaseVersion = "v1"
    canary: BaseVersion | None = None
    canary_weight: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _canary(self) -> Versions:
        if self.canary is None and self.canary_weight > 0:
            raise ValueError("canary_weight needs a canary version")
        if self.canary is not None and self.canary_weight == 0:
            raise ValueError("a canary needs a canary_weight above 0")
        if self.canary is not None and self.canary == self.production:
            raise ValueError(f"canary and production are both {self.production}")
        return self


class Traffic(Strict):
    """The load: a profile of the scenario's track (fraud: `baseline` by default; llm: `chat`) and a rate; on the
    LLM track also the clients' concurrency cap and retry policy (`faultline traffic --track llm`)."""

    profile: Literal[vocab.TRAFFIC_PROFILES + vocab.LLM_TRAFFIC_PROFILES] = Field(  # type: ignore[valid-type]
        default="baseline", description="a profile of the scenario's track; default baseline (fraud), chat (llm)")
    rps: float = Field(default=20.0, gt=0, le=MAX_TRAFFIC_RPS)
    concurrency: int | None = Field(default=None, ge=4, le=5000,
                                    description="LLM track: most requests in flight (the user pool's cap)")
    retry_policy: Literal[vocab.RETRY_POLICIES] | None = Field(  # type: ignore[valid-type]
        default=None, description="LLM track: what clients do on 429/503 (default honour-retry-after)")
    retries: int | None = Field(default=None, ge=0, le=20, description="LLM track: retries per request (default 3)")


class Stack(Strict):
    """The stack the scenario starts from, healthy, before any fault."""

    track: Literal[vocab.TRACKS] = Field(  # type: ignore[valid-type]
        default=vocab.DEFAULT_TRACK, description="fraud (model-N, feature store) or llm (llm-N); one per scenario")
    replicas: int = Field(default=2, ge=1, le=vocab.MAX_REPLICAS,
                          description="the track's replicas: model-1..N (fraud, <= 16) or llm-1..N (llm, <= 8)")
    versions: Versions = Field(default_factory=Versions)
    services: dict[ServiceName, dict[ConfigKey, Any]] = Field(
        default_factory=dict, description="config overrides per service, applied with PATCH /admin/config"
    )
    traffic: Traffic = Field(default_factory=Traffic)

    @model_validator(mode="after")
    def _track_profile(self) -> Stack:
        # The profile's default follows the track: an LLM scenario that names none streams chats.
        if self.track != vocab.DEFAULT_TRACK and "profile" not in self.traffic.model_fields_set:
            self.traffic.profile = vocab.TRACK_PROFILES[self.track][0]
        return self


class Distractor(Strict):
    """A scenario-specific wrong cause, added to the track's shared causes (same length and tone as theirs)."""

    id: Ident
    label: Text


class Answer(Strict):
    """The correct options; several in one list are each accepted (a compound incident, docs/grading.md)."""

    category: list[Ident] = Field(min_length=1, description="fault kinds, or none / transient for a control")
    component: list[Ident] = Field(min_length=1, description="parts of the stack (model-N for a replica), or host")
    cause: list[Ident] = Field(min_length=1, description="cause ids of the track's taxonomy (lab/scenario/taxonomy.py)")


class Diagnosis(Strict):
    """Only the answers: the options come from the shared taxonomy (docs/taxonomy.md), the same in every scenario."""

    track: Literal[vocab.TRACKS] | None = Field(  # type: ignore[valid-type]
        default=None, description="the taxonomy's track: stack.track's (the default); another is an error")
    answer: Answer
    distractors: list[Distractor] = Field(default_factory=list, max_length=3,
                                          description="a few scenario-specific wrong causes, optional")
    evidence: list[OpPattern] = Field(
        min_length=1, description="investigations a good diagnosis rests on; args given must match, others are free"
    )


def _probe_ref_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "ref"
    return "inline" if isinstance(value, (dict, Strict)) else None


ProbeRef = Annotated[
    Union[Annotated[Ident, Tag("ref")], Annotated[Probe, Tag("inline")]],  # noqa: UP007
    Discriminator(
        _probe_ref_tag,
        custom_error_type="probe_ref_shape",
        custom_error_message="a probe is a steady_state probe id or a probe written inline",
    ),
]


class FixState(Strict):
    """An accepted end state: every probe within tolerance, continuously, for hold_s."""

    description: Text
    probes: list[ProbeRef] = Field(min_length=1, description="steady_state probe ids, or probes written inline")
    hold_s: Seconds


class Fix(Strict):
    accepted: list[FixState] = Field(min_length=1)
    collateral: list[Collateral] = Field(default_factory=list)
    allowed_changes: list[Annotated[str, Field(pattern=r"^(versions|replicas|[a-z0-9-]+\.[a-z_][a-z0-9_]*)$")]] = Field(
        default_factory=list,
        description="changes an accepted fix may leave that the solution does not make: SERVICE.KEY, versions, "
                    "replicas (anything else left different from the start is a graded side effect)")


class Hint(Strict):
    text: Markdown
    cost: int = Field(ge=0, le=100, description="points taken from the hints weight when revealed")
    solution: bool = False


class Weights(Strict):
    diagnosis: int = Field(ge=0, le=100)
    fix: int = Field(ge=0, le=100)
    time: int = Field(ge=0, le=100)
    hints: int = Field(ge=0, le=100, description="points kept when no hint is revealed")

    @model_validator(mode="after")
    def _sum(self) -> Weights:
        total = self.diagnosis + self.fix + self.time + self.hints
        if total != 100:
            raise ValueError(f"weights must add up to 100, got {total}")
        return self


class Scoring(Strict):
    weights: Weights
    par_detect_s: Seconds
    par_mitigate_s: Seconds


class Debrief(Strict):
    what_happened: Markdown
    ideal_path: list[Text] = Field(min_length=1)
    lesson: Markdown


class Page(Strict):
    """An alert the learner must judge: the pager fires at T+`at_s` on the scenario clock, or when one of
    `probes` (alert rules, measured like steady-state probes but not part of it) is violated — whichever the
    author gives (exactly one), and in any case when the steady state breaks after an injection."""

    at_s: Seconds | None = None
    probes: list[Probe] | None = Field(default=None, min_length=1)
    reason: Text = Field(default="an alert fired", description="what the pager says fired (journalled)")

    @model_validator(mode="after")
    def _one(self) -> Page:
        if (self.at_s is None) == (self.probes is None):
            raise ValueError("give exactly one of at_s (a time on the scenario clock) or probes (alert rules)")
        return self


class Scenario(Strict):
    """One incident: the stack, what breaks, what healthy means, how a learner is graded, and the answer."""

    id: Slug = Field(description="matches the file name without .yaml")
    title: Text
    summary: Text
    difficulty: Literal[vocab.DIFFICULTIES]  # type: ignore[valid-type]
    skills: list[Skill] = Field(min_length=1)
    estimated_minutes: int = Field(ge=1, le=240)
    time_scale: float = Field(default=1.0, gt=0, le=10, description="multiplies every duration; tests compress")
    briefing: Markdown = Field(description="what the pager says, in markdown")
    variables: dict[VarName, Variable] = Field(default_factory=dict)
    stack: Stack = Field(default_factory=Stack)
    faults: list[Fault] = Field(min_length=1)
    steady_state: list[Probe] = Field(min_length=1)
    diagnosis: Diagnosis
    fix: Fix
    hints: list[Hint] = Field(min_length=2)
    scoring: Scoring
    debrief: Debrief
    page: Page | None = Field(default=None, description="when the pager fires, besides a broken steady state")
    solution: list[Op] = Field(description="the reference solution, as console operations (may be empty: a control)")
    wrong_fix: list[Op] | None = Field(default=None, description="a plausible fix that must not pass (for tests)")

    # Set by the loader: the file's data before substitution, and the variable values this rendering used.
    _template: dict[str, Any] | None = PrivateAttr(default=None)
    _values: dict[str, Any] = PrivateAttr(default_factory=dict)
    _seed: int | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Scenario:
        if self.diagnosis.track is None:  # one track per scenario: the diagnosis follows the stack
            self.diagnosis.track = self.stack.track
        if info.context and info.context.get(DEFER_CHECKS):
            return self
        problems = cross_check(self)
        if problems:
            raise ValueError("; ".join(f"{_dotted(loc)}: {msg}" for loc, msg in problems))
        return self

    @property
    def track(self) -> str:
        """The track the scenario runs on (`stack.track`)."""
        return self.stack.track

    @property
    def values(self) -> dict[str, Any]:
        """The variable values this rendering used."""
        return dict(self._values)

    @property
    def seed(self) -> int | None:
        """The seed the values were drawn from; None for the canonical rendering (every variable's first value)."""
        return self._seed

    def probe(self, probe_id: str) -> Any:
        for p in self.steady_state:
            if p.id == probe_id:
                return p
        raise KeyError(probe_id)

    def fault(self, fault_id: str) -> Any:
        for f in self.faults:
            if f.id == fault_id:
                return f
        raise KeyError(fault_id)


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "scenario"

