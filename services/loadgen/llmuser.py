"""The LLM track's locust user: one streamed chat completion per send permit, through the gateway's public URL.

Each request records client-side TTFT, inter-token gaps, end-to-end latency and output tokens
(services/loadgen/llmmetrics.py); an `abandon` profile hangs up after a few tokens (the socket is closed, so the
gateway and the replica see a real disconnect); 429/503 answers are retried under the live retry policy
(services/loadgen/retry.py). The stream is read with the standard library's http.client over gevent's patched
sockets: line by line, as it arrives, with nothing buffering it. Pacing is the fraud user's: the Controller's Pacer
hands out permits in `wait_time`, so rate and concurrency change live.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

import gevent
from locust import User, task

from services.loadgen.controller import Controller
from services.loadgen.llmmetrics import LLMClientMetrics
from services.loadgen.llmtraffic import Conversation, LLMSource, Planned
from services.loadgen.retry import RETRYABLE

CHAT_PATH = "/v1/chat/completions"
# One API key for the whole load generator: the gateway's per-client rate limit sees it as one client.
API_KEY = "faultline-loadgen"
log = logging.getLogger("loadgen.llm")


class LLMUser(User):
    controller: ClassVar[Controller | None] = None
    metrics: ClassVar[LLMClientMetrics | None] = None
    network_timeout = 60.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        parts = urlsplit(environment.host)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.conversation = Conversation()

    def wait_time(self) -> float:
        assert self.controller is not None, "LLMUser needs LLMUser.controller (run python -m services.loadgen)"
        self.controller.pacer.acquire()
        return 0.0

    def on_start(self) -> None:
        self.wait()  # pace the first request too: a new pool must not fire all at once

    @task
    def chat(self) -> None:
        controller = self.controller
        assert controller is not None and self.metrics is not None
        source = controller.source
        assert isinstance(source, LLMSource)
        planned = source.plan(self.conversation)
        controller.inflight += 1
        try:
            for attempt in range(controller.retry.retries + 1):
                if attempt:
                    self.metrics.retries.inc()
                code, retry_after = self._attempt(planned)
                if code not in RETRYABLE or attempt == controller.retry.retries:
                    break
                delay = controller.retry.delay_s(retry_after)
                if delay:
                    gevent.sleep(delay)
        finally:
            controller.inflight -= 1

    def _attempt(self, planned: Planned) -> tuple[int, str | None]:
        """One HTTP attempt: (status, Retry-After); 0 when no answer came. Records its outcome."""
        controller = self.controller
        metrics = self.metrics
        assert controller is not None and metrics is not None
        body = json.dumps(planned.body).encode()
        started = time.perf_counter()
        conn = http.client.HTTPConnection(*self.address, timeout=self.network_timeout)
        code = 0
        outcome = "error"
        detail = ""
        text: list[str] = []
        try:
            conn.request("POST", CHAT_PATH, body=body, headers={
                "Content-Type": "application/json", "Accept": "text/event-stream",
                "Authorization": f"Bearer {API_KEY}"})
            resp = conn.getresponse()
            code = resp.status
            if code != 200:
                detail = _detail(resp.read(4096))
                outcome = "rate_limited" if code == 429 else "error"
                if code == 400 and planned.history:
                    self.conversation.messages.clear()  # the history overflowed the context: a new chat
                return code, resp.getheader("Retry-After")
            outcome, detail = self._read_stream(resp, planned, started, text)
            if outcome == "ok" and planned.history:
                self.conversation.messages.append({"role": "assistant", "content": "".join(text)})
            return code, None
        except (OSError, http.client.HTTPException) as exc:
            detail = f"{type(exc).__name__}: {exc}"
            return code, None
        finally:
            conn.close()
            elapsed = time.perf_counter() - started
            metrics.requests.labels(outcome).inc()
            controller.record(code)
            self.environment.events.request.fire(
                request_type="POST", name=f"{CHAT_PATH} [{planned.profile}]",
                response_time=elapsed * 1000.0, response_length=sum(len(t) for t in text),
                exception=None if outcome in ("ok", "abandoned") else RuntimeError(detail or f"HTTP {code}"),
                context={}, url=CHAT_PATH, response=None)

    def _read_stream(self, resp: http.client.HTTPResponse, planned: Planned, started: float,
                     text: list[str]) -> tuple[str, str]:
        """Read SSE lines until [DONE]; (outcome, detail). Hangs up after `abandon_after_tokens` chunks."""
        metrics = self.metrics
        assert metrics is not None
        chunks = 0
        usage_tokens: int | None = None
        last: float | None = None
        while True:
            line = resp.readline()
            if not line:
                return "error", "stream ended without [DONE]"
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                metrics.e2e.observe(time.perf_counter() - started)
                metrics.output_tokens.inc(usage_tokens if usage_tokens is not None else chunks)
                return "ok", ""
            try:
                event = json.loads(data)
            except ValueError:
                return "error", f"not JSON in the stream: {data[:80]!r}"
            if "error" in event:
                metrics.output_tokens.inc(chunks)
                return "error", str(event["error"].get("message", event["error"]))[:200]
            if event.get("usage"):
                usage_tokens = int(event["usage"].get("completion_tokens") or 0)
            for choice in event.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if not content:
                    continue
                now = time.perf_counter()
                if last is None:
                    metrics.ttft.observe(now - started)
                else:
                    metrics.itl.observe(now - last)
                last = now
                chunks += 1
                text.append(content)
                if planned.abandon_after_tokens is not None and chunks >= planned.abandon_after_tokens:
                    metrics.output_tokens.inc(chunks)
                    return "abandoned", ""


def _detail(raw: bytes) -> str:
    try:
        body = json.loads(raw)
        err = body.get("error") or body
        return str(err.get("message") or err.get("detail") or body)[:200]
    except (ValueError, AttributeError):
        return raw[:200].decode(errors="replace")
