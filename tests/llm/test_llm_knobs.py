"""The replica-side mechanisms of the LLM incident catalog (issue 17), each shown in the replica's own metrics or
answers, before and after: the KV cache allocated when resized, the prompt-token histogram and /tokenize, a stale
draft collapsing speculative acceptance, a default temperature that spares explicit clients, abandoned streams
that keep running without cancellation, and the registry's wrong-tokenizer pair (v2 weights, v1 tokenizer) and
badly quantised `v1-int4`. Real processes on the tiny trained GPT (tests/llm/conftest.py)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kit import wait_until

MiB = 2**20
VERSES = ["In the beginning God created the heaven and the earth.",
          "And God said, Let there be light: and there was light.",
          "The LORD is my shepherd; I shall not want.",
          "And the earth was without form, and void; and darkness was upon the face of the deep."]


def mean_nll(proc, texts: list[str]) -> float:
    """Mean negative log-likelihood per token of `texts` under the replica (echo + logprobs, nothing generated)."""
    out = []
    for text in texts:
        r = proc.client.post("/v1/completions", json={"prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0})
        assert r.status_code == 200, r.text
        lps = [x for x in r.json()["choices"][0]["logprobs"]["token_logprobs"] if x is not None]
        out.append(-sum(lps) / len(lps))
    return statistics.mean(out)


def test_kv_cache_memory_is_allocated_when_resized(server) -> None:
    """A larger num_kv_blocks is resident at once (so over a memory limit it is a real OOM kill)."""
    cache0, rss0 = server.metric("llm_kv_cache_bytes"), server.metric("process_resident_memory_bytes")
    server.patch(num_kv_blocks=6000)
    cache1, rss1 = server.metric("llm_kv_cache_bytes"), server.metric("process_resident_memory_bytes")
    grown = cache1 - cache0
    print(f"kv cache {cache0 / MiB:.1f} -> {cache1 / MiB:.1f} MiB, rss {rss0 / MiB:.0f} -> {rss1 / MiB:.0f} MiB")
    assert grown > 80 * MiB
    assert rss1 - rss0 > 0.8 * grown
    assert server.complete("And God said", 8)["choices"][0]["finish_reason"] in ("length", "stop")


def test_tokenize_and_prompt_token_histogram(server) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": VERSES[0]}]
    counted = server.client.post("/tokenize", json={"messages": messages}).json()
    assert counted["max_model_len"] == 128 and counted["count"] == len(counted["tokens"])
    answer = server.client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 4}).json()
    assert answer["usage"]["prompt_tokens"] == counted["count"]
    assert server.client.post("/tokenize", json={"prompt": "And"}).json()["count"] == 4  # BOS + 3 bytes
    for bad in ({}, {"prompt": "a", "messages": messages}, {"messages": []}, {"prompt": 3}, [1]):
        r = server.client.post("/tokenize", json=bad)
        assert r.status_code == 400 and "error" in r.json(), (bad, r.text)

    below = server.metric("vllm:request_prompt_tokens_bucket", {"le": "128.0"})
    total = server.metric("vllm:request_prompt_tokens_count")
    r = server.client.post("/v1/completions", json={"prompt": "x" * 140, "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert server.metric("vllm:request_prompt_tokens_count") == total + 1  # the refused prompt is counted
    assert server.metric("vllm:request_prompt_tokens_bucket", {"le": "128.0"}) == below  # ... above the context
    # and its log says why (what `logs llm-N` shows a learner whose clients get 400s)
    wait_until(lambda: "refused code=context_length_exceeded prompt_tokens=141 max_tokens=1 n_ctx=128" in server.log(),
               10, what="the refusal in the replica's log")


def acceptance(server, prompts: list[str]) -> tuple[float, list[str]]:
    d0, a0 = (server.metric("vllm:spec_decode_num_draft_tokens_total"),
              server.metric("vllm:spec_decode_num_accepted_tokens_total"))
    texts = [server.complete(p, 32)["choices"][0]["text"] for p in prompts]
    drafted = server.metric("vllm:spec_decode_num_draft_tokens_total") - d0
    accepted = server.metric("vllm:spec_decode_num_accepted_tokens_total") - a0
    assert drafted > 0
    return accepted / drafted, texts


def test_a_stale_draft_collapses_speculative_acceptance(server) -> None:
    server.patch(speculative_enabled=True)
    prompts = ["And God said", "In the beginning", "The LORD is my shepherd", "And it came to pass"]
    matched, texts = acceptance(server, prompts)
    assert server.client.get("/v1/models").json()["data"][0]["draft"] == "v1-draft"
    server.patch(speculative_draft="v2-draft")  # v1-draft for another tokenizer: v2's draft, stale for v1
    assert server.client.get("/v1/models").json()["data"][0]["draft"] == "v2-draft"
    stale, stale_texts = acceptance(server, prompts)
    print(f"acceptance with v1-draft {matched:.2f}, with v2-draft {stale:.2f}")
    assert stale < matched / 3
    assert stale_texts == texts  # speculation never changes the greedy output: no errors, only slower
    server.patch(speculative_draft=None)
    assert server.client.get("/v1/models").json()["data"][0]["draft"] == "v1-draft"
    for bad in ("v9", "Bad Name", ""):
        r = server.client.patch("/admin/config", json={"speculative_draft": bad})
        assert r.status_code == 422, r.text
    assert server.client.get("/admin/config").json()["speculative_draft"] is None


def test_default_temperature_spares_clients_that_set_it(server) -> None:
    greedy = [server.complete(p, 24)["choices"][0]["text"] for p in VERSES[:2]]

    def sampled_nll() -> float:
        texts = []
        for seed in range(6):
            body = {"prompt": "And God said", "max_tokens": 40, "seed": seed}  # no temperature: the default
            texts.append("And God said" + server.client.post("/v1/completions", json=body).json()["choices"][0]["text"])
        return mean_nll(server, texts)

    before = sampled_nll()
    server.patch(default_temperature=1.6)
    after = sampled_nll()
    print(f"NLL of default-temperature samples: 0.7 -> {before:.2f}, 1.6 -> {after:.2f} nats/token")
    assert after > before + 0.3
    assert [server.complete(p, 24)["choices"][0]["text"] for p in VERSES[:2]] == greedy  # temperature 0: as before


def test_without_cancellation_abandoned_streams_hold_seats_and_blocks(server) -> None:
    def abandon(n: int) -> None:
        for i in range(n):
            body = {"prompt": VERSES[i % 4][:20], "max_tokens": 100, "temperature": 0.8, "stream": True}
            with server.client.stream("POST", "/v1/completions", json=body) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        break  # hang up after the first token

    server.patch(step_delay_ms=40)  # 100 tokens take >= 4 s: the streams are still generating when checked
    aborts = server.metric("vllm:request_success_total", {"finished_reason": "abort"})
    abandon(4)
    wait_until(lambda: server.engine()["running"] == 0, 30, what="aborted streams gone")
    assert server.metric("vllm:request_success_total", {"finished_reason": "abort"}) == aborts + 4
    assert server.engine()["kv_blocks_used"] == 0

    server.patch(cancel_on_disconnect=False)
    finished = server.metric("vllm:request_success_total")
    abandon(4)
    stats = server.engine()
    print(f"cancel off, every client gone: running {stats['running']}, kv blocks used {stats['kv_blocks_used']}")
    assert stats["running"] >= 1 and stats["kv_blocks_used"] >= 1
    assert server.metric("vllm:num_requests_running") >= 1
    server.patch(step_delay_ms=0)
    wait_until(lambda: server.metric("vllm:request_success_total") - finished == 4, 60, what="4 finished")
    assert server.metric("vllm:request_success_total", {"finished_reason": "abort"}) == aborts + 4  # none aborted


@pytest.fixture(scope="module")
def variants(llm_registry: Path, llm_starter: Callable, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Two more replicas: v2's weights with v1's tokenizer (a deploy of one part), and v1-int4."""
    logs = tmp_path_factory.mktemp("llm-variant-logs")
    procs = {"mismatch": llm_starter(llm_registry, logs, "--version", "v2", "--tokenizer", "v1", name="llm-mix",
                                     wait=False),
             "int4": llm_starter(llm_registry, logs, "--version", "v1-int4", name="llm-int4", wait=False)}
    try:
        for proc in procs.values():
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def meta(registry: Path, version: str) -> dict:
    return json.loads((registry / "llm" / "versions" / version / "meta.json").read_text())


