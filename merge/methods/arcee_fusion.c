/* arcee_fusion.c - Arcee Fusion (https://arcee.ai), as mergekit 0.1.5: the importance of
 * each changed entry is |x - base| times the KL divergence between the softmax of its
 * row in x and in the base; entries whose importance reaches median + 1.5 (Q3 - Q1) are
 * taken from x, the rest from the base. Quantiles are sorted[floor(q (n - 1))].
 *
 * mergekit estimates the quartiles from 1,000,000 random samples (with replacement) when
 * a tensor has more elements; we take the exact quartiles of every tensor (select.h),
 * so results on such tensors differ from mergekit's within its sampling noise. The
 * result is float32, as in mergekit (its float mask promotes the sum). */
#include "arcee_fusion.h"

#include "kernel.h"
#include "select.h"

#include <pthread.h>

typedef struct fusion_state {
    int phase;             /* 0 selection passes, 1 emit */
    size_t ix, ib;
    mk_select sel;
    float threshold;
    /* each row's KL divergence, kept from the first pass for the others (the softmaxes are
     * most of the work) when the rows fit in the job's keep_bytes: klr[row], valid for the
     * rows of chunk c once stored[c] */
    float *klr;
    uint8_t *stored;
} fusion_state;

/* ---- libm's expf and logf, bit for bit, with fewer calls ---------------------------- */

/* e^v in double for v in [-87, 0], relative error below 2^-45: v = k ln2 + r with
 * |r| <= ln2/2 (plus the rounding of k), e^r by its Taylor polynomial of degree 11
 * (remainder 0.3466^12 / 12! / e^-0.3466 < 2^-46.6; Horner's roundings add about 2^-50),
 * times 2^k made from the exponent bits. ln2 is split so k * EXP_LN2_HI is exact (33
 * significant bits times |k| <= 126) and v - k * EXP_LN2_HI too (a multiple of 2^-33
 * below 1 in magnitude). */
#define EXP_INV_LN2 0x1.71547652b82fep0
#define EXP_LN2_HI 0x1.62e42fefp-1
#define EXP_LN2_LO 0x1.473de6af278edp-34 /* ln2 - EXP_LN2_HI, to double */
#define EXP_SHIFT 0x1.8p52                /* z + EXP_SHIFT - EXP_SHIFT: z to the nearest integer */
static inline double exp_near(float v)
{
    const double x = (double)v, kd = (x * EXP_INV_LN2 + EXP_SHIFT) - EXP_SHIFT;
    const double r = (x - kd * EXP_LN2_HI) - kd * EXP_LN2_LO;
    double p = 1.0 / 39916800; /* 1/11! */
    p = p * r + 1.0 / 3628800;
    p = p * r + 1.0 / 362880;
    p = p * r + 1.0 / 40320;
    p = p * r + 1.0 / 5040;
    p = p * r + 1.0 / 720;
    p = p * r + 1.0 / 120;
    p = p * r + 1.0 / 24;
    p = p * r + 1.0 / 6;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* the low bits of kd + EXP_SHIFT hold k: moved into the exponent field, biased */
    uint64_t kb, sb;
    const double ks = kd + EXP_SHIFT;
    memcpy(&kb, &ks, 8);
    sb = (kb << 52) + ((uint64_t)1023 << 52);
    double scale;
    memcpy(&scale, &sb, 8);
    return p * scale;
}

/* When is (float)exp_near(v) libm's expf(v)? glibc's expf (since 2.27, ARM's optimized
 * routines; its comment: "Relative error: 1.69 * 2^-34 ... (before rounding)", "ULP error:
 * 0.502") computes e^v in double and rounds that to float. For a double in [2^e, 2^(e+1))
 * its error is below 2^19.76 ulps of the double (ulp 2^(e-52)), ours below 2^8. When ours
 * lies more than EXP_MARGIN = 2^21 such ulps from the midpoint between two floats, e^v and
 * glibc's double lie on the same side of it, so all three round to the same float; else
 * (about 0.8% of arguments), and outside [-87, 0] (the float result would not be normal;
 * NaN), libm is asked. tests/unit/test_arcee_exact.c compares a wide sample of the floats
 * in [-88, 0] with libm, and every float below 88 was compared once (see the commit). */
