/* test_search.c - the scale search's fast paths against its reference paths, bit for bit:
 * the least-squares fits of several candidates in one sweep, the two real errors in one
 * sweep, the whole search, and the proxy's row energies several rows at a time. Groups of
 * odd and round lengths, zeros, constant groups, huge, tiny and subnormal values, zero and
 * NULL importances. Tolerance: none (the doubles and floats compared as bits); a failure
 * prints the case and both values.
 */
#include "harness.h"

#include "../../quant/search.h"
#include "../../quant/search_proxy.h"

#include <stdlib.h>

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* uniform in [-1, 1) */
static float uni(uint64_t *s) { return (float)((double)(rng_next(s) >> 11) / 9007199254740992.0 * 2 - 1); }

enum { N_KINDS = 8 };

/* Group kind k of n values: Gaussian-like, zeros, constant, huge, tiny, subnormal, a few
 * outliers, half zeros. */
static void fill(float *x, size_t n, int k, uint64_t *s)
{
    static const float mag[N_KINDS] = {0.02f, 0, 0.5f, 1e30f, 1e-30f, 1e-40f, 0.01f, 1.0f};
    for (size_t i = 0; i < n; i++) {
        float v = (uni(s) + uni(s) + uni(s)) * mag[k];
        if (k == 2) v = -0.5f;
        if (k == 6 && rng_next(s) % 50 == 0) v *= 40;
        if (k == 7 && rng_next(s) % 2) v = 0;
        x[i] = v;
    }
}

static bool same_bits(const void *a, const void *b, size_t n) { return memcmp(a, b, n) == 0; }

static const size_t lens[] = {1, 3, 7, 8, 9, 15, 16, 31, 32, 33, 64, 100, 128, 129, 255, 256};
#define N_LENS (sizeof lens / sizeof *lens)

/* The importances: NULL, random >= 0, or with zeros */
static const float *imps(float *w, size_t n, int wk, uint64_t *s)
{
    if (wk == 0) return NULL;
    for (size_t i = 0; i < n; i++) w[i] = wk == 2 && rng_next(s) % 3 == 0 ? 0.0f : expf(2.3f * uni(s));
    return w;
}

MK_TEST(search_fits_match_ref)
{
    uint64_t st = 0x9e3779b97f4a7c15u;
    float x[256], w[256], inv[9], z0[9], s0[9], s1[9];
    double e0[9], e1[9];
    size_t bad = 0;
    for (size_t li = 0; li < N_LENS; li++)
        for (int k = 0; k < N_KINDS; k++)
            for (int wk = 0; wk < 3; wk++)
                for (int zk = 0; zk < 3; zk++) {
                    const size_t n = lens[li], nc = zk == 2 ? 9 : 7 - (size_t)wk * 3;
                    fill(x, n, k, &st);
                    const float *wp = imps(w, n, wk, &st);
                    float mx = 0;
                    double sxx = 0;
                    for (size_t i = 0; i < n; i++) {
                        mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
                        sxx += (double)((wp ? wp[i] : 1.0f) * x[i] * x[i]);
                    }
                    /* zk 0: every zero point 0 (the symmetric form), else integers in range */
                    for (size_t c = 0; c < nc; c++) {
                        inv[c] = (7.5f + 0.1f * (float)((int)c * 3 - 9)) / (mx > 0 ? mx : 1.0f);
                        if (c == 8) inv[c] = 1.0f / (uni(&st) * mx); /* a refit's, of any sign */
                        z0[c] = zk == 0 ? 0.0f : (float)(int)(rng_next(&st) % 16) - 8.0f;
                    }
                    mk_search_fits(x, wp, n, nc, inv, z0, -8, 7, sxx, s0, e0, true);
                    mk_search_fits(x, wp, n, nc, inv, z0, -8, 7, sxx, s1, e1, false);
                    for (size_t c = 0; c < nc; c++)
                        if (!same_bits(&e0[c], &e1[c], sizeof *e0) || !same_bits(&s0[c], &s1[c], sizeof *s0)) {
                            if (bad++ < 5)
                                mk_test_fail(__FILE__, __LINE__, "n %zu kind %d imp %d zp %d candidate %zu: e %.17g s %.9g, want %.17g %.9g", n,
                                             k, wk, zk, c, e1[c], (double)s1[c], e0[c], (double)s0[c]);
                        }
                }
    CHECK_MSG(bad == 0, "%zu fits differ from the reference", bad);
}

/* Case ci of N_CASES (weight dtype, int4/int8 sym/asym, length, group kind, importances):
 * *a, *n and x (rounded to the dtype); returns the importances (or NULL). */
