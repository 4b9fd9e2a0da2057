"""What every fault in a scenario has, whatever its kind: an id, when it starts (`when`), until when (`until`).

The per-kind models (`kind`, `action`, `target`, `params`) live with their injectors, one module per kind in
lab/faults/kinds/, and subclass `FaultModel`; lab/scenario/faults.py assembles them into the scenario's union.
This module imports nothing of theirs, so a kind module can import it while that union is being built.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from lab.scenario import vocab
from lab.scenario.fields import Ident, Seconds, Strict
from lab.scenario.ops import OpName

Millis = Annotated[int, Field(ge=0, le=600_000)]
Megabytes = Annotated[int, Field(ge=16, le=1_048_576)]
HeadroomMb = Annotated[int, Field(ge=1, le=1_048_576)]
DependencyName = Literal[vocab.DEPENDENCIES]  # type: ignore[valid-type]


class When(Strict):
    """Exactly one trigger: a time after the scenario starts, another fault's injection, or a learner action."""

    at_s: float | None = Field(default=None, ge=0, le=86_400)
    after: Ident | None = None
    on_action: OpName | None = None
    target: str | None = None
    delay_s: float | None = Field(default=None, ge=0, le=86_400)

    @model_validator(mode="after")
    def _one_trigger(self) -> When:
        given = [name for name in ("at_s", "after", "on_action") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of at_s, after, on_action (got {', '.join(given) or 'none'})")
        if self.target is not None and self.on_action is None:
            raise ValueError("target narrows on_action; it needs on_action")
        if self.delay_s is not None and self.at_s is not None:
            raise ValueError("delay_s applies to after and on_action; with at_s, add it to at_s")
        return self


class Duration(Strict):
    duration_s: Seconds


def _until_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "fixed"
    return "duration" if isinstance(value, (dict, Duration)) else None


Until = Annotated[
    Union[Annotated[Duration, Tag("duration")], Annotated[Literal["fixed"], Tag("fixed")]],  # noqa: UP007
    Discriminator(
        _until_tag,
        custom_error_type="until_shape",
        custom_error_message="until is either 'fixed' or {duration_s: seconds}",
    ),
]
# The tags pydantic inserts in an error's location after `until` (left out when the error names the field).
UNTIL_TAGS: tuple[str, ...] = ("duration", "fixed")


class FaultModel(Strict):
    """The fields every fault has; a kind's model adds `kind` and `action` literals, `target` and `params`."""

    id: Ident
    description: str | None = None
    when: When
    until: Until


class NoParams(Strict):
    pass
