/* quant_check.h - checks shared by the quantization unit tests: a kernel's error sums
 * (mk_qerr) against sums taken the slow way, and the first differing byte of two encodings.
 * Included by test_quant.c and test_quant_bnb.c. */
#ifndef MK_TEST_QUANT_CHECK_H
#define MK_TEST_QUANT_CHECK_H

#include "harness.h"

#include "../../quant/qerr.h"

#include <math.h>
#include <string.h>

/* Sums from decoded values, the slow way (double), to check a kernel's mk_qerr. */
static inline void ref_err(const float *x, const float *xh, size_t n, mk_qerr *e)
{
    memset(e, 0, sizeof *e);
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - xh[i];
        e->sx2 += (double)x[i] * x[i];
        e->se2 += d * d;
        float ad = fabsf(x[i] - xh[i]);
        e->maxe = ad > e->maxe ? ad : e->maxe;
    }
}

/* Tolerance of the kernels' error sums: f32 partial sums of at most 4096 terms. */
#define SUM_RTOL 1e-5

static inline void check_err(const char *what, const mk_qerr *got, const mk_qerr *want)
{
    CHECK_MSG(fabs(got->sx2 - want->sx2) <= SUM_RTOL * want->sx2 + 1e-30, "%s: sum x^2 %.9g, want %.9g (rtol %g)", what,
              got->sx2, want->sx2, SUM_RTOL);
    CHECK_MSG(fabs(got->se2 - want->se2) <= SUM_RTOL * want->se2 + 1e-30, "%s: sum e^2 %.9g, want %.9g (rtol %g)", what,
              got->se2, want->se2, SUM_RTOL);
    CHECK_MSG(got->maxe == want->maxe, "%s: max |e| %.9g, want %.9g (exact)", what, (double)got->maxe, (double)want->maxe);
}

static inline void first_diff(const char *what, const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) {
            mk_test_fail(__FILE__, __LINE__, "%s: byte %zu: fast 0x%02x, reference 0x%02x", what, i, x[i], y[i]);
            return;
        }
}

#endif