#define EXP_MARGIN (1u << 21)
#define EXP_HALF (1u << 28) /* the midpoint in the 29 bits that double has beyond float */

/* out[j] = expf(x[j] - sub), j < n, bit for bit as libm gives it. */
MK_KCLONE static void exp_shifted(const float *x, float sub, uint64_t n, float *out)
{
    enum { B = 512 };
    uint32_t ask[B]; /* 32 bits, as wide as the floats: the loop vectorises in whole registers */
    for (uint64_t j0 = 0; j0 < n; j0 += B) {
        const uint64_t m = n - j0 < B ? n - j0 : B;
        unsigned n_ask = 0;
#pragma omp simd reduction(+ : n_ask)
        for (uint64_t j = 0; j < m; j++) {
            const float v = x[j0 + j] - sub;
            const double y = exp_near(v);
            uint64_t u;
            memcpy(&u, &y, 8);
            const uint32_t t = (uint32_t)(u & ((1u << 29) - 1)), d = t > EXP_HALF ? t - EXP_HALF : EXP_HALF - t;
            const bool sure = v >= -87.0f && v <= 0.0f && d > EXP_MARGIN;
            out[j0 + j] = (float)y;
            ask[j] = !sure;
            n_ask += !sure;
        }
        if (!n_ask) continue;
        /* a few in a block: skip groups of 16 with none */
        for (uint64_t g = 0; g < m; g += 16) {
            const uint64_t e = m - g < 16 ? m - g : 16;
            uint32_t any = 0;
            for (uint64_t j = g; j < g + e; j++) any |= ask[j];
            if (!any) continue;
            for (uint64_t j = g; j < g + e; j++)
                if (ask[j]) out[j0 + j] = expf(x[j0 + j] - sub);
        }
    }
}

/* logf of every bf16 value (index: the top 16 bits): exact by construction, for the
 * compute dtype bfloat16, whose ratios RD(p / q) are bf16 values. */
static float log_bf16[65536];
static pthread_once_t log_bf16_once = PTHREAD_ONCE_INIT;
static void log_bf16_build(void)
{
    for (uint32_t h = 0; h < 65536; h++) {
        const uint32_t u = h << 16;
        float f;
        memcpy(&f, &u, 4);
        log_bf16[h] = logf(f);
    }
}

const float *mk_fusion_log_bf16(void)
{
    pthread_once(&log_bf16_once, log_bf16_build);
    return log_bf16;
}

void mk_fusion_exp_shifted(const float *x, float sub, uint64_t n, float *out) { exp_shifted(x, sub, n, out); }

/* The sum of (double)t[j] from 0 in index order (mergekit's f32 sum, here in double as
 * the kernels reduce). When no partial sum can round, it is exact in any order, so it is
 * taken in eight lanes: every term is a multiple of u, the smallest float ulp among the
 * nonzero terms, and sum |t| < 2^53 u bounds every partial sum (computed sums of |t| are
 * below 2^53 u only when the exact one is: rounding is monotonic and 2^53 u is a double).
 * Else (a range too wide; or NaN, Inf: the sum of |t| is then not below) in order. */
MK_KCLONE static double sum_in_order(const float *t, uint64_t n)
{
    double l[MK_LANES] = {0}, a[MK_LANES] = {0};
    uint32_t emin = 255;
    uint64_t j = 0;
    for (; j + MK_LANES <= n; j += MK_LANES) {
#pragma omp simd reduction(min : emin)
        for (int k = 0; k < MK_LANES; k++) {
            uint32_t u;
            memcpy(&u, &t[j + k], 4);
            const uint32_t e = (u >> 23) & 0xffu, eu = e ? e : 1; /* subnormals: ulp 2^-149 */
            emin = (u & 0x7fffffffu) && eu < emin ? eu : emin;
            l[k] += (double)t[j + k];
            a[k] += fabs((double)t[j + k]);
        }
    }
    for (int k = 0; j < n; j++, k++) {
        uint32_t u;
        memcpy(&u, &t[j], 4);
        const uint32_t e = (u >> 23) & 0xffu, eu = e ? e : 1;
        emin = (u & 0x7fffffffu) && eu < emin ? eu : emin;
        l[k] += (double)t[j];
        a[k] += fabs((double)t[j]);
    }
    /* 2^53 u = 2^(emin - 150 + 53), a normal double for emin in [1, 255] */
    const uint64_t lim_bits = (uint64_t)(emin - 97 + 1023) << 52;
    double lim;
    memcpy(&lim, &lim_bits, 8);
    if (mk_lanes_total(a) < lim) return mk_lanes_total(l);
    double s = 0;
    for (j = 0; j < n; j++) s += (double)t[j];
    return s;
}

