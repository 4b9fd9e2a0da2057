"""The block manager of the paged KV cache: which cache blocks each sequence owns, with prefix caching.

The cache holds `num_blocks` blocks of `block_size` token slots. A sequence's block table maps its positions
to blocks (position p lives in slot `table[p // block_size] * block_size + p % block_size`). Blocks are
reference-counted: with prefix caching, a full block is identified by a hash chain over its tokens and every
token before it (`hash((parent_hash, tokens))`), so two prompts that share a prefix share those blocks. A block
whose last owner finishes keeps its contents and its hash in an LRU of reusable blocks; it is reused on a
later hit, or evicted (its hash forgotten) when a fresh block is needed and no never-used block is left.

`used` counts blocks owned by at least one sequence: after every request has finished or been aborted it is 0
(the leak check of tests/llm). Prefix-cache queries and hits are counted in tokens, as vLLM counts them.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Protocol


class HasBlocks(Protocol):
    block_table: list[int]
    block_hashes: list[int]


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.num_blocks, self.block_size = num_blocks, block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref = [0] * num_blocks
        self.free_blocks: deque[int] = deque(range(num_blocks))
        self.reusable: OrderedDict[int, int] = OrderedDict()  # block -> hash; ref 0, contents kept; LRU first
        self.hash_to_block: dict[int, int] = {}
        self.block_hash: dict[int, int] = {}
        self.queries = 0
        self.hits = 0

    # ------------------------------------------------------------------------------------------ accounting
    @property
    def num_free(self) -> int:
        return len(self.free_blocks) + len(self.reusable)

    @property
    def used(self) -> int:
        return self.num_blocks - self.num_free

    @property
    def usage(self) -> float:
        return self.used / self.num_blocks

    def blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.block_size)

    # ------------------------------------------------------------------------------------------ allocation
    def _take(self) -> int:
        if self.free_blocks:
            block = self.free_blocks.popleft()
        else:
            block, h = self.reusable.popitem(last=False)  # evict the least recently freed cached block
            del self.hash_to_block[h]
            del self.block_hash[block]
        self.ref[block] = 1
        return block

    def ensure(self, seq: HasBlocks, n_tokens: int) -> bool:
        """Grow seq's block table to hold n_tokens positions; False (and nothing taken) if blocks are short."""
        need = self.blocks_for(n_tokens) - len(seq.block_table)
        if need <= 0:
            return True
        if need > self.num_free:
            return False
        seq.block_table.extend(self._take() for _ in range(need))
        return True

    def allocate_prefix(self, seq: HasBlocks, tokens: list[int], max_cached: int) -> int:
        """Share the cached full blocks that match tokens' prefix (at most max_cached tokens); tokens hit."""
        if not self.enable_prefix_caching:
            return 0
        bs = self.block_size
        hits: list[int] = []
        hashes: list[int] = []
        parent = 0
        for i in range(min(len(tokens), max_cached) // bs):
            h = hash((parent, tuple(tokens[i * bs:(i + 1) * bs])))
            block = self.hash_to_block.get(h)
            if block is None:
                break
            hits.append(block)
            hashes.append(h)
            parent = h
        self.queries += len(tokens)
        self.hits += len(hits) * bs
        for block in hits:
            if self.ref[block] == 0:
                del self.reusable[block]
            self.ref[block] += 1
        seq.block_table[:0] = hits
        seq.block_hashes[:0] = hashes
        return len(hits) * bs

    def commit(self, seq: HasBlocks, tokens: list[int], num_computed: int) -> None:
        """Register seq's blocks that are now full and computed, so later prompts can share them."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        for i in range(len(seq.block_hashes), min(num_computed, len(tokens)) // bs):
            parent = seq.block_hashes[-1] if seq.block_hashes else 0
            h = hash((parent, tuple(tokens[i * bs:(i + 1) * bs])))
            seq.block_hashes.append(h)
            block = seq.block_table[i]
            if h not in self.hash_to_block and block not in self.block_hash:
                self.hash_to_block[h] = block
                self.block_hash[block] = h

    def free(self, seq: HasBlocks) -> None:
        """Drop seq's references; blocks nobody owns go back (cached ones to the reusable LRU, tail first)."""
        for block in reversed(seq.block_table):
            self.ref[block] -= 1
            if self.ref[block] == 0:
                h = self.block_hash.get(block)
                if h is not None:
                    self.reusable[block] = h
                else:
                    self.free_blocks.append(block)
        seq.block_table.clear()
        seq.block_hashes.clear()
