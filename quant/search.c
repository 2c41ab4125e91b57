/* search.c - see search.h */
#include "qvec.h"
#include "search.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>

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

/* The vector part of fit() for nc candidates side by side: sxl[c], sll[c] (lanes) get what
 * fit()'s own sums get, in the same lanes and order. Constant w_on (w is not NULL), z_on
 * (some z0 is not 0) and lo_on specialise the loop. With every z0 0, fit()'s + z0 - z0 only
 * turns a code -0 into +0, which leaves every product +-0 and so every sum as it was (a sum
 * that starts at +0 is never -0), so the z_on = false loop skips them; lo_on = false skips
 * the clamp at lo, for callers that know no code falls below it. */
MK_VINLINE void fit_sweep(const float *x, const float *w, size_t n8, size_t nc, const mk_vf *vinv, const mk_vf *vz, float lo, float hi,
                          mk_vf *sxl, mk_vf *sll, const bool w_on, const bool z_on, const bool lo_on)
{
    const mk_vf vlo = mk_vf_set1(lo), vhi = mk_vf_set1(hi);
    for (size_t i = 0; i < n8; i += 8) {
        mk_vf xv = mk_vf_load(x + i), wv = w_on ? mk_vf_load(w + i) : xv, wx = w_on ? wv * xv : xv;
#pragma GCC unroll 8
        for (size_t c = 0; c < nc; c++) {
            mk_vf l = mk_vf_rint_small(xv * vinv[c]);
            if (z_on) l = mk_vf_min(mk_vf_max(l + vz[c], vlo), vhi) - vz[c];
            else l = mk_vf_min(lo_on ? mk_vf_max(l, vlo) : l, vhi);
            sxl[c] += wx * l;
            sll[c] += w_on ? wv * l * l : l * l;
        }
    }
}

/* Whether every code rint(x * inv[c]) of x in [mn, mx] is >= lo, so that clamping at lo
 * changes none: x * inv and rint are monotonic in x, so the ends decide (NaN: no). */
static inline bool lo_free(size_t nc, const float *inv, const float *z0, float mn, float mx, float lo)
{
    for (size_t c = 0; c < nc; c++)
        if (z0[c] != 0 || !(mk_rint_small(mn * inv[c]) >= lo) || !(mk_rint_small(mx * inv[c]) >= lo)) return false;
    return true;
}

/* fit() of nc <= MAX_FITS candidates (inv[c], z0[c]) in one sweep over the group (every x in
 * [mn, mx]): x and w are loaded once, each candidate keeps its own sums, with the same
 * operations in the same lanes and order as fit(), so e[c] and s[c] are fit()'s bit for bit. */