/* ---- importance ---------------------------------------------------------------------- */

/* Row softmax as PyTorch computes it on CPU (f32: exp(x - max) times 1 / sum), then
 * rounded to the compute dtype, plus 1e-8 in the compute dtype: the rows of x and of the
 * base at once (their sums, each in index order, interleaved). On entry p and q hold the
 * exponentials; out in place. */
static inline MK_HOT void softmax_finish(const mk_dtype dt, float *p, float *q, uint64_t n)
{
    float sp = 0, sq = 0;
    for (uint64_t j = 0; j < n; j++) {
        sp += p[j];
        sq += q[j];
    }
    const float ip = 1.0f / sp, iq = 1.0f / sq;
    const float eps = RD(1e-8f); /* tensor + Python scalar: cast first */
    MK_SIMD for (uint64_t j = 0; j < n; j++) {
        p[j] = RD(RD(p[j] * ip) + eps);
        q[j] = RD(RD(q[j] * iq) + eps);
    }
}

/* The largest of x[0, n), NaN ignored (-Inf when none), as `if (x[j] > mx) mx = x[j]`
 * from -Inf gives it: eight lanes, each taking the same strict comparisons, then the
 * lanes in order. Only a zero maximum can differ (which of -0 and +0 comes first), so
 * that row is scanned again in order. */
