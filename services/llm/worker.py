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

import array
from dataclasses import dataclass, field

import torch

from services.llm import kernels
from services.llm.model import GPT, AttnGroup, KVCache, PagedBatch, PagedRuns
from services.llm.scheduler import Scheduled
from services.llm.sequence import Sequence


@dataclass
class Run:
    tokens: list[int]
    start: int
    block_table: list[int]
    all_logits: bool


@dataclass
class StepResult:
    """Per scheduled sequence: tokens to append (maybe none: a prefill chunk), the rows of `logits` that scored
    them (read only by a request that asked for logprobs: no tensor is sliced per sequence per step otherwise),
    and the prompt log-probabilities computed by this chunk (echo with logprobs)."""

    new_tokens: list[list[int]] = field(default_factory=list)
    logprob_rows: list[list[int]] = field(default_factory=list)
    prompt_rows: list[tuple[torch.Tensor, list[int]] | None] = field(default_factory=list)
    logits: torch.Tensor | None = None
    drafted: int = 0
    accepted: int = 0


def _group(runs: list[Run], offsets: list[int], block_size: int) -> AttnGroup:
    q_len = len(runs[0].tokens)
    if q_len > 1 and all(r.start == 0 for r in runs):  # fresh prefills: attention on their own new K/V
        rows = [i for offset in offsets for i in range(offset, offset + q_len)]
        return AttnGroup(rows=torch.tensor(rows), block_tables=torch.empty(len(runs), 0, dtype=torch.long),
                         mask=None, fresh=True)
    n_blocks = -(-max(r.start + q_len for r in runs) // block_size)
    rows: list[int] = []
    tables: list[list[int]] = []
    for r, offset in zip(runs, offsets, strict=True):
        rows.extend(range(offset, offset + q_len))
        used = -(-(r.start + q_len) // block_size)
        tables.append(r.block_table[:used] + [0] * (n_blocks - used))
    starts = torch.tensor([r.start for r in runs])
    q_pos = starts if q_len == 1 else (starts[:, None] + torch.arange(q_len)[None, :]).reshape(-1)
    key_len = n_blocks * block_size
    # additive (0 / -inf), built once per step (a boolean mask is converted to this by every layer's attention):
    # the rows of a causal table, one index_select rather than half a dozen operators per group
    mask = _causal_table(key_len)[:, :key_len].index_select(0, q_pos)  # every query position < key_len
    return AttnGroup(rows=torch.tensor(rows), block_tables=torch.tensor(tables),
                     mask=mask.view(len(runs), 1, q_len, key_len))


_CAUSAL: list[torch.Tensor] = [torch.zeros(0, 0)]


def _causal_table(n: int) -> torch.Tensor:
    """(m, m) with m >= n: row p is 0 at keys 0..p and -inf after (kept; grown to the next multiple of 64, so
    at most n_ctx + block_size rows however a fault sets the block size)."""
    if _CAUSAL[0].shape[0] < n:
        m = -(-n // 64) * 64
        _CAUSAL[0] = torch.zeros(m, m).masked_fill_(torch.ones(m, m, dtype=torch.bool).triu_(1), float("-inf"))
    return _CAUSAL[0]


def _longs(values: list[int]) -> torch.Tensor:
    """An int64 tensor of Python ints: through array.array, ~7x cheaper than torch.tensor(list) for the few
    hundred indices of a step (the tensor keeps the array alive)."""
    return torch.frombuffer(array.array("q", values), dtype=torch.int64) if values else torch.empty(0, dtype=torch.long)


def _floats(values: list[float]) -> torch.Tensor:
    """A float32 tensor of Python floats, the way _longs makes int64 ones."""
    return torch.frombuffer(array.array("f", values), dtype=torch.float32) if values else torch.empty(0)


def build_batch(runs: list[Run], block_size: int, kernel: bool = False) -> tuple[PagedBatch, list[slice]]:
    """The flattened batch, and for each run the slice of its logit rows in the output. With `kernel`, every run is
    attended over the cache by our kernels (one PagedRuns; the whole step in one call where the model allows:
    model.GPT._fused_forward); without, by torch groups (fresh prefills on their own new K/V)."""
    tokens: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    logit_index: list[int] = []
    rows: list[slice] = []
    by_len: dict[tuple[int, bool], tuple[list[Run], list[int]]] = {}  # (new tokens, a fresh prefill)
    paged: list[tuple[Run, int]] = []  # (run, its first row): the kernel's
    for r in runs:
        offset = len(tokens)
        n = len(r.tokens)
        end = r.start + n
        table = r.block_table
        tokens.extend(r.tokens)
        if n == 1:  # a decode: one position, one slot (most runs: no generator, no range)
            positions.append(r.start)
            slots.append(table[r.start // block_size] * block_size + r.start % block_size)
        else:
            positions.extend(range(r.start, end))
            slots.extend(table[p // block_size] * block_size + p % block_size for p in range(r.start, end))
        fresh = n > 1 and r.start == 0
        if kernel:  # fresh prompts too: their K/V are written before any row attends
            paged.append((r, offset))
        else:
            group = by_len.setdefault((n, fresh), ([], []))
            group[0].append(r)
            group[1].append(offset)
        first = len(logit_index)
        if r.all_logits:
            logit_index.extend(range(offset, offset + n))
        else:
            logit_index.append(offset + n - 1)
        rows.append(slice(first, len(logit_index)))
    groups: list[tuple[list[Run], list[int]]] = []
    for (n, _fresh), (rs, offs) in by_len.items():
        groups.extend(_split_by_length(rs, offs, block_size) if n == 1 else [(rs, offs)])
    # the four index vectors as one tensor (one conversion from Python ints, not four), then views of it
    flat = _longs(tokens + positions + slots + logit_index)
    n = len(tokens)
    batch = PagedBatch(
        tokens=flat[:n], positions=flat[n:2 * n], slots=flat[2 * n:3 * n],
        groups=[_group(rs, offs, block_size) for rs, offs in groups], logit_index=flat[3 * n:],
        paged=_paged_runs(paged, block_size) if paged else None,
    )
    return batch, rows


def _paged_runs(runs: list[tuple[Run, int]], block_size: int) -> PagedRuns:
    ends = [r.start + len(r.tokens) for r, _ in runs]
    nb = -(-max(ends) // block_size)
    tables: list[int] = []
    for (r, _), end in zip(runs, ends, strict=True):
        used = r.block_table[: -(-end // block_size)]
        tables.extend(used)
        tables.extend([0] * (nb - len(used)))
    s = len(runs)
    flat = _longs([off for _, off in runs] + [len(r.tokens) for r, _ in runs] + [r.start for r, _ in runs]
                  + tables)
    return PagedRuns(row0=flat[:s], nq=flat[s:2 * s], start=flat[2 * s:3 * s], tables=flat[3 * s:].view(s, nb),
                     max_keys=max(ends))


SPLIT_MIN_SAVING = 16  # blocks a second decode group must save to pay for its own gather and attention calls


def _split_by_length(runs: list[Run], offsets: list[int], block_size: int) -> list[tuple[list[Run], list[int]]]:
    """The decodes as one attention group, or two (the shorter sequences apart) when that gathers far fewer
    blocks: a group gathers and attends over its longest sequence's blocks for every member, so a 20-token
    sequence beside a 220-token one pays for 220 (py-spy/torch profiler: the K/V gather and the attention are
    ~45 % of a decode step, and ~40 % of the gathered blocks were padding under the benchmark's mix)."""
    if len(runs) < 4:
        return [(runs, offsets)]
    need = [-(-(r.start + 1) // block_size) for r in runs]
    order = sorted(range(len(runs)), key=need.__getitem__)
    whole = need[order[-1]] * len(runs)
    best_k, best = 0, whole
    for k in range(1, len(runs)):  # the k shortest apart: they pay for the k-th's blocks, the rest for the longest
        cost = need[order[k - 1]] * k + need[order[-1]] * (len(runs) - k)
        if cost < best:
            best_k, best = k, cost
    if whole - best < SPLIT_MIN_SAVING:
        return [(runs, offsets)]
    short, long_ = order[:best_k], order[best_k:]
    return [([runs[i] for i in short], [offsets[i] for i in short]),
            ([runs[i] for i in long_], [offsets[i] for i in long_])]


TOP_K = 32  # the candidates sample_rows ranks first (see there; csrc/sampling.c's TOP_K too)


def _generator(seq: Sequence) -> torch.Generator:
    if seq.generator is None:
        seq.generator = torch.Generator()
        if seq.params.seed is not None:
            seq.generator.manual_seed(seq.params.seed)
        else:
            seq.generator.seed()
    return seq.generator


def sample_rows(logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
    """One token per row of logits (M, V), temperature + top-p: csrc/sampling.c in one call, or the same draw in
    torch (`sample_rows_torch`) without the kernels.

    A request with a `seed` draws its uniform number from its own generator (reproducible whatever else is in
    the batch), the others share one draw from torch's generator; the token is where that number falls in the
    cumulative distribution of the kept mass (the smallest set of most likely tokens whose mass reaches top_p).
    """
    temps = _floats([s.params.temperature for s in seqs])
    top_ps = _floats([s.params.top_p for s in seqs])
    u = torch.rand(len(seqs))  # requests without a seed: one draw for all of them
    for i, s in enumerate(seqs):
        if s.params.seed is not None:
            u[i] = torch.rand(1, generator=_generator(s))
    loaded = kernels.load()
    if loaded is not None:
        return loaded.sample_top_p(logits.float().contiguous(), temps, top_ps, u)
    return sample_rows_torch(logits, temps, top_ps, u)


def sample_rows_torch(logits: torch.Tensor, temps: torch.Tensor, top_ps: torch.Tensor, u: torch.Tensor) -> list[int]:
    """sample_rows in a handful of batched torch operators: no per-row softmax, sort or multinomial call."""
    probs = torch.softmax(logits / temps[:, None], dim=-1)
    # the most likely TOP_K tokens hold the kept mass of nearly every row: a top-k is ~5x cheaper than sorting
    # the whole vocabulary; when some row's kept mass reaches beyond them, the whole sort
    sorted_p, order = probs.topk(min(TOP_K, probs.shape[-1]), dim=-1)
    if bool((sorted_p.sum(-1) < top_ps).any()) and sorted_p.shape[-1] < probs.shape[-1]:
        sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_ps[:, None]
    cdf = (sorted_p * keep).cumsum(-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=order.shape[-1] - 1)
    tokens = order.gather(1, idx).squeeze(1)
    whole = top_ps >= 1.0
    if bool(whole.any()):  # every token kept: the draw in vocabulary order (csrc/sampling.c does the same)
        cdf_all = probs.cumsum(-1)
        by_id = torch.searchsorted(cdf_all, (u * cdf_all[:, -1])[:, None], right=True).clamp_(max=probs.shape[-1] - 1)
        tokens = torch.where(whole, by_id.squeeze(1), tokens)
    return tokens.tolist()


def sample_token(logits: torch.Tensor, seq: Sequence) -> int:
    p = seq.params
    if p.greedy:
        return int(logits.argmax())
    return sample_rows(logits[None], [seq])[0]


class Worker:
    def __init__(self, model: GPT, cache: KVCache, draft: GPT | None = None, draft_cache: KVCache | None = None):
        self.model, self.cache = model, cache
        self.draft, self.draft_cache = draft, draft_cache

    @property
    def block_size(self) -> int:
        return self.cache.block_size

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
            batch, rows = build_batch(runs, self.block_size, self.draft_cache.kernel is not None)
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
                runs.append(Run([seq.tokens[-1], *proposals[id(s)]], seq.num_computed, seq.block_table, True))
            else:
                toks = seq.tokens[seq.num_computed: seq.num_computed + (s.num_tokens - s.spec)]
                prompt_rows = seq.params.prompt_logprobs and seq.num_computed < len(seq.prompt)
                runs.append(Run(toks, seq.num_computed, seq.block_table, prompt_rows))
        batch, rows = build_batch(runs, self.block_size, self.cache.kernel is not None)
        logits = self.model.forward_paged(batch, self.cache)
        res.logits = logits
        # every row's greedy token at once, when a greedy or speculating row needs it (not for a batch that samples)
        argmax = logits.argmax(-1).tolist() if any(s.seq.params.temperature == 0.0 or s.spec for s in scheduled) \
            else []
        to_sample: list[tuple[int, int, Sequence]] = []  # (result index, logit row, sequence)
        new_tokens, logprob_rows, prompt_rows = res.new_tokens, res.logprob_rows, res.prompt_rows
        for s, run, sl in zip(scheduled, runs, rows, strict=True):
            seq = s.seq
            speculated = bool(s.spec) and id(s) in proposals
            end = run.start + len(run.tokens)
            # prompt log-probabilities: the logits at position j score token j + 1
            if run.all_logits and not speculated:
                targets = seq.tokens[run.start + 1: min(end + 1, len(seq.prompt))]
                prompt_rows.append((logits[sl][: len(targets)], targets))
            else:
                prompt_rows.append(None)
            if speculated:
                props = proposals[id(s)]
                accepted: list[int] = []
                lp_rows = []
                for j in range(len(props) + 1):
                    g = argmax[sl.start + j]
                    accepted.append(g)
                    lp_rows.append(sl.start + j)
                    if j == len(props) or props[j] != g:
                        break
                res.drafted += len(props)
                res.accepted += len(accepted) - 1
                seq.num_computed = len(seq.tokens) - 1 + len(accepted)
                seq.draft_computed = min(seq.draft_computed, seq.num_computed)
                new_tokens.append(accepted)
                logprob_rows.append(lp_rows)
                continue
            seq.num_computed = end
            if end < len(seq.tokens) or seq.num_output >= seq.params.max_tokens:
                new_tokens.append([])  # a prefill chunk, or echo with max_tokens 0: nothing to sample
                logprob_rows.append([])
                continue
            last = sl.stop - 1
            if seq.params.temperature == 0.0:  # greedy (SamplingParams.greedy, without the property call)
                new_tokens.append([argmax[last]])
            else:  # sampled below, all such rows together
                new_tokens.append([-1])
                to_sample.append((len(new_tokens) - 1, last, seq))
            logprob_rows.append([last])
        if to_sample:
            first, n = to_sample[0][1], len(to_sample)
            if to_sample[-1][1] - first == n - 1:  # consecutive rows (a batch of decodes): a view, no copy
                picked = logits[first:first + n]
            else:
                picked = logits.index_select(0, _longs([r for _, r, _ in to_sample]))
            tokens = sample_rows(picked, [q for _, _, q in to_sample])
            for (i, _, _), tok in zip(to_sample, tokens, strict=True):
                res.new_tokens[i] = [tok]
        return res
