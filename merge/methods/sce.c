/* sce.c - SCE (Select, Calculate, Erase; FuseChat, https://arxiv.org/abs/2408.07990), as
 * mergekit 0.1.5: task vectors T_k = x_k - base; with select_topk < 1 keep only the
 * entries whose variance across models is among the top int(nonzero * select_topk)
 * (equal variances ordered by flat index, lower first); weight each model by its mean
 * squared task vector (normalised to sum 1); erase entries whose sign disagrees with the
 * sign of the sum; out = base + sum_k c_k E_k T_k / max(sum_k c_k E_k, 1e-6).
 * No per-model weight. */
#include "kernel.h"
#include "sce_kernels.h"
#include "select.h"

enum { P_INT8_MASK, P_SELECT_TOPK };

static const mk_param_def sce_params[] = {
    [P_INT8_MASK] = {"int8_mask", MK_PS_GLOBAL, 0, false, true, "store the sign mask as int8 (memory only; no effect here)", MK_PR_ANY},
    [P_SELECT_TOPK] = {"select_topk", MK_PS_GLOBAL, 1, false, false, "fraction of high-variance entries kept", MK_PR_UNIT},
    {0},
};

typedef struct sce_state {
    int phase;          /* 0 select, 1 weights, 2 emit */
    size_t K, in[MK_KMAX], ib;
    bool select, none;  /* topk masking on; mask everything away */
    mk_select sel;
    mk_partials part;   /* phase 0: [1] nonzero variances; phase 1: [K] sums of squares */
    mk_chunk_bits kept; /* phase 1 -> 2: the selection of each element */
    float c[MK_KMAX];
} sce_state;

/* Elements are worked on in blocks of SCE_BLOCK, every step a loop over the block (so it
 * vectorises); each element gets the same operations in the same order as one at a time. */
#define SCE_BLOCK 1024u

typedef struct sce_scratch {
    float *T;        /* [K][SCE_BLOCK] task vectors (zeroed where not kept) */
    double *mean, *var;
    uint32_t *keys;  /* [chunk] the whole chunk's (a selection pass counts them at once) */
    uint8_t *keep;
    float *sum, *m, *d;
} sce_scratch;

/* T[k][i] = RD(x_k - base) for elements [e0, e0 + n) of the chunk */
static inline MK_HOT void sce_tvs(const mk_dtype dt, const sce_state *st, const mk_chunk *ch, uint64_t e0, uint64_t n,
                                  float *T)
{
    const float *b = ch->in[st->ib] + e0;
    for (size_t k = 0; k < st->K; k++) {
        const float *x = ch->in[st->in[k]] + e0;
        float *t = T + k * SCE_BLOCK;
        MK_SIMD for (uint64_t i = 0; i < n; i++) t[i] = RD(x[i] - b[i]);
    }
}

/* ---- the reference: one loop over the block per step ------------------------------- */

/* The variance keys; dividing by a power of two K and multiplying by 1/K are the same
 * correctly rounded operation (the same real number), and the multiply is several times
 * cheaper than a double division. */
static inline MK_HOT void sce_keys_ref(const mk_dtype dt, size_t K, const float *T, size_t stride, uint64_t n,
                                       double *scratch, uint32_t *keys)
{
    double *mean = scratch, *var = scratch + stride;
    const double Kd = (double)K, rK = 1.0 / Kd;
    const bool pow2 = (K & (K - 1)) == 0;
    MK_SIMD for (uint64_t i = 0; i < n; i++) mean[i] = 0;
    for (size_t k = 0; k < K; k++) {
        const float *t = T + k * stride;
        MK_SIMD for (uint64_t i = 0; i < n; i++) mean[i] += (double)t[i];
    }
    if (pow2) {
        MK_SIMD for (uint64_t i = 0; i < n; i++) mean[i] *= rK;
    } else {
        MK_SIMD for (uint64_t i = 0; i < n; i++) mean[i] /= Kd;
    }
    MK_SIMD for (uint64_t i = 0; i < n; i++) var[i] = 0;
    for (size_t k = 0; k < K; k++) {
        const float *t = T + k * stride;
        MK_SIMD for (uint64_t i = 0; i < n; i++) var[i] += ((double)t[i] - mean[i]) * ((double)t[i] - mean[i]);
    }
    if (pow2) {
        MK_SIMD for (uint64_t i = 0; i < n; i++) keys[i] = mk_key_abs(RD((float)(var[i] * rK)));
    } else {
        MK_SIMD for (uint64_t i = 0; i < n; i++) keys[i] = mk_key_abs(RD((float)(var[i] / Kd)));
    }
}