#define MAX_FITS 7
MK_VINLINE void fit_many(const float *x, const float *w, size_t n, size_t nc, const float *inv, const float *z0, float lo, float hi,
                         float mn, float mx, double sxx, float *s, double *e)
{
    mk_vf vinv[MAX_FITS], vz[MAX_FITS], sxl[MAX_FITS], sll[MAX_FITS];
    bool z_on = false;
    for (size_t c = 0; c < nc; c++) {
        vinv[c] = mk_vf_set1(inv[c]);
        vz[c] = mk_vf_set1(z0[c]);
        sxl[c] = sll[c] = mk_vf_set1(0.0f);
        z_on |= z0[c] != 0;
    }
    const size_t n8 = n / 8 * 8;
    if (z_on) {
        if (w) fit_sweep(x, w, n8, nc, vinv, vz, lo, hi, sxl, sll, true, true, true);
        else fit_sweep(x, w, n8, nc, vinv, vz, lo, hi, sxl, sll, false, true, true);
    } else if (lo_free(nc, inv, z0, mn, mx, lo)) {
        if (w) fit_sweep(x, w, n8, nc, vinv, vz, lo, hi, sxl, sll, true, false, false);
        else fit_sweep(x, w, n8, nc, vinv, vz, lo, hi, sxl, sll, false, false, false);
    } else {
        if (w) fit_sweep(x, w, n8, nc, vinv, vz, lo, hi, sxl, sll, true, false, true);
        else fit_sweep(x, w, n8, nc, vinv, vz, lo, hi, sxl, sll, false, false, true);
    }
    for (size_t c = 0; c < nc; c++) {
        double xl = 0, ll = 0;
        for (int k = 0; k < MK_VL; k++) {
            xl += sxl[c][k];
            ll += sll[c][k];
        }
        for (size_t j = n8; j < n; j++) {
            float l = mk_rint_small(x[j] * inv[c]) + z0[c], wi = w ? w[j] : 1.0f;
            l = (l < lo ? lo : l > hi ? hi : l) - z0[c];
            xl += (double)(wi * x[j] * l);
            ll += (double)(wi * l * l);
        }
        if (ll <= 0 || xl <= 0) {
            s[c] = 0;
            e[c] = sxx;
            continue;
        }
        s[c] = (float)(xl / ll);
        e[c] = sxx - xl * xl / ll;
    }
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

/* The weighted squared error of the group as compressed-tensors codes and decodes it
 * (mk_ct_int_codes's rule, in the same operations), for the two (scale, zero point) pairs
 * sc[0], zp[0] and sc[1], zp[1] in one sweep; each pair's sum in its own lanes and order. */
MK_VINLINE void real_error2(const mk_ct_int *a, const float *x, const float *w, size_t n, const float *sc, const int32_t *zp, double *e)
{
    float z[2];
    size_t i = 0;
    for (int c = 0; c < 2; c++) {
        z[c] = a->asym ? (float)zp[c] : 0.0f;
        e[c] = 0;
    }
    if (a->wdtype == MK_BF16 || a->wdtype == MK_F32) {
        const bool bf = a->wdtype == MK_BF16;
        const mk_vf vs[2] = {mk_vf_set1(sc[0]), mk_vf_set1(sc[1])}, vz[2] = {mk_vf_set1(z[0]), mk_vf_set1(z[1])}, one = mk_vf_set1(1.0f);
        const mk_vf lo = mk_vf_set1((float)mk_ct_qmin(a)), hi = mk_vf_set1((float)mk_ct_qmax(a));
        mk_vf acc[2] = {mk_vf_set1(0.0f), mk_vf_set1(0.0f)};
        for (; i + 8 <= n; i += 8) {
            mk_vf xv = mk_vf_load(x + i), wv = w ? mk_vf_load(w + i) : one;
#pragma GCC unroll 2
            for (int c = 0; c < 2; c++) {
                mk_vf d = (mk_ct_vcode(xv, vs[c], vz[c], lo, hi, bf, a->asym) - vz[c]) * vs[c];
                if (bf) d = mk_vf_round_bf16(d);
                d = xv - d;
                acc[c] += wv * d * d;
            }
        }
        for (int c = 0; c < 2; c++)
            for (int k = 0; k < MK_VL; k++) e[c] += acc[c][k];
    }
    for (int c = 0; c < 2; c++)
        for (size_t j = i; j < n; j++) {
            int8_t q;
            mk_ct_int_codes_ref(a, x + j, 1, sc[c], zp[c], &q);
            float d = x[j] - mk_ct_round(a->wdtype, ((float)q - z[c]) * sc[c]);
            e[c] += (double)((w ? w[j] : 1.0f) * d * d);
        }
}

/* Tests: 1 has the search take the reference paths (one fit() per candidate, real_error()
 * per pair) */
static _Atomic int use_ref;

int mk_search_use_ref(int on)
{
    return atomic_exchange(&use_ref, on);
}

/* e[c], s[c]: the fits of the nc candidates (inv[c], z0[c]); the reference or one sweep */
MK_VINLINE void fits(const float *x, const float *w, size_t n, size_t nc, const float *inv, const float *z0, float lo, float hi,
                     float mn, float mx, double sxx, float *s, double *e, bool ref)
{
    if (!ref) {
        fit_many(x, w, n, nc, inv, z0, lo, hi, mn, mx, sxx, s, e);
        return;
    }
    for (size_t c = 0; c < nc; c++) e[c] = fit(x, w, n, inv[c], z0[c], lo, hi, sxx, &s[c]);
}

MK_QKERNEL
void mk_search_fits(const float *x, const float *w, size_t n, size_t nc, const float *inv, const float *z0, float lo, float hi,
                    double sxx, float *s, double *e, bool ref)
{
    float mn = 0, mx = 0; /* as the search's, or NaN */
    for (size_t i = 0; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn != mn || x[i] != x[i] ? NAN : mn;
        mx = x[i] > mx ? x[i] : mx != mx || x[i] != x[i] ? NAN : mx;
    }
    for (size_t c0 = 0; c0 < nc; c0 += MAX_FITS)
        fits(x, w, n, nc - c0 < MAX_FITS ? nc - c0 : MAX_FITS, inv + c0, z0 + c0, lo, hi, mn, mx, sxx, s + c0, e + c0, ref);
}

MK_VINLINE void real_errors(const mk_ct_int *a, const float *x, const float *w, size_t n, const float *sc, const int32_t *zp, double *e,
                            bool ref)
{
    if (!ref) {
        real_error2(a, x, w, n, sc, zp, e);
        return;
    }
    for (int c = 0; c < 2; c++) e[c] = real_error(a, x, w, n, sc[c], zp[c]);
}

MK_QKERNEL
void mk_search_real_errors(const mk_ct_int *a, const float *x, const float *w, size_t n, const float *sc, const int32_t *zp, double *e,
                           bool ref)
{
    real_errors(a, x, w, n, sc, zp, e, ref);
}

/* k of the candidate divisors qrange + 0.1 k: a coarse pass over -9..9, then the two
 * neighbours of its best */
static const int coarse[] = {-9, -6, -3, 0, 3, 6, 9};
#define N_COARSE (sizeof coarse / sizeof *coarse)
static_assert(N_COARSE <= MAX_FITS, "the coarse pass is one sweep");

/* The candidates for divisors qrange + 0.1 k[c]: inv[c] and the integer zero point z0[c] */
MK_VINLINE void cands(const mk_ct_int *a, const int *k, size_t nc, float qrange, float span, float mn, float qmin, float qmax, float *inv,
                      float *z0)
{
    for (size_t c = 0; c < nc; c++) {
        inv[c] = (qrange + 0.1f * (float)k[c]) / span;
        float z = a->asym ? rintf(qmin - mn * inv[c]) : 0.0f; /* integer zero point, clamped */
        z0[c] = z < qmin ? qmin : z > qmax ? qmax : z;
    }
}

MK_QKERNEL
void mk_search_int_qparams(const mk_ct_int *a, const float *x, const float *imp, size_t n, float *scale, int32_t *zp)
{
    float rs;
    int32_t rz;
    mk_ct_int_qparams(a, x, n, &rs, &rz);
    *scale = rs;
    *zp = rz;
    if (n == 0 || n > MK_SEARCH_MAX_GROUP) return;
    const bool ref = atomic_load_explicit(&use_ref, memory_order_relaxed) != 0;
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
    double best_e = INFINITY, e[N_COARSE];
    float best_s = 0, best_z = 0, inv[N_COARSE], z0[N_COARSE], s[N_COARSE];
    cands(a, coarse, N_COARSE, qrange, span, mn, qmin, qmax, inv, z0);
    fits(x, imp, n, N_COARSE, inv, z0, qmin, qmax, mn, mx, sxx, s, e, ref);
    int best_k = 0;
    for (size_t c = 0; c < N_COARSE; c++)
        if (s[c] > 0 && e[c] < best_e) {
            best_e = e[c];
            best_s = s[c];
            best_z = z0[c];
            best_k = coarse[c];
        }
    const int nb[2] = {best_k - 1, best_k + 1};
    cands(a, nb, 2, qrange, span, mn, qmin, qmax, inv, z0);
    fits(x, imp, n, 2, inv, z0, qmin, qmax, mn, mx, sxx, s, e, ref);
    for (size_t c = 0; c < 2; c++)
        if (s[c] > 0 && e[c] < best_e) {
            best_e = e[c];
            best_s = s[c];
            best_z = z0[c];
        }
    if (!(best_s > 0)) return;
    /* refine once with the refitted scale, then store it in the weight dtype */
    float s2;
    double e2 = fit(x, imp, n, 1.0f / best_s, best_z, qmin, qmax, sxx, &s2);
    if (s2 > 0 && e2 < best_e) best_s = s2;
    const float sc[2] = {mk_ct_round(a->wdtype, best_s), rs};
    if (!(sc[0] > 0) || !isfinite(sc[0])) return;
    const int32_t zc[2] = {a->asym ? (int32_t)best_z : 0, rz};
    double re[2];
    real_errors(a, x, imp, n, sc, zc, re, ref);
    if (re[0] < re[1]) {
        *scale = sc[0];
        *zp = zc[0];
    }
}
