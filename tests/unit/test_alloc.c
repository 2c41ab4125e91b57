/* test_alloc.c - the budgeted format allocation of `quantize --target-bpw` (quant/alloc.c):
 * the solver against exhaustive search on small random problems (at budgets the Lagrangian
 * meets exactly it must find the optimum; at any budget it must stay within it and beat
 * every uniform choice that fits), determinism, the too-small budget, and the candidate list.
 */
#include "harness.h"

#include "../../core/mk_rng.h"
#include "../../quant/alloc.h"

#include <stdlib.h>

#define AN 6
#define AK 4

/* A random problem: bits rise with the candidate, errors fall (with noise, so some
 * candidates are dominated or off the hull), a few unavailable. */
static void random_problem(uint64_t seed, double *bits, double *err, uint64_t *numel)
{
    mk_rng r = mk_rng_key(seed, "test_alloc");
    for (size_t i = 0; i < AN; i++) {
        numel[i] = 64 + 64 * (mk_rng_u32(r, 0, i) % 8);
        double scale = 1 + 9 * mk_rng_uniform(r, 1, i);
        for (size_t j = 0; j < AK; j++) {
            double b = (4 + 4 * (double)j + 2 * mk_rng_uniform(r, 2, i * AK + j)) * (double)numel[i];
            bits[i * AK + j] = b;
            err[i * AK + j] = scale * exp(-0.7 * (double)j) * (0.6 + 0.8 * mk_rng_uniform(r, 3, i * AK + j));
        }
        if (i % 3 == 1) bits[i * AK + 2] = -1; /* unavailable (a format that does not fit its shape) */
    }
}

/* The smallest total error within the budget, by trying every choice. */
static double brute(const double *bits, const double *err, double budget)
{
    double best = INFINITY;
    size_t c[AN] = {0};
    for (;;) {
        double b = 0, e = 0;
        bool ok = true;
        for (size_t i = 0; i < AN; i++) {
            ok &= bits[i * AK + c[i]] >= 0;
            b += bits[i * AK + c[i]];
            e += err[i * AK + c[i]];
        }
        if (ok && b <= budget && e < best) best = e;
        size_t i = 0;
        while (i < AN && ++c[i] == AK) c[i++] = 0;
        if (i == AN) return best;
    }
}

static void totals(const double *bits, const double *err, const size_t *c, double *b, double *e)
{
    *b = *e = 0;
    for (size_t i = 0; i < AN; i++) {
        *b += bits[i * AK + c[i]];
        *e += err[i * AK + c[i]];
    }
}

MK_TEST(alloc_lagrangian_budgets_are_optimal)
{
    double bits[AN * AK], err[AN * AK];
    uint64_t numel[AN];
    size_t worst_case = 0;
    double worst = 0;
    for (uint64_t seed = 1; seed <= 40; seed++) {
        random_problem(seed, bits, err, numel);
        for (double lambda = 1e-5; lambda < 1; lambda *= 3) {
            /* the Lagrangian choice at lambda; its bits are a budget it is optimal for */
            size_t lc[AN];
            for (size_t i = 0; i < AN; i++) {
                double best = INFINITY;
                for (size_t j = 0; j < AK; j++) {
                    double v = err[i * AK + j] + lambda * bits[i * AK + j];
                    if (bits[i * AK + j] >= 0 && v < best) best = v, lc[i] = j;
                }
            }
            double lb, le;
            totals(bits, err, lc, &lb, &le);
            mk_alloc_problem p = {AN, AK, bits, err, numel};
            size_t c[AN];
            CHECK(mk_alloc_solve(&p, lb, c) == MK_OK);
            double b, e;
            totals(bits, err, c, &b, &e);
            double opt = brute(bits, err, lb);
            CHECK_MSG(b <= lb, "seed %llu: %g bits over the budget %g", (unsigned long long)seed, b, lb);
            CHECK_MSG(fabs(opt - le) <= 1e-9 * le, "seed %llu: the Lagrangian choice (%g) is not optimal (%g)?", (unsigned long long)seed, le, opt);
            if (e - opt > worst) worst = e - opt, worst_case = (size_t)seed;
        }
    }
    CHECK_MSG(worst <= 1e-9, "solver above the optimum at a Lagrangian budget by %g (seed %zu)", worst, worst_case);
}

