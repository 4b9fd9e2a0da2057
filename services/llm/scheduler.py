"""Iteration-level (continuous-batching) scheduler: which sequences run in the next model step, and how much.

Every step spends a token budget (`max_num_batched_tokens`) over at most `max_num_seqs` running sequences:
1. running sequences first, oldest first: a decode takes 1 token (1 + k when speculating), an unfinished
   prefill takes what is left of it (a chunk of the remaining budget with chunked prefill; whole otherwise);
   when the block manager cannot hold the new tokens, the newest running sequence is preempted by recompute
   (blocks freed, `num_computed` = 0, back to the front of the waiting queue) until it can;
2. then waiting sequences, first come first served, while budget, seats and blocks last (never by preempting:
   a step that preempted admits nobody). A waiting sequence first shares the prefix-cached blocks of its
   prompt.
Without chunked prefill the scheduler does what vLLM's did before chunking (V0's default): waiting prompts go
first, each whole, in a step of prefills only (the first even beyond the budget, the next ones while the budget
lasts), and the running decodes wait for that step: a long prompt's arrival stalls every stream for as long as
its prefill takes. `max_num_batched_tokens` bounds how many prompts share one such step.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from services.llm.blocks import BlockManager
from services.llm.sequence import Sequence, Status


@dataclass
class SchedulerConfig:
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 128
    enable_chunked_prefill: bool = True
    num_speculative_tokens: int = 0  # 0: no speculation this step
    n_ctx: int = 256


@dataclass
class Scheduled:
    seq: Sequence
    num_tokens: int  # tokens fed this step, speculative proposals included
    spec: int  # speculative proposals among them (decode only)


class Scheduler:
    def __init__(self, blocks: BlockManager, config: SchedulerConfig) -> None:
        self.blocks = blocks
        self.config = config
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def remove(self, seq: Sequence) -> None:
        """Take seq out of the queues and free its blocks (finish or abort)."""
        if seq in self.running:
            self.running.remove(seq)
        else:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        self.blocks.free(seq)

    def preempt(self, seq: Sequence) -> None:
        self.blocks.free(seq)
        seq.num_computed = 0
        seq.draft_computed = 0
        seq.status = Status.WAITING
        seq.preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def preempt_all(self) -> None:
        """Every running sequence back to waiting (a cache rebuild); they are recomputed when rescheduled."""
        for seq in reversed(self.running):
            self.preempt(seq)
        self.running.clear()

    def _admit(self, n: int) -> Scheduled:
        """The head of the waiting queue starts running, fed n tokens this step."""
        seq = self.waiting.popleft()
        seq.status = Status.RUNNING
        if seq.first_scheduled is None:
            seq.first_scheduled = time.monotonic()
        self.running.append(seq)
        return Scheduled(seq, n, 0)

    def _lend_prefix(self, seq: Sequence) -> None:
        """A waiting sequence shares the prefix-cached blocks of its prompt (not with prompt logprobs: those need
        every prompt position computed); at least the last token is computed again: its logits give the next."""
        if seq.num_computed == 0 and not seq.block_table and not seq.params.prompt_logprobs:
            seq.num_computed = self.blocks.allocate_prefix(seq, seq.tokens, len(seq.tokens) - 1)

    def _release(self, seq: Sequence) -> None:
        """A waiting sequence that is not admitted this step gives back the prefix-cache blocks it was just lent (they
        stay cached, so it hits them again next time): waiting sequences hold no blocks. Otherwise a few of them,
        each left holding its shared prefix as preemptions push it back down the queue, can pin a small cache with
        nothing running, and the replica stops for good."""
        if seq.block_table:
            self.blocks.free(seq)
            seq.num_computed = 0

    def _spec_tokens(self, seq: Sequence) -> int:
        k = self.config.num_speculative_tokens
        if k <= 0 or not seq.params.greedy or seq.params.logprobs is not None:
            return 0
        room = min(seq.params.max_tokens - seq.num_output - 1, self.config.n_ctx - len(seq.tokens))
        return max(0, min(k, room))

    def _prefills_first(self) -> list[Scheduled]:
        """Without chunked prefill: the waiting prompts that fit, whole, in a step of their own."""
        cfg = self.config
        budget = cfg.max_num_batched_tokens
        out: list[Scheduled] = []
        while self.waiting and len(self.running) < cfg.max_num_seqs:
            seq = self.waiting[0]
            self._lend_prefix(seq)
            n = len(seq.tokens) - seq.num_computed
            if out and n > budget:
                self._release(seq)
                break
            if not self.blocks.ensure(seq, seq.num_computed + n):
                self._release(seq)
                break
            out.append(self._admit(n))
            budget -= n
        return out

    def schedule(self) -> list[Scheduled]:
        cfg = self.config
        if not cfg.enable_chunked_prefill and self.waiting:
            first = self._prefills_first()
            if first:
                return first
        budget = cfg.max_num_batched_tokens
        out: list[Scheduled] = []
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            remaining = len(seq.tokens) - seq.num_computed
            spec = 0
            if remaining == 1:
                spec = min(self._spec_tokens(seq), budget - 1)
                n = 1 + spec
            elif cfg.enable_chunked_prefill:
                n = min(remaining, budget)
            elif remaining <= budget or not out:
                n = remaining
            else:
                i += 1
                continue
            victim: Sequence | None = None
            while not self.blocks.ensure(seq, seq.num_computed + n):
                victim = self.running.pop()
                self.preempt(victim)
                preempted = True
                if victim is seq:
                    break
            if victim is seq:
                break
            out.append(Scheduled(seq, n, spec))
            budget -= n
            i += 1
        if preempted:
            return out
        while self.waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
            seq = self.waiting[0]
            self._lend_prefix(seq)
            remaining = len(seq.tokens) - seq.num_computed
            if remaining > budget:
                if cfg.enable_chunked_prefill:
                    n = budget
                elif out:
                    self._release(seq)
                    break
                else:
                    n = remaining
            else:
                n = remaining
            if not self.blocks.ensure(seq, seq.num_computed + n):
                self._release(seq)
                break
            out.append(self._admit(n))
            budget -= n
        return out
