"""The LLM track's traffic as data (no processes): profile validation, requests that fit the model's context,
per-request timestamps, a growing history, the canary set from the held-out verses, and the retry policy."""

from __future__ import annotations

import pytest

from lab.parts.loadgen import loadgen_argv
from services.llm.corpus import load_corpus
from services.loadgen.llmprofiles import BUILTIN_LLM_PROFILES, LLMProfileError, LLMProfileRegistry, parse_llm_profile
from services.loadgen.llmtraffic import TEMPLATE_TOKENS_PER_MESSAGE, Conversation, LLMSource
from services.loadgen.profiles import UnknownProfile, profile_names
from services.loadgen.retry import RetryPolicy, check_retry


@pytest.fixture(scope="module")
def registry() -> LLMProfileRegistry:
    return LLMProfileRegistry()


@pytest.fixture(scope="module")
def source(registry: LLMProfileRegistry) -> LLMSource:
    return LLMSource(registry.get("chat"), registry, seed=3)


def test_both_tracks_profiles_are_listed_in_one_place() -> None:
    assert profile_names("llm") == list(BUILTIN_LLM_PROFILES)
    assert {"chat", "long-context", "mixed", "growing-history", "system-prompt", "timestamped-system-prompt",
            "burst", "abandon", "impatient"} == set(profile_names("llm"))
    assert "baseline" in profile_names() and "chat" not in profile_names("fraud")
    with pytest.raises(ValueError, match="unknown track"):
        profile_names("all")


@pytest.mark.parametrize(("data", "says"), [
    ({"prompt_chars": [50, 10]}, "prompt_chars must be"),
    ({"max_tokens": 0}, "max_tokens must be"),
    ({"context_fill": 1.5}, "context_fill must be"),
    ({"abandon_after_tokens": 0}, "abandon_after_tokens"),
    ({"mix": {"nope": 1}}, "mix names 'nope'"),
    ({"mix": {"mixed": 1}}, "mix names 'mixed'"),
    ({"rate_multiplier": 50}, "rate_multiplier"),
    ({"prompt_chars": [1, 2], "colour": "red"}, "unknown key(s) colour"),
])
def test_bad_profiles_are_refused_naming_profile_and_key(registry: LLMProfileRegistry, data: dict,
                                                          says: str) -> None:
    with pytest.raises(LLMProfileError, match=r"profile 'mine'") as err:
        registry.register({"mine": data})
    assert says in str(err.value)
    assert "mine" not in registry.names()


def test_builtins_cannot_be_replaced_and_unknown_names_list_the_known(registry: LLMProfileRegistry) -> None:
    with pytest.raises(LLMProfileError, match="built in"):
        registry.register({"chat": {}})
    with pytest.raises(UnknownProfile, match="known LLM profiles: chat"):
        registry.get("baseline")
    assert parse_llm_profile("x", {"max_tokens": 5}).max_tokens == (5, 5)


def test_requests_fit_the_context_except_a_growing_history(registry: LLMProfileRegistry, source: LLMSource) -> None:
    source.max_model_len = 256
    for name in ("chat", "long-context", "system-prompt", "timestamped-system-prompt", "abandon", "mixed", "burst",
                 "impatient"):
        source.set_profile(registry.get(name))
        for _ in range(20):
            plan = source.plan(Conversation())
            body = plan.body
            prompt = sum(len(m["content"]) for m in body["messages"])
            assert body["stream"] and body["stream_options"] == {"include_usage": True}
            assert prompt + body["max_tokens"] + TEMPLATE_TOKENS_PER_MESSAGE * len(body["messages"]) <= 256, name
    source.set_profile(registry.get("long-context"))
    long = source.plan(Conversation()).body
    assert len(long["messages"][0]["content"]) > 0.6 * 256
    source.set_profile(registry.get("abandon"))
    assert source.plan(Conversation()).abandon_after_tokens == 4


def test_timestamps_lead_the_system_prompt(registry: LLMProfileRegistry, source: LLMSource) -> None:
    source.set_profile(registry.get("timestamped-system-prompt"))
    first, second = (source.plan(Conversation()).body["messages"][0] for _ in range(2))
    assert first["role"] == "system" and first["content"].startswith("[")
    assert first["content"] != second["content"]
    assert first["content"].split("] ", 1)[1] == second["content"].split("] ", 1)[1]
    # its healthy twin: the same system prompt, identical on every request (what the prefix cache shares)
    source.set_profile(registry.get("system-prompt"))
    plain, again = (source.plan(Conversation()).body["messages"][0] for _ in range(2))
    assert plain == again == {"role": "system", "content": first["content"].split("] ", 1)[1]}


def test_growing_history_grows(registry: LLMProfileRegistry, source: LLMSource) -> None:
    source.set_profile(registry.get("growing-history"))
    chat = Conversation()
    sizes = []
    for _ in range(3):
        plan = source.plan(chat)
        chat.messages.append({"role": "assistant", "content": "and it was so."})
        sizes.append(len(plan.body["messages"]))
    assert sizes == [1, 3, 5]


def test_canaries_come_from_held_out_verses(source: LLMSource) -> None:
    corpus = load_corpus()
    val = set(corpus.val)
    assert len(source.canaries) == 16
    for canary in source.canaries:
        assert f"{canary['prompt']}{canary['reference']}" in val
        assert canary["prompt"] and canary["reference"].startswith(" ")


def test_retry_policy_checks_and_delays() -> None:
    assert RetryPolicy("immediate", 5).delay_s("7") == 0
    assert RetryPolicy().delay_s("2") == 2 and RetryPolicy().delay_s(None) == 1 and RetryPolicy().delay_s("999") == 60
    assert check_retry(retries=0, current=RetryPolicy("immediate", 5)) == RetryPolicy("immediate", 0)
    for policy, retries, says in (("storm", None, "retry_policy must be"), (None, 21, "retries must be"),
                                  (None, True, "retries must be")):
        with pytest.raises(ValueError, match=says):
            check_retry(policy, retries)
    argv = loadgen_argv("http://127.0.0.1:8100", 3, "chat", 8189, track="llm", retry_policy="immediate", retries=2)
    assert argv[argv.index("--track") + 1] == "llm" and argv[-2:] == ["--retries", "2"]
    assert "--track" not in loadgen_argv("http://127.0.0.1:8100", 3, "baseline", 8189)