MK_TEST(alloc_any_budget_fits_and_beats_uniform)
{
    double bits[AN * AK], err[AN * AK];
    uint64_t numel[AN];
    double worst_gap = 0;
    for (uint64_t seed = 100; seed < 140; seed++) {
        random_problem(seed, bits, err, numel);
        double lo = 0, hi = 0, n = 0;
        for (size_t i = 0; i < AN; i++) {
            double mn = INFINITY, mx = 0;
            for (size_t j = 0; j < AK; j++)
                if (bits[i * AK + j] >= 0) mn = fmin(mn, bits[i * AK + j]), mx = fmax(mx, bits[i * AK + j]);
            lo += mn, hi += mx, n += (double)numel[i];
        }
        for (int s = 0; s <= 20; s++) {
            double budget = lo + (hi - lo) * s / 20.0;
            mk_alloc_problem p = {AN, AK, bits, err, numel};
            size_t c[AN], c2[AN];
            CHECK(mk_alloc_solve(&p, budget, c) == MK_OK);
            CHECK(mk_alloc_solve(&p, budget, c2) == MK_OK);
            CHECK_MSG(!memcmp(c, c2, sizeof c), "seed %llu: two runs differ", (unsigned long long)seed);
            double b, e;
            totals(bits, err, c, &b, &e);
            CHECK_MSG(b <= budget, "seed %llu: %g bits over the budget %g", (unsigned long long)seed, b, budget);
            for (size_t j = 0; j < AK; j++) { /* every uniform choice that fits is no better */
                size_t u[AN];
                bool ok = true;
                for (size_t i = 0; i < AN; i++) u[i] = j, ok &= bits[i * AK + j] >= 0;
                double ub, ue;
                totals(bits, err, u, &ub, &ue);
                if (ok && ub <= budget) CHECK_MSG(e <= ue, "seed %llu: candidate %zu alone: %g < %g", (unsigned long long)seed, j, ue, e);
            }
            double opt = brute(bits, err, budget);
            worst_gap = fmax(worst_gap, (e - opt) / opt);
        }
    }
    /* greedy + exchanges is not exact between Lagrangian budgets: on these six-weight
     * problems, whose steps are a sixth of the budget, it stays within 15 % of the optimum
     * (measured 14.5 %); with hundreds of weights the steps and the gap are small */
    CHECK_MSG(worst_gap <= 0.15, "worst relative gap to the exhaustive optimum %.4f", worst_gap);
}

MK_TEST(alloc_budget_too_small)
{
    double bits[AN * AK], err[AN * AK];
    uint64_t numel[AN];
    random_problem(7, bits, err, numel);
    mk_alloc_problem p = {AN, AK, bits, err, numel};
    size_t c[AN];
    CHECK(mk_alloc_solve(&p, 1.0, c) == MK_ERR_USAGE);
    CHECK(strstr(mk_errmsg(), "at least") != NULL);
}

MK_TEST(alloc_candidates)
{
    mk_alloc_cand c[MK_ALLOC_MAX_CANDS];
    size_t n;
    CHECK(mk_alloc_cands_parse(NULL, c, &n) == MK_OK);
    CHECK_EQ_INT(n, 8);
    CHECK(c[n - 1].keep);
    CHECK(c[1].o.asym && c[1].o.group == 128);
    CHECK(mk_alloc_cands_parse("int4:group-size=32,keep", c, &n) == MK_OK);
    CHECK(n == 2 && c[0].o.group == 32);
    CHECK(mk_alloc_cands_parse("nf4", c, &n) == MK_ERR_USAGE); /* bitsandbytes only: does not mix */
    CHECK(mk_alloc_cands_parse("int4,int4", c, &n) == MK_ERR_USAGE);
    CHECK(mk_alloc_cands_parse("keep", c, &n) == MK_ERR_USAGE);
    CHECK(mk_alloc_cands_parse("int4:bogus=1", c, &n) == MK_ERR_USAGE);
    CHECK(mk_alloc_cands_parse("int4:target=bitsandbytes", c, &n) == MK_ERR_USAGE);
    CHECK(mk_alloc_cands_parse("int9", c, &n) == MK_ERR_USAGE);
}