/* Zero the dropped entries of every model's task vector. */
static void sce_mask(size_t K, float *T, size_t stride, const uint8_t *keep, uint64_t n)
{
    for (size_t k = 0; k < K; k++) {
        float *t = T + k * stride;
        MK_SIMD for (uint64_t i = 0; i < n; i++) t[i] = keep[i] ? t[i] : 0.0f;
    }
}

static inline MK_HOT void sce_sum_sq_ref(const mk_dtype dt, size_t K, float *T, size_t stride, const uint8_t *keep,
                                         uint64_t n, double *row)
{
    sce_mask(K, T, stride, keep, n);
    for (size_t k = 0; k < K; k++) {
        const float *t = T + k * stride;
        double acc = row[k];
        for (uint64_t i = 0; i < n; i++) acc += (double)RD(t[i] * t[i]);
        row[k] = acc;
    }
}

/* m and d start at +0 and never become -0, so adding +0 where a model disagrees is the same
 * as skipping it. */
static inline MK_HOT void sce_out_ref(const mk_dtype dt, size_t K, const float *c, float *T, size_t stride,
                                      const uint8_t *keep, const float *b, uint64_t n, float *scratch, float *out)
{
    float *sum = scratch, *m = scratch + stride, *d = scratch + 2 * stride;
    sce_mask(K, T, stride, keep, n);
    MK_SIMD for (uint64_t i = 0; i < n; i++) sum[i] = m[i] = d[i] = 0;
    for (size_t k = 0; k < K; k++) {
        const float *t = T + k * stride;
        MK_SIMD for (uint64_t i = 0; i < n; i++) sum[i] += t[i];
    }
    /* the sign of the sum (ties to +): t agrees when t times it is positive (never for zeros
     * or NaN), the same test as t > 0 or t < 0 by the sign, without a branch */
    MK_SIMD for (uint64_t i = 0; i < n; i++) sum[i] = RD(sum[i]) >= 0 ? 1.0f : -1.0f;
    for (size_t k = 0; k < K; k++) {
        const float *t = T + k * stride;
        const float ck = c[k];
        MK_SIMD for (uint64_t i = 0; i < n; i++) {
            const bool agree = t[i] * sum[i] > 0.0f;
            m[i] += agree ? RD(t[i] * ck) : 0.0f;
            d[i] += agree ? ck : 0.0f;
        }
    }
    const float lo = RD(1e-6f);
    MK_SIMD for (uint64_t i = 0; i < n; i++) {
        float den = RD(d[i]);
        den = den < lo ? lo : den;
        out[i] = RD(b[i] + RD(RD(m[i]) / den));
    }
}

/* ---- fused: every step of an element in one loop, K a constant ---------------------- */

/* the loops over the models unrolled before the loop over elements is vectorised (GCC at
 * -O2 leaves them, and then cannot vectorise the outer loop) */
#define SCE_UNROLL _Pragma("GCC unroll 4")

/* keep ? x : +0.0f (keep 0 or 1) by a bit mask: no branch, and no load made conditional,
 * either of which stops the vectoriser (and a branch on random flags mispredicts) */
static inline float sce_keep(float x, uint8_t keep)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    u &= 0u - (uint32_t)keep;
    memcpy(&x, &u, 4);
    return x;
}