static inline MK_HOT float row_max(const float *x, uint64_t n)
{
    float l[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    uint64_t j = 0;
    for (; j + 8 <= n; j += 8) MK_SIMD for (int k = 0; k < 8; k++) l[k] = x[j + k] > l[k] ? x[j + k] : l[k];
    float mx = -INFINITY;
    for (int k = 0; k < 8; k++)
        if (l[k] > mx) mx = l[k];
    for (; j < n; j++)
        if (x[j] > mx) mx = x[j];
    if (mx != 0.0f) return mx;
    mx = -INFINITY;
    for (j = 0; j < n; j++)
        if (x[j] > mx) mx = x[j];
    return mx;
}

float mk_fusion_row_max(const float *x, uint64_t n) { return row_max(x, n); }

double mk_fusion_sum_in_order(const float *t, uint64_t n) { return sum_in_order(t, n); }

/* t[j] = RD(p * RD(logf(RD(p / q)))), the terms of the row's KL divergence. */
static inline MK_HOT void kl_terms(const mk_dtype dt, const float *p, const float *q, uint64_t n, float *t)
{
    if (dt == MK_BF16) {
        pthread_once(&log_bf16_once, log_bf16_build);
        unsigned odd = 0;
        MK_SIMD for (uint64_t j = 0; j < n; j++) {
            const float r = RD(p[j] / q[j]);
            uint32_t u;
            memcpy(&u, &r, 4);
            odd |= u & 0xffffu;
            t[j] = RD(p[j] * RD(log_bf16[u >> 16]));
        }
        if (!odd) return;
        /* a NaN keeps its low bits through RD: logf itself for those */
        for (uint64_t j = 0; j < n; j++) {
            const float r = RD(p[j] / q[j]);
            uint32_t u;
            memcpy(&u, &r, 4);
            if (u & 0xffffu) t[j] = RD(p[j] * RD(logf(r)));
        }
        return;
    }
    for (uint64_t j = 0; j < n; j++) t[j] = RD(p[j] * RD(logf(RD(p[j] / q[j]))));
}

/* The row's KL divergence, rounded as mergekit's sum; pqt: [3 n] scratch. */
static inline MK_HOT float row_kl(const mk_dtype dt, const float *x, const float *b, uint64_t n, float *pqt)
{
    float *p = pqt, *q = pqt + n, *t = pqt + 2 * n;
    exp_shifted(x, row_max(x, n), n, p);
    exp_shifted(b, row_max(b, n), n, q);
    softmax_finish(dt, p, q, n);
    kl_terms(dt, p, q, n, t);
    return mk_reduced(dt, sum_in_order(t, n));
}

static inline MK_HOT void row_kl_into(const mk_dtype dt, const float *x, const float *b, uint64_t n, float *pqt, float *klr)
{
    *klr = row_kl(dt, x, b, n, pqt);
}

/* The importance RD(|RD(x - b)| * klr) of a row's elements: the selection's keys (-0 as
 * +0), or the output (x's change where the importance reaches the threshold). */
static inline MK_HOT void row_keys(const mk_dtype dt, const float *x, const float *b, uint64_t n, float klr,
                                   uint32_t *keys)
{
    MK_SIMD for (uint64_t j = 0; j < n; j++) keys[j] = mk_key_f32(RD(fabsf(RD(x[j] - b[j])) * klr) + 0.0f);
}

static inline MK_HOT void row_emit(const mk_dtype dt, const float *x, const float *b, uint64_t n, float klr,
                                   float threshold, float *out)
{
    MK_SIMD for (uint64_t j = 0; j < n; j++) {
        const float imp = RD(fabsf(RD(x[j] - b[j])) * klr);
        out[j] = imp >= threshold ? b[j] + RD(x[j] - b[j]) : b[j];
    }
}

/* Does the row of x or of the base hold a NaN or an Inf? */
static inline MK_HOT bool row_nonfinite(const float *x, const float *b, uint64_t n)
{
    uint32_t top = 0;
    MK_SIMD for (uint64_t j = 0; j < n; j++) {
        uint32_t u, v;
        memcpy(&u, &x[j], 4);
        memcpy(&v, &b[j], 4);
        u &= 0x7fffffffu;
        v &= 0x7fffffffu;
        top = u > top ? u : top;
        top = v > top ? v : top;
    }
    return top >= 0x7f800000u;
}

/* A row holding NaN or Inf, the way this file computed it before it was vectorised, each
 * step a loop of its own with the compute dtype known at run time: NaNs of different
 * payloads meet there (a NaN input and a NaN sum), and x86 keeps the first operand's; a
 * compiler may swap the operands of a product it vectorises (clang does), which would
 * change the NaN, its key and so the quartiles. From finite inputs every NaN is the
 * default one, and the order does not matter. */
static void softmax_eps(mk_dtype dt, const float *x, uint64_t n, float *out)
{
    float mx = -INFINITY;
    for (uint64_t j = 0; j < n; j++)
        if (x[j] > mx) mx = x[j];
    float s = 0;
    for (uint64_t j = 0; j < n; j++) {
        out[j] = expf(x[j] - mx);
        s += out[j];
    }
    float inv = 1.0f / s;
    const float eps = RD(1e-8f);
    for (uint64_t j = 0; j < n; j++) out[j] = RD(RD(out[j] * inv) + eps);
}

/* The row's KL divergence (unless given: have), then its keys or its output; pqt: [3 n]. */
__attribute__((noinline)) static float row_plain(mk_dtype dt, const fusion_state *st, const float *x, const float *b,
                                                 uint64_t n, bool have, float klr, uint32_t *keys, float *out, float *pqt)
{
    float *p = pqt, *q = pqt + n, *imp = pqt + 2 * n;
    if (!have) {
        softmax_eps(dt, x, n, p);
        softmax_eps(dt, b, n, q);
        double kl = 0;
        for (uint64_t j = 0; j < n; j++) kl += (double)RD(p[j] * RD(logf(RD(p[j] / q[j]))));
        klr = mk_reduced(dt, kl);
    }
    for (uint64_t j = 0; j < n; j++) imp[j] = RD(fabsf(RD(x[j] - b[j])) * klr);
    if (st->phase == 0)
        for (uint64_t j = 0; j < n; j++) keys[j] = mk_key_f32(imp[j] + 0.0f);
    else
        for (uint64_t j = 0; j < n; j++) out[j] = imp[j] >= st->threshold ? b[j] + RD(x[j] - b[j]) : b[j];
    return klr;
}

/* The rows of a chunk (whole in it): each row's KL divergence (kept for later passes when
 * there is room), then its keys (keys: [n]) or its output; pqt: [3 cols] scratch. */
MK_KCLONE static void fusion_rows(const mk_merge_job *job, const fusion_state *st, const mk_chunk *ch, uint32_t *keys,
                                  float *pqt)
{
    const mk_dtype dt = job->compute_dtype;
    const uint64_t cols = job->cols;
    const bool have = st->stored && st->stored[ch->index];
    for (uint64_t r = 0; r < ch->nrows; r++) {
        const float *x = ch->in[st->ix] + r * cols, *b = ch->in[st->ib] + r * cols;
        float klr = have ? st->klr[ch->row0 + r] : 0;
        if (row_nonfinite(x, b, cols)) {
            klr = row_plain(dt, st, x, b, cols, have, klr, keys + r * cols, st->phase ? ch->out + r * cols : NULL, pqt);
            if (!have && st->klr) st->klr[ch->row0 + r] = klr;
            continue;
        }
        if (!have) {
            MK_DT_DISPATCH(dt, row_kl_into, x, b, cols, pqt, &klr);
            if (st->klr) st->klr[ch->row0 + r] = klr;
        }
        if (st->phase == 0) MK_DT_DISPATCH(dt, row_keys, x, b, cols, klr, keys + r * cols);
        else MK_DT_DISPATCH(dt, row_emit, x, b, cols, klr, st->threshold, ch->out + r * cols);
    }
    if (st->stored && !have) st->stored[ch->index] = 1;
}

static mk_status fusion_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    fusion_state *st = user;
    const size_t sz[2] = {(size_t)ch->n * sizeof(uint32_t), (size_t)job->cols * 3 * sizeof(float)};
    char *w = mk_chunk_scratch(ch, sz, 2);
    if (!w) return mk_error(MK_ERR_NOMEM, "out of memory");
    uint32_t *keys = (uint32_t *)w;
    fusion_rows(job, st, ch, keys, (float *)(w + mk_tmp_round(sz[0])));
    return st->phase == 0 ? mk_sel_count(&st->sel, 0, ch->index, keys, ch->n) : MK_OK;
}

