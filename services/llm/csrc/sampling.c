/* Temperature + top-p sampling of one token per row of logits, every row in one call (worker.sample_rows).
 *
 * It draws exactly what the torch version draws (worker.sample_rows_torch, kept as the fallback and the
 * reference of the tests): p = softmax(logits / T); tokens in descending p; a token is kept while the mass
 * before it is below top_p; the token is where u * (kept mass) falls in the kept tokens' cumulative sum (with
 * top_p >= 1 every token is kept, and the sum runs in vocabulary order: the same distribution, unranked). The
 * uniform draws u come from the caller (per-request generators for seeded requests). The candidates are the
 * TOP_K most likely tokens, found by insertion; when their mass is short of top_p, the vocabulary in
 * descending order from a heap, popped as far as the kept mass goes. torch took 15 operators, each paying its dispatch, for this.
 */
#include <stdint.h>
#include <string.h>

#include "fl_math.h"  /* fl_expf: x <= 0 here too */

#define TOP_K 32

typedef struct {
    float p;
    int32_t id;
} cand;

/* a before b in descending order (ties: the lower id first) */
static inline int ahead(const cand *a, const cand *b) { return a->p > b->p || (a->p == b->p && a->id < b->id); }

static void sift_down(cand *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t best = i, l = 2 * i + 1, r = l + 1;
        if (l < n && ahead(&h[l], &h[best])) best = l;
        if (r < n && ahead(&h[r], &h[best])) best = r;
        if (best == i) return;
        const cand t = h[i];
        h[i] = h[best];
        h[best] = t;
        i = best;
    }
}

/* probs: a vocab-sized workspace; all: vocab candidates of workspace (the full sort's) */
void fl_sample_top_p(const float *logits, int64_t rows, int64_t vocab, int64_t stride, const float *temps,
                     const float *top_ps, const float *u, int64_t *out, float *probs, cand *all) {
    for (int64_t r = 0; r < rows; r++) {
        const float *row = logits + r * stride;
        const float t = temps[r], top_p = top_ps[r];
        float m = row[0] / t;
        for (int64_t i = 1; i < vocab; i++) {
            const float x = row[i] / t;
            m = x > m ? x : m;
        }
        float sum = 0.0f;
        for (int64_t i = 0; i < vocab; i++) {
            probs[i] = fl_expf(row[i] / t - m);
            sum += probs[i];
        }
        const float inv = 1.0f / sum;
        for (int64_t i = 0; i < vocab; i++) probs[i] *= inv;
        if (top_p >= 1.0f) { /* every token kept: the draw in vocabulary order, no ranking needed */
            float total = 0.0f, cdf = 0.0f;
            for (int64_t i = 0; i < vocab; i++) total += probs[i];
            const float target = u[r] * total;
            int64_t pick = vocab - 1;
            for (int64_t i = 0; i < vocab; i++) {
                cdf += probs[i];
                if (cdf > target) {
                    pick = i;
                    break;
                }
            }
            out[r] = pick;
            continue;
        }
        /* the TOP_K most likely, in descending order (ties: the lower id first) */
        cand top[TOP_K];
        int n = 0;
        const int k = vocab < TOP_K ? (int)vocab : TOP_K;
        for (int64_t i = 0; i < vocab; i++) {
            const float p = probs[i];
            if (n == k && p <= top[k - 1].p) continue;
            int j = n < k ? n++ : k - 1;
            while (j > 0 && top[j - 1].p < p) {
                top[j] = top[j - 1];
                j--;
            }
            top[j].p = p;
            top[j].id = (int32_t)i;
        }
        float mass = 0.0f;
        for (int j = 0; j < n; j++) mass += top[j].p;
        const cand *c = top;
        int64_t nc = n;
        if (mass < top_p && k < vocab) {
            /* the kept mass reaches beyond the top-k: the vocabulary in descending order, as far as it is kept
             * (a heap popped only that far, not the whole vocabulary sorted) */
            int64_t n_heap = vocab;
            cand *heap = all;
            for (int64_t i = 0; i < vocab; i++) {
                heap[i].p = probs[i];
                heap[i].id = (int32_t)i;
            }
            for (int64_t i = vocab / 2 - 1; i >= 0; i--) sift_down(heap, n_heap, i);
            /* popped maxima go to the end of the array, so all[vocab - 1 - j] is the j-th most likely */
            float before = 0.0f;
            int64_t popped = 0;
            while (n_heap > 0 && before < top_p) {
                const cand top1 = heap[0];
                heap[0] = heap[--n_heap];
                sift_down(heap, n_heap, 0);
                heap[vocab - 1 - popped] = top1;
                before += top1.p;
                popped++;
            }
            /* in order: reverse the popped tail into the front of `top`-like order */
            for (int64_t a = vocab - popped, b = vocab - 1; a < b; a++, b--) {
                const cand t = all[a];
                all[a] = all[b];
                all[b] = t;
            }
            c = all + (vocab - popped);
            nc = popped;
        }
        /* kept while the mass before a token is below top_p; the cumulative sum over the kept ones */
        float before = 0.0f, kept = 0.0f;
        int64_t nk = 0;
        for (; nk < nc; nk++) {
            if (!(before < top_p)) break;
            before += c[nk].p;
            kept += c[nk].p;
        }
        const float target = u[r] * kept;
        float cdf = 0.0f;
        int64_t pick = nk - 1;
        for (int64_t j = 0; j < nk; j++) {
            cdf += c[j].p;
            if (cdf > target) {
                pick = j;
                break;
            }
        }
        out[r] = c[pick < 0 ? 0 : pick].id;
    }
}