static inline MK_HOT void sce_keys_k(const mk_dtype dt, const size_t K, const float *T, size_t stride, uint64_t n,
                                     uint32_t *keys)
{
    const double Kd = (double)K, rK = 1.0 / Kd;
    const bool pow2 = (K & (K - 1)) == 0;
    MK_SIMD for (uint64_t i = 0; i < n; i++) {
        double mean = 0, var = 0;
        SCE_UNROLL for (size_t k = 0; k < K; k++) mean += (double)T[k * stride + i];
        mean = pow2 ? mean * rK : mean / Kd;
        SCE_UNROLL for (size_t k = 0; k < K; k++) var += ((double)T[k * stride + i] - mean) * ((double)T[k * stride + i] - mean);
        var = pow2 ? var * rK : var / Kd;
        keys[i] = mk_key_abs(RD((float)var));
    }
}

/* The terms of one model's sum of squares, into t: RD(t * t) of the kept entries, +0 for the
 * dropped ones (the reference's RD(0 * 0)); *orb, *emin, *emax: the OR of their bits, their
 * smallest nonzero and largest exponent fields. */
static inline MK_HOT void sce_squares(const mk_dtype dt, float *t, const uint8_t *keep, uint64_t n, uint32_t *orb,
                                      uint32_t *emin, uint32_t *emax)
{
    MK_SIMD for (uint64_t i = 0; i < n; i++) {
        const float x = sce_keep(t[i], keep[i]);
        t[i] = RD(x * x);
    }
    /* the reductions in 8 lanes by hand (GCC leaves this loop scalar); a zero's exponent
     * counts as UINT32_MAX for the minimum: zeros are on every grid */
    typedef uint32_t v8u __attribute__((vector_size(32)));
    const uint32_t *bits = (const uint32_t *)t; /* -fno-strict-aliasing */
    v8u vo = {0}, vlo, vhi = {0};
    memset(&vlo, 0xff, sizeof vlo);
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8u u;
        memcpy(&u, bits + i, sizeof u);
        const v8u e = u >> 23, ez = e | (v8u)(u == 0), lt = (v8u)(ez < vlo), gt = (v8u)(e > vhi);
        vo |= u;
        vlo = (ez & lt) | (vlo & ~lt);
        vhi = (e & gt) | (vhi & ~gt);
    }
    uint32_t o = 0, lo = UINT32_MAX, hi = 0;
    for (int j = 0; j < 8; j++) {
        o |= vo[j];
        lo = vlo[j] < lo ? vlo[j] : lo;
        hi = vhi[j] > hi ? vhi[j] : hi;
    }
    for (; i < n; i++) {
        const uint32_t u = bits[i], e = u >> 23, ez = u ? e : UINT32_MAX;
        o |= u;
        lo = ez < lo ? ez : lo;
        hi = e > hi ? e : hi;
    }
    *orb = o;
    *emin = lo;
    *emax = hi;
}

/* Whether adding n terms with these statistics to a in any order gives the sum in element
 * order: when every partial sum is exact. The terms (>= 0) and a are multiples of 2^g (g: the
 * finest grid among them, from the exponent and the trailing zero bits of each significand),
 * so every partial sum is one too; below 2^(53 + g) each is a double, and a + the sum is
 * below that when a and the sum (at most n * 2^(emax - 126)) are each below 2^(52 + g).
 * bf16 deltas pass (8-bit significands); f32 ones, NaN and Inf take the chain. */
static bool sce_sum_exact(double a, uint64_t n, uint32_t orb, uint32_t emin, uint32_t emax)
{
    if (emax >= 255 || !(a >= 0 && a < INFINITY)) return false; /* NaN, Inf, or a sign bit */
    if (!orb) return true;                                       /* a + 0 + ... + 0 = a */
    int g = (emin ? (int)emin : 1) - 150 + __builtin_ctz((orb & 0x7fffffu) | 0x800000u);
    if (a > 0) {
        uint64_t ab;
        memcpy(&ab, &a, 8);
        const int ea = (int)(ab >> 52);
        const int ga = (ea ? ea - 1075 : -1074) + __builtin_ctzll((ab & ((1ull << 52) - 1)) | (1ull << 52));
        g = ga < g ? ga : g;
        if ((ea ? ea : 1) - 1022 > 52 + g) return false;
    }
    const int lg = 64 - __builtin_clzll(n); /* n < 2^lg */
    return (int)emax - 126 + lg <= 52 + g;
}

