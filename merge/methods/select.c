/* select.c - see select.h */
#include "select.h"

#include "kernel.h"

#include <stdlib.h>
#include <string.h>

mk_status mk_sel_init(mk_select *s, uint64_t n, uint64_t n_chunks, size_t n_streams, size_t n_queries)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    s->n_chunks = n_chunks;
    s->n_streams = n_streams;
    s->n_queries = n_queries;
    s->hi_hist = mk_calloc(n_streams * (size_t)MK_SEL_BINS, sizeof *s->hi_hist);
    s->lo_or = mk_calloc(n_streams ? n_streams : 1, sizeof *s->lo_or);
    s->q = mk_calloc(n_queries ? n_queries : 1, sizeof *s->q);
    if (!s->hi_hist || !s->lo_or || !s->q) {
        mk_sel_free(s);
        return MK_ERR_NOMEM;
    }
    for (size_t i = 0; i < n_queries; i++) {
        mk_sel_query *q = &s->q[i];
        q->lo_hist = mk_calloc(MK_SEL_BINS, sizeof *q->lo_hist);
        q->bin_chunk = mk_calloc(n_chunks ? n_chunks : 1, sizeof *q->bin_chunk);
        q->eq_before = mk_calloc(n_chunks ? n_chunks : 1, sizeof *q->eq_before);
        q->win = mk_calloc((size_t)(n_chunks ? n_chunks : 1) * MK_SEL_WIN, sizeof *q->win);
        q->win_lo = mk_calloc(n_chunks ? n_chunks : 1, sizeof *q->win_lo);
        if (!q->lo_hist || !q->bin_chunk || !q->eq_before || !q->win || !q->win_lo) {
            mk_sel_free(s);
            return MK_ERR_NOMEM;
        }
    }
    return MK_OK;
}

void mk_sel_free(mk_select *s)
{
    if (!s) return;
    for (size_t i = 0; s->q && i < s->n_queries; i++) {
        free(s->q[i].lo_hist);
        free(s->q[i].bin_chunk);
        free(s->q[i].eq_before);
        free(s->q[i].win);
        free(s->q[i].win_lo);
    }
    free(s->q);
    free(s->hi_hist);
    free(s->lo_or);
    memset(s, 0, sizeof *s);
}

static bool any_pending(const mk_select *s)
{
    for (size_t i = 0; i < s->n_queries; i++)
        if (!s->q[i].done) return true;
    return false;
}

bool mk_sel_start(mk_select *s)
{
    for (size_t i = 0; i < s->n_queries; i++) {
        mk_sel_query *q = &s->q[i];
        if (q->pos > s->n) q->pos = s->n;
        if (q->value && q->pos >= s->n) MK_BUG("select: a value query past the end");
        if (!q->value && (q->pos == 0 || q->pos == s->n)) {
            q->all = q->pos == s->n && s->n > 0;
            q->done = true;
        }
    }
    s->phase = MK_SEL_HI;
    if (!any_pending(s)) s->phase = MK_SEL_DONE;
    return s->phase != MK_SEL_DONE;
}

void mk_sel_set_pos(mk_select *s, size_t qi, uint64_t pos)
{
    mk_sel_query *q = &s->q[qi];
    q->pos = pos > s->n ? s->n : pos;
    q->done = false;
    q->all = false;
    if (!q->value && (q->pos == 0 || q->pos == s->n)) {
        q->all = q->pos == s->n && s->n > 0;
        q->done = true;
    }
}

/* Find the bin holding rank r (0-based) of hist, scanning up (asc) or down (desc);
 * *before = count in the bins scanned before it. */
static uint32_t find_bin(const uint64_t *hist, uint64_t r, bool desc, uint64_t *before)
{
    uint64_t cum = 0;
    for (uint32_t i = 0; i < MK_SEL_BINS; i++) {
        uint32_t b = desc ? MK_SEL_BINS - 1 - i : i;
        if (r < cum + hist[b]) {
            *before = cum;
            return b;
        }
        cum += hist[b];
    }
    MK_BUG("select: rank beyond the histogram");
}

/* HI pass: for each cut query on stream st, the chunk's counts of the MK_SEL_WIN bins
 * around the bin where this chunk's own cut would fall (same rank fraction). Only useful
 * when the bin is the whole key (no low bits), else recorded as absent. */
