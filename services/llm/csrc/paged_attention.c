/* Attention over the paged KV cache, read in place through each sequence's block table (vLLM's
 * paged_attention, for the CPU and for our layout): no blocks gathered into a padded tensor, no mask built.
 *
 * Built by services/llm/attention.py with the machine's C compiler and called through ctypes (which releases
 * the GIL for the call, so the event loop runs beside it). Plain C, no torch headers: it compiles in a fraction
 * of a second. The torch path it replaces (gather + scaled_dot_product_attention with an additive mask) stays
 * as the fallback and as the reference the tests compare it with.
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
#include <string.h>

#include "fl_math.h"

/* One query row against keys 0..keys-1 of a sequence. H and D are literals at the call sites below for the
 * shapes our models use, so the compiler unrolls and vectorises the per-head loops (about 2x faster than with
 * them as run-time values, measured on the benchmark's mix of lengths). */
static inline __attribute__((always_inline)) void attend_row(
        const float *restrict qr, float *restrict o, const float *restrict cache, const int64_t *restrict table,
        int64_t keys, const int64_t H, const int64_t D, int64_t bs, float scale, float *restrict scores) {
    const int64_t HD = H * D;
    /* scores, head-major: scores[h * keys + l]; block by block (no division per key) */
    for (int64_t b = 0, l = 0; l < keys; b++) {
        const float *restrict k = cache + table[b] * bs * 2 * HD;
        const int64_t n = keys - l < bs ? keys - l : bs;
        for (int64_t t = 0; t < n; t++, l++, k += 2 * HD) {
            for (int64_t h = 0; h < H; h++) {
                float acc = 0.0f;
                const float *restrict qh = qr + h * D, *restrict kh = k + h * D;
                for (int64_t d = 0; d < D; d++) acc += qh[d] * kh[d];
                scores[h * keys + l] = acc * scale;
            }
        }
    }
    /* softmax per head, the 1 / sum folded into the weights */
    for (int64_t h = 0; h < H; h++) {
        float *restrict sc = scores + h * keys;
        float lanes[8], m = sc[0];  /* eight running maxima: a reduction the compiler can vectorise */
        for (int i = 0; i < 8; i++) lanes[i] = sc[0];
        int64_t l8 = 0;
        for (; l8 + 8 <= keys; l8 += 8)
            for (int i = 0; i < 8; i++) lanes[i] = sc[l8 + i] > lanes[i] ? sc[l8 + i] : lanes[i];
        for (; l8 < keys; l8++) m = sc[l8] > m ? sc[l8] : m;
        for (int i = 0; i < 8; i++) m = lanes[i] > m ? lanes[i] : m;
        float sum = 0.0f;
        for (int64_t l = 0; l < keys; l++) {
            sc[l] = fl_expf(sc[l] - m);
            sum += sc[l];
        }
        const float inv = 1.0f / sum;
        for (int64_t l = 0; l < keys; l++) sc[l] *= inv;
    }
    /* the weighted sum of V */
    memset(o, 0, (size_t)HD * sizeof(float));
    for (int64_t b = 0, l = 0; l < keys; b++) {
        const float *restrict v = cache + table[b] * bs * 2 * HD + HD;
        const int64_t n = keys - l < bs ? keys - l : bs;
        for (int64_t t = 0; t < n; t++, l++, v += 2 * HD) {
            for (int64_t h = 0; h < H; h++) {
                const float w = scores[h * keys + l];
                float *restrict oh = o + h * D;
                const float *restrict vh = v + h * D;
                for (int64_t d = 0; d < D; d++) oh[d] += w * vh[d];
            }
        }
    }
}

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
            /* the target model (4 heads of 24) and the draft (2 of 32) */
            if (H == 4 && D == 24) attend_row(qr, o, cache, table, keys, 4, 24, block_size, scale, scores);
            else if (H == 2 && D == 32) attend_row(qr, o, cache, table, keys, 2, 32, block_size, scale, scores);
            else switch (D) {  /* then other head sizes, any number of heads */
                case 16: attend_row(qr, o, cache, table, keys, H, 16, block_size, scale, scores); break;
                case 24: attend_row(qr, o, cache, table, keys, H, 24, block_size, scale, scores); break;
                case 32: attend_row(qr, o, cache, table, keys, H, 32, block_size, scale, scores); break;
                case 64: attend_row(qr, o, cache, table, keys, H, 64, block_size, scale, scores); break;
                default: attend_row(qr, o, cache, table, keys, H, D, block_size, scale, scores);
            }
        }
    }
}
