"""The engine: the scheduler → worker loop, streaming results to request handles.

The replica runs it as a task of its event loop (`start_on`: one thread for HTTP and the model, no GIL handoffs);
`start` runs the same loop on a thread of its own (direct users, the tests' harnesses). Requests arrive through a
thread-safe inbox (`add`, `abort`); each turn the engine drains the inbox, applies the live config (a KV-cache
shape change rebuilds the cache after preempting every running request), schedules, runs the worker, appends the
new tokens, detokenises incrementally, applies stop conditions (EOS, stop strings, max_tokens, the context) and
hands each request a `Delta` through its `emit` callback. Deltas are collected during a step and handed over
together to `deliver` (the app's writes each stream's chunk to its connection). A finished or aborted request's
blocks are freed at once. With nothing to do the engine waits for a wake-up (an event, or the loop's).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from services.llm import kernels, metrics
from services.llm.artifacts import LoadedLLM
from services.llm.blocks import BlockManager
from services.llm.config import LLMConfig
from services.llm.model import KVCache
from services.llm.scheduler import Scheduler, SchedulerConfig
from services.llm.sequence import Delta, Emit, SamplingParams, Sequence, Status
from services.llm.worker import Worker

log = logging.getLogger("llm.engine")
TOP_LOGPROBS_MAX = 5


class QueueFull(Exception):
    pass


_KEEP: Any = object()  # set_config's draft: leave the draft as it is


def _call_each(items: list[tuple[Emit, Delta]]) -> None:
    for emit, delta in items:
        emit(delta)


class Engine:
    def __init__(self, target: LoadedLLM, draft: LoadedLLM | None, config: LLMConfig) -> None:
        self.target, self.draft = target, draft
        self.tok = target.tokenizer
        self.n_ctx = target.model.cfg.n_ctx
        self.config = config
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stop = False
        self._ids = itertools.count(1)
        self.pending = 0  # added but not yet taken by the engine thread (counts against max_queue)
        self._pending_lock = threading.Lock()  # += from the event loop, -= from the engine thread
        self._applied = threading.Condition()  # set_config waits on it until the engine thread applied the change
        self._config_gen = 0
        self._applied_gen = 0
        self._seen_gen = -1  # the config generation the loop last applied (-1: none yet, so the first applies)
        self._next_draft: LoadedLLM | None = _KEEP  # a draft swap (config `speculative_draft`) to apply
        self.config_error: str | None = None
        self.by_id: dict[str, Sequence] = {}
        self._outbox: list[tuple[Emit, Delta]] = []
        # how a step's deltas reach their requests; default: call each emit on the engine thread
        self.deliver: Callable[[list[tuple[Emit, Delta]]], None] = _call_each
        self._build(config)
        self._running = False
        # the event loop that drives the engine (start_on: the replica's; start: one on a thread of its own)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------------ set-up
    def _build(self, cfg: LLMConfig) -> None:
        # the caches first: a size the machine cannot hold raises here, before anything was replaced
        loaded = kernels.load()
        kernel = loaded.paged_attention if loaded is not None else None
        cache = KVCache(self.target.model.cfg, cfg.num_kv_blocks, cfg.block_size, kernel)
        draft_model = draft_cache = None
        if self.draft is not None:
            draft_model = self.draft.model
            draft_cache = KVCache(draft_model.cfg, cfg.num_kv_blocks, cfg.block_size, kernel)
        self.blocks = BlockManager(cfg.num_kv_blocks, cfg.block_size, cfg.enable_prefix_caching)
        self.worker = Worker(self.target.model, cache, draft_model, draft_cache)
        old = getattr(self, "scheduler", None)
        self.scheduler = Scheduler(self.blocks, SchedulerConfig(n_ctx=self.n_ctx))
        if old is not None:
            self.scheduler.waiting = old.waiting
            self.scheduler.num_preemptions = old.num_preemptions
        self._shape = (cfg.num_kv_blocks, cfg.block_size)
        self._active = cfg
        metrics.KV_BLOCKS_TOTAL.set(cfg.num_kv_blocks)
        metrics.KV_CACHE_BYTES.set(cache.nbytes + (draft_cache.nbytes if draft_cache is not None else 0))

    def start(self) -> None:
        """Run the engine on a thread of its own, driving an event loop of its own (direct users): the same loop
        as start_on's, the deliveries made on that thread."""
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="llm-engine", daemon=True).start()
        self.start_on(loop)

    def start_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the engine as a task of `loop` (the replica's event loop), not on a thread of its own: one thread
        then runs a step, delivers its tokens, serves what arrived meanwhile, and steps again. Two threads sharing
        the GIL interleave worse: every torch operator releases it, and the event loop's Python, taking it then,
        held the engine back (a busy Python thread slowed a bare decode loop 2.7x; behind HTTP the replica ran at
        half the engine's own speed). Callable from any thread."""
        self._loop = loop
        self._running = True

        def begin() -> None:
            self._loop_thread = threading.get_ident()
            self._task = loop.create_task(self._run())

        loop.call_soon_threadsafe(begin)

    def stop(self) -> None:
        self._stop = True
        self._notify()

    def _notify(self) -> None:
        """Wake the engine (a request, an abort, a config change), from any thread."""
        loop = self._loop
        if loop is not None:
            if threading.get_ident() == self._loop_thread:
                self._wake.set()
            else:
                loop.call_soon_threadsafe(self._wake.set)

    def set_config(self, cfg: LLMConfig, timeout: float = 10.0, draft: LoadedLLM | None = _KEEP) -> str | None:
        """Hand the engine a new config (and a new draft model, or None for none) and wait until its thread has
        applied it (at most one step): a PATCH answers once the change is in force. An error message if it could
        not be applied (the engine keeps its previous config), None otherwise."""
        with self._applied:
            self.config = cfg
            self._next_draft = draft
            self.config_error = None
            self._config_gen += 1
            gen = self._config_gen
        if self._loop is not None and threading.get_ident() == self._loop_thread:
            self._apply_pending()  # the engine's own thread, between two steps: applied now
            return self.config_error
        self._notify()
        with self._applied:
            if not self._running:
                return None  # not started yet: applied when it starts
            if not self._applied.wait_for(lambda: self._applied_gen >= gen, timeout):
                log.warning("config not applied within %.0fs (a long engine step)", timeout)
            return self.config_error

    # ------------------------------------------------------------------------------------------ requests
    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def add(self, request_id: str, prompt: list[int], params: SamplingParams, emit: Emit) -> Sequence:
        waiting = self.pending + len(self.scheduler.waiting)
        if waiting >= self.config.max_queue:
            metrics.REJECTED.labels(reason="queue_full").inc()
            raise QueueFull(f"{waiting} requests waiting (max_queue {self.config.max_queue})")
        seq = Sequence(request_id, prompt, params, emit)
        if self.tok.byte_map is not None:  # a permuted tokenizer (registry v2) decodes through its own map
            seq.decoder = self.tok.stream_decoder()
        with self._pending_lock:
            self.pending += 1
        self._inbox.put(("add", seq))
        self._notify()
        return seq

    def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))
        self._notify()

    def stats(self) -> dict[str, Any]:
        b = self.blocks
        return {"running": len(self.scheduler.running), "waiting": len(self.scheduler.waiting) + self.pending,
                "kv_blocks_total": b.num_blocks, "kv_blocks_used": b.used, "kv_cache_usage_perc": b.usage,
                "block_size": b.block_size, "num_preemptions": self.scheduler.num_preemptions,
                "prefix_cache_queries": b.queries, "prefix_cache_hits": b.hits,
                "kernels": kernels.backend()}

    # ------------------------------------------------------------------------------------------ the loop
    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                with self._pending_lock:
                    self.pending -= 1
                seq: Sequence = item
                self.by_id[seq.request_id] = seq
                if seq.params.max_tokens == 0 and not seq.params.prompt_logprobs:
                    self._finish(seq, "length")
                else:
                    self.scheduler.add(seq)
            else:
                found = self.by_id.get(item)
                if found is not None:
                    self._finish(found, "abort")

    def _apply_config(self) -> None:
        cfg = self.config
        old_draft, new_draft = self.draft, self._next_draft
        self._next_draft = _KEEP
        if new_draft is not _KEEP:
            self.draft = new_draft  # its cache is built below, with the target's
        if (cfg.num_kv_blocks, cfg.block_size) != self._shape or new_draft is not _KEEP:
            log.info("kv cache rebuild num_kv_blocks=%d block_size=%d running=%d", cfg.num_kv_blocks,
                     cfg.block_size, len(self.scheduler.running))
            old_blocks = self.blocks
            self.scheduler.preempt_all()
            for seq in self.scheduler.waiting:
                old_blocks.free(seq)
                seq.num_computed = 0
                seq.draft_computed = 0
            try:
                self._build(cfg)
            except (MemoryError, RuntimeError) as exc:  # the old cache keeps serving; the PATCH is refused
                self.config = cfg = self._active
                self.draft = old_draft
                self.config_error = f"cannot allocate a KV cache of {self.config.num_kv_blocks} blocks: {exc}"
                log.error("kv cache rebuild failed error=%s", exc)
        self._active = cfg
        self.blocks.enable_prefix_caching = cfg.enable_prefix_caching
        sc = self.scheduler.config
        sc.max_num_seqs = cfg.max_num_seqs
        sc.max_num_batched_tokens = cfg.max_num_batched_tokens
        sc.enable_chunked_prefill = cfg.enable_chunked_prefill
        sc.num_speculative_tokens = cfg.num_speculative_tokens if cfg.speculative_enabled and self.draft else 0
        torch.set_num_threads(cfg.torch_threads)

    def _apply_pending(self) -> None:
        """Apply a config change handed over by set_config, if one came (once: applying it every iteration,
        torch.set_num_threads among it, cost ~1 % of the server's CPU under load)."""
        with self._applied:
            gen = self._config_gen
        if gen != self._seen_gen:
            self._apply_config()
            self._seen_gen = gen
            with self._applied:
                self._applied_gen = gen
                self._applied.notify_all()

    def _guarded_step(self) -> None:
        try:
            self.step()
        except Exception:  # a bug must not kill the engine silently: fail the requests, keep serving
            log.exception("engine step failed; aborting running requests")
            for seq in list(self.scheduler.running):
                self._finish(seq, "abort", error="internal engine error")

    async def _run(self) -> None:
        """The engine as a task of its event loop: a step, then one turn of the loop."""
        while not self._stop:
            try:
                await self._turn()
            except Exception:  # a bug outside a step (inbox, config) must not end the task: log it, go on
                log.exception("engine turn failed")
                await asyncio.sleep(0.01)

    async def _turn(self) -> None:
        self._drain_inbox()
        self._apply_pending()
        if not self.scheduler.has_work():
            self._publish()
            self._wake.clear()
            if not self._inbox.empty():
                return  # arrived between the drain and the clear
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)
            return
        if self.config.step_delay_ms:  # a slow accelerator: the loop serves others meanwhile
            await asyncio.sleep(self.config.step_delay_ms / 1000)
        self._guarded_step()
        await asyncio.sleep(0)  # one turn of the loop: deliveries written, new requests read

    def step(self) -> None:
        before = self.scheduler.num_preemptions
        q0, h0 = self.blocks.queries, self.blocks.hits
        scheduled = self.scheduler.schedule()
        if self.scheduler.num_preemptions > before:
            n = self.scheduler.num_preemptions - before
            metrics.PREEMPTIONS.inc(n)
            log.warning("preempted n=%d reason=kv_cache_full kv_blocks=%d", n, self.blocks.num_blocks)
        metrics.PREFIX_QUERIES.inc(self.blocks.queries - q0)
        metrics.PREFIX_HITS.inc(self.blocks.hits - h0)
        if not scheduled:
            self._unschedulable()
            self._publish()
            return
        result = self.worker.step(scheduled)
        metrics.STEPS.inc()
        if result.drafted:
            metrics.SPEC_DRAFTS.inc(sum(1 for s in scheduled if s.spec))
            metrics.SPEC_DRAFT_TOKENS.inc(result.drafted)
            metrics.SPEC_ACCEPTED.inc(result.accepted)
        now = time.monotonic()
        generated = 0
        for s, new, rows, prompt_rows in zip(scheduled, result.new_tokens, result.logprob_rows,
                                             result.prompt_rows, strict=True):
            seq = s.seq
            if seq.status is Status.FINISHED:
                continue
            if prompt_rows is not None:
                self._prompt_logprobs(seq, *prompt_rows)
            if not new:
                if seq.num_computed >= len(seq.tokens) and seq.num_output >= seq.params.max_tokens:
                    self._finish(seq, "length")
                continue
            generated += self._append(seq, new, rows, result.logits, now)
            if seq.status is not Status.FINISHED:
                self.blocks.commit(seq, seq.tokens, seq.num_computed)
        if generated:
            metrics.GENERATION_TOKENS.inc(generated)  # once per step, not once per request per step
        self._publish()

    def _unschedulable(self) -> None:
        """Nothing could run: a waiting request larger than the whole cache (after a shrink) is aborted."""
        if self.scheduler.running or not self.scheduler.waiting:
            return
        seq = self.scheduler.waiting[0]
        need = self.blocks.blocks_for(len(seq.tokens) + 1)
        if need > self.blocks.num_blocks:
            self._finish(seq, "abort", error=f"request needs {need} KV blocks; the cache has {self.blocks.num_blocks}")

    def _publish(self) -> None:
        self._flush()
        metrics.RUNNING.set(len(self.scheduler.running))
        metrics.WAITING.set(len(self.scheduler.waiting) + self.pending)
        metrics.KV_USAGE.set(self.blocks.usage)
        metrics.KV_BLOCKS_USED.set(self.blocks.used)

    # ------------------------------------------------------------------------------------------ outputs
    def _prompt_logprobs(self, seq: Sequence, logits: torch.Tensor, targets: list[int]) -> None:
        if len(seq.prompt_lps) >= len(seq.prompt) - 1 or not targets:
            return  # recomputed after a preemption: already collected
        lps = torch.log_softmax(logits.float(), dim=-1)
        for row, tok in zip(lps, targets, strict=True):
            seq.prompt_lps.append(self._lp_entry(row, tok, seq.params.logprobs or 0))

    def _lp_entry(self, lps: torch.Tensor, token: int, top_n: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"token": token, "logprob": float(lps[token])}
        if top_n:
            vals, idx = lps.topk(min(top_n, TOP_LOGPROBS_MAX))
            entry["top"] = [(int(i), float(v)) for v, i in zip(vals, idx, strict=True)]
        return entry

    def _append(self, seq: Sequence, new: list[int], rows: list[int], logits: torch.Tensor | None,
                now: float) -> int:
        """Append a step's new tokens to seq (stop conditions applied); the number of output tokens appended."""
        p = seq.params
        if seq.first_token is None:
            seq.first_token = now
            metrics.TTFT.observe(now - seq.arrival)
        elif seq.last_token is not None:
            metrics.ITL.observe(now - seq.last_token)
        seq.last_token = now
        finish: str | None = None
        appended = 0
        for tok, row in zip(new, rows, strict=True):
            if tok == self.tok.eos_id:
                finish = "stop"
                break
            seq.tokens.append(tok)
            appended += 1
            if p.logprobs is not None and logits is not None:
                lps = torch.log_softmax(logits[row].float(), -1)
                seq.out_logprobs.append(self._lp_entry(lps, tok, p.logprobs))
            seq.text += seq.decoder.feed([tok])
            if p.stop:
                hit = self._find_stop(seq)
                if hit is not None:
                    seq.text = seq.text[:hit]
                    finish = "stop"
                    break
            if seq.num_output >= p.max_tokens or len(seq.tokens) >= self.n_ctx:
                finish = "length"
                break
        if finish is not None:
            self._finish(seq, finish)
        else:
            self._emit(seq, None)
        return appended

    @staticmethod
    def _find_stop(seq: Sequence) -> int | None:
        longest = max(len(s) for s in seq.params.stop)
        window_start = max(0, len(seq.text) - longest - 4)
        hits = [i for s in seq.params.stop if (i := seq.text.find(s, window_start)) >= 0]
        return min(hits) if hits else None

    def _emit(self, seq: Sequence, finish: str | None, error: str | None = None) -> None:
        interval = self._active.stream_interval
        if finish is None and interval > 1 and seq.sent_tokens and seq.num_output - seq.sent_tokens < interval:
            return  # buffered (vLLM's stream interval): the first delta went at once, the finish always goes
        if finish is None and seq.params.stop:
            # hold back what could still become a stop string
            upto = max(seq.emitted, len(seq.text) - (max(len(s) for s in seq.params.stop) - 1))
        else:
            upto = len(seq.text)
        text = seq.text[seq.emitted:upto]
        seq.emitted = upto
        lps = seq.out_logprobs[seq.sent_logprobs:]
        seq.sent_logprobs = len(seq.out_logprobs)
        delta = Delta(text=text, token_ids=[], logprobs=lps, finish_reason=finish, error=error)
        if finish is not None:
            delta.usage = {"prompt_tokens": len(seq.prompt), "completion_tokens": seq.num_output,
                           "total_tokens": len(seq.prompt) + seq.num_output}
            if seq.params.prompt_logprobs:
                delta.prompt_logprobs = seq.prompt_lps
        if text or lps or finish is not None:
            seq.sent_tokens = seq.num_output
            self._outbox.append((seq.emit, delta))

    def _flush(self) -> None:
        if not self._outbox:
            return
        items, self._outbox = self._outbox, []
        try:
            self.deliver(items)
        except Exception:  # the requests' loop is gone (server shutting down): nothing to tell
            log.debug("delivery failed n=%d", len(items))

    def _finish(self, seq: Sequence, reason: str, error: str | None = None) -> None:
        if seq.status is Status.FINISHED:
            return
        self.scheduler.remove(seq)
        seq.status = Status.FINISHED
        seq.finish_reason = reason
        self.by_id.pop(seq.request_id, None)
        if reason != "abort":
            seq.text += seq.decoder.flush()
        now = time.monotonic()
        metrics.SUCCESS.labels(finished_reason=reason).inc()
        metrics.E2E.observe(now - seq.arrival)
        metrics.PROMPT_TOKENS.inc(len(seq.prompt))
        metrics.REQUEST_GENERATION_TOKENS.observe(seq.num_output)
        if seq.first_scheduled is not None:
            metrics.QUEUE_TIME.observe(seq.first_scheduled - seq.arrival)
        ttft = f"{(seq.first_token - seq.arrival) * 1000:.1f}" if seq.first_token is not None else "-"
        log.info("request id=%s finish=%s prompt_tokens=%d completion_tokens=%d ttft_ms=%s e2e_ms=%.1f "
                 "preemptions=%d%s", seq.request_id, reason, len(seq.prompt), seq.num_output, ttft,
                 (now - seq.arrival) * 1000, seq.preemptions, f" error={error!r}" if error else "")
        self._emit(seq, reason, error)
