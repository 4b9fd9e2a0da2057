"""The LLM replica's HTTP app: OpenAI-compatible completions and chat completions over the engine.

Routes (besides the common /healthz, /readyz, /metrics, /admin/config):
- `POST /v1/completions`, `POST /v1/chat/completions`: `stream` false (one JSON) or true (SSE `data: {...}`
  chunks in OpenAI's shapes, then `data: [DONE]`; `stream_options.include_usage` adds a usage chunk);
  `finish_reason` stop | length | abort; completions take `logprobs` (0..5) and `echo` (with `max_tokens: 0`:
  the prompt's log-probabilities only: perplexity through the API).
- `GET /v1/models`: the served version (and its draft); `GET /v1/models/{id}`: its card, or a 404
  `model_not_found`; `GET /v1/engine`: scheduler and KV-cache counters. An unknown /v1 path or a wrong method
  is an OpenAI-shaped 404 / 405 too.
Errors are OpenAI-shaped `{"error": {"message", "type", "param", "code"}}`, 4xx for any bad input (a body over
1 MiB: 413 `body_too_large`); prompt +
max_tokens over the context is a 400 naming both numbers. A full queue is a 503 with Retry-After.

Start-up: the HTTP server is up at once (/healthz); a thread loads and verifies the version (and its draft),
starts the engine, runs a warm-up request and only then flips /readyz. A client that disconnects mid-request
aborts it (config `cancel_on_disconnect`), which frees its KV blocks at the engine's next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as _HttpToolsCycle

from services.common.bodies import BodyTooLarge, read_body
from services.common.service import ConfigHolder, create_app
from services.llm import metrics
from services.llm.artifacts import GenerationConfig, LoadedLLM, load_llm, with_parts
from services.llm.config import LLMConfig
from services.llm.engine import Engine, QueueFull
from services.llm.protocol import ChatRequest, CompletionRequest, OpenAIError, TokenizeRequest, parse
from services.llm.sequence import Delta, SamplingParams
from services.registry.store import RegistryError

log = logging.getLogger("llm")
RETRY_AFTER_S = "1"
DISCONNECT_POLL_S = 0.25
SAMPLING_EPS = 1e-5  # a temperature or top_p below it is greedy decoding (vLLM's _SAMPLING_EPS)
MAX_BODY_BYTES = 1024 * 1024  # as the gateway's: a prompt that long is far past any context anyway


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _error(exc: OpenAIError) -> Response:
    return _json(exc.body(), exc.status, exc.headers)


def _sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class LLMServer:
    def __init__(self, registry: str | Path, replica: str, version: str, config: LLMConfig,
                 draft: str | None = None, tokenizer: str | None = None, generation: str | None = None) -> None:
        self.registry, self.replica, self.version, self.draft_version = Path(registry), replica, version, draft
        # a part deployed alone: the tokenizer / generation config of another version (None: the version's own)
        self.tokenizer_version, self.generation_version = tokenizer, generation
        self.holder = ConfigHolder(config, self._on_config_change)
        self.engine: Engine | None = None
        self.target: LoadedLLM | None = None
        self.ready = False
        self.reason = "loading model"
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def config(self) -> LLMConfig:
        return self.holder.value  # type: ignore[return-value]

    def readiness(self) -> tuple[bool, str]:
        if self.config.readiness == "process":
            return True, ""
        return self.ready, self.reason

    def _on_config_change(self, old: Any, new: Any) -> None:
        if self.engine is not None:
            if new.speculative_draft != old.speculative_draft:
                try:
                    draft = self._load_draft(new.speculative_draft)
                except ValueError:
                    self.holder.value = old
                    raise
                error = self.engine.set_config(new, draft=draft)
            else:
                error = self.engine.set_config(new)
            if error is not None:
                self.holder.value = old  # refused as a whole: the live config stays what the engine runs
                raise ValueError(error)

    # ------------------------------------------------------------------------------------------ loading
    def _load_draft(self, name: str | None) -> LoadedLLM | None:
        """The draft to speculate with: `name` (config `speculative_draft`), else --draft, else the version's
        `draft` field; ValueError naming the problem if it cannot draft for the target."""
        assert self.target is not None
        name = name or self.draft_version or self.target.meta.get("draft")
        if not name:
            return None
        try:
            draft = load_llm(self.registry, name)
        except RegistryError as exc:
            raise ValueError(f"speculative_draft: {exc}") from None
        if draft.model.cfg.vocab_size != self.target.model.cfg.vocab_size or \
                draft.model.cfg.n_ctx < self.target.model.cfg.n_ctx:
            raise ValueError(f"speculative_draft: {name} (vocabulary {draft.model.cfg.vocab_size}, context "
                             f"{draft.model.cfg.n_ctx}) cannot draft for {self.version} (vocabulary "
                             f"{self.target.model.cfg.vocab_size}, context {self.target.model.cfg.n_ctx})")
        return draft

    def load(self) -> None:
        try:
            import torch

            torch.set_num_threads(self.config.torch_threads)
            # the engine runs on the event loop (one thread), but the load thread and any engine on a thread of its
            # own (Engine.start) share the GIL with it: 0.5 ms keeps them interleaving finely (5 ms measured alike)
            sys.setswitchinterval(0.0005)
            target = with_parts(load_llm(self.registry, self.version), self.registry, self.tokenizer_version,
                                self.generation_version)
            self.target = target
            draft = None
            try:
                draft = self._load_draft(self.config.speculative_draft)
            except ValueError as exc:
                log.warning("draft not loaded error=%s", exc)
            engine = Engine(target, draft, self.config)
            loop = self.loop
            if loop is not None:  # driven by the event loop's own thread: deliveries are plain calls
                engine.deliver = _deliver
                engine.start_on(loop)
            else:
                engine.start()
            self.target, self.engine = target, engine
            done = threading.Event()
            engine.add("warmup", target.tokenizer.encode("In the beginning", bos=True),
                       SamplingParams(temperature=0.0, max_tokens=4),
                       lambda d: done.set() if d.finish_reason else None)
            done.wait(60)
            self.ready, self.reason = True, ""
            metrics.READY.set(1)
            log.info("ready version=%s draft=%s params=%d n_ctx=%d kv_cache_mb=%.1f", self.version,
                     draft.version if draft else None, target.model.num_params(), target.model.cfg.n_ctx,
                     engine.worker.cache.nbytes / 2**20)
        except (RegistryError, OSError, ValueError, KeyError) as exc:
            self.reason = f"cannot load {self.version}: {exc}"
            log.error("load failed version=%s error=%s", self.version, exc)

    # ------------------------------------------------------------------------------------------ requests
    def _generation(self) -> GenerationConfig:
        assert self.target is not None
        g, c = self.target.generation, self.config
        return GenerationConfig(
            temperature=g.temperature if c.default_temperature is None else c.default_temperature,
            top_p=g.top_p if c.default_top_p is None else c.default_top_p,
            max_tokens=g.max_tokens if c.default_max_tokens is None else c.default_max_tokens,
            stop=list(g.stop if c.default_stop is None else c.default_stop))

    def _check_ready(self) -> Engine:
        if not self.ready or self.engine is None:
            raise OpenAIError(503, f"model not ready: {self.reason}", type_="service_unavailable",
                              code="not_ready", headers={"Retry-After": RETRY_AFTER_S})
        return self.engine

    def _check_model(self, name: str | None) -> None:
        if name is not None and name != self.version:
            shown = name if len(name) <= 100 else name[:100] + "..."  # a refusal names it, it does not echo 1 MB
            raise OpenAIError(404, f"The model `{shown}` does not exist; this replica serves `{self.version}`.",
                              param="model", code="model_not_found", type_="not_found_error")

    def _params(self, req: CompletionRequest | ChatRequest, prompt_len: int, max_tokens: int | None,
                logprobs: int | None, echo: bool) -> SamplingParams:
        engine = self._check_ready()
        n_ctx = engine.n_ctx
        gen = self._generation()
        metrics.REQUEST_PROMPT_TOKENS.observe(prompt_len)
        if prompt_len >= n_ctx or (max_tokens is not None and prompt_len + max_tokens > n_ctx):
            # one line per refusal, so that `logs llm-N` shows why clients get 400s (prompts outgrowing the context)
            log.info("refused code=context_length_exceeded prompt_tokens=%d max_tokens=%s n_ctx=%d", prompt_len,
                     max_tokens if max_tokens is not None else "-", n_ctx)
        if prompt_len >= n_ctx:
            raise OpenAIError(400, f"This model's maximum context length is {n_ctx} tokens. However, your prompt "
                              f"has {prompt_len} tokens. Please reduce the length of the prompt.",
                              param="prompt" if isinstance(req, CompletionRequest) else "messages",
                              code="context_length_exceeded")
        if max_tokens is None:
            max_tokens = min(gen.max_tokens, n_ctx - prompt_len)
        elif prompt_len + max_tokens > n_ctx:
            raise OpenAIError(400, f"This model's maximum context length is {n_ctx} tokens. However, you "
                              f"requested {prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} "
                              "for the completion). Please reduce the length of the prompt or max_tokens.",
                              param="max_tokens", code="context_length_exceeded")
        blocks = engine.blocks
        need = blocks.blocks_for(prompt_len + max_tokens)
        if need > blocks.num_blocks:
            raise OpenAIError(400, f"{prompt_len} prompt tokens + {max_tokens} max_tokens need {need} KV-cache "
                              f"blocks of {blocks.block_size}; the cache has {blocks.num_blocks} (num_kv_blocks).",
                              param="max_tokens", code="kv_cache_too_small")
        stop = req.stop_list()
        temperature = gen.temperature if req.temperature is None else req.temperature
        top_p = gen.top_p if req.top_p is None else req.top_p
        if temperature < SAMPLING_EPS or top_p < SAMPLING_EPS:
            # valid, but as 32-bit floats they divide into 0 or infinity (the sampler then drew nonsense): both
            # leave only the most likely token, which is greedy decoding, as vLLM reads them
            temperature, top_p = 0.0, 1.0
        return SamplingParams(
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens, stop=gen.stop if stop is None else stop, logprobs=logprobs,
            prompt_logprobs=echo and logprobs is not None, seed=req.seed)

    async def completions(self, request: Request) -> Response:
        try:
            req: CompletionRequest = parse(CompletionRequest, await _body(request))
            self._check_model(req.model)
            engine = self._check_ready()
            tok = engine.tok
            if isinstance(req.prompt, str):
                prompt = tok.encode(req.prompt, bos=True)
            elif isinstance(req.prompt[0], str):
                prompt = tok.encode(str(req.prompt[0]), bos=True)
            else:
                prompt = [int(t) for t in req.prompt]
            params = self._params(req, len(prompt), req.max_tokens, req.logprobs, req.echo)
        except OpenAIError as exc:
            return _error(exc)
        return await self._run(request, req, prompt, params, chat=False)

    async def chat(self, request: Request) -> Response:
        try:
            req: ChatRequest = parse(ChatRequest, await _body(request))
            self._check_model(req.model)
            engine = self._check_ready()
            try:
                messages = [{"role": m.role, "content": m.text()} for m in req.messages]
            except ValueError as exc:
                raise OpenAIError(400, f"messages: {exc}", param="messages") from None
            prompt = engine.tok.apply_chat_template(messages)
            max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
            logprobs = (req.top_logprobs or 0) if req.logprobs else None
            params = self._params(req, len(prompt), max_tokens, logprobs, False)
        except OpenAIError as exc:
            return _error(exc)
        return await self._run(request, req, prompt, params, chat=True)

    async def _run(self, request: Request, req: CompletionRequest | ChatRequest, prompt: list[int],
                   params: SamplingParams, chat: bool) -> Response:
        engine = self._check_ready()
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        fmt = _Format(self, rid, req, prompt, params, chat)
        stream = _Stream(self, rid, fmt) if req.stream else None
        q: asyncio.Queue[Delta] = asyncio.Queue()
        try:  # the emit is called on this loop, by _deliver
            engine.add(rid, prompt, params, q.put_nowait if stream is None else stream.add)
        except QueueFull as exc:
            return _error(OpenAIError(503, f"server overloaded: {exc}; retry later", type_="service_unavailable",
                                      code="queue_full", headers={"Retry-After": RETRY_AFTER_S}))
        if stream is not None:
            return _SSEResponse(stream)
        deltas: list[Delta] = []
        while True:
            try:
                d = await asyncio.wait_for(q.get(), DISCONNECT_POLL_S)
            except TimeoutError:
                if self.config.cancel_on_disconnect and await request.is_disconnected():
                    engine.abort(rid)
                    log.info("client gone request=%s aborted", rid)
                    return Response(status_code=499)
                continue
            deltas.append(d)
            if d.finish_reason is not None:
                break
        if deltas[-1].error:
            return _error(OpenAIError(500, deltas[-1].error, type_="server_error"))
        return _json(fmt.whole(deltas))


def _coalesce(deltas: list[Delta]) -> list[Delta]:
    """Consecutive deltas of one request as one (texts and logprobs joined, the last one's finish and usage); a
    delta carrying an error stays apart, so the text before it is still sent."""
    out: list[Delta] = []
    for d in deltas:
        prev = out[-1] if out else None
        if prev is None or d.error or prev.error or prev.finish_reason is not None:
            out.append(d)
            continue
        out[-1] = Delta(text=prev.text + d.text, token_ids=prev.token_ids + d.token_ids,
                        logprobs=prev.logprobs + d.logprobs, finish_reason=d.finish_reason, usage=d.usage,
                        prompt_logprobs=d.prompt_logprobs)
    return out


def _deliver(items: list[tuple[Any, Delta]]) -> None:
    """On the event loop: deltas to their requests, in order (a non-streaming request's queue, a stream's
    `_Stream.add`), then each stream that got some writes them, all it got as one chunk."""
    dirty: list[_Stream] = []
    for emit, delta in items:
        stream = emit(delta)  # a stream's first delta since it last wrote: it returns itself
        if stream is not None:
            dirty.append(stream)
    for stream in dirty:
        try:
            stream.flush()
        except Exception as exc:  # noqa: BLE001 - the stream's handler raises it; the other streams go on
            stream.fail(exc)


class _Stream:
    """One streaming request: the engine's deltas as SSE bytes.

    Under uvicorn (httptools) the handler attaches the request's connection (`attach`) and the deltas are written
    as HTTP chunks straight to its transport from `_deliver`, with no per-request coroutine woken per token: the
    handler sleeps until the stream is finished, fails, or its client reads too slowly. Back-pressure: when the
    transport's buffer is over its high-water mark (uvicorn's flow control paused writing), deltas wait here and
    the handler, once the buffer drained, writes all that piled up as one chunk. Without a connection attached (any
    other ASGI server) `chunks()` yields the same bytes for a StreamingResponse to send."""

    __slots__ = ("server", "rid", "fmt", "pending", "finished", "blocked", "error", "closed", "waiter", "cycle",
                 "transport")

    def __init__(self, server: LLMServer, rid: str, fmt: _Format) -> None:
        self.server, self.rid, self.fmt = server, rid, fmt
        self.pending: list[Delta] = []
        self.finished = False  # the last bytes (`data: [DONE]`) rendered
        self.blocked = False  # waiting for the transport to drain: the handler writes next
        self.error: BaseException | None = None
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None
        self.cycle: Any = None  # uvicorn's RequestResponseCycle once attached
        self.transport: Any = None

    # ---------------------------------------------------------------------------------------- the event loop
    def add(self, d: Delta) -> _Stream | None:
        """The request's emit: keep the delta; self if `_deliver` must flush this stream."""
        if self.closed:
            return None
        self.pending.append(d)
        return self if len(self.pending) == 1 else None

    def flush(self) -> None:
        """Write what is pending (attached and the transport not paused), else wake the handler to take it."""
        if not self.pending:
            return
        cycle = self.cycle
        if cycle is None or self.blocked:
            self._wake()
            return
        if cycle.disconnected:  # the handler's watcher cancels it; nothing more goes out
            self.pending.clear()
            return
        if cycle.flow.write_paused:
            self.blocked = True
            self._wake()
            return
        data = self.render()
        self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))  # chunked framing, as uvicorn's send
        if self.finished:
            self._wake()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        self.waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self.waiter = None

    def render(self) -> bytes:
        """The SSE bytes of all that is pending, deltas that piled up coalesced; sets `finished` at the end."""
        pending, self.pending = self.pending, []
        parts: list[bytes] = []
        for d in _coalesce(pending):
            if d.error:
                self.finished = True
                parts.append(_sse(OpenAIError(500, d.error, type_="server_error").body()))
                break
            parts.append(self.fmt.sse(d))
            if d.finish_reason is not None:
                self.finished = True
                break
        if self.finished:
            parts.append(b"data: [DONE]\n\n")
        return b"".join(parts)

    def opening(self) -> bytes:
        return b"".join(_sse(first) for first in self.fmt.opening())

    # ---------------------------------------------------------------------------------------- the handler
    def attach(self, cycle: Any) -> None:
        """Write from now on straight to `cycle`'s transport (chunked encoding, the response started)."""
        self.cycle, self.transport = cycle, cycle.transport
        self.flush()

    def close(self) -> None:
        """The handler is done: an unfinished request (its client gone, or a failure) is aborted."""
        if self.closed:
            return
        self.closed = True
        self.pending.clear()
        server = self.server
        if not self.finished and server.config.cancel_on_disconnect and server.engine is not None:
            server.engine.abort(self.rid)
            log.info("client gone request=%s aborted", self.rid)

    async def chunks(self, opening: bool = True) -> AsyncIterator[bytes]:
        """The SSE bytes for any ASGI server (not attached): one chunk per wake-up, all that piled up."""
        try:
            first = self.opening() if opening else b""
            if first:
                yield first
            while not self.finished:
                while not self.pending and self.error is None:
                    await self.wait()
                if self.error is not None:
                    raise self.error
                yield self.render()
        finally:
            self.close()


