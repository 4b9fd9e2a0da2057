/* Attention over the paged KV cache, read in place through each sequence's block table (vLLM's
 * paged_attention, for the CPU and for our layout): no blocks gathered into a padded tensor, no mask built.
 *
 * Built by services/llm/kernels.py with the machine's C compiler and called through ctypes (which releases
 * the GIL for the call, so the event loop runs beside it). Plain C, no torch headers. The model's layers run in
 * torch around it only where the whole step cannot run in csrc/forward.c (the int8 variant). The torch path it
 * replaces (gather + scaled_dot_product_attention with an additive mask) stays as the fallback and as the
 * reference the tests compare it with.
 *
 * Layouts (float32, contiguous):
 *   cache  (num_blocks, block_size, 2, H, D): a slot's K is H*D floats, its V the next H*D
 *   q      (N, H, D) rows q_stride floats apart (the Q third of the fused QKV projection), out (N, H, D):
 *          the step's token rows; sequence s owns rows row0[s] .. row0[s] + nq[s] - 1
 *   tables (S, nb_stride) int64: sequence s's blocks; start[s]: the position of its first query row
 * Query j of sequence s sits at position p = start[s] + j and attends keys 0..p (causal): decodes (nq 1),
 * speculative verification runs and prefill chunks after a cached prefix alike.
 */
#include <stdint.h>

#include "attend_row.h"

void fl_paged_attention(const float *q, int64_t q_stride, float *out, const float *cache, const int64_t *tables,
                        int64_t nb_stride, const int64_t *row0, const int64_t *nq, const int64_t *start,
                        int64_t num_seqs, int64_t n_head, int64_t head_dim, int64_t block_size, float scale,
                        float *restrict scores /* (max keys * n_head) workspace */) {
    const int64_t H = n_head, D = head_dim, HD = n_head * head_dim;
    for (int64_t s = 0; s < num_seqs; s++) {
        const int64_t *table = tables + s * nb_stride;
        for (int64_t j = 0; j < nq[s]; j++) {
            const int64_t row = row0[s] + j, keys = start[s] + j + 1;
            const float *qr = q + row * q_stride;
            float *o = out + row * HD;
            attend_row_any(qr, o, cache, table, keys, H, D, block_size, scale, scores);
        }
    }
}