/* sum of v[i] in 8 double lanes (any order: the caller checked it is exact) */
static inline double sce_sum_any(const float *v, uint64_t n)
{
    mk_v4d_ a0 = {0}, a1 = {0};
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        mk_v4f_ f0, f1;
        memcpy(&f0, v + i, sizeof f0);
        memcpy(&f1, v + i + 4, sizeof f1);
        a0 += __builtin_convertvector(f0, mk_v4d_);
        a1 += __builtin_convertvector(f1, mk_v4d_);
    }
    a0 += a1;
    double s = (a0[0] + a0[1]) + (a0[2] + a0[3]);
    for (; i < n; i++) s += (double)v[i];
    return s;
}

/* The K sums of squares: each model's block at once where that is the sum in element order
 * (sce_sum_exact), else K chains of additions side by side, each in element order. The
 * terms overwrite T (phase 1 needs nothing else from it). */
static inline MK_HOT void sce_sum_sq_k(const mk_dtype dt, const size_t K, float *T, size_t stride,
                                       const uint8_t *keep, uint64_t n, double *row)
{
    bool exact = true;
    SCE_UNROLL for (size_t k = 0; k < K; k++) {
        uint32_t orb, emin, emax;
        sce_squares(dt, T + k * stride, keep, n, &orb, &emin, &emax);
        exact = exact && sce_sum_exact(row[k], n, orb, emin, emax);
    }
    if (exact) {
        SCE_UNROLL for (size_t k = 0; k < K; k++) row[k] += sce_sum_any(T + k * stride, n);
        return;
    }
    double acc[MK_SCE_FUSED_K];
    SCE_UNROLL for (size_t k = 0; k < K; k++) acc[k] = row[k];
    for (uint64_t i = 0; i < n; i++)
        SCE_UNROLL for (size_t k = 0; k < K; k++) acc[k] += (double)T[k * stride + i];
    SCE_UNROLL for (size_t k = 0; k < K; k++) row[k] = acc[k];
}

static inline MK_HOT void sce_out_k(const mk_dtype dt, const size_t K, const float *c, const float *T, size_t stride,
                                    const uint8_t *keep, const float *b, uint64_t n, float *out)
{
    const float lo = RD(1e-6f);
    MK_SIMD for (uint64_t i = 0; i < n; i++) {
        float sum = 0, m = 0, d = 0;
        SCE_UNROLL for (size_t k = 0; k < K; k++) sum += sce_keep(T[k * stride + i], keep[i]);
        const float sg = RD(sum) >= 0 ? 1.0f : -1.0f;
        SCE_UNROLL for (size_t k = 0; k < K; k++) {
            const float t = sce_keep(T[k * stride + i], keep[i]);
            const bool agree = t * sg > 0.0f;
            const float tc = RD(t * c[k]); /* computed either way: no branch around RD's own */
            m += agree ? tc : 0.0f;
            d += agree ? c[k] : 0.0f;
        }
        float den = RD(d);
        den = den < lo ? lo : den;
        out[i] = RD(b[i] + RD(RD(m) / den));
    }
}

/* f(dt, K, ...) with K a constant 1 .. MK_SCE_FUSED_K */
#define SCE_K_DISPATCH(K, f, ...)                                                                                      \
    do {                                                                                                               \
        switch (K) {                                                                                                   \
        case 1: MK_DT_DISPATCH(dt, f, 1, __VA_ARGS__); break;                                                          \
        case 2: MK_DT_DISPATCH(dt, f, 2, __VA_ARGS__); break;                                                          \
        case 3: MK_DT_DISPATCH(dt, f, 3, __VA_ARGS__); break;                                                          \
        default: MK_DT_DISPATCH(dt, f, 4, __VA_ARGS__); break;                                                         \
        }                                                                                                              \
    } while (0)

