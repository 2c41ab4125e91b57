/* mk_compare.h - tensor comparison with named tolerances, for `compare` and the tests.
 *
 * An element passes when it is bit-equal after converting both values to WANT's dtype (NaN
 * equals NaN), or within max_ulp units in the last place of that dtype, or within rel times
 * the largest finite magnitude in WANT's tensor. A tensor is out of tolerance when more than
 * bad_share of its elements fail, or more than diff_share differ at all. The worst element
 * (index, got, want) is kept for the report.
 * Must not: print or open files (it reads through mk_source).
 */
#ifndef MK_COMPARE_H
#define MK_COMPARE_H

#include "mk_tensor.h"

typedef struct mk_cmp_tol {
    double rel;         /* |got - want| <= rel x max |want| */
    long max_ulp;       /* units in the last place of want's dtype */
    double diff_share;  /* share of elements that may differ at all (1 = any) */
    double bad_share;   /* share that may be out of tolerance (0 = none) */
} mk_cmp_tol;

typedef struct mk_cmp_stats {
    uint64_t n, differ, bad;
    double max_abs, max_mag;
    uint64_t worst_i;
    float worst_got, worst_want;
    int64_t max_ulp;
    bool out_of_tolerance;
} mk_cmp_stats;

/* Compare tensor ia of `got` with tensor ib of `want` (same shape; the caller checks). */
mk_status mk_compare_tensor(mk_source *got, size_t ia, mk_source *want, size_t ib, const mk_cmp_tol *tol, mk_cmp_stats *st);

#endif