static void keep_windows(mk_select *s, size_t st, uint64_t chunk, const uint32_t *h, uint64_t n, bool whole_keys,
                         uint32_t hmin, uint32_t hmax)
{
    for (size_t qi = 0; qi < s->n_queries; qi++) {
        mk_sel_query *q = &s->q[qi];
        if (q->done || q->value || q->stream != st) continue;
        q->win_lo[chunk] = MK_SEL_NO_WIN;
        if (!whole_keys || !n) continue;
        uint64_t r = (uint64_t)((double)q->pos / (double)s->n * (double)n), cum = 0;
        if (r >= n) r = n - 1;
        /* the bins outside [hmin, hmax] are empty: the scan starts at the chunk's first key */
        uint32_t b = 0;
        for (uint32_t i = 0; i <= hmax - hmin; i++) {
            b = q->desc ? hmax - i : hmin + i;
            cum += h[b];
            if (cum > r) break;
        }
        uint32_t lo = b < MK_SEL_WIN / 2 ? 0 : b - MK_SEL_WIN / 2;
        if (lo > MK_SEL_BINS - MK_SEL_WIN) lo = MK_SEL_BINS - MK_SEL_WIN;
        q->win_lo[chunk] = lo;
        memcpy(q->win + chunk * MK_SEL_WIN, h + lo, MK_SEL_WIN * sizeof *h);
    }
}

/* The windows of every chunk hold bin `bin`: per-chunk counts from them. */
static bool counts_from_windows(const mk_select *s, mk_sel_query *q, uint32_t bin)
{
    for (uint64_t c = 0; c < s->n_chunks; c++) {
        uint32_t lo = q->win_lo[c];
        if (lo == MK_SEL_NO_WIN || bin < lo || bin >= lo + MK_SEL_WIN) return false;
    }
    for (uint64_t c = 0; c < s->n_chunks; c++) q->eq_before[c] = q->win[c * MK_SEL_WIN + (bin - q->win_lo[c])];
    return true;
}

/* OR, min and max of n keys (n > 0): one vectorised read before the histogram, whose
 * range [min >> 16, max >> 16] says which histogram layout to use and which bins to flush. */
MK_KCLONE static uint32_t key_range(const uint32_t *keys, uint64_t n, uint32_t *kmin, uint32_t *kmax)
{
    uint32_t o = 0, lo = UINT32_MAX, hi = 0;
#pragma omp simd reduction(| : o) reduction(min : lo) reduction(max : hi)
    for (uint64_t i = 0; i < n; i++) {
        o |= keys[i];
        lo = keys[i] < lo ? keys[i] : lo;
        hi = keys[i] > hi ? keys[i] : hi;
    }
    *kmin = lo;
    *kmax = hi;
    return o;
}

/* Counts of keys >> 16 into MK_SEL_SUB interleaved sub-histograms h[j][bin] (key i goes to
 * sub-histogram i % MK_SEL_SUB), then summed into h[0] over bins [bmin, bmax], the others
 * left zero. Why: neighbouring keys often share a bin (sorted or clustered data, bf16
 * magnitudes), and one histogram then waits on each increment's store before the next
 * load; four independent ones do not. */
#define MK_SEL_SUB 4
static void hist_sub(uint32_t *h, const uint32_t *keys, uint64_t n)
{
    uint32_t *h1 = h + MK_SEL_BINS, *h2 = h1 + MK_SEL_BINS, *h3 = h2 + MK_SEL_BINS;
    uint64_t i = 0;
    for (; i + MK_SEL_SUB <= n; i += MK_SEL_SUB) {
        h[keys[i] >> 16]++;
        h1[keys[i + 1] >> 16]++;
        h2[keys[i + 2] >> 16]++;
        h3[keys[i + 3] >> 16]++;
    }
    for (; i < n; i++) h[keys[i] >> 16]++;
}

MK_KCLONE static void hist_fold(uint32_t *h, uint32_t bmin, uint32_t bmax)
{
    uint32_t *h1 = h + MK_SEL_BINS, *h2 = h1 + MK_SEL_BINS, *h3 = h2 + MK_SEL_BINS;
#pragma omp simd
    for (uint32_t b = bmin; b <= bmax; b++) {
        h[b] += h1[b] + h2[b] + h3[b];
        h1[b] = h2[b] = h3[b] = 0;
    }
}

/* HI pass of one chunk: its histogram of key >> 16 into the shared one, with the windows
 * and the OR of the low bits. */
