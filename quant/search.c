/* search.c - see search.h */
#include "qvec.h"
#include "search.h"

#include <math.h>

/* For codes l = clamp(rint(x * inv) + z0, lo, hi) - z0 with weights w (NULL: 1), the
 * least-squares scale s = sum(w x l) / sum(w l^2) and the weighted error it leaves,
 * sxx - sum(w x l)^2 / sum(w l^2) (sxx = sum(w x^2)). Returns that error; *s gets the scale. */
MK_VINLINE double fit(const float *x, const float *w, size_t n, float inv, float z0, float lo, float hi, double sxx, float *s)
{
    const mk_vf vinv = mk_vf_set1(inv), vz = mk_vf_set1(z0), vlo = mk_vf_set1(lo), vhi = mk_vf_set1(hi);
    mk_vf sxl = mk_vf_set1(0.0f), sll = sxl;
    size_t i = 0;
    if (w)
        for (; i + 8 <= n; i += 8) {
            mk_vf xv = mk_vf_load(x + i), wv = mk_vf_load(w + i);
            mk_vf l = mk_vf_min(mk_vf_max(mk_vf_rint_small(xv * vinv) + vz, vlo), vhi) - vz;
            sxl += wv * xv * l;
            sll += wv * l * l;
        }
    else
        for (; i + 8 <= n; i += 8) {
            mk_vf xv = mk_vf_load(x + i);
            mk_vf l = mk_vf_min(mk_vf_max(mk_vf_rint_small(xv * vinv) + vz, vlo), vhi) - vz;
            sxl += xv * l;
            sll += l * l;
        }
    double xl = 0, ll = 0;
    for (int k = 0; k < MK_VL; k++) {
        xl += sxl[k];
        ll += sll[k];
    }
    for (; i < n; i++) {
        float l = mk_rint_small(x[i] * inv) + z0, wi = w ? w[i] : 1.0f;
        l = (l < lo ? lo : l > hi ? hi : l) - z0;
        xl += (double)(wi * x[i] * l);
        ll += (double)(wi * l * l);
    }
    if (ll <= 0 || xl <= 0) {
        *s = 0;
        return sxx;
    }
    *s = (float)(xl / ll);
    return sxx - xl * xl / ll;
}

/* The weighted squared error of the group as compressed-tensors codes and decodes it
 * (mk_ct_int_codes's rule, in the same operations). */
MK_VINLINE double real_error(const mk_ct_int *a, const float *x, const float *w, size_t n, float scale, int32_t zp)
{
    const float z = a->asym ? (float)zp : 0.0f;
    size_t i = 0;
    double e = 0;
    if (a->wdtype == MK_BF16 || a->wdtype == MK_F32) {
        const bool bf = a->wdtype == MK_BF16;
        const mk_vf vs = mk_vf_set1(scale), vz = mk_vf_set1(z), one = mk_vf_set1(1.0f);
        const mk_vf lo = mk_vf_set1((float)mk_ct_qmin(a)), hi = mk_vf_set1((float)mk_ct_qmax(a));
        mk_vf acc = mk_vf_set1(0.0f);
        for (; i + 8 <= n; i += 8) {
            mk_vf xv = mk_vf_load(x + i), q = mk_ct_vcode(xv, vs, vz, lo, hi, bf, a->asym);
            mk_vf d = (q - vz) * vs;
            if (bf) d = mk_vf_round_bf16(d);
            d = xv - d;
            acc += (w ? mk_vf_load(w + i) : one) * d * d;
        }
        for (int k = 0; k < MK_VL; k++) e += acc[k];
    }
    for (; i < n; i++) {
        int8_t q;
        mk_ct_int_codes_ref(a, x + i, 1, scale, zp, &q);
        float d = x[i] - mk_ct_round(a->wdtype, ((float)q - z) * scale);
        e += (double)((w ? w[i] : 1.0f) * d * d);
    }
    return e;
}

/* k of the candidate divisors qrange + 0.1 k: a coarse pass over -9..9, then the two
 * neighbours of its best */
static const int coarse[] = {-9, -6, -3, 0, 3, 6, 9};
#define N_COARSE (sizeof coarse / sizeof *coarse)

MK_QKERNEL
void mk_search_int_qparams(const mk_ct_int *a, const float *x, const float *imp, size_t n, float *scale, int32_t *zp)
{
    float rs;
    int32_t rz;
    mk_ct_int_qparams(a, x, n, &rs, &rz);
    *scale = rs;
    *zp = rz;
    if (n == 0 || n > MK_SEARCH_MAX_GROUP) return;
    mk_vf vmn = mk_vf_set1(0.0f), vmx = vmn, vxx = vmn;
    size_t i8 = n / 8 * 8;
    for (size_t i = 0; i < i8; i += 8) {
        mk_vf v = mk_vf_load(x + i);
        vmn = mk_vf_min(vmn, v);
        vmx = mk_vf_max(vmx, v);
        vxx += (imp ? mk_vf_load(imp + i) : mk_vf_set1(1.0f)) * v * v;
    }
    float mn = mk_vf_hmin(vmn), mx = mk_vf_hmax(vmx);
    double sxx = 0;
    for (int k = 0; k < MK_VL; k++) sxx += vxx[k];
    for (size_t i = i8; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
        sxx += (double)((imp ? imp[i] : 1.0f) * x[i] * x[i]);
    }
    if (mn == mx || !(sxx > 0)) return; /* all zero, or no value carries weight */
    const float qmin = (float)mk_ct_qmin(a), qmax = (float)mk_ct_qmax(a);
    const float qrange = a->asym ? qmax - qmin : (qmax - qmin) / 2.0f; /* 15 or 7.5 (4 bits) */
    const float span = a->asym ? mx - mn : (-mn > mx ? -mn : mx);
    double best_e = INFINITY;
    float best_s = 0, best_z = 0;
    int best_k = 0;
    for (size_t c = 0; c < N_COARSE + 2; c++) {
        int k = c < N_COARSE ? coarse[c] : best_k + (c == N_COARSE ? -1 : 1);
        float inv = (qrange + 0.1f * (float)k) / span;
        float z0 = a->asym ? rintf(qmin - mn * inv) : 0.0f; /* integer zero point, clamped */
        z0 = z0 < qmin ? qmin : z0 > qmax ? qmax : z0;
        float s;
        double e = fit(x, imp, n, inv, z0, qmin, qmax, sxx, &s);
        if (s > 0 && e < best_e) {
            best_e = e;
            best_s = s;
            best_z = z0;
            if (c < N_COARSE) best_k = k;
        }
    }
    if (!(best_s > 0)) return;
    /* refine once with the refitted scale, then store it in the weight dtype */
    float s2;
    double e2 = fit(x, imp, n, 1.0f / best_s, best_z, qmin, qmax, sxx, &s2);
    if (s2 > 0 && e2 < best_e) best_s = s2;
    float s_final = mk_ct_round(a->wdtype, best_s);
    if (!(s_final > 0) || !isfinite(s_final)) return;
    int32_t z_final = a->asym ? (int32_t)best_z : 0;
    if (real_error(a, x, imp, n, s_final, z_final) < real_error(a, x, imp, n, rs, rz)) {
        *scale = s_final;
        *zp = z_final;
    }
}
