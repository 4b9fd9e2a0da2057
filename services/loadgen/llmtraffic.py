"""What the LLM track's load generator sends: chat requests built from the LLM's corpus under the current profile,
and the canary set (reference prompts with reference continuations from the held-out verses) for quality checks.

Plain data, no locust or gevent: prompts come from the training verses (services/llm/corpus.py, the text the model
knows), canaries from the held-out verses (never trained on), so a canary's perplexity measures the model, not
memory. Per-user state (a growing chat history) lives in `Conversation`, owned by each locust user.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from services.llm.corpus import load_corpus
from services.loadgen.llmprofiles import LLMProfile

CANARY_SIZE = 16
# The chat template's own tokens around each message (byte-level tokenizer: ~1 token per character).
TEMPLATE_TOKENS_PER_MESSAGE = 16
SYSTEM_TEXT = ("You are a careful scribe. Answer in the plain style of the old texts, one verse at a time, "
               "without headings, lists or commentary. ")


@dataclass
class Conversation:
    """One user's multi-turn chat (growing-history): the messages so far."""

    messages: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Planned:
    """One request: its body, the profile it follows (a mix resolves to a part) and when the client hangs up."""

    body: dict[str, Any]
    profile: str
    abandon_after_tokens: int | None
    history: bool


def canary_set(val: list[str], n: int = CANARY_SIZE) -> list[dict[str, str]]:
    """`n` held-out verses spread over the whole split, each cut at a word boundary near its middle."""
    long_enough = [v for v in val if len(v.split()) >= 8]
    step = max(1, len(long_enough) // n)
    out = []
    for i, verse in enumerate(long_enough[::step][:n]):
        words = verse.split()
        cut = len(words) // 2
        out.append({"id": f"canary-{i + 1}", "prompt": " ".join(words[:cut]),
                    "reference": " " + " ".join(words[cut:])})
    return out


class LLMSource:
    """Requests for POST /v1/chat/completions under a profile; `max_model_len` sizes long documents."""

    def __init__(self, profile: LLMProfile, profiles: Any, seed: int | None = None) -> None:
        corpus = load_corpus()
        self.verses = corpus.train
        self.canaries = canary_set(corpus.val)
        self.corpus = {k: corpus.provenance.get(k) for k in ("source", "sha256", "verses")}
        self.rng = random.Random(seed)
        self.registry = profiles
        self.run_tag = os.urandom(3).hex()
        self.max_model_len = 256
        self.model: str | None = None
        self._profile = profile

    @property
    def profile(self) -> LLMProfile:
        return self._profile

    def set_profile(self, profile: LLMProfile) -> None:
        self._profile = profile

    def _text(self, chars: int) -> str:
        """Consecutive verses from a random place, cut to `chars` characters."""
        start = self.rng.randrange(len(self.verses))
        parts: list[str] = []
        size = 0
        i = start
        while size < chars:
            verse = self.verses[i % len(self.verses)]
            parts.append(verse)
            size += len(verse) + 1
            i += 1
        return " ".join(parts)[:chars].strip() or "In the beginning"

    def plan(self, conversation: Conversation) -> Planned:
        profile = self._profile
        if profile.mix:
            names = [n for n, _ in profile.mix]
            weights = [w for _, w in profile.mix]
            profile = self.registry.get(self.rng.choices(names, weights)[0])
        max_tokens = self.rng.randint(*profile.max_tokens)
        messages: list[dict[str, str]] = []
        if profile.system_chars:
            system = (SYSTEM_TEXT * (profile.system_chars // len(SYSTEM_TEXT) + 1))[:profile.system_chars]
            if profile.timestamp_system:
                system = f"[{time.time_ns()}] " + system
            messages.append({"role": "system", "content": system})
        if profile.context_fill > 0:
            room = int(self.max_model_len * profile.context_fill) - max_tokens - 3 * TEMPLATE_TOKENS_PER_MESSAGE
            user = self._text(max(8, room - sum(len(m["content"]) for m in messages)))
        else:
            user = self._text(self.rng.randint(*profile.prompt_chars))
        if not profile.history:
            # Only growing-history overflows on purpose: any other request is cut to fit the model's context.
            room = (self.max_model_len - max_tokens - TEMPLATE_TOKENS_PER_MESSAGE * (len(messages) + 2)
                    - sum(len(m["content"]) for m in messages))
            user = user[:max(8, room)]
        if profile.history:
            if not conversation.messages:
                conversation.messages.extend(messages)
            conversation.messages.append({"role": "user", "content": user})
            messages = list(conversation.messages)
        else:
            messages.append({"role": "user", "content": user})
        body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "stream": True,
                                "stream_options": {"include_usage": True}}
        return Planned(body, profile.name, profile.abandon_after_tokens, profile.history)
