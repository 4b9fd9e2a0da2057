"""Saving and loading an LLM version's artifacts: weights (+ int8 form), tokenizer, generation config.

The registry library (services/registry/llm.py) checks sha256s and knows the layout; this module is the torch
side: it builds the GPT from the recorded architecture and loads the weights (quantising first for an int8
version, whose state dict holds packed int8 weights).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from services.llm.model import GPT, GPTConfig, quantize_int8
from services.llm.tokenizer import ByteTokenizer
from services.registry.llm import LLMRegistry


@dataclass
class GenerationConfig:
    """Defaults for requests that omit a parameter (a silently changed default is one of the lab's faults)."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 64
    stop: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedLLM:
    version: str
    meta: dict[str, Any]
    model: GPT
    tokenizer: ByteTokenizer
    generation: GenerationConfig


def save_files(out: Path, model: GPT, tokenizer: ByteTokenizer, generation: GenerationConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    (out / "model.pt").write_bytes(buf.getvalue())
    tokenizer.save(out / "tokenizer.json")
    (out / "generation_config.json").write_text(json.dumps(generation.to_json(), indent=2) + "\n")


def build_model(meta: dict[str, Any]) -> GPT:
    model = GPT(GPTConfig(**meta["architecture"]))
    if meta.get("variant") == "int8":
        model = quantize_int8(model)
    return model


def load_llm(registry_root: str | Path, version: str) -> LoadedLLM:
    """A verified, loaded version in eval mode (raises CorruptArtifact / VersionNotFound from the registry)."""
    meta, paths = LLMRegistry(registry_root).verified_paths(version)
    model = build_model(meta)
    state = torch.load(paths["model.pt"], map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    tokenizer = ByteTokenizer.load(paths["tokenizer.json"])
    generation = GenerationConfig(**json.loads(paths["generation_config.json"].read_text()))
    return LoadedLLM(version, meta, model, tokenizer, generation)


def with_parts(loaded: LoadedLLM, registry_root: str | Path, tokenizer: str | None,
               generation: str | None) -> LoadedLLM:
    """`loaded` with its tokenizer and/or generation config taken from other versions (each file verified): a
    deploy of one part alone. A tokenizer whose vocabulary does not fit the weights is a ValueError."""
    registry = LLMRegistry(registry_root)
    if tokenizer:
        _, paths = registry.verified_paths(tokenizer)
        tok = ByteTokenizer.load(paths["tokenizer.json"])
        if tok.vocab_size != loaded.model.cfg.vocab_size:
            raise ValueError(f"tokenizer of {tokenizer} has {tok.vocab_size} tokens, the weights of "
                             f"{loaded.version} {loaded.model.cfg.vocab_size}")
        loaded.tokenizer = tok
    if generation:
        _, paths = registry.verified_paths(generation)
        loaded.generation = GenerationConfig(**json.loads(paths["generation_config.json"].read_text()))
    return loaded
