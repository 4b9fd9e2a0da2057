/* A whole step of our GPT in one call: every row of the step (single-token decodes, prompt chunks, fresh prompts,
 * speculative verification runs) through every layer (layer norm, the fused QKV projection, its K/V written to
 * the paged cache, paged attention, the output projection, the MLP with tanh GELU, the residual adds), then the
 * final norm and the tied head for the rows that need logits. At this model's size a step in torch is ~60 small
 * operators, each paying the dispatcher; here it is one call, with no tensor allocated.
 *
 * Used by model.GPT.forward_paged when the kernels build and the model's linear layers are float32 (not the int8
 * variant); otherwise the torch path. tests/llm/test_kernels.py compares its logits and cache writes with the
 * torch path's.
 *
 * Weights come transposed, (in, out_pad) row-major with out_pad a multiple of 32 and zero columns past `out`
 * (services/llm/kernels.py prepares them once per model), so that the matrix product is broadcast-and-FMA over
 * contiguous rows: a 4 x 32 tile of the output in registers, no horizontal sums.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attend_row.h"

typedef float v16 __attribute__((vector_size(64)));

static inline v16 ld(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float *p, v16 v) { memcpy(p, &v, sizeof v); }

#define PAD32(n) (((n) + 31) / 32 * 32)

/* C[m, 0:Np] (+)= A[m, 0:K] . Bt[0:K, 0:Np] + bias, for m < M (M a multiple of 4: the workspaces' rows are). */
static void gemm(const float *restrict A, int64_t lda, int64_t M, const float *restrict Bt, int64_t K,
                 int64_t Np, const float *restrict bias, float *restrict C, int64_t ldc, int accumulate) {
    for (int64_t m = 0; m < M; m += 4) {
        const float *a0 = A + m * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        float *c0 = C + m * ldc, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
        for (int64_t n = 0; n < Np; n += 32) {
            v16 x00 = ld(bias + n), x01 = ld(bias + n + 16);
            v16 x10 = x00, x11 = x01, x20 = x00, x21 = x01, x30 = x00, x31 = x01;
            if (accumulate) {
                x00 += ld(c0 + n); x01 += ld(c0 + n + 16); x10 += ld(c1 + n); x11 += ld(c1 + n + 16);
                x20 += ld(c2 + n); x21 += ld(c2 + n + 16); x30 += ld(c3 + n); x31 += ld(c3 + n + 16);
            }
            const float *b = Bt + n;
            for (int64_t k = 0; k < K; k++, b += Np) {
                const v16 b0 = ld(b), b1 = ld(b + 16);
                x00 += a0[k] * b0; x01 += a0[k] * b1;
                x10 += a1[k] * b0; x11 += a1[k] * b1;
                x20 += a2[k] * b0; x21 += a2[k] * b1;
                x30 += a3[k] * b0; x31 += a3[k] * b1;
            }
            st(c0 + n, x00); st(c0 + n + 16, x01); st(c1 + n, x10); st(c1 + n + 16, x11);
            st(c2 + n, x20); st(c2 + n + 16, x21); st(c3 + n, x30); st(c3 + n + 16, x31);
        }
    }
}

/* torch's LayerNorm (biased variance) over the first C columns of M rows. */
static void layer_norm(const float *restrict x, float *restrict out, int64_t M, int64_t C, int64_t ld,
                       const float *restrict g, const float *restrict b, float eps) {
    for (int64_t m = 0; m < M; m++) {
        const float *r = x + m * ld;
        float *o = out + m * ld;
        float mean = 0.0f, var = 0.0f;
        for (int64_t c = 0; c < C; c++) mean += r[c];
        mean /= (float)C;
        for (int64_t c = 0; c < C; c++) var += (r[c] - mean) * (r[c] - mean);
        const float inv = 1.0f / sqrtf(var / (float)C + eps);
        for (int64_t c = 0; c < C; c++) o[c] = (r[c] - mean) * inv * g[c] + b[c];
    }
}

/* GELU, tanh approximation (torch's approximate="tanh"); tanh from exp(-2|u|) <= 1, in fl_expf's range. */
static void gelu_tanh(float *restrict x, int64_t M, int64_t N, int64_t ld) {
    for (int64_t m = 0; m < M; m++) {
        float *r = x + m * ld;
        for (int64_t n = 0; n < N; n++) {
            const float v = r[n], u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            const float e = fl_expf(-2.0f * fabsf(u)), t = (1.0f - e) / (1.0f + e);
            r[n] = 0.5f * v * (1.0f + (u < 0.0f ? -t : t));
        }
    }
}

