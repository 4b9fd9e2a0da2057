"""The LLM track's traffic profiles as data: what each streamed request asks for and how fast requests come.

A profile is a YAML/JSON-compatible dict (every key optional):
  prompt_chars [lo, hi]     user-message length in characters (the tokenizer is byte-level: ~1 token each)
  context_fill f            0..1: instead, fill this share of the model's context (`max_model_len`) with a document
  max_tokens [lo, hi]       output tokens asked for
  system_chars n            a shared system prompt of n characters (prefix-cache friendly)
  timestamp_system bool     a per-request timestamp at the START of the system prompt: no prefix-cache hits
  history bool              multi-turn chats per user whose history grows until the server refuses it
  abandon_after_tokens n    the client disconnects after n streamed tokens
  mix {name: weight}        each request follows one of these (built-in, non-mix) profiles
  rate_multiplier x         (0, 20]; description str
Kept free of locust and gevent (the lab validates names with it); services/loadgen/profiles.py lists both
tracks' profiles.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from services.loadgen.profiles import ProfileError, UnknownProfile

MAX_RATE_MULTIPLIER = 20.0
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_KEYS = {"prompt_chars", "context_fill", "max_tokens", "system_chars", "timestamp_system", "history",
         "abandon_after_tokens", "mix", "rate_multiplier", "description"}


class LLMProfileError(ProfileError):
    """A profile definition that cannot be used; the message names the profile and the key."""


class UnknownLLMProfile(LLMProfileError, UnknownProfile):
    """A profile name nobody registered."""


@dataclass(frozen=True)
class LLMProfile:
    name: str
    prompt_chars: tuple[int, int] = (20, 80)
    context_fill: float = 0.0
    max_tokens: tuple[int, int] = (16, 32)
    system_chars: int = 0
    timestamp_system: bool = False
    history: bool = False
    abandon_after_tokens: int | None = None
    mix: tuple[tuple[str, float], ...] = ()
    rate_multiplier: float = 1.0
    description: str = ""
    track: str = field(default="llm", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_chars": list(self.prompt_chars), "context_fill": self.context_fill,
                "max_tokens": list(self.max_tokens), "system_chars": self.system_chars,
                "timestamp_system": self.timestamp_system, "history": self.history,
                "abandon_after_tokens": self.abandon_after_tokens, "mix": dict(self.mix),
                "rate_multiplier": self.rate_multiplier, "description": self.description}


BUILTIN_LLM_PROFILES: dict[str, dict[str, Any]] = {
    "chat": {
        "prompt_chars": [20, 80], "max_tokens": [16, 32],
        "description": "Short prompts, short answers.",
    },
    "long-context": {
        "context_fill": 0.85, "max_tokens": [8, 16],
        "description": "Documents filling ~85% of the model's context, short answers: prefill-heavy.",
    },
    "growing-history": {
        "prompt_chars": [30, 90], "max_tokens": [24, 48], "history": True,
        "description": "Multi-turn chats whose history grows every turn until the context overflows (then a new chat).",
    },
    "system-prompt": {
        "prompt_chars": [20, 80], "max_tokens": [16, 32], "system_chars": 96,
        "description": "Chats under a shared system prompt (the same for every request): prefix-cache friendly.",
    },
    "timestamped-system-prompt": {
        "prompt_chars": [20, 80], "max_tokens": [16, 32], "system_chars": 96, "timestamp_system": True,
        "description": "A shared system prompt that starts with a per-request timestamp: no prefix-cache hits.",
    },
    "burst": {
        "prompt_chars": [20, 80], "max_tokens": [16, 32], "rate_multiplier": 5.0,
        "description": "Chat traffic at 5x the requested rate.",
    },
    "abandon": {
        "prompt_chars": [20, 80], "max_tokens": [96, 128], "abandon_after_tokens": 4,
        "description": "Clients ask for long answers and disconnect after 4 tokens.",
    },
    "impatient": {
        "mix": {"chat": 0.5, "abandon": 0.5},
        "description": "Half the users stop the answer after a few tokens (a Stop button, a closed tab).",
    },
    "mixed": {
        "mix": {"chat": 0.6, "long-context": 0.15, "timestamped-system-prompt": 0.15, "abandon": 0.1},
        "description": "60% chat, 15% long documents, 15% timestamped system prompts, 10% abandoned streams.",
    },
}


def _range(name: str, key: str, value: Any, lo: int, hi: int) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, list | tuple) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
            or not lo <= value[0] <= value[1] <= hi):
        raise LLMProfileError(f"profile {name!r}: {key} must be an integer or [lo, hi] with {lo} <= lo <= hi <= {hi}, "
                              f"got {value!r}")
    return int(value[0]), int(value[1])


def _number(name: str, key: str, value: Any, lo: float, hi: float, *, open_lo: bool = False) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or not (lo < value if open_lo else lo <= value) or not value <= hi):
        raise LLMProfileError(f"profile {name!r}: {key} must be a number in {'(' if open_lo else '['}{lo:g}, {hi:g}], "
                              f"got {value!r}")
    return float(value)


def parse_llm_profile(name: str, data: Any, known: dict[str, LLMProfile] | None = None) -> LLMProfile:
    """Validate one definition; `known` resolves `mix` names. Raises LLMProfileError naming the problem."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise LLMProfileError(f"profile name {name!r} must be 1-64 characters of lowercase letters, digits, '-' or "
                              "'_', starting with a letter or digit")
    if not isinstance(data, dict):
        raise LLMProfileError(f"profile {name!r} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise LLMProfileError(f"profile {name!r}: unknown key(s) {', '.join(unknown)}; allowed: "
                              f"{', '.join(sorted(_KEYS))}")
    abandon = data.get("abandon_after_tokens")
    if abandon is not None and (isinstance(abandon, bool) or not isinstance(abandon, int) or not 1 <= abandon <= 4096):
        raise LLMProfileError(f"profile {name!r}: abandon_after_tokens must be an integer in 1..4096 or null, "
                              f"got {abandon!r}")
    system_chars = data.get("system_chars", 0)
    if isinstance(system_chars, bool) or not isinstance(system_chars, int) or not 0 <= system_chars <= 100_000:
        raise LLMProfileError(f"profile {name!r}: system_chars must be an integer in 0..100000, got {system_chars!r}")
    for key in ("timestamp_system", "history"):
        if not isinstance(data.get(key, False), bool):
            raise LLMProfileError(f"profile {name!r}: {key} must be true or false")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise LLMProfileError(f"profile {name!r}: description must be a string")
    mix: tuple[tuple[str, float], ...] = ()
    raw_mix = data.get("mix") or {}
    if not isinstance(raw_mix, dict):
        raise LLMProfileError(f"profile {name!r}: mix must be a mapping of profile name -> weight")
    if raw_mix:
        known = known or {}
        for part, weight in raw_mix.items():
            if part not in known or known[part].mix:
                raise LLMProfileError(f"profile {name!r}: mix names {part!r}, which is not a known profile without "
                                      f"its own mix; known: {', '.join(n for n, p in known.items() if not p.mix)}")
            mix += ((part, _number(name, f"mix.{part}", weight, 0.0, 1e6, open_lo=True)),)
    return LLMProfile(
        name=name,
        prompt_chars=_range(name, "prompt_chars", data.get("prompt_chars", [20, 80]), 1, 1_000_000),
        context_fill=_number(name, "context_fill", data.get("context_fill", 0.0), 0.0, 1.0),
        max_tokens=_range(name, "max_tokens", data.get("max_tokens", [16, 32]), 1, 65_536),
        system_chars=system_chars,
        timestamp_system=data.get("timestamp_system", False),
        history=data.get("history", False),
        abandon_after_tokens=abandon,
        mix=mix,
        rate_multiplier=_number(name, "rate_multiplier", data.get("rate_multiplier", 1.0), 0.0, MAX_RATE_MULTIPLIER,
                                open_lo=True),
        description=description,
    )