def test_registry_variants_are_registered_with_lineage(llm_registry: Path) -> None:
    v1, v2, q4 = (meta(llm_registry, v) for v in ("v1", "v2", "v1-int4"))
    assert v2["lineage"]["parent"] == "v1" and v2["lineage"]["tokenizer"] == "bytes-2" and v2["draft"] == "v2-draft"
    assert abs(v2["metrics"]["val_loss"] - v1["metrics"]["val_loss"]) < 1e-3  # the same model under bytes-2
    assert q4["variant"] == "int4" and q4["lineage"]["parent"] == "v1"
    assert q4["metrics"]["val_loss"] > v1["metrics"]["val_loss"]
    assert meta(llm_registry, "v2-draft")["lineage"]["draft_for"] == "v2"
    tok2 = json.loads((llm_registry / "llm" / "versions" / "v2" / "tokenizer.json").read_text())
    assert tok2["version"] == "bytes-2" and sorted(tok2["byte_map"]) == list(range(256))


def gibberish_share(text: str) -> float:
    return sum(1 for c in text if c == "\ufffd" or not (c.isascii() and (c.isprintable() or c.isspace()))) / len(text)


def test_wrong_tokenizer_gives_gibberish_and_near_uniform_perplexity(server, variants: dict) -> None:
    mix = variants["mismatch"]
    good, bad = mean_nll(server, VERSES), mean_nll(mix, VERSES)
    print(f"canary NLL: v1 {good:.2f}, v2 weights + v1 tokenizer {bad:.2f} nats/token (ln 258 = {math.log(258):.2f})")
    assert bad > max(math.log(258), good + 2)
    texts = {}
    for name, proc in (("v1", server), ("mismatch", mix)):
        body = {"messages": [{"role": "user", "content": VERSES[0]}], "max_tokens": 20, "seed": 1}
        r = proc.client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        texts[name] = r.json()["choices"][0]["message"]["content"]
    print(f"texts {texts}")
    assert gibberish_share(texts["mismatch"]) > 0.3 > gibberish_share(texts["v1"])


