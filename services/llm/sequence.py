"""A request inside the engine: its tokens, sampling parameters, cache ownership and timing.

A sequence's tokens are its prompt then its outputs; `num_computed` of them have K/V in the cache (the last
token is always uncomputed while it runs: feeding it yields the next token). Preemption by recompute frees the
blocks and sets `num_computed` to 0: when rescheduled, prompt and outputs so far are prefilled again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from services.llm.tokenizer import StreamDecoder


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # top-N alternatives per output token (completions' `logprobs`)
    prompt_logprobs: bool = False  # completions' echo with logprobs: log-probabilities of the prompt tokens
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Delta:
    """What the engine hands a request's stream after a step: new text, and the finish once finished."""

    text: str
    token_ids: list[int]
    logprobs: list[dict[str, Any]]
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    prompt_logprobs: list[dict[str, Any]] | None = None
    error: str | None = None


Emit = Callable[[Delta], None]


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    emit: Emit
    tokens: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    num_computed: int = 0
    draft_computed: int = 0
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)
    arrival: float = field(default_factory=time.monotonic)
    first_scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    finish_reason: str | None = None
    preemptions: int = 0
    text: str = ""
    emitted: int = 0
    out_logprobs: list[dict[str, Any]] = field(default_factory=list)
    sent_logprobs: int = 0
    sent_tokens: int = 0  # output tokens covered by the deltas sent so far (config `stream_interval`)
    prompt_lps: list[dict[str, Any]] = field(default_factory=list)
    decoder: StreamDecoder = field(default_factory=StreamDecoder)
    generator: Any = None

    def __post_init__(self) -> None:
        self.tokens = list(self.prompt)

    @property
    def num_output(self) -> int:
        return len(self.tokens) - len(self.prompt)

    @property
    def prefilling(self) -> bool:
        return len(self.tokens) - self.num_computed > 1