static const mk_dtype dts[] = {MK_BF16, MK_F32, MK_F16};
#define N_CASES (3 * 4 * N_LENS * N_KINDS * 3)
static const float *make_case(size_t ci, mk_ct_int *a, size_t *n, int *k, float *x, float *w, uint64_t *st)
{
    const int wk = (int)(ci % 3), form = (int)(ci / 3 / N_KINDS / N_LENS % 4);
    *k = (int)(ci / 3 % N_KINDS);
    *n = lens[ci / 3 / N_KINDS % N_LENS];
    *a = (mk_ct_int){form < 2 ? 4u : 8u, form % 2 != 0, dts[ci / 3 / N_KINDS / N_LENS / 4]};
    fill(x, *n, *k, st);
    for (size_t i = 0; i < *n; i++) x[i] = mk_ct_round(a->wdtype, x[i]);
    return imps(w, *n, wk, st);
}

MK_TEST(search_real_errors_match_ref)
{
    uint64_t st = 0x243f6a8885a308d3u;
    float x[256], w[256];
    size_t bad = 0;
    for (size_t ci = 0; ci < N_CASES; ci++) {
        mk_ct_int a;
        size_t n;
        int k;
        const float *wp = make_case(ci, &a, &n, &k, x, w, &st);
        float sc[2];
        int32_t zp[2];
        mk_ct_int_qparams(&a, x, n, &sc[1], &zp[1]);
        sc[0] = mk_ct_round(a.wdtype, sc[1] * (1 + 0.2f * uni(&st)));
        zp[0] = a.asym ? zp[1] + (int32_t)(rng_next(&st) % 3) - 1 : 0;
        double e0[2], e1[2];
        mk_search_real_errors(&a, x, wp, n, sc, zp, e0, true);
        mk_search_real_errors(&a, x, wp, n, sc, zp, e1, false);
        if (!same_bits(e0, e1, sizeof e0) && bad++ < 5)
            mk_test_fail(__FILE__, __LINE__, "case %zu (n %zu kind %d): %.17g %.17g, want %.17g %.17g", ci, n, k, e1[0], e1[1], e0[0], e0[1]);
    }
    CHECK_MSG(bad == 0, "%zu real error pairs differ from the reference", bad);
}

MK_TEST(search_qparams_match_ref)
{
    uint64_t st = 0x13198a2e03707344u;
    float x[256], w[256];
    size_t bad = 0, moved = 0;
    /* every case once, then the usual ones (Gaussian-like, outliers, half zeros) 30 times */
    for (int round = 0; round < 31; round++)
        for (size_t ci = 0; ci < N_CASES; ci++) {
            mk_ct_int a;
            size_t n;
            int k;
            const float *wp = make_case(ci, &a, &n, &k, x, w, &st);
            if (round > 0 && k != 0 && k != 6 && k != 7) continue;
            float s0, s1, rs;
            int32_t z0, z1, rz;
            int was = mk_search_use_ref(1);
            mk_search_int_qparams(&a, x, wp, n, &s0, &z0);
            mk_search_use_ref(0);
            mk_search_int_qparams(&a, x, wp, n, &s1, &z1);
            mk_search_use_ref(was);
            mk_ct_int_qparams(&a, x, n, &rs, &rz);
            moved += s0 != rs || z0 != rz;
            if ((!same_bits(&s0, &s1, sizeof s0) || z0 != z1) && bad++ < 5)
                mk_test_fail(__FILE__, __LINE__, "case %zu (n %zu kind %d): scale %.9g zp %d, want %.9g %d", ci, n, k, (double)s1, z1, (double)s0,
                             z0);
        }
    CHECK_MSG(bad == 0, "%zu searches differ from the reference", bad);
    CHECK_MSG(moved > 100, "the search left round-to-nearest on only %zu groups: the cases do not exercise it", moved);
}

MK_TEST(search_row_energies_match_ref)
{
    uint64_t st = 0xa4093822299f31d0u;
    enum { C = 333 };
    float *rows = malloc(9 * C * sizeof *rows), g[C], o0[9], o1[9];
    size_t bad = 0;
    for (int k = 0; k < N_KINDS; k++)
        for (size_t nr = 1; nr <= 9; nr++)
            for (size_t cols = 1; cols <= C; cols += 83) {
                fill(rows, nr * cols, k, &st);
                for (size_t i = 0; i < cols; i++) g[i] = 1 + uni(&st);
                mk_search_row_energies(rows, nr, g, cols, o0, true);
                mk_search_row_energies(rows, nr, g, cols, o1, false);
                for (size_t r = 0; r < nr; r++)
                    if (!same_bits(&o0[r], &o1[r], sizeof *o0) && bad++ < 5)
                        mk_test_fail(__FILE__, __LINE__, "kind %d rows %zu cols %zu row %zu: %.9g, want %.9g", k, nr, cols, r, (double)o1[r],
                                     (double)o0[r]);
            }
    free(rows);
    CHECK_MSG(bad == 0, "%zu row energies differ from the reference", bad);
}
