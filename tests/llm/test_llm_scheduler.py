"""The scheduler and block manager alone (pure classes, no model): a KV cache far too small for the load keeps
making progress — every request finishes — and a waiting request never sits on blocks while nothing runs."""

from __future__ import annotations

import random

import pytest

from services.llm.blocks import BlockManager
from services.llm.scheduler import Scheduler, SchedulerConfig
from services.llm.sequence import SamplingParams, Sequence, Status


def simulate(num_blocks: int, requests: int, chunked: bool, seed: int) -> tuple[int, int, list[str]]:
    """Drive the scheduler as the engine does (tokens computed, one generated per finished prefill or decode,
    full blocks committed to the prefix cache, finished requests removed) with chats sharing a system prompt.
    (Steps taken, requests aborted as larger than the cache, requests left unfinished.)"""
    rng = random.Random(seed)
    blocks = BlockManager(num_blocks, 16)
    sched = Scheduler(blocks, SchedulerConfig(max_num_seqs=32, max_num_batched_tokens=128,
                                              enable_chunked_prefill=chunked, n_ctx=256))
    system = [rng.randrange(256) for _ in range(48)]  # three full blocks every prompt shares
    pending = [Sequence(f"r{i}", system + [rng.randrange(256) for _ in range(rng.randrange(4, 40))],
                        SamplingParams(max_tokens=rng.randrange(8, 40)), lambda d: None) for i in range(requests)]
    live: list[Sequence] = []
    steps = aborted = 0
    while (pending or live) and steps < 20_000:
        steps += 1
        for _ in range(rng.randrange(0, 3)):  # arrivals
            if pending:
                seq = pending.pop()
                sched.add(seq)
                live.append(seq)
        scheduled = sched.schedule()
        if not scheduled and not sched.running and sched.waiting:
            head = sched.waiting[0]  # as the engine does: a request larger than the whole cache is aborted
            if blocks.blocks_for(len(head.tokens) + 1) > blocks.num_blocks:
                sched.remove(head)
                live.remove(head)
                aborted += 1
        for s in scheduled:
            seq = s.seq
            seq.num_computed += s.num_tokens
            if seq.num_computed >= len(seq.tokens):
                seq.tokens.append(rng.randrange(256))
                blocks.commit(seq, seq.tokens, seq.num_computed)
                if seq.num_output >= seq.params.max_tokens:
                    sched.remove(seq)
                    seq.status = Status.FINISHED
                    live.remove(seq)
        if not sched.running:
            held = [seq.request_id for seq in sched.waiting if seq.block_table]
            assert not held, f"step {steps}: nothing runs while waiting requests hold blocks: {held}"
    return steps, aborted, [seq.request_id for seq in live + pending]


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("num_blocks", [6, 8, 12, 24])
def test_a_tiny_kv_cache_still_finishes_every_request(num_blocks: int, chunked: bool) -> None:
    steps, aborted, unfinished = simulate(num_blocks, requests=120, chunked=chunked, seed=num_blocks)
    assert not unfinished, f"{len(unfinished)} requests never finished after {steps} steps"
    if num_blocks >= 12:  # 192 tokens: every chat here fits alone, so none is given up
        assert aborted == 0