static mk_status fusion_run(const mk_merge_job *job)
{
    const mk_dtype dt = job->compute_dtype;
    fusion_state st = {0};
    st.ib = (size_t)job->base;
    st.ix = job->base == 0 ? 1 : 0;
    MK_TRY(mk_sel_init(&st.sel, job->numel, job->n_chunks, 1, 3));
    if (job->chunk_rows && job->rows <= job->keep_bytes / sizeof *st.klr) {
        st.klr = malloc((size_t)job->rows * sizeof *st.klr);
        st.stored = calloc((size_t)job->n_chunks, 1);
        if (!st.klr || !st.stored) {
            free(st.klr);
            free(st.stored);
            st.klr = NULL;
            st.stored = NULL;
        }
    }
    /* arcee_fusion.py: indices (q * (n - 1)).long() with q a float32 tensor */
    static const float qs[3] = {0.25f, 0.5f, 0.75f};
    for (int i = 0; i < 3; i++)
        mk_sel_query_set(&st.sel, (size_t)i, 0, (uint64_t)(qs[i] * (float)(job->numel - 1)), false, true);
    mk_status r = MK_OK;
    if (mk_sel_start(&st.sel)) {
        do {
            r = job->pass(job, fusion_chunk, &st, false);
        } while (r == MK_OK && mk_sel_next(&st.sel));
    }
    if (r == MK_OK) {
        float q1 = mk_key_f32_value(st.sel.q[0].key), med = mk_key_f32_value(st.sel.q[1].key);
        float q3 = mk_key_f32_value(st.sel.q[2].key);
        st.threshold = RD(med + RD(1.5f * RD(q3 - q1)));
        st.phase = 1;
        r = job->pass(job, fusion_chunk, &st, true);
    }
    mk_sel_free(&st.sel);
    free(st.klr);
    free(st.stored);
    return r;
}

static bool fusion_identity(const mk_merge_job *job) { return job->n_in == 1; }

const mk_method mk_method_arcee_fusion = {
    .name = "arcee_fusion",
    .summary = "take the other model's changes where they matter most (KL-weighted importance)",
    .flags = MK_M_RESULT_F32,
    .params = (const mk_param_def[]){{0}},
    .base = MK_BASE_REQUIRED,
    .min_inputs = 2,
    .max_inputs = 2,
    .missing = MK_MISSING_SINGLETON,
    .run = fusion_run,
    .is_identity = fusion_identity,
};
