"""The worker: runs the target (and draft) model on one scheduled batch and samples the next tokens.

`build_batch` turns a list of per-sequence runs (new tokens from position `start`, the sequence's block table,
which rows need logits) into the flattened tensors of `model.PagedBatch`. `Worker.step` runs one engine
iteration:
1. speculative decoding, for greedy decode sequences scheduled with k > 0 proposals: the draft model (its own
   paged cache, same block tables) first catches up on the tokens it has not seen, then proposes k tokens one
   batched step at a time;
2. one target forward over everything: prefill chunks, single decode tokens, and each speculating sequence's
   last token plus its k proposals;
3. sampling: greedy, or temperature + top-p with a per-request generator; for a speculating sequence the
   proposals are accepted while they equal the target's own greedy choice, then the target's token at the
   first mismatch (or after the last proposal) is added: the output is exactly the target's greedy output.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from services.llm.model import GPT, AttnGroup, KVCache, Lanes, PagedBatch
from services.llm.scheduler import Scheduled
from services.llm.sequence import Sequence


@dataclass
class Run:
    tokens: list[int]
    start: int
    block_table: list[int]
    all_logits: bool
    seq: Sequence | None = None  # whose run: a single-token run of the target keeps its K/V in a dense lane


@dataclass
class StepResult:
    """Per scheduled sequence: tokens to append (maybe none: a prefill chunk), their logprob rows, and
    the prompt log-probabilities computed by this chunk (echo with logprobs)."""

    new_tokens: list[list[int]] = field(default_factory=list)
    logprob_rows: list[list[torch.Tensor]] = field(default_factory=list)
    prompt_rows: list[tuple[torch.Tensor, list[int]] | None] = field(default_factory=list)
    drafted: int = 0
    accepted: int = 0


def _group(runs: list[Run], offsets: list[int], block_size: int) -> AttnGroup:
    q_len = len(runs[0].tokens)
    n_blocks = -(-max(r.start + q_len for r in runs) // block_size)
    rows: list[int] = []
    tables: list[list[int]] = []
    for r, offset in zip(runs, offsets, strict=True):
        rows.extend(range(offset, offset + q_len))
        used = -(-(r.start + q_len) // block_size)
        tables.append(r.block_table[:used] + [0] * (n_blocks - used))
    q_pos = torch.tensor([r.start for r in runs])[:, None] + torch.arange(q_len)[None, :]
    allowed = torch.arange(n_blocks * block_size)[None, None, :] <= q_pos[:, :, None]
    # additive (0 / -inf), built once per step: a boolean mask is converted to this by every layer's attention
    mask = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))
    return AttnGroup(rows=torch.tensor(rows), block_tables=torch.tensor(tables), mask=mask.unsqueeze(1))


def build_batch(runs: list[Run], block_size: int,
                single: Callable[[list[Run]], Lanes] | None = None) -> tuple[PagedBatch, list[slice]]:
    """The flattened batch, and for each run the slice of its logit rows in the output. With `single`, the
    single-token runs attend over dense lanes (`single` assigns them) instead of gathered blocks."""
    tokens: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    logit_index: list[int] = []
    rows: list[slice] = []
    by_len: dict[int, tuple[list[Run], list[int]]] = {}
    for r in runs:
        offset = len(tokens)
        n = len(r.tokens)
        end = r.start + n
        table = r.block_table
        tokens.extend(r.tokens)
        positions.extend(range(r.start, end))
        slots.extend(table[p // block_size] * block_size + p % block_size for p in range(r.start, end))
        group = by_len.setdefault(n, ([], []))
        group[0].append(r)
        group[1].append(offset)
        first = len(logit_index)
        if r.all_logits:
            logit_index.extend(range(offset, offset + n))
        else:
            logit_index.append(offset + n - 1)
        rows.append(slice(first, len(logit_index)))
    groups = []
    for n, (rs, offs) in by_len.items():
        if n == 1 and single is not None:
            empty = torch.empty(0)
            groups.append(AttnGroup(rows=torch.tensor(offs), block_tables=empty, mask=empty, lanes=single(rs)))
        else:
            groups.append(_group(rs, offs, block_size))
    batch = PagedBatch(
        tokens=torch.tensor(tokens), positions=torch.tensor(positions), slots=torch.tensor(slots),
        groups=groups,
        logit_index=torch.tensor(logit_index),
    )
    return batch, rows


def _generator(seq: Sequence) -> torch.Generator:
    if seq.generator is None:
        seq.generator = torch.Generator()
        if seq.params.seed is not None:
            seq.generator.manual_seed(seq.params.seed)
        else:
            seq.generator.seed()
    return seq.generator


def sample_rows(logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
    """One token per row of logits (M, V), temperature + top-p, all rows in a handful of batched ops.

    A request with a `seed` draws its uniform number from its own generator (reproducible whatever else is in
    the batch), the others share one draw from torch's generator; the token is where that number falls in the
    cumulative distribution of the kept mass (the smallest set of most likely tokens whose mass reaches top_p),
    so no per-row softmax, sort or multinomial call is needed.
    """
    temps = torch.tensor([s.params.temperature for s in seqs])
    top_ps = torch.tensor([s.params.top_p for s in seqs])
    probs = torch.softmax(logits / temps[:, None], dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_ps[:, None]
    cdf = (sorted_p * keep).cumsum(-1)
    u = torch.rand(len(seqs))  # requests without a seed: one draw for all of them
    for i, s in enumerate(seqs):
        if s.params.seed is not None:
            u[i] = torch.rand(1, generator=_generator(s))
    u = u * cdf[:, -1]
    idx = torch.searchsorted(cdf, u[:, None], right=True).clamp_(max=logits.shape[-1] - 1)
    return order.gather(1, idx).squeeze(1).tolist()


def sample_token(logits: torch.Tensor, seq: Sequence) -> int:
    p = seq.params
    if p.greedy:
        return int(logits.argmax())
    return sample_rows(logits[None], [seq])[0]


class Worker:
    def __init__(self, model: GPT, cache: KVCache, draft: GPT | None = None, draft_cache: KVCache | None = None):
        self.model, self.cache = model, cache
        self.draft, self.draft_cache = draft, draft_cache
        # dense lanes of the target's cache: id(seq) -> [seq, lane, positions held]; a sequence keeps its lane
        # while it is scheduled with a single token every step, and loses it the first step it is not (finished,
        # aborted, preempted, speculating, or waiting): its next single-token run refills a lane from its blocks
        self._lane_of: dict[int, list] = {}
        self._free_lanes: list[int] = []
        self._num_lanes = 0

    def _assign_lanes(self, runs: list[Run]) -> Lanes:
        present = {id(r.seq) for r in runs}
        for key in [k for k in self._lane_of if k not in present]:
            heapq.heappush(self._free_lanes, self._lane_of.pop(key)[1])
        lanes: list[int] = []
        fills: list[tuple[int, torch.Tensor, int]] = []
        bs = self.block_size
        for r in runs:
            entry = self._lane_of.get(id(r.seq))
            if entry is None:
                if self._free_lanes:
                    lane = heapq.heappop(self._free_lanes)
                else:
                    lane, self._num_lanes = self._num_lanes, self._num_lanes + 1
                entry = self._lane_of[id(r.seq)] = [r.seq, lane, 0]
            if entry[2] != r.start and r.start > 0:  # new to its lane (or the lane is stale): copy its past in
                fills.append((entry[1], torch.tensor(r.block_table[: -(-r.start // bs)]), r.start))
            entry[2] = r.start + 1
            lanes.append(entry[1])
        count = max(lanes) + 1
        self.cache.ensure_lanes(count)
        lane_pos = [0] * count  # a lane of no run here attends its key 0 only (its output is dropped)
        for lane, r in zip(lanes, runs, strict=True):
            lane_pos[lane] = r.start
        length = max(r.start for r in runs) + 1
        allowed = torch.arange(length)[None, :] <= torch.tensor(lane_pos)[:, None]
        mask = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf")).view(count, 1, 1, length)
        return Lanes(lanes=torch.tensor(lanes), positions=torch.tensor([r.start for r in runs]), count=count,
                     length=length, mask=mask, fills=fills, identity=lanes == list(range(count)))

    @property
    def block_size(self) -> int:
        return self.cache.block_size

    def _assign_lanes_none(self) -> None:
        """A step without single-token runs: every lane is given up."""
        self._free_lanes.extend(entry[1] for entry in self._lane_of.values())
        heapq.heapify(self._free_lanes)
        self._lane_of.clear()

    def _propose(self, items: list[Scheduled]) -> list[list[int]]:
        """k greedy draft proposals per speculating sequence (batched across sequences, step by step)."""
        assert self.draft is not None and self.draft_cache is not None
        proposals: list[list[int]] = [[] for _ in items]
        for r in range(max(it.spec for it in items)):
            active = [i for i, it in enumerate(items) if it.spec > r]
            runs = []
            for i in active:
                seq = items[i].seq
                if r == 0:
                    runs.append(Run(seq.tokens[seq.draft_computed:], seq.draft_computed, seq.block_table, False))
                else:
                    runs.append(Run([proposals[i][-1]], len(seq.tokens) - 1 + r, seq.block_table, False))
            batch, rows = build_batch(runs, self.block_size)
            logits = self.draft.forward_paged(batch, self.draft_cache)
            for i, sl in zip(active, rows, strict=True):
                proposals[i].append(int(logits[sl][-1].argmax()))
        for it in items:
            it.seq.draft_computed = len(it.seq.tokens) - 1 + it.spec
        return proposals

    @torch.inference_mode()
    def step(self, scheduled: list[Scheduled]) -> StepResult:
        res = StepResult()
        spec_items = [s for s in scheduled if s.spec > 0]
        proposals = dict(zip((id(s) for s in spec_items), self._propose(spec_items), strict=True)) \
            if spec_items and self.draft is not None else {}
        runs = []
        for s in scheduled:
            seq = s.seq
            if s.spec and id(s) in proposals:
                runs.append(Run([seq.tokens[-1], *proposals[id(s)]], seq.num_computed, seq.block_table, True, seq))
            else:
                toks = seq.tokens[seq.num_computed: seq.num_computed + (s.num_tokens - s.spec)]
                prompt_rows = seq.params.prompt_logprobs and seq.num_computed < len(seq.prompt)
                runs.append(Run(toks, seq.num_computed, seq.block_table, prompt_rows, seq))
        if not any(len(r.tokens) == 1 for r in runs):
            self._assign_lanes_none()
        batch, rows = build_batch(runs, self.block_size, single=self._assign_lanes)
        logits = self.model.forward_paged(batch, self.cache)
        argmax = logits.argmax(-1).tolist()  # every row's greedy token at once
        to_sample: list[tuple[int, int, Sequence]] = []  # (result index, logit row, sequence)
        for s, run, sl in zip(scheduled, runs, rows, strict=True):
            seq = s.seq
            out = logits[sl]
            end = run.start + len(run.tokens)
            # prompt log-probabilities: the logits at position j score token j + 1
            if run.all_logits and not (s.spec and id(s) in proposals):
                targets = seq.tokens[run.start + 1: min(end + 1, len(seq.prompt))]
                res.prompt_rows.append((out[: len(targets)], targets))
            else:
                res.prompt_rows.append(None)
            if s.spec and id(s) in proposals:
                props = proposals[id(s)]
                accepted: list[int] = []
                lp_rows = []
                for j in range(len(props) + 1):
                    g = argmax[sl.start + j]
                    accepted.append(g)
                    lp_rows.append(out[j])
                    if j == len(props) or props[j] != g:
                        break
                res.drafted += len(props)
                res.accepted += len(accepted) - 1
                seq.num_computed = len(seq.tokens) - 1 + len(accepted)
                seq.draft_computed = min(seq.draft_computed, seq.num_computed)
                res.new_tokens.append(accepted)
                res.logprob_rows.append(lp_rows)
                continue
            seq.num_computed = end
            if end < len(seq.tokens) or seq.num_output >= seq.params.max_tokens:
                res.new_tokens.append([])  # a prefill chunk, or echo with max_tokens 0: nothing to sample
                res.logprob_rows.append([])
                continue
            last = out[-1]
            if seq.params.greedy:
                res.new_tokens.append([argmax[sl.stop - 1]])
            else:  # sampled below, all such rows together
                res.new_tokens.append([-1])
                to_sample.append((len(res.new_tokens) - 1, sl.stop - 1, seq))
            res.logprob_rows.append([last])
        if to_sample:
            rows_idx = torch.tensor([r for _, r, _ in to_sample])
            tokens = sample_rows(logits.index_select(0, rows_idx).float(), [q for _, _, q in to_sample])
            for (i, _, _), tok in zip(to_sample, tokens, strict=True):
                res.new_tokens[i] = [tok]
        return res
