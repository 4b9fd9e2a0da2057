"""Building blocks shared by every scenario model: the strict base class and the annotated field types.

Every model forbids unknown keys, so a typo in a scenario is an error rather than a silently ignored setting, and
validates strictly: no coercion, so `"5"` is not a number and `1` is not `true` (whole numbers are accepted where
a number is expected), and `.nan` or `.inf` are no numbers either.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from lab.scenario import vocab


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


Slug = Annotated[str, StringConstraints(pattern=vocab.SLUG_PATTERN, max_length=64)]
Ident = Annotated[str, StringConstraints(pattern=vocab.ID_PATTERN, max_length=64)]
Text = Annotated[str, StringConstraints(min_length=1)]
Markdown = Annotated[str, StringConstraints(min_length=1)]

ServiceName = Annotated[str, AfterValidator(vocab.check_service)]
HopName = Annotated[str, AfterValidator(vocab.check_hop)]
ReplicaName = Annotated[str, AfterValidator(vocab.check_replica)]
FeatureName = Annotated[str, AfterValidator(vocab.check_feature)]
VersionRef = Annotated[str, AfterValidator(vocab.check_version_ref)]

Seconds = Annotated[float, Field(gt=0, le=86_400)]
Fraction = Annotated[float, Field(ge=0, le=1)]
