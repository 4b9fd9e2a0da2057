"""The OpenAI-compatible surface: response and chunk shapes, the official `openai` client streaming, context
overflow named in numbers, any bad input an OpenAI-shaped 4xx (table-driven, then hypothesis), queue limits,
live config and metrics under vLLM's names."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def assert_openai_error(r, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


def test_models_and_whole_responses(server) -> None:
    models = server.client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "v1"
    assert models["data"][0]["max_model_len"] == 128 and models["data"][0]["draft"] == "v1-draft"
    chat = server.client.post("/v1/chat/completions", json={
        "model": "v1", "messages": [{"role": "user", "content": "Who made the light?"}], "max_tokens": 8}).json()
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
    assert chat["choices"][0]["finish_reason"] in ("stop", "length")
    assert chat["usage"]["total_tokens"] == chat["usage"]["prompt_tokens"] + chat["usage"]["completion_tokens"]
    chat_lp = server.client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "logprobs": True, "top_logprobs": 3,
        "temperature": 0}).json()["choices"][0]
    content = chat_lp["logprobs"]["content"]
    assert "".join(c["token"] for c in content) == chat_lp["message"]["content"]
    assert all(len(c["top_logprobs"]) == 3 and c["logprob"] <= 0 for c in content)
    cmpl = server.complete("And God said", 5, logprobs=2)
    lp = cmpl["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 5
    assert all(len(t) <= 2 for t in lp["top_logprobs"])


def test_chat_stream_chunks_usage_and_done(server) -> None:
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 6, "stream": True,
            "stream_options": {"include_usage": True}, "temperature": 0}
    events = []
    with server.client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["x-accel-buffering"] == "no"
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 6


def test_official_openai_client_streams(server) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="v1", messages=[{"role": "user", "content": "Say a verse"}],
                                            max_tokens=12, temperature=0, stream=True)
    pieces, finish = [], None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert finish in ("stop", "length") and "".join(pieces)
    whole = client.completions.create(model="v1", prompt="In the beginning", max_tokens=10, temperature=0)
    assert whole.choices[0].text == server.complete("In the beginning", 10)["choices"][0]["text"]


def test_context_overflow_names_both_numbers(server) -> None:
    r = server.client.post("/v1/completions", json={"prompt": "a" * 100, "max_tokens": 50})
    err = assert_openai_error(r, 400, "max_tokens")
    assert "128" in err["message"] and "151" in err["message"] and "101" in err["message"]
    assert err["code"] == "context_length_exceeded"
    r = server.client.post("/v1/completions", json={"prompt": "a" * 200})
    assert "128" in assert_openai_error(r, 400, "prompt")["message"]


BAD = [
    ("not json", None),
    ("[1, 2]", None),
    (json.dumps({}), "prompt"),
    (json.dumps({"prompt": 5}), "prompt"),
    (json.dumps({"prompt": []}), "prompt"),
    (json.dumps({"prompt": ["a", "b"]}), "prompt"),
    (json.dumps({"prompt": [1, 999]}), "prompt"),
    (json.dumps({"prompt": "x", "max_tokens": -1}), "max_tokens"),
    (json.dumps({"prompt": "x", "max_tokens": "5"}), "max_tokens"),
    (json.dumps({"prompt": "x", "temperature": 3}), "temperature"),
    (json.dumps({"prompt": "x", "top_p": 0}), "top_p"),
    (json.dumps({"prompt": "x", "n": 2}), "n"),
    (json.dumps({"prompt": "x", "logprobs": 9}), "logprobs"),
    (json.dumps({"prompt": "x", "stop": ["", "a"]}), "stop"),
    (json.dumps({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}), "stop"),
    (json.dumps({"prompt": "x", "stream": "yes"}), "stream"),
    (json.dumps({"prompt": "x", "echo": 1}), "echo"),
    ("[" * 100_000, None),
]


@pytest.mark.parametrize(("body", "param"), BAD)
def test_bad_completion_input_is_an_openai_400(server, body: str, param: str | None) -> None:
    r = server.client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert_openai_error(r, 400, param)


@pytest.mark.parametrize("body", [
    {}, {"messages": []}, {"messages": "hi"}, {"messages": [{"role": "robot", "content": "x"}]},
    {"messages": [{"role": "user"}]}, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
    {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
    {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 9},
])
def test_bad_chat_input_is_an_openai_400(server, body: dict) -> None:
    assert_openai_error(server.client.post("/v1/chat/completions", json=body), 400)


# OpenAI parameters this server does not implement: a wrong type or range is a 400 on the field (as OpenAI answers),
# a value that would change the answer is a 400 `unsupported_parameter`, never silently ignored.
PROMPT = {"prompt": "x", "max_tokens": 2}
CHAT = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
UNCHECKED_BEFORE = [
    ("/v1/completions", {**PROMPT, "best_of": 0}, "best_of", None),
    ("/v1/completions", {**PROMPT, "best_of": "2"}, "best_of", None),
    ("/v1/completions", {**PROMPT, "best_of": 2}, "best_of", "unsupported_parameter"),
    ("/v1/completions", {**PROMPT, "presence_penalty": "abc"}, "presence_penalty", None),
    ("/v1/completions", {**PROMPT, "presence_penalty": 3}, "presence_penalty", None),
    ("/v1/completions", {**PROMPT, "presence_penalty": 0.5}, "presence_penalty", "unsupported_parameter"),
    ("/v1/chat/completions", {**CHAT, "frequency_penalty": [1]}, "frequency_penalty", None),
    ("/v1/chat/completions", {**CHAT, "frequency_penalty": -1}, "frequency_penalty", "unsupported_parameter"),
    ("/v1/completions", {**PROMPT, "logit_bias": "x"}, "logit_bias", None),
    ("/v1/completions", {**PROMPT, "logit_bias": {"word": 1}}, "logit_bias", None),
    ("/v1/completions", {**PROMPT, "logit_bias": {"5": 200}}, "logit_bias", None),
    ("/v1/completions", {**PROMPT, "logit_bias": {"5": 1}}, "logit_bias", "unsupported_parameter"),
    ("/v1/completions", {**PROMPT, "suffix": 5}, "suffix", None),
    ("/v1/completions", {**PROMPT, "suffix": "the end"}, "suffix", "unsupported_parameter"),
    ("/v1/completions", {**PROMPT, "user": {"id": 1}}, "user", None),
    ("/v1/completions", {**PROMPT, "stream_options": {"include_usage": True}}, "stream_options", None),
    ("/v1/completions", {**PROMPT, "stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options",
     None),
    ("/v1/completions", {**PROMPT, "prompt": [[1, 2], [3]]}, "prompt", None),
    ("/v1/completions", {**PROMPT, "prompt": [1, "a"]}, "prompt", None),
    ("/v1/chat/completions", {**CHAT, "tools": "x"}, "tools", None),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools",
     "unsupported_parameter"),
    ("/v1/chat/completions", {**CHAT, "response_format": "json"}, "response_format", None),
    ("/v1/chat/completions", {**CHAT, "response_format": {"type": "xml"}}, "response_format", None),
    ("/v1/chat/completions", {**CHAT, "response_format": {"type": "json_object"}}, "response_format",
     "unsupported_parameter"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": None}]}, "messages", None),
]


@pytest.mark.parametrize(("path", "body", "param", "code"), UNCHECKED_BEFORE)
def test_openai_parameters_not_implemented_are_checked_not_ignored(server, path: str, body: dict, param: str,
                                                                  code: str | None) -> None:
    err = assert_openai_error(server.client.post(path, json=body), 400, param)
    assert err["code"] == code and err["message"].startswith(param), err
    assert "Value error" not in err["message"] and ".str:" not in err["message"], err


def test_their_neutral_values_are_answered(server) -> None:
    neutral = {"best_of": 1, "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "suffix": None,
               "user": "learner-1"}
    r = server.client.post("/v1/completions", json={**PROMPT, **neutral})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"], r.text
    r = server.client.post("/v1/chat/completions", json={**CHAT, **neutral, "tools": [],
                                                         "response_format": {"type": "text"}})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant", r.text


def test_unknown_model_is_an_openai_404(server) -> None:
    r = server.client.post("/v1/completions", json={"prompt": "x", "model": "gpt-4"})
    assert assert_openai_error(r, 404, "model")["code"] == "model_not_found"


SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=8)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                          max_size=3), max_leaves=8)
FIELDS = st.fixed_dictionaries({}, optional={
    "prompt": JSON, "messages": JSON, "max_tokens": JSON, "temperature": JSON, "top_p": JSON, "stop": JSON,
    "logprobs": JSON, "echo": JSON, "stream": st.just(False), "n": JSON, "seed": JSON, "model": JSON,
    "stream_options": JSON, "best_of": JSON, "presence_penalty": JSON, "frequency_penalty": JSON, "logit_bias": JSON,
    "suffix": JSON, "user": JSON, "tools": JSON, "response_format": JSON})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=FIELDS, chat=st.booleans())
def test_any_body_is_answered_never_500(server, body: dict, chat: bool) -> None:
    path = "/v1/chat/completions" if chat else "/v1/completions"
    r = server.client.post(path, json=body)
    assert r.status_code in (200, 400, 404), (r.status_code, r.text)
    if r.status_code != 200:
        assert_openai_error(r, r.status_code)


def test_full_queue_is_503_with_retry_after(server) -> None:
    server.patch(max_queue=0)
    r = server.client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert r.headers["retry-after"] == "1"
    assert assert_openai_error(r, 503)["code"] == "queue_full"
    assert server.metric("llm_rejected_total", {"reason": "queue_full"}) >= 1


def test_admin_config_validates_and_generation_defaults_apply(server) -> None:
    r = server.client.patch("/admin/config", json={"num_kv_blocks": 0})
    assert r.status_code == 422 and "num_kv_blocks" in r.json()["detail"]
    assert server.client.patch("/admin/config", json={"bogus": 1}).status_code == 422
    # an empty default stop string would end every answer at once: refused as a request's `stop: [""]` is
    for stops in ([""], ["a", "b", "c", "d", "e"], ["x" * 257]):
        r = server.client.patch("/admin/config", json={"default_stop": stops})
        assert r.status_code == 422 and "default_stop" in r.text, (stops, r.text)
    server.patch(default_temperature=0.0, default_max_tokens=7)
    a = server.client.post("/v1/completions", json={"prompt": "And God said"}).json()
    assert a["usage"]["completion_tokens"] <= 7
    assert a["choices"][0]["text"] == server.complete("And God said", 7)["choices"][0]["text"]


def test_metrics_use_vllm_names(server) -> None:
    server.complete("And God said", 3)
    text = server.client.get("/metrics").text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:num_preemptions_total", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                 "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_bucket", "vllm:request_queue_time_seconds_bucket",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 'vllm:request_success_total{finished_reason="length"}', "vllm:spec_decode_num_draft_tokens_total",
                 "vllm:spec_decode_num_accepted_tokens_total", "process_resident_memory_bytes"):
        assert name in text, name
    assert server.metric("vllm:generation_tokens_total") >= 3