class LLMProfileRegistry:
    """The built-in LLM profiles plus whatever scenarios registered; built-ins cannot be replaced."""

    def __init__(self) -> None:
        self._profiles: dict[str, LLMProfile] = {}
        for n, d in BUILTIN_LLM_PROFILES.items():
            self._profiles[n] = parse_llm_profile(n, d, self._profiles)

    def names(self) -> list[str]:
        return list(self._profiles)

    def get(self, name: str) -> LLMProfile:
        try:
            return self._profiles[name]
        except KeyError:
            raise UnknownLLMProfile(f"unknown profile {name!r}; known LLM profiles: "
                                    f"{', '.join(self._profiles)}") from None

    def register(self, extra: Any) -> list[str]:
        """Merge `{name: definition}`, all or nothing; returns the names added or replaced."""
        if not isinstance(extra, dict) or not extra:
            raise LLMProfileError("profiles must be a non-empty mapping of name -> definition")
        parsed: dict[str, LLMProfile] = {}
        for name, data in extra.items():
            if name in BUILTIN_LLM_PROFILES:
                raise LLMProfileError(f"profile {name!r} is built in and cannot be replaced; pick another name")
            parsed[name] = parse_llm_profile(name, data, {**self._profiles, **parsed})
        self._profiles.update(parsed)
        return list(parsed)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: p.to_dict() for name, p in self._profiles.items()}