def test_int4_variant_is_measurably_worse(server, variants: dict) -> None:
    good, worse = mean_nll(server, VERSES), mean_nll(variants["int4"], VERSES)
    print(f"canary NLL: v1 {good:.3f}, v1-int4 {worse:.3f} nats/token")
    assert worse > good  # deterministic: the same texts, the same positions, no sampling
    assert variants["int4"].client.get("/v1/models").json()["data"][0]["variant"] == "int4"


def test_without_chunked_prefill_a_long_prompt_takes_a_step_of_its_own() -> None:
    """The scheduler alone (a pure class): with chunking, a long prompt's chunk rides along with the decodes; without,
    it runs whole in a prefill-only step and every running stream waits for it (vLLM V0's default)."""
    from services.llm.blocks import BlockManager
    from services.llm.scheduler import Scheduler, SchedulerConfig
    from services.llm.sequence import SamplingParams, Sequence

    def step_with_long_prompt(chunked: bool) -> list[tuple[str, int]]:
        sched = Scheduler(BlockManager(64, 16), SchedulerConfig(enable_chunked_prefill=chunked, n_ctx=256))
        for i in range(2):
            sched.add(Sequence(f"short-{i}", [256, 65 + i, 66], SamplingParams(), lambda d: None))
        for s in sched.schedule():  # their prefills
            s.seq.num_computed = len(s.seq.tokens)
            s.seq.tokens.append(67)  # one generated token each: decoding from now on
        sched.add(Sequence("long", [256] + [70] * 200, SamplingParams(), lambda d: None))
        return [(s.seq.request_id, s.num_tokens) for s in sched.schedule()]

    assert step_with_long_prompt(True) == [("short-0", 1), ("short-1", 1), ("long", 126)]
    assert step_with_long_prompt(False) == [("long", 201)]


def _stream_chunks(server, interval: int) -> list[dict]:
    """A seeded completion streamed with `stream_interval` pushed first: its content chunks, in order."""
    server.patch(stream_interval=interval)
    body = {"prompt": "And God said", "max_tokens": 23, "temperature": 0.9, "seed": 7, "logprobs": 0,
            "stream": True}
    chunks = []
    with server.client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk["choices"]:
                    chunks.append(chunk["choices"][0])
    return chunks


def test_stream_interval_sends_tokens_in_groups_with_the_first_at_once(server) -> None:
    """vLLM's --stream-interval as a config key: the same seeded answer, its first token alone (time to first
    token unchanged), then chunks of `stream_interval` tokens, the rest with the finish."""
    each = _stream_chunks(server, 1)
    grouped = _stream_chunks(server, 5)
    tokens = [len(c["logprobs"]["tokens"]) for c in grouped]
    assert "".join(c["text"] for c in grouped) == "".join(c["text"] for c in each)
    assert sum(tokens) == sum(len(c["logprobs"]["tokens"]) for c in each) == 23, tokens
    assert len(each) >= 23 and max(len(c["logprobs"]["tokens"]) for c in each) == 1
    assert tokens[0] == 1 and all(n == 5 for n in tokens[1:-1]) and 1 <= tokens[-1] <= 5, tokens
    assert grouped[-1]["finish_reason"] == "length"
    r = server.client.patch("/admin/config", json={"stream_interval": 0})
    assert r.status_code == 422 and "stream_interval" in r.text, r.text