class _SSEResponse(StreamingResponse):
    """A stream's response: its `_Stream` kept for the front's direct path."""

    def __init__(self, stream: _Stream) -> None:
        super().__init__(stream.chunks(), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.stream = stream


async def _body(request: Request) -> Any:
    try:
        raw = await read_body(request, MAX_BODY_BYTES)
    except BodyTooLarge:
        raise OpenAIError(413, f"request body larger than {MAX_BODY_BYTES} bytes", code="body_too_large") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise OpenAIError(400, "the request body is not valid JSON") from None


class _Format:
    """OpenAI response shapes for one request (whole or streamed, completion or chat)."""

    def __init__(self, server: LLMServer, rid: str, req: CompletionRequest | ChatRequest, prompt: list[int],
                 params: SamplingParams, chat: bool) -> None:
        assert server.engine is not None
        self.tok = server.engine.tok
        self.rid, self.req, self.prompt, self.params, self.chat = rid, req, prompt, params, chat
        self.model = server.version
        self.created = int(time.time())
        self.echo = isinstance(req, CompletionRequest) and req.echo
        self.offset = 0
        # a content chunk without logprobs is the same bytes but for its text: encoded once, the text spliced in
        # (building and serialising the dict per chunk was most of the event loop's time per token)
        self._plain: tuple[bytes, bytes] | None = None
        if params.logprobs is None:
            head = self._head("chat.completion.chunk" if chat else "text_completion")
            marker = "\x00"
            head["choices"] = [{"index": 0, "delta": {"content": marker}, "logprobs": None, "finish_reason": None}
                               if chat else {"index": 0, "text": marker, "logprobs": None, "finish_reason": None}]
            before, after = _sse(head).split(orjson.dumps(marker))
            self._plain = before, after

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.rid, "object": obj, "created": self.created, "model": self.model}

    def _prompt_text(self) -> str:
        return self.tok.decode(self.prompt)

    def _logprobs(self, entries: list[dict[str, Any]], prompt: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        if prompt:  # the first prompt token has no log-probability
            first = self.tok.token_str(self.prompt[0])
            out["tokens"].append(first)
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
            out["text_offset"].append(self.offset)
            self.offset += len(first)
        for e in entries:
            s = self.tok.token_str(e["token"])
            out["tokens"].append(s)
            out["token_logprobs"].append(e["logprob"])
            out["top_logprobs"].append({self.tok.token_str(t): lp for t, lp in e.get("top", [])} or None)
            out["text_offset"].append(self.offset)
            self.offset += len(s)
        return out

    def _chat_logprobs(self, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
        if self.params.logprobs is None:
            return None

        def one(token: int, lp: float) -> dict[str, Any]:
            s = self.tok.token_str(token)
            return {"token": s, "logprob": lp, "bytes": list(s.encode())}

        return {"content": [{**one(e["token"], e["logprob"]),
                             "top_logprobs": [one(t, lp) for t, lp in e.get("top", [])]} for e in entries]}

    def whole(self, deltas: list[Delta]) -> dict[str, Any]:
        last = deltas[-1]
        text = "".join(d.text for d in deltas)
        if self.chat:
            body = self._head("chat.completion")
            lps = self._chat_logprobs([e for d in deltas for e in d.logprobs])
            body["choices"] = [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": lps,
                                "finish_reason": last.finish_reason}]
        else:
            body = self._head("text_completion")
            lps = None
            if self.params.logprobs is not None:
                lps = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
                parts = []
                if self.params.prompt_logprobs:
                    parts.append(self._logprobs(last.prompt_logprobs or [], prompt=True))
                parts.append(self._logprobs([e for d in deltas for e in d.logprobs]))
                for p in parts:
                    for k in lps:
                        lps[k].extend(p[k])
            if self.echo:
                text = self._prompt_text() + text
            body["choices"] = [{"index": 0, "text": text, "logprobs": lps, "finish_reason": last.finish_reason}]
        body["usage"] = last.usage
        return body

    def opening(self) -> list[dict[str, Any]]:
        if self.chat:
            c = self._head("chat.completion.chunk")
            c["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}]
            return [c]
        if self.echo:
            c = self._head("text_completion")
            c["choices"] = [{"index": 0, "text": self._prompt_text(), "logprobs": None, "finish_reason": None}]
            return [c]
        return []

    def sse(self, d: Delta) -> bytes:
        """The SSE bytes of `chunks(d)`."""
        if self._plain is not None and d.finish_reason is None and d.text:
            return self._plain[0] + orjson.dumps(d.text) + self._plain[1]
        return b"".join(_sse(chunk) for chunk in self.chunks(d))

    def chunks(self, d: Delta) -> list[dict[str, Any]]:
        out = []
        if self.chat:
            c = self._head("chat.completion.chunk")
            delta = {"content": d.text} if d.text else {}
            c["choices"] = [{"index": 0, "delta": delta, "logprobs": self._chat_logprobs(d.logprobs),
                             "finish_reason": d.finish_reason}]
        else:
            c = self._head("text_completion")
            lps = self._logprobs(d.logprobs) if self.params.logprobs is not None else None
            c["choices"] = [{"index": 0, "text": d.text, "logprobs": lps, "finish_reason": d.finish_reason}]
        out.append(c)
        opts = self.req.stream_options
        if d.finish_reason is not None and opts is not None and opts.include_usage:
            u = self._head(c["object"])
            u["choices"] = []
            u["usage"] = d.usage
            out.append(u)
        return out


class LLMFront:
    """`POST /v1/completions` and `POST /v1/chat/completions` straight to the server; the rest to FastAPI.

    A stream writes one chunk per engine step per request: Starlette's StreamingResponse (its task group) and the
    middleware stack's wrapped `send` cost about as much event-loop time per chunk as writing it (py-spy, see
    docs/llm.md), so the two hot routes skip them. The routes stay registered on the app (other methods get its
    405); what they answer is unchanged. A client that hangs up mid-stream cancels the stream, as Starlette does,
    and the stream's own clean-up aborts the request (config `cancel_on_disconnect`).
    """

    ROUTES = {"/v1/completions": False, "/v1/chat/completions": True}

    def __init__(self, app: FastAPI, server: LLMServer) -> None:
        self.app, self.server, self.state = app, server, app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        chat = self.ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if chat is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await (self.server.chat if chat else self.server.completions)(request)
        except ClientDisconnect:
            return
        except Exception:
            log.exception("request failed path=%s", scope["path"])
            response = _error(OpenAIError(500, "internal error (see the replica's log)", type_="server_error"))
        if isinstance(response, _SSEResponse) and isinstance(getattr(send, "__self__", None), _HttpToolsCycle):
            await _stream_direct(response, receive, send)
        elif isinstance(response, StreamingResponse):
            await _stream_out(response, receive, send)
        else:
            await response(scope, receive, send)


@contextlib.asynccontextmanager
async def _until_disconnect(receive: Any) -> AsyncIterator[None]:
    """The block runs until done or until the client hangs up: a watcher task cancels it then, and the
    cancellation ends here quietly (the block's own clean-up aborts the request)."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        yield
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
    finally:
        watcher.cancel()


async def _stream_direct(response: _SSEResponse, receive: Any, send: Any) -> None:
    """A stream under uvicorn: the chunks written by `_deliver` (see `_Stream`); this coroutine wakes only to drain
    a slow client's transport, to end the response, or on a failure. A disconnect cancels it (the request is
    aborted)."""
    stream, cycle = response.stream, send.__self__
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    try:
        async with _until_disconnect(receive):
            opening = stream.opening()
            if opening:
                await send({"type": "http.response.body", "body": opening, "more_body": True})
            if cycle.chunked_encoding is not True:  # not the framing written below (never so for a POST)
                async for chunk in stream.chunks(opening=False):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            else:
                stream.attach(cycle)
                while True:
                    while not (stream.finished or stream.blocked or stream.error is not None):
                        await stream.wait()
                    if stream.error is not None:
                        raise stream.error
                    if not stream.blocked:
                        break
                    await cycle.flow.drain()  # a slow reader: deltas pile up in the stream meanwhile
                    stream.blocked = False
                    stream.flush()  # all of them as one chunk (or blocked again)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        stream.close()


async def _stream_out(response: StreamingResponse, receive: Any, send: Any) -> None:
    """Send a stream's chunks as they come; a disconnect cancels it (its generator's clean-up runs)."""
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    body = response.body_iterator
    try:
        async with _until_disconnect(receive):
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await body.aclose()  # type: ignore[attr-defined]


def build_app(registry: str | Path, replica: str, version: str, config: LLMConfig,
              draft: str | None = None, tokenizer: str | None = None, generation: str | None = None) -> LLMFront:
    server = LLMServer(registry, replica, version, config, draft, tokenizer, generation)
    app = create_app(f"llm.{replica}", server.holder, server.readiness)
    app.state.server = server

    @app.on_event("startup")
    async def _start() -> None:
        server.loop = asyncio.get_running_loop()
        threading.Thread(target=server.load, name="llm-load", daemon=True).start()

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await server.completions(request)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await server.chat(request)

    def model_cards() -> list[dict[str, Any]]:
        if server.target is None:
            return []
        meta = server.target.meta
        return [{"id": server.version, "object": "model", "created": server.target.meta.get("created_at"),
                 "owned_by": "faultline", "root": server.version, "parent": None,
                 "max_model_len": server.target.model.cfg.n_ctx, "replica": server.replica,
                 "sha256": meta.get("sha256"), "variant": meta.get("variant"), "metrics": meta.get("metrics"),
                 "tokenizer": server.tokenizer_version or server.version,
                 "generation_config": server.generation_version or server.version,
                 "draft": server.engine.draft.version if server.engine and server.engine.draft else None}]

    @app.get("/v1/models")
    async def models() -> Response:
        return _json({"object": "list", "data": model_cards()})

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> Response:
        """OpenAI's "retrieve model": the served version's card, else a 404 `model_not_found`."""
        found = [card for card in model_cards() if card["id"] == model_id]
        if found:
            return _json(found[0])
        try:
            server._check_model(model_id[:200])
        except OpenAIError as exc:
            return _error(exc)
        return _error(OpenAIError(503, f"model not ready: {server.reason}", type_="service_unavailable",
                                  code="not_ready", headers={"Retry-After": RETRY_AFTER_S}))

    # `POST /v1/completions/` would be a 307 to the route (which OpenAI's clients do not follow): a 404 instead
    app.router.redirect_slashes = False

    @app.exception_handler(StarletteHTTPException)
    async def openai_shaped(request: Request, exc: StarletteHTTPException) -> Response:
        """An unknown path or a wrong method under /v1 in OpenAI's error shape (clients read `error.message`)."""
        if not request.url.path.startswith("/v1/"):
            return await http_exception_handler(request, exc)
        what = "Invalid method for URL" if exc.status_code == 405 else "Invalid URL"
        return _error(OpenAIError(exc.status_code, f"{what} ({request.method} {request.url.path})",
                                  type_="invalid_request_error", headers=exc.headers))

    @app.post("/tokenize")
    async def tokenize(request: Request) -> Response:
        """vLLM's route: the prompt's token ids, their count and the context length (a gateway trims with it)."""
        try:
            req: TokenizeRequest = parse(TokenizeRequest, await _body(request))
            server._check_model(req.model)
            engine = server._check_ready()
            if req.messages is not None:
                try:
                    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
                except ValueError as exc:
                    raise OpenAIError(400, f"messages: {exc}", param="messages") from None
                tokens = engine.tok.apply_chat_template(messages)
            else:
                tokens = engine.tok.encode(req.prompt or "", bos=True)
        except OpenAIError as exc:
            return _error(exc)
        return _json({"count": len(tokens), "max_model_len": engine.n_ctx, "tokens": tokens})

    @app.get("/v1/engine")
    async def engine_stats() -> Response:
        if server.engine is None:
            return _json({"detail": f"not ready: {server.reason}"}, 503)
        return _json({"replica": server.replica, "version": server.version, **server.engine.stats()})

    return LLMFront(app, server)
