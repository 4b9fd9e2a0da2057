"""What the LLM benchmark's peers share: our weights as `transformers`' GPT-2, the request, the SSE chunks.

The peers (llm_transformers.py, llm_litserve.py) serve the very version our server serves: the registry's
verified artifact, mapped onto `transformers.GPT2LMHeadModel` by services/llm/hfcompat.py, with one torch
thread like our engine's default. They answer `POST /v1/completions` with `stream: true` in OpenAI's shape
(`text_completion` chunks, a usage chunk with `stream_options.include_usage`, then `data: [DONE]`), so the
benchmark's one streaming client drives every server the same way. Only what the benchmark sends is supported:
a text prompt, `max_tokens`, `temperature`, `top_p`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.llm.artifacts import load_llm
from services.llm.tokenizer import ByteTokenizer


class HFByteTokenizer:
    """Our byte tokenizer with the one method `transformers`' streamers call (`decode(ids, **kwargs)`)."""

    def __init__(self, tok: ByteTokenizer) -> None:
        self.tok = tok

    def decode(self, ids: list[int], **_kwargs: Any) -> str:
        return self.tok.decode(list(ids))


@dataclass
class PeerLLM:
    version: str
    hf: Any  # transformers.GPT2LMHeadModel with our weights
    tokenizer: ByteTokenizer
    n_ctx: int
    temperature: float
    top_p: float


def load(registry: str | Path, version: str, threads: int = 1) -> PeerLLM:
    from services.llm.hfcompat import to_hf

    torch.set_num_threads(threads)
    loaded = load_llm(registry, version)
    hf = to_hf(loaded.model, loaded.tokenizer.bos_id, loaded.tokenizer.eos_id)
    return PeerLLM(version, hf, loaded.tokenizer, loaded.model.cfg.n_ctx, loaded.generation.temperature,
                   loaded.generation.top_p)


@dataclass
class Completion:
    """One parsed `POST /v1/completions` body, as the peers support it."""

    rid: str
    prompt: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    include_usage: bool
    model: str

    @classmethod
    def parse(cls, body: Any, llm: PeerLLM) -> Completion:
        """Raises ValueError with a message for what the peers cannot serve (answered as a 400)."""
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            raise ValueError("prompt: a string is required")
        prompt = llm.tokenizer.encode(body["prompt"], bos=True)
        max_tokens = body.get("max_tokens", 16)
        if not isinstance(max_tokens, int) or max_tokens < 1 or len(prompt) + max_tokens > llm.n_ctx:
            raise ValueError(f"max_tokens: 1..{llm.n_ctx - len(prompt)} for this prompt")
        temperature = float(body.get("temperature", llm.temperature))
        top_p = float(body.get("top_p", llm.top_p))
        opts = body.get("stream_options") or {}
        return cls(f"cmpl-{uuid.uuid4().hex[:24]}", prompt, max_tokens, temperature, top_p,
                   bool(opts.get("include_usage")), llm.version)

    def chunk(self, text: str, finish_reason: str | None = None) -> str:
        body = {"id": self.rid, "object": "text_completion", "created": int(time.time()), "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]}
        return "data: " + json.dumps(body) + "\n\n"

    def closing(self, completion_tokens: int) -> str:
        """The usage chunk (if asked for) and `[DONE]`."""
        out = ""
        if self.include_usage:
            usage = {"prompt_tokens": len(self.prompt), "completion_tokens": completion_tokens,
                     "total_tokens": len(self.prompt) + completion_tokens}
            body = {"id": self.rid, "object": "text_completion", "created": int(time.time()), "model": self.model,
                    "choices": [], "usage": usage}
            out += "data: " + json.dumps(body) + "\n\n"
        return out + "data: [DONE]\n\n"


def sample_rows(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Next token per row (B, V) → (B,): greedy where temperature is 0, else temperature + top-p sampling."""
    greedy = logits.argmax(-1)
    t = temperature.clamp_min(1e-5)[:, None]
    probs = torch.softmax(logits / t, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p[:, None]
    sorted_p = sorted_p * keep
    picked = torch.multinomial(sorted_p, 1).squeeze(1)
    sampled = order.gather(1, picked[:, None]).squeeze(1)
    return torch.where(temperature > 0, sampled, greedy)