/* Per layer, 13 addresses in `ptrs`: ln_1 weight and bias, c_attn Wt and bias, attn_proj Wt and bias, ln_2 weight
 * and bias, c_fc Wt and bias, mlp_proj Wt and bias, the layer's cache; then ln_f weight and bias, the head's Wt
 * (C, PAD32(V)), wte (V, C), wpe (n_ctx, C). Row i is token tokens[i] at position positions[i], its K/V written at
 * cache slot slots[i]. Run s owns rows row0[s] .. row0[s] + nq[s] - 1 at positions start[s] + j, attending keys
 * 0..start[s] + j through tables[s] (causal: a run's K/V are all written before any of its rows attends). The
 * logits of rows logit_rows[0..NL-1] go to logits (NL, V). Returns 0, or -1 when out of memory (the caller then
 * runs the torch path, which writes the same K/V again). */
int fl_forward(const int64_t *tokens, const int64_t *positions, const int64_t *slots, int64_t N,
               const int64_t *row0, const int64_t *nq, const int64_t *start, int64_t S, const int64_t *tables,
               int64_t nb_stride, const int64_t *logit_rows, int64_t NL, const int64_t *ptrs, int64_t L, int64_t C,
               int64_t H, int64_t V, int64_t block_size, float eps, float *logits) {
    const int64_t D = C / H, Np = (N + 3) / 4 * 4, NLp = (NL + 3) / 4 * 4;
    const int64_t NC = PAD32(C), N3 = PAD32(3 * C), N4 = PAD32(4 * C), NV = PAD32(V);
    int64_t max_keys = 1;
    for (int64_t s = 0; s < S; s++) max_keys = start[s] + nq[s] > max_keys ? start[s] + nq[s] : max_keys;
    const size_t floats = (size_t)(Np * (3 * NC + N3 + N4) + NLp * (NC + NV) + NV + max_keys * H);
    float *ws = calloc(floats, sizeof(float));
    if (ws == NULL) return -1;
    float *x = ws, *h = x + Np * NC, *y = h + Np * NC, *qkv = y + Np * NC, *f = qkv + Np * N3;
    float *hl = f + Np * N4, *lg = hl + NLp * NC, *zeros = lg + NLp * NV, *scores = zeros + NV;
#define W(i) ((const float *)(intptr_t)ptrs[i])
    const float *wte = W(L * 13 + 3), *wpe = W(L * 13 + 4);
    for (int64_t i = 0; i < N; i++)
        for (int64_t c = 0; c < C; c++) x[i * NC + c] = wte[tokens[i] * C + c] + wpe[positions[i] * C + c];
    const float scale = 1.0f / sqrtf((float)D);
    for (int64_t l = 0; l < L; l++) {
        float *cache = (float *)(intptr_t)ptrs[l * 13 + 12];
        layer_norm(x, h, N, C, NC, W(l * 13 + 0), W(l * 13 + 1), eps);
        gemm(h, NC, Np, W(l * 13 + 2), C, N3, W(l * 13 + 3), qkv, N3, 0);
        for (int64_t i = 0; i < N; i++)  /* K and V side by side, as cached: (slot, 2, H, D) */
            memcpy(cache + slots[i] * 2 * C, qkv + i * N3 + C, (size_t)(2 * C) * sizeof(float));
        for (int64_t s = 0; s < S; s++)
            for (int64_t j = 0; j < nq[s]; j++) {
                const int64_t row = row0[s] + j;
                attend_row_any(qkv + row * N3, y + row * NC, cache, tables + s * nb_stride, start[s] + j + 1, H, D,
                               block_size, scale, scores);
            }
        gemm(y, NC, Np, W(l * 13 + 4), C, NC, W(l * 13 + 5), x, NC, 1);
        layer_norm(x, h, N, C, NC, W(l * 13 + 6), W(l * 13 + 7), eps);
        gemm(h, NC, Np, W(l * 13 + 8), C, N4, W(l * 13 + 9), f, N4, 0);
        gelu_tanh(f, N, 4 * C, N4);
        gemm(f, N4, Np, W(l * 13 + 10), 4 * C, NC, W(l * 13 + 11), x, NC, 1);
    }
    for (int64_t r = 0; r < NL; r++)  /* the final norm and the head, for the rows that need logits only */
        layer_norm(x + logit_rows[r] * NC, hl + r * NC, 1, C, NC, W(L * 13 + 0), W(L * 13 + 1), eps);
    gemm(hl, NC, NLp, W(L * 13 + 2), C, NV, zeros, lg, NV, 0);
    for (int64_t r = 0; r < NL; r++) memcpy(logits + r * V, lg + r * NV, (size_t)V * sizeof(float));
#undef W
    free(ws);
    return 0;
}
