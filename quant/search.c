/* search.c - see search.h */
#include "search.h"
#include "qvec.h"

#include <math.h>

#define N_CAND 21 /* divisors qrange + 0.1 k, k = -10..10 */

/* Sum of squared errors of the group as compressed-tensors decodes it. */
static double real_error(const mk_ct_int *a, const float *x, size_t n, float scale, int32_t zp)
{
    int8_t q[256];
    mk_qerr e = {0, 0, 0};
    for (size_t i0 = 0; i0 < n; i0 += 256) mk_ct_int_codes(a, x + i0, n - i0 < 256 ? n - i0 : 256, scale, zp, q, &e);
    return e.se2;
}

/* For codes l = clamp(rint(x * inv) + z0, lo, hi) - z0 (z0 = integer offset of the grid),
 * the least-squares scale s = sum(x l) / sum(l^2) and the error it leaves,
 * sum(x^2) - sum(x l)^2 / sum(l^2). Returns that error; *s gets the scale. */
static double fit(const float *x, size_t n, float inv, float z0, float lo, float hi, double sxx, float *s)
{
    const mk_vf vinv = mk_vf_set1(inv), vz = mk_vf_set1(z0), vlo = mk_vf_set1(lo), vhi = mk_vf_set1(hi);
    mk_vf sxl = mk_vf_set1(0.0f), sll = sxl;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        mk_vf xv = mk_vf_load(x + i);
        mk_vf l = mk_vf_rint_small(xv * vinv) + vz;
        l = mk_vf_min(mk_vf_max(l, vlo), vhi) - vz;
        sxl += xv * l;
        sll += l * l;
    }
    double xl = 0, ll = 0;
    for (int k = 0; k < MK_VL; k++) {
        xl += sxl[k];
        ll += sll[k];
    }
    for (; i < n; i++) {
        float l = mk_rint_small(x[i] * inv) + z0;
        l = (l < lo ? lo : l > hi ? hi : l) - z0;
        xl += (double)x[i] * l;
        ll += (double)l * l;
    }
    if (ll <= 0 || xl <= 0) {
        *s = 0;
        return sxx;
    }
    *s = (float)(xl / ll);
    return sxx - xl * xl / ll;
}

MK_QKERNEL
void mk_search_int_qparams(const mk_ct_int *a, const float *x, size_t n, float *scale, int32_t *zp)
{
    float rs;
    int32_t rz;
    mk_ct_int_qparams(a, x, n, &rs, &rz);
    *scale = rs;
    *zp = rz;
    if (n == 0 || n > MK_SEARCH_MAX_GROUP) return;
    float mn = 0.0f, mx = 0.0f;
    double sxx = 0;
    for (size_t i = 0; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
        sxx += (double)x[i] * x[i];
    }
    if (mn == mx) return; /* all zero */
    const float qmin = (float)mk_ct_qmin(a), qmax = (float)mk_ct_qmax(a);
    const float qrange = a->asym ? qmax - qmin : (qmax - qmin) / 2.0f; /* 15 or 7.5 (4 bits) */
    const float span = a->asym ? mx - mn : (-mn > mx ? -mn : mx);
    double best_e = INFINITY;
    float best_s = 0;
    float best_z = 0;
    for (int k = -N_CAND / 2; k <= N_CAND / 2; k++) {
        float inv = (qrange + 0.1f * (float)k) / span;
        float z0 = a->asym ? rintf(qmin - mn * inv) : 0.0f; /* integer zero point, clamped */
        z0 = z0 < qmin ? qmin : z0 > qmax ? qmax : z0;
        float s;
        double e = fit(x, n, inv, z0, qmin, qmax, sxx, &s);
        if (s > 0 && e < best_e) {
            best_e = e;
            best_s = s;
            best_z = z0;
        }
    }
    if (!(best_s > 0)) return;
    /* refine once with the refitted scale, then store it in the weight dtype */
    float s2;
    double e2 = fit(x, n, 1.0f / best_s, best_z, qmin, qmax, sxx, &s2);
    if (s2 > 0 && e2 < best_e) best_s = s2;
    float s_final = mk_ct_round(a->wdtype, best_s);
    if (!(s_final > 0) || !isfinite(s_final)) return;
    int32_t z_final = a->asym ? (int32_t)best_z : 0;
    double e_rtn = real_error(a, x, n, rs, rz), e_new = real_error(a, x, n, s_final, z_final);
    if (e_new < e_rtn) {
        *scale = s_final;
        *zp = z_final;
    }
}
