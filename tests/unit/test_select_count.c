/* test_select_count.c - mk_sel_count's HI pass (select.h) against a plain count: the
 * shared histogram of key >> 16, the OR of the low halves and each chunk's window, for
 * the layouts it picks by the keys' range (sub-histograms folded over a dense range, one
 * histogram flushed key by key when the keys are spread). */
#include "harness.h"

#include "../../core/mk_rng.h"
#include "../../merge/methods/kernel.h"
#include "../../merge/methods/select.h"

#include <stdlib.h>

/* The window keep_windows documents: the chunk's bin holding its own rank
 * pos / n * len (same rank fraction, scanned in the query's order), MK_SEL_WIN bins
 * around it. */
static uint32_t ref_window_lo(const uint32_t *h, uint64_t len, uint64_t pos, uint64_t n, bool desc)
{
    uint64_t r = (uint64_t)((double)pos / (double)n * (double)len), cum = 0;
    if (r >= len) r = len - 1;
    uint32_t b = 0;
    for (uint32_t i = 0; i < MK_SEL_BINS; i++) {
        b = desc ? MK_SEL_BINS - 1 - i : i;
        cum += h[b];
        if (cum > r) break;
    }
    uint32_t lo = b < MK_SEL_WIN / 2 ? 0 : b - MK_SEL_WIN / 2;
    return lo > MK_SEL_BINS - MK_SEL_WIN ? MK_SEL_BINS - MK_SEL_WIN : lo;
}

/* One HI pass over keys in chunks of `chunk` (in reverse chunk order), checked against
 * counts made here. */
static void check_hi(const char *what, const uint32_t *keys, uint64_t n, uint64_t chunk, bool desc)
{
    uint64_t nch = n ? (n + chunk - 1) / chunk : 1;
    mk_select s;
    CHECK_OK(mk_sel_init(&s, n, nch, 1, 1));
    mk_sel_query_set(&s, 0, 0, n / 3 ? n / 3 : 1, desc, false);
    s.phase = MK_SEL_HI; /* even when mk_sel_start would find nothing to do (n <= 1) */
    for (uint64_t i = nch; i-- > 0;) {
        uint64_t e0 = i * chunk, m = n - e0 < chunk ? n - e0 : chunk;
        CHECK_OK(mk_sel_count(&s, 0, i, keys + e0, n ? m : 0));
    }
    uint64_t *want = calloc(MK_SEL_BINS, sizeof *want);
    uint32_t *hc = calloc(MK_SEL_BINS, sizeof *hc), lo_or = 0;
    for (uint64_t i = 0; i < n; i++) {
        want[keys[i] >> 16]++;
        lo_or |= keys[i] & 0xffffu;
    }
    uint64_t bad = 0, first = 0;
    for (uint32_t b = 0; b < MK_SEL_BINS; b++)
        if (s.hi_hist[b] != want[b] && !bad++) first = b;
    CHECK_MSG(bad == 0, "%s (n %llu, chunk %llu): %llu bins differ, first %llu got %llu want %llu", what,
              (unsigned long long)n, (unsigned long long)chunk, (unsigned long long)bad, (unsigned long long)first,
              (unsigned long long)s.hi_hist[first], (unsigned long long)want[first]);
    CHECK_MSG(s.lo_or[0] == lo_or, "%s: low bits OR %x want %x", what, s.lo_or[0], lo_or);
    for (uint64_t c = 0; c < nch && n; c++) {
        uint64_t e0 = c * chunk, m = n - e0 < chunk ? n - e0 : chunk;
        memset(hc, 0, MK_SEL_BINS * sizeof *hc);
        for (uint64_t i = 0; i < m; i++) hc[keys[e0 + i] >> 16]++;
        uint32_t lo = lo_or ? MK_SEL_NO_WIN : ref_window_lo(hc, m, s.q[0].pos, n, desc);
        bool bad_win = s.q[0].win_lo[c] != lo;
        if (lo != MK_SEL_NO_WIN && !bad_win) bad_win = memcmp(s.q[0].win + c * MK_SEL_WIN, hc + lo, MK_SEL_WIN * 4) != 0;
        /* win_lo is recorded only when this chunk's keys have zero low halves */
        bool chunk_whole = true;
        for (uint64_t i = 0; i < m; i++) chunk_whole &= (keys[e0 + i] & 0xffffu) == 0;
        if (!lo_or || !chunk_whole) CHECK_MSG(!bad_win, "%s (n %llu): chunk %llu window at %u, want %u", what,
                                              (unsigned long long)n, (unsigned long long)c, s.q[0].win_lo[c], lo);
    }
    free(want);
    free(hc);
    mk_sel_free(&s);
}

