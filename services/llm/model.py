"""A decoder-only transformer (GPT-2 layout) written from scratch, with a forward over a paged KV cache.

Token + learned position embeddings, pre-norm blocks (LayerNorm → causal self-attention → residual,
LayerNorm → MLP with tanh-GELU → residual), a final LayerNorm and an output head tied to the token embedding.
The layout and the activation match Hugging Face's GPT-2 (`gelu_new`), so `hfcompat.py` can load our weights
into `transformers.GPT2LMHeadModel` and check that we compute the same thing.

Two forwards share the weights:
- `forward(idx)`: plain causal attention over (B, T) token ids, for training and evaluation.
- `forward_paged(...)`: the serving forward. Tokens of many sequences (prefill chunks, single decode tokens,
  speculative verification runs) are flattened into one batch; each layer writes the new tokens' K/V into
  their slots of the paged cache (`slot = block_table[pos // block_size] * block_size + pos % block_size`) and
  every sequence's queries attend over the K/V blocks gathered from its own block table (sequences with the
  same number of new tokens share one attention call, so a prefill chunk never pads the decodes). The cache
  never moves; the block manager decides which blocks a sequence owns.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from services.llm import kernels
from services.llm.kernels import PagedAttention


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 258
    n_ctx: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        c = cfg.n_embd
        self.n_head = cfg.n_head
        self.ln_1 = nn.LayerNorm(c)
        self.c_attn = nn.Linear(c, 3 * c)
        self.attn_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln_2(x))


@dataclass
class AttnGroup:
    """Sequences whose runs have the same number of new tokens Q: their attention is one padded-free call.

    rows: (B * Q,) the flattened token rows of the group, sequence by sequence; block_tables: (B, NB) each
    sequence's blocks (padded with block 0: key l of sequence b is its position l); mask: (B, 1, Q, NB *
    block_size) float, 0 where query q may attend key l (causal: l <= the query's position), -inf elsewhere.

    fresh: prompts prefilled from position 0 (no cached prefix): their keys are exactly this step's new tokens, so
    attention runs causally on the new K/V themselves (vLLM's prefill path): no blocks gathered, no mask built,
    and the kernel skips the masked half. block_tables and mask are then empty / None.
    """

    rows: torch.Tensor
    block_tables: torch.Tensor
    mask: torch.Tensor | None
    fresh: bool = False


@dataclass
class PagedRuns:
    """The runs that attend over cached K/V (decodes, speculative verification, prefill chunks after a cached
    prefix), for the paged-attention kernel: one call per layer for all of them, whatever their lengths.

    row0, nq, start: (S,) each run's first token row, its number of new tokens and its first position;
    tables: (S, NB) each run's block table (padded with block 0, never read: a run reads only its own keys).
    """

    row0: torch.Tensor
    nq: torch.Tensor
    start: torch.Tensor
    tables: torch.Tensor
    max_keys: int


@dataclass
class PagedBatch:
    """Where each flattened token sits, as tensors built by the worker (see worker.build_batch).

    tokens, positions, slots: (N,) the new tokens, their positions in their sequence and their cache slots.
    groups: the attention groups run through torch (fresh prefills, each length together: no padded queries;
    without the kernel, the decodes and the other runs too, with a mask).
    paged: the runs the kernel attends for (None: no kernel, or none such this step).
    logit_index: (M,) the token rows whose logits are wanted.
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    groups: list[AttnGroup]
    logit_index: torch.Tensor
    paged: PagedRuns | None = None


class KVCache:
    """The paged cache of one model: per layer, K and V side by side in one tensor of shape (num_blocks,
    block_size, 2, heads, head_dim), so that a step writes a layer's new K/V with one index_copy_ and gathers a
    group's blocks with one index_select (two of each per layer per step before: at this model's size a step is
    mostly small operators, each paying torch's dispatch)."""

    def __init__(self, cfg: GPTConfig, num_blocks: int, block_size: int, kernel: PagedAttention | None = None) -> None:
        shape = (num_blocks, block_size, 2, cfg.n_head, cfg.head_dim)
        self.num_blocks, self.block_size = num_blocks, block_size
        self.kv = [torch.zeros(shape) for _ in range(cfg.n_layer)]
        self.kernel = kernel  # None: attention through torch (gather + scaled_dot_product_attention)
        self._scores = torch.empty(0)  # the kernel's workspace (a row's scores, every head)
        # where a group's blocks are gathered for attention, reused layer after layer and step after step (grown
        # when a larger group comes): a fresh megabyte-sized tensor per gather costs more than the copy itself
        self._gather = torch.empty((0, *shape[1:]))

    def write(self, layer: int, slots: torch.Tensor, kv: torch.Tensor) -> None:
        """Store the new tokens' K/V, kv (N, 2, heads, head_dim), at their slots."""
        cache = self.kv[layer]
        cache.view(-1, *cache.shape[2:]).index_copy_(0, slots, kv)

    def gather(self, layer: int, tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of the blocks `tables` (flat), as (len(tables), block_size, heads, head_dim) views of the
        workspace: valid until the next gather."""
        n = tables.shape[0]
        if self._gather.shape[0] < n:
            self._gather = torch.empty((n, *self._gather.shape[1:]))
        kv = torch.index_select(self.kv[layer], 0, tables, out=self._gather[:n])
        return kv[:, :, 0], kv[:, :, 1]

    def attend(self, layer: int, q: torch.Tensor, out: torch.Tensor, runs: PagedRuns) -> None:
        """The kernel's attention for `runs`, read from the cache in place, into their rows of out (N, H*D)."""
        assert self.kernel is not None
        need = runs.max_keys * self.kv[layer].shape[3]
        if self._scores.numel() < need:
            self._scores = torch.empty(need)
        self.kernel(q, out, self.kv[layer], runs.tables, runs.row0, runs.nq, runs.start, self._scores)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.kv)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.apply(self._init)
        for block in self.blocks:  # GPT-2's scaled init of the residual projections
            for proj in (block.attn_proj, block.mlp_proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def head(self, x: torch.Tensor) -> torch.Tensor:
        # tied output head: the token embedding matrix, kept in float even in the int8 variant
        return F.linear(self.ln_f(x), self.wte.weight)

    def forward(self, idx: torch.Tensor, pos0: int = 0) -> torch.Tensor:
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(pos0, pos0 + t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def forward_paged(self, batch: PagedBatch, cache: KVCache) -> torch.Tensor:
        """Logits (M, vocab) of the rows `batch.logit_index`; writes every new token's K/V into the cache."""
        if not batch.groups and cache.kernel is not None:
            fused = self._fused_forward(batch, cache)
            if fused is not None:
                return fused
        x = F.embedding(batch.tokens, self.wte.weight) + F.embedding(batch.positions, self.wpe.weight)
        n, c = x.shape
        h, d = self.cfg.n_head, self.cfg.head_dim
        for layer, block in enumerate(self.blocks):
            # .forward, not __call__: nn.Module's hook machinery cost ~5 % of a step at this model's size
            qkv = block.c_attn.forward(block.ln_1.forward(x))
            kvn = qkv[:, c:].view(n, 2, h, d)
            cache.write(layer, batch.slots, kvn)  # K and V, side by side as cached
            qn = qkv[:, :c].view(n, h, d)
            paged = batch.paged
            one = len(batch.groups) == 1 and paged is None
            y = None if one else torch.empty(n, c)
            if paged is not None:  # the kernel writes its runs' rows of y; the torch groups below fill the rest
                cache.attend(layer, qkv[:, :c], y, paged)
            for g in batch.groups:
                b_, nb = g.block_tables.shape
                q_ = g.rows.shape[0] // b_
                # one group: its rows are all the tokens, in order (no select)
                qb = (qn if one else qn.index_select(0, g.rows)).view(b_, q_, h, d).transpose(1, 2)  # (B, H, Q, D)
                if g.fresh:  # prompts from position 0: the new K/V are all their keys
                    kvg = (kvn if one else kvn.index_select(0, g.rows)).view(b_, q_, 2, h, d)
                    yg = F.scaled_dot_product_attention(qb, kvg[:, :, 0].transpose(1, 2), kvg[:, :, 1].transpose(1, 2),
                                                        is_causal=True).transpose(1, 2).reshape(-1, c)
                else:
                    # whole blocks are gathered (rows of block_size * H * D floats): far cheaper than slot by slot
                    kb, vb = cache.gather(layer, g.block_tables.reshape(-1))
                    kb = kb.view(b_, nb * cache.block_size, h, d).transpose(1, 2)
                    vb = vb.view(b_, nb * cache.block_size, h, d).transpose(1, 2)
                    yg = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=g.mask).transpose(1, 2).reshape(-1, c)
                if y is None:
                    y = yg  # one group: its rows are all the tokens, in order
                else:
                    y.index_copy_(0, g.rows, yg)
            x = x + block.attn_proj.forward(y)
            x = x + block.mlp_proj.forward(F.gelu(block.c_fc.forward(block.ln_2.forward(x)), approximate="tanh"))
        return F.linear(self.ln_f.forward(x[batch.logit_index]), self.wte.weight)

    def _fused_forward(self, batch: PagedBatch, cache: KVCache) -> torch.Tensor | None:
        """The whole step in one C call (csrc/forward.c), or None: the torch path (no kernels, or not float32
        layers: the int8 variant)."""
        paged = batch.paged
        loaded = kernels.load()
        if paged is None or loaded is None:
            return None
        prepared = self.__dict__.get("_fused_weights")
        if prepared is None:  # once per model: weights are never changed in place (a deploy loads a new model)
            prepared = self.__dict__["_fused_weights"] = loaded.forward.prepare(self) or []
        if not prepared:
            return None
        return loaded.forward(prepared, cache.kv, batch.tokens, batch.positions, batch.slots, paged.row0, paged.nq,
                              paged.start, paged.tables, batch.logit_index, self.cfg.n_head, self.blocks[0].ln_1.eps,
                              cache.block_size)


def quantize_int8(model: GPT) -> GPT:
    """torch dynamic quantisation: every nn.Linear becomes int8 weights with float activations."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch marks its quantised tensor types deprecated; they still work in 2.13
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
