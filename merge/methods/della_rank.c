/* della_rank.c - see della_rank.h */
#include "della_rank.h"

#include "kernel.h"

void mk_della_buf_carve(mk_della_buf *b, uint32_t *words, uint64_t n)
{
    b->key = words;
    b->idx = b->key + n;
    b->tk = b->idx + n;
    b->ti = b->tk + n;
    b->cnt = b->ti + n;
}

/* Stable LSD radix sort of the indices 0..n-1 by key: equal keys stay in index order.
 * The four digits' histograms are counted in one scan; a digit that every key shares (the
 * low 16 bits of bf16 values) leaves the order as it is: its pass is skipped. The passes
 * move between (key, idx) and (tk, ti); returns the array holding the sorted indices. */
static const uint32_t *radix_sort(uint32_t *key, uint32_t *idx, uint32_t *tk, uint32_t *ti, uint64_t n)
{
    uint32_t cnt[4][257];
    memset(cnt, 0, sizeof cnt);
    for (uint64_t i = 0; i < n; i++) {
        uint32_t k = key[i];
        idx[i] = (uint32_t)i;
        cnt[0][(k & 0xff) + 1]++;
        cnt[1][((k >> 8) & 0xff) + 1]++;
        cnt[2][((k >> 16) & 0xff) + 1]++;
        cnt[3][(k >> 24) + 1]++;
    }
    for (int d = 0; d < 4; d++) {
        const int shift = 8 * d;
        uint32_t *c = cnt[d];
        if (!n || c[((key[0] >> shift) & 0xff) + 1] == n) continue;
        for (int b = 0; b < 256; b++) c[b + 1] += c[b];
        for (uint64_t i = 0; i < n; i++) {
            uint32_t dst = c[(key[i] >> shift) & 0xff]++;
            tk[dst] = key[i];
            ti[dst] = idx[i];
        }
        uint32_t *t = key;
        key = tk;
        tk = t;
        t = idx;
        idx = ti;
        ti = t;
    }
    return idx;
}

/* The same order for keys whose low 16 bits are all zero (bf16 values) and n <= 65536:
 * v[j] = key | j, sorted by its top 16 bits in two 8-bit passes that move one word per
 * element (each pass stable, and the index in the low bits). Returns the sorted array. */
static const uint32_t *radix_sort_packed(uint32_t *v, uint32_t *t, uint64_t n)
{
    uint32_t cnt[2][257];
    memset(cnt, 0, sizeof cnt);
    for (uint64_t i = 0; i < n; i++) {
        cnt[0][((v[i] >> 16) & 0xff) + 1]++;
        cnt[1][(v[i] >> 24) + 1]++;
    }
    for (int d = 0; d < 2; d++) {
        const int shift = 16 + 8 * d;
        uint32_t *c = cnt[d];
        if (!n || c[((v[0] >> shift) & 0xff) + 1] == n) continue;
        for (int b = 0; b < 256; b++) c[b + 1] += c[b];
        for (uint64_t i = 0; i < n; i++) t[c[(v[i] >> shift) & 0xff]++] = v[i];
        uint32_t *x = v;
        v = t;
        t = x;
    }
    return v;
}

/* Flags from b->key (the magnitude keys, already there) by the radix sorts. */
static void keep_by_sort(const float *pr, const float *u, uint64_t n, const mk_della_buf *b, bool low_zero,
                         uint8_t *kp)
{
    if (low_zero && n <= 65536) {
        uint32_t *key = b->key;
        MK_SIMD for (uint64_t j = 0; j < n; j++) key[j] |= (uint32_t)j;
        const uint32_t *v = radix_sort_packed(b->key, b->tk, n);
        for (uint64_t r = 0; r < n; r++) {
            uint32_t j = v[r] & 0xffffu;
            kp[j] = u[j] < pr[r];
        }
        return;
    }
    const uint32_t *idx = radix_sort(b->key, b->idx, b->tk, b->ti, n);
    for (uint64_t r = 0; r < n; r++) {
        uint32_t j = idx[r];
        kp[j] = u[j] < pr[r];
    }
}

/* b->key[j] = |delta[j]| as a key; true when every key's low 16 bits are zero */
static inline MK_HOT bool della_keys(const float *delta, uint64_t n, const mk_della_buf *b)
{
    uint32_t lo = 0, *key = b->key; /* a local pointer: the stores cannot change it */
    MK_SIMD for (uint64_t j = 0; j < n; j++) {
        key[j] = mk_key_abs(delta[j]);
        lo |= key[j];
    }
    return (lo & 0xffffu) == 0;
}

void mk_della_row_keep_ref(const float *pr, const float *delta, const float *u, uint64_t n, const mk_della_buf *b,
                           uint8_t *kp)
{
    keep_by_sort(pr, u, n, b, della_keys(delta, n, b), kp);
}

/* Counting rank of bf16-like keys: bin 0 holds the zeros, bin h - hmin + 1 the keys whose top
 * 16 bits are h (hmin: the smallest nonzero h), so the bins are in key order; a counting
 * sort visits the elements in index order, so equal keys get ranks in index order: the
 * radix sort's ranks. Worth it when the bins are few beside n (they are zeroed and summed):
 * a bf16 row's deltas span some 10 to 30 binades of 128 bins each. */
MK_KCLONE void mk_della_row_keep(const float *pr, const float *delta, const float *u, uint64_t n, const mk_della_buf *b,
                                 uint8_t *kp)
{
    const bool low_zero = della_keys(delta, n, b);
    if (!low_zero) {
        keep_by_sort(pr, u, n, b, false, kp);
        return;
    }
    /* h - 1 wraps the zeros' 0 to the largest value: its minimum is hmin - 1 (hmin the
     * smallest nonzero h), UINT32_MAX when all are zero */
    const uint32_t *key = b->key;
    uint32_t off = UINT32_MAX, hmax = 0;
    MK_SIMD for (uint64_t j = 0; j < n; j++) {
        const uint32_t h = key[j] >> 16, h1 = h - 1;
        off = h1 < off ? h1 : off;
        hmax = h > hmax ? h : hmax;
    }
    /* bins 0 (zeros) .. hmax - hmin + 1; only zeros: one bin */
    const uint64_t bins = off != UINT32_MAX ? (uint64_t)(hmax - off) + 1 : 1;
    if (bins > 3 * n + 256) {
        keep_by_sort(pr, u, n, b, true, kp);
        return;
    }
    uint32_t *bin = b->idx, *cnt = b->cnt;
    MK_SIMD for (uint64_t j = 0; j < n; j++) {
        const uint32_t h = key[j] >> 16;
        bin[j] = h ? h - off : 0; /* h - hmin + 1 */
    }
    memset(cnt, 0, (size_t)bins * sizeof *cnt);
    for (uint64_t j = 0; j < n; j++) cnt[bin[j]]++;
    uint32_t run = 0;
    for (uint64_t i = 0; i < bins; i++) {
        const uint32_t c = cnt[i];
        cnt[i] = run;
        run += c;
    }
    for (uint64_t j = 0; j < n; j++) kp[j] = u[j] < pr[cnt[bin[j]]++];
}
