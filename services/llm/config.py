"""The LLM replica's live config (GET/PATCH /admin/config): every serving knob a fault can push.

Changing `num_kv_blocks` or `block_size` (or `speculative_draft`) rebuilds the KV cache at the engine's next
step: running requests are preempted and recomputed, none is dropped. The cache's memory is allocated (and
written) then, not lazily: a size over the replica's memory limit is a real OOM kill. `default_*` override the
version's generation config for requests that omit the parameter (null: the version's own default).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_kv_blocks: int = Field(512, ge=1, le=1_000_000)
    block_size: int = Field(16, ge=1, le=1024)
    max_num_seqs: int = Field(32, ge=1, le=4096)
    max_num_batched_tokens: int = Field(128, ge=1, le=1_000_000)
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    # speculative decoding with the version's draft model (greedy requests only; exact target output)
    speculative_enabled: bool = False
    num_speculative_tokens: int = Field(4, ge=1, le=16)
    # the draft version to speculate with (null: the served version's `draft`, or --draft); loaded on PATCH
    speculative_draft: str | None = Field(None, min_length=1, max_length=64)
    # a client that disconnects mid-request: abort it and free its blocks (false: it runs to the end unread)
    cancel_on_disconnect: bool = True
    # requests waiting to be scheduled; beyond it: 503 + Retry-After
    max_queue: int = Field(256, ge=0, le=1_000_000)
    default_temperature: float | None = Field(None, ge=0, le=2)
    default_top_p: float | None = Field(None, gt=0, le=1)
    default_max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    # the request-level rule (protocol.py): at most 4, none empty (an empty stop string would end every answer at
    # once: a config push that makes every completion empty is refused, not served)
    default_stop: list[str] | None = Field(None, max_length=4)
    torch_threads: int = Field(1, ge=1, le=64)
    step_delay_ms: float = Field(0, ge=0, le=10_000)  # added to every engine step (a slow accelerator)
    # vLLM's --stream-interval: a stream's tokens are sent every this many (the first at once, the last with the
    # finish): fewer chunks and writes per token, at the price of choppier streams (1: every token, vLLM's default)
    stream_interval: int = Field(1, ge=1, le=256)
    # "model": ready once loaded and warmed; "process": as soon as the process is up (the lying kind)
    readiness: Literal["model", "process"] = "model"

    @field_validator("default_stop")
    @classmethod
    def _stops(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(not s or len(s) > 256 for s in v):
            raise ValueError("stop sequences must be 1-256 characters")
        return v

