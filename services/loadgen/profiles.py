"""Traffic profiles as data: how live traffic departs from training (a generator Shift) and how fast it comes.

A profile is a YAML/JSON-compatible dict `{"shift": {Shift parameters}, "rate_multiplier": float,
"description": str}`. The built-ins cover the issue's drift and load patterns; scenarios add their own with
`register_profiles({...})` (or the load generator's `POST /control/profiles`). Kept free of locust and gevent
so the lab can validate a scenario's profiles before sending them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from services.trainer.generator import Shift

MAX_RATE_MULTIPLIER = 20.0
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PROFILE_KEYS = {"shift", "rate_multiplier", "description"}
_NULLABLE_FEATURES = ("device_age_days", "amount")


class ProfileError(ValueError):
    """A profile definition that cannot be used; the message names the profile and the offending key."""


class UnknownProfile(ProfileError):
    """A profile name nobody registered."""


@dataclass(frozen=True)
class Profile:
    name: str
    shift: Shift
    rate_multiplier: float = 1.0
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"shift": self.shift.to_dict(), "rate_multiplier": self.rate_multiplier, "description": self.description}


BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    "baseline": {
        "shift": {},
        "rate_multiplier": 1.0,
        "description": "Traffic drawn from the training distribution.",
    },
    "unit-change": {
        "shift": {"unit_scale": 100.0},
        "rate_multiplier": 1.0,
        "description": "An upstream starts sending amounts in cents: every amount is 100x.",
    },
    "null-spike": {
        "shift": {"null_rate": 0.4, "null_feature": "device_age_days"},
        "rate_multiplier": 1.0,
        "description": "40% of requests arrive without device_age_days.",
    },
    "new-category": {
        "shift": {"new_category": "crypto_exchange", "new_category_rate": 0.25},
        "rate_multiplier": 1.0,
        "description": "25% of requests come from a merchant category never seen in training (crypto_exchange).",
    },
    "covariate-shift": {
        "shift": {"covariate": 0.8},
        "rate_multiplier": 1.0,
        "description": "Inputs move (bigger amounts, more online, more foreign, later hours); fraud logic unchanged.",
    },
    "concept-shift": {
        "shift": {"concept": 0.8},
        "rate_multiplier": 1.0,
        "description": "The fraud pattern changes (a card-present skimming ring); inputs look the same.",
    },
    "surge": {
        "shift": {},
        "rate_multiplier": 4.0,
        "description": "Baseline traffic at 4x the requested rate.",
    },
}


def _fraction(name: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ProfileError(f"profile {name!r}: shift.{key} must be a number in 0..1, got {value!r}")
    return float(value)


def _check_shift(name: str, raw: Any) -> Shift:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {name!r}: shift must be a mapping of Shift parameters, got {type(raw).__name__}")
    try:
        shift = Shift.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"profile {name!r}: {exc}") from None
    scale = shift.unit_scale
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
        raise ProfileError(f"profile {name!r}: shift.unit_scale must be a positive number, got {scale!r}")
    for key in ("null_rate", "new_category_rate", "covariate", "concept"):
        _fraction(name, key, getattr(shift, key))
    if shift.null_feature not in _NULLABLE_FEATURES:
        raise ProfileError(
            f"profile {name!r}: shift.null_feature must be one of {', '.join(_NULLABLE_FEATURES)}, "
            f"got {shift.null_feature!r}"
        )
    if shift.new_category is not None and (not isinstance(shift.new_category, str) or not shift.new_category):
        raise ProfileError(f"profile {name!r}: shift.new_category must be a non-empty string or null")
    if shift.new_category_rate > 0 and shift.new_category is None:
        raise ProfileError(f"profile {name!r}: shift.new_category_rate > 0 needs shift.new_category")
    # Normalise numbers to float so a profile read from YAML (`unit_scale: 100`) equals the built-in.
    return Shift(
        unit_scale=float(scale),
        null_rate=float(shift.null_rate),
        null_feature=shift.null_feature,
        new_category=shift.new_category,
        new_category_rate=float(shift.new_category_rate),
        covariate=float(shift.covariate),
        concept=float(shift.concept),
    )


def parse_profile(name: str, data: Any) -> Profile:
    """Validate one profile definition; raises ProfileError with a message naming the problem."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ProfileError(
            f"profile name {name!r} must be 1-64 characters of lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    if not isinstance(data, dict):
        raise ProfileError(f"profile {name!r} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _PROFILE_KEYS)
    if unknown:
        raise ProfileError(
            f"profile {name!r}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_PROFILE_KEYS))}"
        )
    shift = _check_shift(name, data.get("shift"))
    mult = data.get("rate_multiplier", 1.0)
    if (
        isinstance(mult, bool)
        or not isinstance(mult, int | float)
        or not math.isfinite(mult)
        or not 0 < mult <= MAX_RATE_MULTIPLIER
    ):
        raise ProfileError(
            f"profile {name!r}: rate_multiplier must be a number in (0, {MAX_RATE_MULTIPLIER:g}], got {mult!r}"
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ProfileError(f"profile {name!r}: description must be a string")
    return Profile(name=name, shift=shift, rate_multiplier=float(mult), description=description)


class ProfileRegistry:
    """The built-in profiles plus whatever scenarios registered. Built-ins cannot be replaced."""

    def __init__(self) -> None:
        self._profiles: dict[str, Profile] = {n: parse_profile(n, d) for n, d in BUILTIN_PROFILES.items()}

    def names(self) -> list[str]:
        return list(self._profiles)

    def get(self, name: str) -> Profile:
        try:
            return self._profiles[name]
        except KeyError:
            raise UnknownProfile(f"unknown profile {name!r}; known profiles: {', '.join(self._profiles)}") from None

    def register(self, extra: Any) -> list[str]:
        """Merge `{name: definition}` into the registry, all or nothing; returns the names added or replaced."""
        if not isinstance(extra, dict) or not extra:
            raise ProfileError("profiles must be a non-empty mapping of name -> definition")
        parsed = {}
        for name, data in extra.items():
            if name in BUILTIN_PROFILES:
                raise ProfileError(f"profile {name!r} is built in and cannot be replaced; pick another name")
            parsed[name] = parse_profile(name, data)
        self._profiles.update(parsed)
        return list(parsed)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: p.to_dict() for name, p in self._profiles.items()}


_default_registry = ProfileRegistry()


def register_profiles(extra: dict[str, Any]) -> list[str]:
    """Add scenario profiles to this process's default registry (see ProfileRegistry.register)."""
    return _default_registry.register(extra)


def get_profile(name: str) -> Profile:
    return _default_registry.get(name)


def profile_names(track: str = "fraud") -> list[str]:
    """The built-in (and this process's registered) profiles of a track: the one list of profiles, per track."""
    if track == "llm":
        from services.loadgen.llmprofiles import LLMProfileRegistry

        return LLMProfileRegistry().names()
    if track != "fraud":
        raise ValueError(f"unknown track {track!r}; tracks with traffic: {', '.join(TRAFFIC_TRACKS)}")
    return _default_registry.names()


# The tracks the load generator drives, each with its own user (services/loadgen/locustfile.py for fraud's
# scored transactions, services/loadgen/llmuser.py for the LLM track's streamed chats) and its own profiles.
TRAFFIC_TRACKS = ("fraud", "llm")
