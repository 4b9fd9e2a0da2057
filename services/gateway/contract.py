"""The input contract of POST /v1/score and POST /v1/feedback, and how violations are reported (422).

Strict types: "12.5" is not an amount and 1 is not a boolean. Two deliberate leniencies keep the lab's data
faults observable instead of turning them into rejections: `device_age_days` may be null (null spikes), and
`merchant_category` / `country` values outside the training vocabulary are accepted (the model maps them to
its unknown bucket; the gateway counts them). `amount_max` is config, so it is checked by the gateway after
`amount_scale` is applied, not here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.schema import COUNTRIES, MERCHANT_CATEGORIES

KNOWN_CATEGORIES = frozenset(MERCHANT_CATEGORIES)
KNOWN_COUNTRIES = frozenset(COUNTRIES)

_ID = r"^[A-Za-z0-9_.:-]{1,128}$"


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    transaction_id: str = Field(pattern=_ID)
    card_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    amount: float = Field(ge=0)
    merchant_category: str = Field(pattern=r"^[A-Za-z0-9_ &.-]{1,64}$")
    hour: int = Field(ge=0, le=23)
    country: str = Field(pattern=r"^[A-Z]{2}$")
    card_present: bool
    device_age_days: float | None = Field(ge=0, le=1_000_000)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    transaction_id: str = Field(pattern=_ID)
    label: int = Field(ge=0, le=1, description="1 = fraud, 0 = legitimate (true/false are not labels)")


def describe(exc: ValidationError) -> tuple[str, list[dict[str, str]], list[str]]:
    """(one-line message naming the fields, per-field errors, fields that arrived as null)."""
    errors = []
    nulls = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"]
        if err["type"] == "json_invalid":
            msg = f"body is not valid JSON ({msg})"
        elif err["type"] == "model_type" or err["type"] == "model_attributes_type":
            msg = "body must be a JSON object"
        elif err["type"] == "string_pattern_mismatch":
            msg = f"{msg} (got {str(err.get('input'))[:80]!r})"
        if err.get("input", ...) is None and len(err["loc"]) == 1:
            nulls.append(field)
        errors.append({"field": field, "message": msg})
    return "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors, nulls