MK_KCLONE void mk_sce_keys(mk_dtype dt, size_t K, const float *T, size_t stride, uint64_t n, double *scratch,
                           uint32_t *keys, bool ref)
{
    if (ref || K > MK_SCE_FUSED_K) MK_DT_DISPATCH(dt, sce_keys_ref, K, T, stride, n, scratch, keys);
    else SCE_K_DISPATCH(K, sce_keys_k, T, stride, n, keys);
}

MK_KCLONE void mk_sce_sum_sq(mk_dtype dt, size_t K, float *T, size_t stride, const uint8_t *keep, uint64_t n,
                             double *row, bool ref)
{
    if (ref || K > MK_SCE_FUSED_K) MK_DT_DISPATCH(dt, sce_sum_sq_ref, K, T, stride, keep, n, row);
    else SCE_K_DISPATCH(K, sce_sum_sq_k, T, stride, keep, n, row);
}

MK_KCLONE void mk_sce_out(mk_dtype dt, size_t K, const float *c, float *T, size_t stride, const uint8_t *keep,
                          const float *b, uint64_t n, float *scratch, float *out, bool ref)
{
    if (ref || K > MK_SCE_FUSED_K) MK_DT_DISPATCH(dt, sce_out_ref, K, c, T, stride, keep, b, n, scratch, out);
    else SCE_K_DISPATCH(K, sce_out_k, c, T, stride, keep, b, n, out);
}

/* ---- passes ----------------------------------------------------------------------------- */

MK_KCLONE static mk_status sce_block(const mk_merge_job *job, sce_state *st, const mk_chunk *ch, uint64_t e0, uint64_t n,
                           sce_scratch *w, uint64_t *seen)
{
    const mk_dtype dt = job->compute_dtype;
    const size_t B = SCE_BLOCK;
    MK_DT_DISPATCH(dt, sce_tvs, st, ch, e0, n, w->T);
    uint8_t *kept = mk_chunk_bits_at(&st->kept, ch->index, 0);
    bool have = st->phase == 2 && mk_chunk_bits_have(&st->kept, ch->index);
    uint32_t *keys = w->keys + e0;
    if (st->phase == 0 || (st->select && !have)) mk_sce_keys(dt, st->K, w->T, B, n, w->mean, keys, false);
    if (st->phase == 0) return MK_OK; /* counted once the chunk's keys are all there */
    if (st->none) {
        memset(w->keep, 0, (size_t)n);
    } else if (!st->select) {
        memset(w->keep, 1, (size_t)n);
    } else if (have) {
        /* the bits are per chunk: e0 is a multiple of SCE_BLOCK, so of 8 */
        mk_bits_unpack(kept + e0 / 8, n, w->keep);
    } else {
        /* a cut that splits equal keys counts them across the chunk's blocks, in order */
        mk_sel_flags(&st->sel.q[0], ch->index, keys, n, w->keep, seen);
        if (st->phase == 1 && kept) mk_bits_pack(w->keep, n, kept + e0 / 8);
    }
    if (st->phase == 1) {
        mk_sce_sum_sq(dt, st->K, w->T, B, w->keep, n, mk_partials_row(&st->part, ch->index), false);
        return MK_OK;
    }
    mk_sce_out(dt, st->K, st->c, w->T, B, w->keep, ch->in[st->ib] + e0, n, w->sum, ch->out + e0, false);
    return MK_OK;
}

MK_KCLONE static mk_status sce_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    sce_state *st = user;
    sce_scratch w;
    const size_t B = SCE_BLOCK;
    const size_t sz = st->K * B * sizeof(float) + 2 * B * sizeof(double) + 3 * B * sizeof(float) +
                      (size_t)ch->n * sizeof(uint32_t) + B;
    void *mem = mk_chunk_scratch(ch, &sz, 1);
    if (!mem) return mk_error(MK_ERR_NOMEM, "out of memory for chunk scratch");
    w.mean = mem;
    w.var = w.mean + B;
    w.T = (float *)(w.var + B);
    w.sum = w.T + st->K * B;
    w.m = w.sum + B;
    w.d = w.m + B;
    w.keys = (uint32_t *)(w.d + B);
    w.keep = (uint8_t *)(w.keys + ch->n);
    mk_status r = MK_OK;
    uint64_t seen = 0;
    for (uint64_t e0 = 0; e0 < ch->n && r == MK_OK; e0 += B)
        r = sce_block(job, st, ch, e0, ch->n - e0 < B ? ch->n - e0 : B, &w, &seen);
    if (r == MK_OK && st->phase == 0) {
        uint64_t nz = 0;
        for (uint64_t i = 0; i < ch->n; i++) nz += w.keys[i] != 0;
        mk_partials_row(&st->part, ch->index)[0] = (double)nz;
        r = mk_sel_count(&st->sel, 0, ch->index, w.keys, ch->n);
    }
    if (r == MK_OK && st->phase == 1) mk_chunk_bits_stored(&st->kept, ch->index);
    return r;
}

