/* della_rank.h - DELLA's per-row keep flags (sparsify.py della_magprune): element j of a row
 * of n is kept when its uniform u[j] is below pr[rank j], rank = its place in the ascending
 * order of |delta| within the row, equal magnitudes ordered by index (lower first).
 *
 * Owns the ranking: a counting rank over the magnitudes' top 16 bits when the row's keys are
 * bf16-like (low 16 bits zero) and span few enough values, else a stable LSD radix sort.
 * Both give the same ranks, so the same flags; mk_della_row_keep_ref is the radix sort
 * alone (the reference the tests hold the fast path to).
 * Must not: allocate (callers size the scratch with mk_della_buf_words), read tensors, thread.
 */
#ifndef MK_DELLA_RANK_H
#define MK_DELLA_RANK_H

#include "../../core/mk_core.h"

/* Scratch for rows of up to n elements, carved by the caller: mk_della_buf_words(n) words. */
typedef struct mk_della_buf {
    uint32_t *key, *idx, *tk, *ti; /* [n] each */
    uint32_t *cnt;                 /* [MK_DELLA_BINS + 1] counting-rank bins */
} mk_della_buf;

/* bf16 magnitudes have 15 bits above the low 16 (sign cleared): every one has a bin, the
 * zeros one of their own below the others. */
#define MK_DELLA_BINS 32768u

static inline size_t mk_della_buf_words(uint64_t n) { return 4 * (size_t)n + MK_DELLA_BINS + 1; }

/* Point b's arrays into `words` (mk_della_buf_words(n) of them). */
void mk_della_buf_carve(mk_della_buf *b, uint32_t *words, uint64_t n);

/* kp[j] = u[j] < pr[rank of |delta[j]|] for j < n (n >= 1). */
void mk_della_row_keep(const float *pr, const float *delta, const float *u, uint64_t n, const mk_della_buf *b,
                       uint8_t *kp);
/* The same by a stable radix sort only (the reference for tests). */
void mk_della_row_keep_ref(const float *pr, const float *delta, const float *u, uint64_t n, const mk_della_buf *b,
                           uint8_t *kp);

#endif
