"""Dynamic batching on the event loop, with a bounded queue that refuses work early.

Requests append their already-validated rows to one queue and await a future. A single batcher task takes
rows from the front until `max_batch_size` rows are there or `max_wait_ms` has passed since the oldest
request arrived, scores them (grouped by model version) and resolves the futures. The model runs inline on
the loop (the default: a batch of this small net takes well under a millisecond, and it keeps a replica to one
core) or on one worker thread (`compute_thread`: the loop keeps parsing requests meanwhile, torch releases the
GIL). Batches never overlap, so a slow model (the `slow` variant's delay) lowers throughput exactly like a slow
net would.

When admitting a request would push the queued rows past `max_queue`, `submit` raises QueueFull at once: the
caller answers 503 + Retry-After instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from services.modelserver import metrics
from services.modelserver.config import ModelServerConfig
from services.modelserver.runtime import LoadedModel
from services.trainer.transform import Encoded

log = logging.getLogger("modelserver.batcher")


class QueueFull(Exception):
    pass


@dataclass(slots=True)
class Result:
    scores: list[float]
    queue_ms: float
    compute_ms: float


@dataclass(slots=True)
class Pending:
    model: LoadedModel
    rows: Encoded
    future: asyncio.Future
    enqueued: float


class Batcher:
    def __init__(self, config: Callable[[], ModelServerConfig], executor: ThreadPoolExecutor) -> None:
        self._config = config
        self._executor = executor
        self._queue: deque[Pending] = deque()
        self.queued_rows = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def submit(self, model: LoadedModel, rows: Encoded) -> asyncio.Future:
        n = len(rows)
        if self.queued_rows and self.queued_rows + n > self._config().max_queue:
            raise QueueFull
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append(Pending(model, rows, fut, time.perf_counter()))
        self.queued_rows += n
        self._wakeup.set()
        return fut

    async def _run(self) -> None:
        while True:
            try:
                await self._next_batch()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill batching for good: log it, fail that batch, carry on
                log.exception("batch failed")

    async def _next_batch(self) -> None:
        queue = self._queue
        while not queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        cfg = self._config()
        deadline = queue[0].enqueued + cfg.max_wait_ms / 1000.0
        remaining = deadline - time.perf_counter()
        if self.queued_rows < cfg.max_batch_size and remaining > 0:
            # one timer per batch that sets the same event a request sets: asyncio.wait_for would make a task
            # and a timeout context per batch (py-spy, docs/benchmarks.md). The timer's own flag ends the wait:
            # the loop's clock (uvloop: milliseconds) may fire it a hair before perf_counter passes the deadline
            expired = False

            def expire() -> None:
                nonlocal expired
                expired = True
                self._wakeup.set()

            timer = asyncio.get_running_loop().call_later(remaining, expire)
            try:
                while self.queued_rows < cfg.max_batch_size and not expired:
                    self._wakeup.clear()
                    await self._wakeup.wait()
            finally:
                timer.cancel()
        batch: list[Pending] = []
        rows = 0
        while queue and (not batch or rows + len(queue[0].rows) <= cfg.max_batch_size):
            item = queue.popleft()
            rows += len(item.rows)
            batch.append(item)
        self.queued_rows -= rows
        live = [p for p in batch if not p.future.done()]  # a client that went away needs no answer
        if not live:
            return
        groups: dict[int, list[Pending]] = {}
        for p in live:
            groups.setdefault(id(p.model), []).append(p)
        for group in groups.values():
            await self._score(group, cfg)

    async def _score(self, group: list[Pending], cfg: ModelServerConfig) -> None:
        model = group[0].model
        started = time.perf_counter()
        num = np.array([r for p in group for r in p.rows.num], dtype=np.float64)
        cat = np.array([r for p in group for r in p.rows.cat], dtype=np.int64)
        foreign = np.array([f for p in group for f in p.rows.foreign], dtype=bool)
        try:
            if cfg.compute_thread:
                loop = asyncio.get_running_loop()
                scores = await loop.run_in_executor(
                    self._executor, _compute, model, num, cat, foreign, cfg.torch_threads
                )
            else:
                scores = _compute(model, num, cat, foreign, cfg.torch_threads)
            if model.delay_ms > 0:
                await asyncio.sleep(model.delay_ms / 1000.0)
        except Exception as exc:
            log.exception("model %s failed on a batch of %d rows", model.version, len(num))
            for p in group:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        done = time.perf_counter()
        compute_s = done - started
        compute_ms = round(compute_s * 1000.0, 3)
        values = scores.tolist()
        waits = []
        offset = 0
        for p in group:
            n = len(p.rows)
            queue_s = started - p.enqueued
            waits.append(queue_s)
            if not p.future.done():
                p.future.set_result(Result(values[offset : offset + n], round(queue_s * 1000.0, 3), compute_ms))
            offset += n
        # counted once per batch, added to prometheus at scrape time (metrics.Tally)
        metrics.TALLY.batch(model.version, compute_s, waits, values, num, cat, model.vocab_sizes)


_thread_state = threading.local()


def _compute(model: LoadedModel, num: np.ndarray, cat: np.ndarray, foreign: np.ndarray, threads: int) -> np.ndarray:
    # torch's intra-op thread count lives in a per-thread OpenMP setting: set it on the thread that computes,
    # or that thread keeps the default (one per core) and an idle OpenMP worker spins at ~50% of a core
    if getattr(_thread_state, "torch_threads", None) != threads:
        import torch

        torch.set_num_threads(threads)
        _thread_state.torch_threads = threads
    return model.scores(model.preprocessor.matrix(num, cat, foreign))
