"""The console on the LLM track: one `faultline up -d --track llm` stack (two replicas) on free ports, driven through
the lab's API (`POST /api/console/{op}`) and the real CLI: `metrics llm-N` (the replica's own vLLM figures),
`generate` (through the gateway and to one replica, with timings), `eval` (canary perplexity: the int8 variant
close to v1, an untrained model far off), `deploys` / `deploy` / `promote` / `rollback` for LLM versions,
`config show|set` on a replica's knobs, `drain` / `undrain` (the gateway's LLM routes honour them) and `restart` —
each with one refusal.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kit import StackHandle, faultline, llm_track

from lab import parts
from lab.parts.gateway import NAME as GATEWAY

LLM = parts.replica_part("llm")
ONE, TWO = LLM.instance(1), LLM.instance(2)


@pytest.fixture(scope="module")
def track_registry(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory,
                   request: pytest.FixtureRequest) -> Path:
    """The trained registry with its LLM versions (from `make setup`); without them, a tiny LLM trained here."""
    if (trained_registry / "llm" / "versions" / "v1-int8" / "meta.json").is_file():
        return trained_registry
    llm_registry: Path = request.getfixturevalue("llm_registry")
    combined = tmp_path_factory.mktemp("console-registry") / "registry"
    shutil.copytree(trained_registry, combined)
    shutil.rmtree(combined / "llm", ignore_errors=True)
    shutil.copytree(llm_registry / "llm", combined / "llm")
    return combined


@pytest.fixture(scope="module")
def track(track_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    with llm_track(track_registry, tmp_path_factory.mktemp("llm-console"), llm_replicas=2) as handle:
        yield handle


def console(track: StackHandle, op: str, expect: int = 200, **args: Any) -> dict[str, Any]:
    r = track.client.post(f"{track.lab_url}/api/console/{op}", json=args, timeout=300)
    assert r.status_code == expect, (op, args, r.status_code, r.text)
    return r.json()


def cli(track: StackHandle, *args: str) -> Any:
    return faultline(*args, "--home", str(track.home), timeout=300)


def test_metrics_of_a_replica_are_its_vllm_figures(track: StackHandle) -> None:
    console(track, "generate", prompt="Once upon a time", max_tokens=8, replica=ONE, temperature=0)
    data = console(track, "metrics", service=ONE)["data"]
    assert data["source"] == "vllm" and data["service"] == ONE
    assert data["ttft"]["count"] >= 1 and data["ttft"]["p99_ms"] > 0
    assert data["generation_tokens"] >= 8 and data["kv_blocks_total"] > 0
    assert set(data["finish_reason"]) >= {"length"}
    # the prompts' length in tokens (this one's, the warm-up's, the monitor's canaries'): within the context
    assert data["prompt_len"]["count"] >= 1 and 0 < data["prompt_len"]["p50"] <= data["prompt_len"]["p99"] <= 256
    out = cli(track, "metrics", ONE)
    assert out.returncode == 0, out.stderr
    assert "vLLM metrics" in out.stdout and "kv_cache_usage" in out.stdout and "prompt_len" in out.stdout
    refused = console(track, "metrics", 404, service=LLM.instance(7))
    assert "llm-1, llm-2" in refused["detail"]


def test_generate_streams_through_the_gateway_and_to_one_replica(track: StackHandle) -> None:
    res = console(track, "generate", prompt="The river", max_tokens=12, temperature=0)
    data = res["data"]
    assert data["via"] == "gateway" and data["text"] and data["finish_reason"] == "length"
    t = data["timings"]
    assert t["output_tokens"] == 12 and 0 < t["ttft_ms"] <= t["e2e_ms"] and t["itl_ms"] > 0 and t["tokens_per_s"] > 0
    assert "TTFT" in res["summary"] and data["text"][:20] in res["text"]  # what a journal entry holds
    direct = console(track, "generate", prompt="The river", max_tokens=12, temperature=0, replica=TWO)["data"]
    assert direct["via"] == TWO and direct["text"] == data["text"]  # greedy: the same model answers the same
    out = cli(track, "generate", "The river", "--max-tokens", "4", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["timings"]["output_tokens"] == 4
    too_long = console(track, "generate", 422, prompt="x", max_tokens=100_000)
    assert "max_tokens" in too_long["detail"]
    console(track, "generate", 422, prompt="x" * 2001)
    console(track, "generate", 404, prompt="x", replica="llm-9")


def test_config_show_and_set_on_a_replica(track: StackHandle) -> None:
    shown = console(track, "config_show", service=ONE)["data"]
    assert "max_num_seqs" in shown["settable"] and shown["config"]["max_num_seqs"] >= 1
    before = shown["config"]["max_num_seqs"]
    changed = console(track, "config_set", service=ONE, key="max_num_seqs", value=4)["data"]
    assert changed["before"] == before and changed["value"] == 4
    bad = console(track, "config_set", 422, service=ONE, key="max_num_seqs", value="many")
    assert "max_num_seqs" in bad["detail"]
    hidden = console(track, "config_set", 422, service=ONE, key="step_delay_ms", value=50)
    assert "settable keys" in hidden["detail"] and "num_kv_blocks" in hidden["detail"]
    out = cli(track, "config", "set", ONE, "max_num_seqs", str(before))
    assert out.returncode == 0, out.stderr


def test_drain_takes_a_replica_out_of_the_llm_routes(track: StackHandle) -> None:
    drained = console(track, "drain", replica=ONE)["data"]
    assert drained["serving"] == [TWO]
    try:
        for _ in range(4):
            r = httpx.post(f"{track.public_url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2},
                           timeout=60, trust_env=False)
            assert r.status_code == 200 and r.headers.get("x-replica", TWO) == TWO, r.text
        got = console(track, "metrics", service=ONE)["data"]["ttft"]["count"]
        for _ in range(3):
            httpx.post(f"{track.public_url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60,
                       trust_env=False)
        assert console(track, "metrics", service=ONE)["data"]["ttft"]["count"] == got  # nothing reached llm-1
        console(track, "drain", replica=TWO)
        none = httpx.post(f"{track.public_url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60,
                          trust_env=False)
        assert none.status_code == 503 and "drained" in none.text
    finally:
        console(track, "undrain", replica=ONE)
        console(track, "undrain", replica=TWO)
    assert set(console(track, "undrain", replica=ONE)["data"]["serving"]) == {ONE, TWO}
    console(track, "drain", 404, replica=LLM.instance(5))


def _untrained_version(track: StackHandle, name: str) -> None:
    """Register `name` in the stack's registry: v1's architecture, tokenizer and generation config around freshly
    initialised (untrained) weights — a model that loads and answers, and knows nothing."""
    import torch

    from services.llm.model import GPT, GPTConfig
    from services.registry.llm import LLMRegistry

    registry = LLMRegistry(track.home / "registry")
    meta = registry.get("v1")
    staged = track.home / f"staged-{name}"
    staged.mkdir()
    torch.manual_seed(0)
    torch.save(GPT(GPTConfig(**meta["architecture"])).state_dict(), staged / "model.pt")
    shutil.copyfile(registry.dir("v1") / "tokenizer.json", staged / "tokenizer.json")
    # its own generation config, so that deploying that part alone shows: answers of 3 tokens by default
    generation = json.loads((registry.dir("v1") / "generation_config.json").read_text())
    (staged / "generation_config.json").write_text(json.dumps({**generation, "max_tokens": 3}))
    registry.register(name, staged, {"architecture": meta["architecture"], "metrics": {}, "stage": "staging",
                                     "lineage": {"parent": "v1", "note": "untrained weights (test)"}})


def test_eval_then_deploy_int8_untrained_and_roll_back(track: StackHandle) -> None:
    """Canary perplexity on v1; the int8 variant deployed (a rolling restart) is close; an untrained model promoted
    is far off; back on v1 after a rollback from the CLI."""
    before = console(track, "eval")["data"]
    ppl = {n: r.get("perplexity") for n, r in before["replicas"].items()}
    assert set(ppl) == {ONE, TWO} and all(ppl.values()), before["replicas"]
    assert all(1 < p < 256 for p in ppl.values()) and before["replicas"][ONE]["version"] == "v1"
    listing = console(track, "deploys")["data"]
    assert {"v1", "v1-int8"} <= {v["version"] for v in listing["versions"]}
    assert listing["replicas"][ONE]["version"] == "v1"
    console(track, "deploy", 422, version="v1-int8", canary=0.1)  # no canary split on the LLM routes
    console(track, "deploy", 404, version="v9")
    _untrained_version(track, "v1-untrained")
    try:
        deployed = console(track, "deploy", version="v1-int8")["data"]
        assert set(deployed["replicas"]) == {ONE, TWO}
        int8 = console(track, "eval")["data"]["replicas"][ONE]
        assert int8["version"] == "v1-int8"
        assert abs(int8["perplexity"] - ppl[ONE]) / ppl[ONE] < 0.15, (int8, ppl[ONE])
        # the generation config alone: the int8 weights keep serving (same perplexity), answers default to 3 tokens
        part = console(track, "deploy", version="v1-untrained", part="generation_config")["data"]
        assert part["replicas"][ONE]["serves"] == {"weights": "v1-int8", "tokenizer": "v1-int8",
                                                    "generation_config": "v1-untrained"}
        served = console(track, "deploys")["data"]["replicas"][ONE]
        assert served["version"] == "v1-int8" and served["generation_config"] == "v1-untrained"
        same = console(track, "eval")["data"]["replicas"][ONE]["perplexity"]
        assert abs(same - int8["perplexity"]) < 1e-3 * same
        r = httpx.post(f"{track.public_url}/v1/completions", json={"prompt": "In the"}, timeout=60, trust_env=False)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3, r.text
        console(track, "promote", version="v1-untrained")
        broken = console(track, "eval")["data"]
        assert broken["replicas"][TWO]["version"] == "v1-untrained"
        assert broken["replicas"][TWO]["perplexity"] > 3 * ppl[TWO], (broken, ppl)
        assert broken["versions"]["v1"]["registered_val_perplexity"] > 1  # not served: the registry's figure
    finally:
        out = cli(track, "rollback", "v1")
    assert out.returncode == 0, out.stdout + out.stderr
    served = console(track, "deploys")["data"]["replicas"][TWO]
    assert served["version"] == served["generation_config"] == "v1"
    console(track, "deploy", 422, version="v1", part="everything")


def test_restart_and_scale(track: StackHandle) -> None:
    res = console(track, "restart", service=TWO)["data"]
    assert res["ready"] and res["service"] == TWO
    console(track, "restart", 404, service="llm-8")
    three = LLM.instance(3)
    grown = console(track, "scale", replicas=3)["data"]
    try:
        assert grown["before"] == 2 and grown["models"] == [ONE, TWO, three]
        assert console(track, "generate", prompt="Hi", max_tokens=2, replica=three)["data"]["text"]
        console(track, "drain", replica=three)
    finally:
        out = cli(track, "scale", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    gateway = console(track, "config_show", service=GATEWAY)["data"]["config"]
    assert gateway["drained"] == [] and sorted(gateway["llm_replicas"]) == [ONE, TWO]  # llm-3 left both
    console(track, "drain", 404, replica=three)
    console(track, "scale", 422, replicas=0)