static mk_status sce_run(const mk_merge_job *job)
{
    const mk_dtype dt = job->compute_dtype;
    MK_TRY(mk_check_inputs_max(job, "sce"));
    sce_state st = {0};
    st.K = mk_job_n_nonbase(job);
    st.ib = (size_t)job->base;
    if (st.K == 0) return mk_emit_input(job, st.ib);
    for (size_t k = 0; k < st.K; k++) st.in[k] = mk_job_nonbase(job, k);
    double topk = job->g[P_SELECT_TOPK];
    st.none = topk <= 0;
    st.select = topk > 0 && topk < 1;
    MK_TRY(mk_partials_init(&st.part, job->n_chunks, st.K));
    mk_status r = MK_OK;
    if (st.select) {
        r = mk_sel_init(&st.sel, job->numel, job->n_chunks, 1, 1);
        if (r == MK_OK) {
            /* the cut depends on the count of nonzero variances, known after the first pass */
            mk_sel_query_set(&st.sel, 0, 0, 1, true, false);
            mk_sel_start(&st.sel);
            st.phase = 0;
            r = job->pass(job, sce_chunk, &st, false);
        }
        if (r == MK_OK) {
            double sums[MK_KMAX];
            mk_partials_sum(&st.part, sums);
            double nz = sums[0];
            /* sce.py: int(count_nonzero * density), an int64 tensor times a float: float32 */
            uint64_t k = mk_trunc_u64((double)((float)nz * (float)topk));
            if (k == 0) st.none = true;
            mk_sel_set_pos(&st.sel, 0, k);
            while (r == MK_OK && mk_sel_next(&st.sel)) r = job->pass(job, sce_chunk, &st, false);
        }
    }
    if (r == MK_OK) {
        memset(st.part.v, 0, (size_t)(st.part.n_chunks * st.part.width) * sizeof(double));
        if (st.select && !st.none) mk_chunk_bits_init(&st.kept, job, 1, job->keep_bytes);
        st.phase = 1;
        r = job->pass(job, sce_chunk, &st, false);
    }
    if (r == MK_OK) {
        double sq[MK_KMAX];
        mk_partials_sum(&st.part, sq);
        float ws = 0;
        for (size_t k = 0; k < st.K; k++) {
            st.c[k] = RD((float)(sq[k] / (double)job->numel));
            ws += st.c[k];
        }
        ws = RD(ws); /* .item() of a sum in the compute dtype */
        for (size_t k = 0; k < st.K; k++) st.c[k] = fabsf(ws) < 1e-6f ? RD(1.0f / (float)st.K) : RD(st.c[k] / ws);
        st.phase = 2;
        r = job->pass(job, sce_chunk, &st, true);
    }
    mk_partials_free(&st.part);
    mk_chunk_bits_free(&st.kept);
    if (st.select) mk_sel_free(&st.sel);
    return r;
}

static bool sce_identity(const mk_merge_job *job) { return job->n_in == 1 && job->base == 0; }

const mk_method mk_method_sce = {
    .name = "sce",
    .summary = "SCE: select high-variance entries, weight models by their change, erase sign conflicts",
    .params = sce_params,
    .base = MK_BASE_REQUIRED,
    .min_inputs = 1,
    .run = sce_run,
    .is_identity = sce_identity,
};
