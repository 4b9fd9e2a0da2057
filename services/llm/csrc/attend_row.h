/* One query row's attention over a sequence's paged K/V (csrc/paged_attention.c's comment has the layouts), shared
 * by the paged-attention kernel and the fused model step (csrc/forward.c). */
#ifndef FL_ATTEND_ROW_H
#define FL_ATTEND_ROW_H

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

/* attend_row with the head shape as literals for the shapes our models use: the target model (4 heads of 24) and
 * the draft (2 of 32), then other head sizes, any number of heads. */
static inline void attend_row_any(const float *restrict qr, float *restrict o, const float *restrict cache,
                                  const int64_t *restrict table, int64_t keys, int64_t H, int64_t D, int64_t bs,
                                  float scale, float *restrict scores) {
    if (H == 4 && D == 24) attend_row(qr, o, cache, table, keys, 4, 24, bs, scale, scores);
    else if (H == 2 && D == 32) attend_row(qr, o, cache, table, keys, 2, 32, bs, scale, scores);
    else switch (D) {
        case 16: attend_row(qr, o, cache, table, keys, H, 16, bs, scale, scores); break;
        case 24: attend_row(qr, o, cache, table, keys, H, 24, bs, scale, scores); break;
        case 32: attend_row(qr, o, cache, table, keys, H, 32, bs, scale, scores); break;
        case 64: attend_row(qr, o, cache, table, keys, H, 64, bs, scale, scores); break;
        default: attend_row(qr, o, cache, table, keys, H, D, bs, scale, scores);
    }
}

#endif