/* HI then LO pass of a value query at rank pos: the LO pass's histogram of the low halves
 * of the keys in the cut's top bin, and its per-chunk counts of them, against counts made
 * here. */
static void check_lo(const char *what, const uint32_t *keys, uint64_t n, uint64_t chunk, uint64_t pos)
{
    uint64_t nch = (n + chunk - 1) / chunk;
    mk_select s;
    CHECK_OK(mk_sel_init(&s, n, nch, 1, 1));
    mk_sel_query_set(&s, 0, 0, pos, false, true);
    CHECK(mk_sel_start(&s));
    for (uint64_t i = 0; i < nch; i++) CHECK_OK(mk_sel_count(&s, 0, i, keys + i * chunk, n - i * chunk < chunk ? n - i * chunk : chunk));
    if (!mk_sel_next(&s) || s.phase != MK_SEL_LO) {
        uint32_t lo_or = 0;
        for (uint64_t i = 0; i < n; i++) lo_or |= keys[i] & 0xffffu;
        CHECK_MSG(!lo_or, "%s (n %llu): no LO pass", what, (unsigned long long)n);
        mk_sel_free(&s);
        return;
    }
    for (uint64_t i = nch; i-- > 0;) CHECK_OK(mk_sel_count(&s, 0, i, keys + i * chunk, n - i * chunk < chunk ? n - i * chunk : chunk));
    const uint32_t hi = s.q[0].hi;
    uint64_t *want = calloc(MK_SEL_BINS, sizeof *want), bad = 0, first = 0;
    for (uint64_t i = 0; i < n; i++)
        if (keys[i] >> 16 == hi) want[keys[i] & 0xffffu]++;
    for (uint32_t b = 0; b < MK_SEL_BINS; b++)
        if (s.q[0].lo_hist[b] != want[b] && !bad++) first = b;
    CHECK_MSG(bad == 0, "%s (n %llu, chunk %llu): LO bin %llu got %llu want %llu", what, (unsigned long long)n,
              (unsigned long long)chunk, (unsigned long long)first, (unsigned long long)s.q[0].lo_hist[first],
              (unsigned long long)want[first]);
    for (uint64_t c = 0; c < nch; c++) {
        uint64_t e0 = c * chunk, m = n - e0 < chunk ? n - e0 : chunk, in = 0;
        for (uint64_t i = 0; i < m; i++) in += keys[e0 + i] >> 16 == hi;
        CHECK_MSG(s.q[0].bin_chunk[c] == in, "%s: chunk %llu has %llu keys in the bin, want %llu", what,
                  (unsigned long long)c, (unsigned long long)s.q[0].bin_chunk[c], (unsigned long long)in);
    }
    free(want);
    mk_sel_free(&s);
}

MK_TEST(select_count_hi_matches_plain_count)
{
    const uint64_t n = 70001;
    uint32_t *k = malloc(n * 4);
    mk_rng key = mk_rng_key(11, "select-count");
    const uint64_t sizes[] = {0, 1, 2, 3, 4, 5, 7, 63, 100, 4097, n};
    for (int kind = 0; kind < 7; kind++) {
        const char *what = "";
        for (uint64_t i = 0; i < n; i++) {
            float x = (mk_rng_uniform(key, 0, i) - 0.5f) * 0.1f;
            switch (kind) {
            case 0: what = "random keys", k[i] = mk_rng_u32(key, 1, i); break;
            case 1: what = "all equal", k[i] = 0x3c0a0000u; break;
            case 2: what = "zero low halves", k[i] = mk_key_abs(mk_dtype_round(MK_BF16, x)); break;
            case 3: what = "f32 magnitudes", k[i] = mk_key_abs(x); break;
            case 4: what = "sorted runs", k[i] = (uint32_t)(i / 37) << 16 | (uint32_t)(i & 1); break;
            case 5: what = "extremes", k[i] = (i % 3 == 0) ? 0 : (i % 3 == 1) ? UINT32_MAX : 0xffff0000u; break;
            default: what = "two bins", k[i] = (mk_rng_u32(key, 2, i) & 1) ? 0x00010000u : 0x00020000u; break;
            }
        }
        for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
            check_hi(what, k, sizes[z], 1000, false);
            check_hi(what, k, sizes[z], 4096, true);
            check_hi(what, k, sizes[z], 65536, true);
            /* keys with low bits: the LO pass too */
            if (sizes[z] && (kind == 0 || kind == 3 || kind == 4))
                for (uint64_t pos = 0; pos < sizes[z]; pos += sizes[z] / 3 + 1) {
                    check_lo(what, k, sizes[z], 1000, pos);
                    check_lo(what, k, sizes[z], 4097, pos);
                }
        }
    }
    free(k);
}