static mk_status count_hi(mk_select *s, size_t st, uint64_t chunk, const uint32_t *keys, uint64_t n)
{
    /* a per-thread histogram (MK_SEL_SUB sub-histograms) that is all zeros between calls:
     * counts go in, then the bins these keys touched are added to the shared histogram and
     * cleared again, so a call costs O(n), not O(bins) */
    static _Thread_local uint32_t *tls_h;
    if (!tls_h && !(tls_h = calloc((size_t)MK_SEL_SUB * MK_SEL_BINS, sizeof *tls_h)))
        return mk_error(MK_ERR_NOMEM, "out of memory for a histogram");
    uint32_t *const h = tls_h;
    uint32_t kmin = 0, kmax = 0;
    const uint32_t lo_or = n ? key_range(keys, n, &kmin, &kmax) : 0;
    const uint32_t hmin = kmin >> 16, hmax = kmax >> 16;
    /* fewer bins between the extremes than keys: sub-histograms folded over that range,
     * and the flush walks the range in bin order; else the keys are spread too thinly to
     * share bins, one histogram, flushed key by key */
    const bool dense = hmax - hmin < n;
    if (dense) {
        hist_sub(h, keys, n);
        hist_fold(h, hmin, hmax);
    } else {
        for (uint64_t i = 0; i < n; i++) h[keys[i] >> 16]++;
    }
    keep_windows(s, st, chunk, h, n, (lo_or & 0xffffu) == 0, hmin, hmax);
    uint64_t *g = s->hi_hist + st * (size_t)MK_SEL_BINS;
    if (dense) {
        for (uint32_t b = hmin; b <= hmax; b++) {
            if (!h[b]) continue;
            __atomic_fetch_add(&g[b], (uint64_t)h[b], __ATOMIC_RELAXED);
            h[b] = 0;
        }
    } else {
        for (uint64_t i = 0; i < n; i++) {
            uint32_t b = keys[i] >> 16;
            if (!h[b]) continue;
            __atomic_fetch_add(&g[b], (uint64_t)h[b], __ATOMIC_RELAXED);
            h[b] = 0;
        }
    }
    __atomic_fetch_or(&s->lo_or[st], lo_or & 0xffffu, __ATOMIC_RELAXED);
    return MK_OK;
}

/* LO pass of one query: the low halves of the keys in bin `hi` into lo_hist; returns how
 * many there were. The bin holds few of the keys: blocks are first counted (vectorised),
 * and only blocks with some are walked. */
MK_KCLONE static uint64_t count_lo(uint64_t *lo_hist, uint32_t hi, const uint32_t *keys, uint64_t n)
{
    enum { B = 64 };
    uint64_t in_bin = 0;
    for (uint64_t i0 = 0; i0 < n; i0 += B) {
        const uint64_t m = n - i0 < B ? n - i0 : B;
        unsigned c = 0;
#pragma omp simd reduction(+ : c)
        for (uint64_t i = 0; i < m; i++) c += (keys[i0 + i] >> 16) == hi;
        if (!c) continue;
        in_bin += c;
        for (uint64_t i = i0; i < i0 + m; i++)
            if ((keys[i] >> 16) == hi) __atomic_fetch_add(&lo_hist[keys[i] & 0xffffu], 1, __ATOMIC_RELAXED);
    }
    return in_bin;
}

mk_status mk_sel_count(mk_select *s, size_t st, uint64_t chunk, const uint32_t *keys, uint64_t n)
{
    if (s->phase == MK_SEL_HI) return count_hi(s, st, chunk, keys, n);
    for (size_t qi = 0; qi < s->n_queries; qi++) {
        mk_sel_query *q = &s->q[qi];
        if (q->done || q->stream != st) continue;
        if (s->phase == MK_SEL_LO && !q->need_tie) {
            q->bin_chunk[chunk] = count_lo(q->lo_hist, q->hi, keys, n);
        } else if (s->phase == MK_SEL_TIE && q->need_tie) {
            uint64_t eq = 0;
            for (uint64_t i = 0; i < n; i++) eq += keys[i] == q->key;
            q->eq_before[chunk] = eq; /* made exclusive prefix sums in mk_sel_next */
        }
    }
    return MK_OK;
}

static void prefix(uint64_t *v, uint64_t n)
{
    uint64_t run = 0;
    for (uint64_t c = 0; c < n; c++) {
        uint64_t x = v[c];
        v[c] = run;
        run += x;
    }
}

/* The cut key is known: either the cut is decided, or the ties need per-chunk counts. */
static void after_key(mk_sel_query *q)
{
    q->take = q->pos - q->strict;
    if (q->value || q->take == 0 || q->take >= q->equal) q->done = true;
    else q->need_tie = true;
}

