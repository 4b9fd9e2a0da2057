"""The OpenAI-compatible request bodies (pydantic) and error shape.

Unknown fields are ignored (clients send extras); a bad value is a 400
`{"error": {"message", "type": "invalid_request_error", "param", "code"}}` naming the field. Supported:
one prompt (a string, a one-string list, or a list of token ids) and `n` = 1. OpenAI's parameters this server
does not implement are still checked as OpenAI checks them (type, range), and a value that would change the
answer (`best_of` > 1, a non-zero penalty, a non-empty `logit_bias`, a `suffix`, `tools`, a `response_format`
other than text) is a 400 `unsupported_parameter` rather than silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


class Unsupported(ValueError):
    """A valid OpenAI parameter whose value this server cannot honour: a 400 `unsupported_parameter`."""


def _unsupported_if(condition: bool, message: str) -> None:
    if condition:
        raise Unsupported(message)


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    # OpenAI's parameters that change the answer and are not implemented here: checked, refused unless neutral
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @field_validator("temperature", "top_p", "presence_penalty", "frequency_penalty", mode="before")
    @classmethod
    def _int_ok(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _bias(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for token, bias in v.items():
                if not token.lstrip("-").isdigit():
                    raise ValueError(f"keys are token ids, got {token[:40]!r}")
                if isinstance(bias, bool) or not isinstance(bias, int | float) or not -100 <= bias <= 100:
                    raise ValueError(f"token {token}: a bias is a number in -100..100, got {str(bias)[:40]}")
            return {k: float(b) for k, b in v.items()}
        return v

    @model_validator(mode="after")
    def _neutral(self) -> _Common:
        for name in ("presence_penalty", "frequency_penalty"):
            _unsupported_if(bool(getattr(self, name)), f"{name}: penalties are not supported by this server; "
                                                        "send 0 or leave it out")
        _unsupported_if(bool(self.logit_bias), "logit_bias: not supported by this server; send {} or leave it out")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        return self

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else v or []
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return v

    def stop_list(self) -> list[str] | None:
        return None if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = Field(None, ge=0)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None

    @model_validator(mode="after")
    def _one_choice(self) -> CompletionRequest:
        _unsupported_if(self.best_of is not None and self.best_of > 1,
                        "best_of: only 1 is supported (this server returns one completion)")
        _unsupported_if(bool(self.suffix), "suffix: not supported by this server (no insertion); leave it out")
        return self

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, v: Any) -> Any:
        # one clear message instead of the union's first branch ("prompt.str: Input should be a valid string")
        if isinstance(v, str):
            return v
        if isinstance(v, list) and (all(isinstance(p, str) for p in v) or all(
                isinstance(t, int) and not isinstance(t, bool) for t in v)):
            return v
        if isinstance(v, list) and v and all(isinstance(p, list) for p in v):
            raise ValueError("one prompt per request: a list of token-id lists is several prompts")
        raise ValueError("must be a string, a list of one string, or a list of token ids (integers)")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str] | list[int]) -> str | list[str] | list[int]:
        if isinstance(v, list):
            if not v:
                raise ValueError("prompt must not be empty")
            if isinstance(v[0], str) and len(v) != 1:
                raise ValueError("one prompt per request")
            if isinstance(v[0], int) and any(t < 0 or t > 257 for t in v):  # type: ignore[operator]
                raise ValueError("token ids must be in 0..257")
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]

    @field_validator("content", mode="before")
    @classmethod
    def _content_shape(cls, v: Any) -> Any:
        if isinstance(v, str) or isinstance(v, list) and all(isinstance(p, dict) for p in v):
            return v
        raise ValueError("must be a string or a list of content parts ({\"type\": \"text\", \"text\": ...})")

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=5)
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        _unsupported_if(bool(self.tools), "tools: tool calling is not supported by this model; leave tools out")
        kind = (self.response_format or {}).get("type", "text")
        if kind not in ("text", "json_object", "json_schema"):
            raise ValueError(f"response_format.type: must be text, json_object or json_schema, got {str(kind)[:40]}")
        _unsupported_if(kind != "text", f"response_format: {kind} is not supported by this model; only text")
        return self


def parse(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, Unsupported):  # "field: message" already
            param = str(cause).split(":", 1)[0]
            raise OpenAIError(400, str(cause), param=param, code="unsupported_parameter") from None
        msg = err["msg"].removeprefix("Value error, ")
        field = msg.split(":", 1)[0]
        if not err["loc"] and ":" in msg and field.replace(".", "").replace("_", "").isalpha():
            # a check over several fields whose message starts with the one at fault
            raise OpenAIError(400, msg, param=field.split(".")[0]) from None
        param = str(err["loc"][0]) if err["loc"] else None  # the top-level field, as OpenAI names it
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise OpenAIError(400, f"{where}: {msg}", param=param) from None


class TokenizeRequest(BaseModel):
    """vLLM's `POST /tokenize`: a completion prompt or chat messages (with the chat template), counted."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_of(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        return self
