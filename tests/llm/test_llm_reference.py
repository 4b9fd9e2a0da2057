"""Our server's greedy output equals Hugging Face transformers' GPT-2 with our weights, token for token, with
the prompts sent concurrently (so they share batches of the paged-attention forward); echo + logprobs give the
same prompt log-probabilities as the reference (perplexity through the API)."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from services.llm.artifacts import load_llm
from services.llm.hfcompat import to_hf

PROMPTS = ["And God said", "In the beginning", "The LORD is my shepherd", "And it came to pass, when",
           "Blessed are the", "Q", "For God so loved the world, that he gave his only begotten Son", "Thou shalt"]
MAX_NEW = 24


@pytest.fixture(scope="module")
def reference(llm_registry: Path):
    loaded = load_llm(llm_registry, "v1")
    return loaded, to_hf(loaded.model)


def hf_greedy(hf, ids: list[int], n: int, eos: int) -> list[int]:
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=eos,
                          pad_token_id=eos, attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    new = out[0, len(ids):].tolist()
    return new[: new.index(eos)] if eos in new else new


def test_greedy_matches_transformers_token_for_token(server, reference) -> None:
    loaded, hf = reference
    tok = loaded.tokenizer
    prompts = [tok.encode(p, bos=True) for p in PROMPTS]
    with ThreadPoolExecutor(len(prompts)) as pool:
        ours = list(pool.map(lambda ids: server.complete(ids, MAX_NEW, logprobs=0), prompts))
    for ids, got in zip(prompts, ours, strict=True):
        expected = hf_greedy(hf, ids, MAX_NEW, tok.eos_id)
        got_tokens = tok.encode(got["choices"][0]["text"])
        assert got_tokens == expected, (tok.decode(ids), got["choices"][0]["text"], tok.decode(expected))
        assert got["usage"]["completion_tokens"] == len(expected)
        assert got["choices"][0]["finish_reason"] == ("length" if len(expected) == MAX_NEW else "stop")


def test_echo_logprobs_give_the_reference_perplexity(server, reference) -> None:
    loaded, hf = reference
    text = "And the earth was without form, and void"
    ids = loaded.tokenizer.encode(text, bos=True)
    body = server.complete(text, 0, echo=True, logprobs=1)
    choice = body["choices"][0]
    assert choice["text"] == text and choice["finish_reason"] == "length"
    lps = choice["logprobs"]["token_logprobs"]
    assert lps[0] is None and len(lps) == len(ids)
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0]
    ref = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    assert lps[1:] == pytest.approx(ref.tolist(), abs=1e-4)
    ppl = math.exp(-sum(lps[1:]) / (len(lps) - 1))
    assert 1.0 < ppl < 258.0
    assert body["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}