bool mk_sel_next(mk_select *s)
{
    switch (s->phase) {
    case MK_SEL_HI: {
        bool need_lo = false;
        for (size_t i = 0; i < s->n_queries; i++) {
            mk_sel_query *q = &s->q[i];
            if (q->done) continue;
            const uint64_t *h = s->hi_hist + q->stream * (size_t)MK_SEL_BINS;
            uint64_t before = 0;
            q->hi = find_bin(h, q->pos, q->desc, &before);
            if (s->lo_or[q->stream] == 0) {
                /* every key has zero low bits: the bin is the key */
                q->key = q->hi << 16;
                q->strict = before;
                q->equal = h[q->hi];
                after_key(q);
                if (q->need_tie && counts_from_windows(s, q, q->hi)) {
                    prefix(q->eq_before, s->n_chunks);
                    q->need_tie = false;
                    q->done = true;
                }
            } else {
                q->strict = before; /* completed by the LO pass */
                need_lo = true;
            }
        }
        if (need_lo) {
            s->phase = MK_SEL_LO;
            return true;
        }
        break;
    }
    case MK_SEL_LO:
        for (size_t i = 0; i < s->n_queries; i++) {
            mk_sel_query *q = &s->q[i];
            if (q->done || q->need_tie) continue;
            uint64_t before = 0;
            uint32_t lo = find_bin(q->lo_hist, q->pos - q->strict, q->desc, &before);
            q->key = (q->hi << 16) | lo;
            q->strict += before;
            q->equal = q->lo_hist[lo];
            after_key(q);
            if (q->done) continue;
            /* one distinct key in the bin: the per-chunk bin counts are the tie counts */
            uint64_t distinct = 0;
            for (uint32_t b = 0; b < MK_SEL_BINS && distinct < 2; b++) distinct += q->lo_hist[b] != 0;
            if (distinct == 1) {
                memcpy(q->eq_before, q->bin_chunk, (size_t)s->n_chunks * sizeof *q->eq_before);
                prefix(q->eq_before, s->n_chunks);
                q->need_tie = false;
                q->done = true;
            }
        }
        break;
    case MK_SEL_TIE:
        for (size_t i = 0; i < s->n_queries; i++) {
            mk_sel_query *q = &s->q[i];
            if (q->done || !q->need_tie) continue;
            prefix(q->eq_before, s->n_chunks);
            q->need_tie = false;
            q->done = true;
        }
        break;
    case MK_SEL_DONE: return false;
    }
    for (size_t i = 0; i < s->n_queries; i++)
        if (!s->q[i].done && s->q[i].need_tie) {
            s->phase = MK_SEL_TIE;
            return true;
        }
    s->phase = MK_SEL_DONE;
    return false;
}

MK_KCLONE void mk_sel_flags(const mk_sel_query *q, uint64_t chunk, const uint32_t *keys, uint64_t n, uint8_t *flags,
                  uint64_t *seen_io)
{
    if (q->pos == 0 || q->all) {
        memset(flags, q->all && q->pos != 0, (size_t)n);
        return;
    }
    const uint32_t cut = q->key;
    const bool desc = q->desc, eq_in = q->take >= q->equal && q->take > 0;
#pragma omp simd
    for (uint64_t i = 0; i < n; i++) {
        const uint32_t k = keys[i];
        flags[i] = (desc ? k > cut : k < cut) || (eq_in && k == cut);
    }
    if (q->take == 0 || q->take >= q->equal) return;
    /* the keys equal to the cut that are before it: the first `rem` of them in this piece
     * (in index order), so those at indices below p, the index after the rem-th one */
    const uint64_t before = q->eq_before[chunk] + *seen_io, take = q->take;
    uint64_t rem = take > before ? take - before : 0, p = 0, seen = 0;
    enum { STEP = 256 };
    for (uint64_t i0 = 0; i0 < n && rem;) {
        const uint64_t m = n - i0 < STEP ? n - i0 : STEP;
        uint64_t c = 0;
        for (uint64_t i = 0; i < m; i++) c += keys[i0 + i] == cut;
        if (c < rem) {
            rem -= c;
            i0 += m;
            p = i0;
            continue;
        }
        for (uint64_t i = i0;; i++)
            if (keys[i] == cut && !--rem) {
                p = i + 1;
                break;
            }
    }
    for (uint64_t i = 0; i < n; i++) {
        const bool eq = keys[i] == cut;
        flags[i] = eq ? i < p : flags[i];
        seen += eq;
    }
    *seen_io += seen;
}
