/* task_arithmetic.c - the task-vector family, one implementation configured per method
 * as mergekit 0.1.5's generalized task arithmetic (generalized_task_arithmetic.py,
 * sparsify.py):
 *
 *   method            sparsification          sign consensus  normalize  rescale
 *   task_arithmetic   none                    -               false      false
 *   ties              magnitude top-k         sum             true       false
 *   dare_ties         random (Bernoulli)      sum             false      true
 *   dare_linear       random                  -               false      true
 *   breadcrumbs       magnitude outliers      -               false      false
 *   breadcrumbs_ties  magnitude outliers      sum             false      false
 *   della             della magprune          sum             true       true
 *   della_linear      della magprune          -               false      true
 *
 * Per tensor: delta_k = x_k - base for every non-base model; sparsify it (density < 1);
 * with rescale, multiply what is kept by ||delta||_1 / ||kept||_1 (mergekit >= 0.1.0;
 * older versions divided DARE deltas by the density); weight it; with sign consensus
 * keep only the weighted deltas whose sign matches the sign of their sum (ties -> +);
 * sum; with normalize divide by the sum of the weights that were kept; times lambda;
 * add the base.
 *
 * Magnitude selections keep exactly the count mergekit keeps (top k = max(1,
 * int(density * numel)); breadcrumbs the ranks [n_bot, n_bot + int(density * numel))
 * of the ascending order), found with select.h in bounded memory; equal magnitudes are
 * ordered by flat index, lower first (mergekit's torch.argsort is unstable there).
 * Random masks come from the counter-based generator keyed by (seed, tensor name),
 * stream = input index, counter = flat element index: the same bytes at any thread
 * count, but not mergekit's torch masks.
 */
#include "della_rank.h"
#include "kernel.h"
#include "select.h"

typedef enum { SP_NONE, SP_MAGNITUDE, SP_RANDOM, SP_OUTLIERS, SP_DELLA } sp_kind;

enum { P_INT8_MASK, P_NORMALIZE, P_RESCALE, P_LAMBDA, P_WEIGHT, P_DENSITY, P_EXTRA };

#define GTA_PARAMS(norm, resc)                                                                                        \
    [P_INT8_MASK] = {"int8_mask", MK_PS_GLOBAL, 0, false, true, "store the sign mask as int8 (memory only; no effect here)", MK_PR_ANY}, \
    [P_NORMALIZE] = {"normalize", MK_PS_GLOBAL, norm, false, true, "divide by the sum of the weights kept", MK_PR_ANY},          \
    [P_RESCALE] = {"rescale", MK_PS_GLOBAL, resc, false, true, "rescale kept deltas to the L1 norm of the whole delta", MK_PR_ANY}, \
    [P_LAMBDA] = {"lambda", MK_PS_GLOBAL, 1, false, false, "scale the merged delta", MK_PR_ANY},                                \
    [P_WEIGHT] = {"weight", MK_PS_MODEL, 0, true, false, "weight of this model's delta", MK_PR_ANY},                            \
    [P_DENSITY] = {"density", MK_PS_MODEL, 1, false, false, "fraction of the delta kept", MK_PR_UNIT}

#define GTA_END {0}
#define P_GAMMA_DEF {"gamma", MK_PS_MODEL, 0.01, false, false, "fraction of the largest deltas removed", MK_PR_UNIT}
#define P_EPSILON_DEF {"epsilon", MK_PS_MODEL, 0.15, false, false, "keep probability spread around density", MK_PR_NONNEG}

static const mk_param_def ta_params[] = {GTA_PARAMS(0, 0), GTA_END};
static const mk_param_def ties_params[] = {GTA_PARAMS(1, 0), GTA_END};
static const mk_param_def dare_ties_params[] = {GTA_PARAMS(0, 1), GTA_END};
static const mk_param_def dare_linear_params[] = {GTA_PARAMS(0, 1), GTA_END};
static const mk_param_def bc_params[] = {GTA_PARAMS(0, 0), [P_EXTRA] = P_GAMMA_DEF, GTA_END};
static const mk_param_def bc_ties_params[] = {GTA_PARAMS(0, 0), [P_EXTRA] = P_GAMMA_DEF, GTA_END};
static const mk_param_def della_params[] = {GTA_PARAMS(1, 1), [P_EXTRA] = P_EPSILON_DEF, GTA_END};
static const mk_param_def della_linear_params[] = {GTA_PARAMS(0, 1), [P_EXTRA] = P_EPSILON_DEF, GTA_END};

typedef struct gta_def {
    sp_kind sp;
    bool consensus;
} gta_def;

/* What happens to one model's delta. */
typedef enum { MK_KEEP_ALL, MK_KEEP_NONE, MK_KEEP_TOPK, MK_KEEP_BAND, MK_KEEP_RANDOM, MK_KEEP_DELLA } keep_kind;

typedef struct gta_model {
    size_t in;          /* input index */
    keep_kind keep;
    size_t q0, q1;      /* selection queries (top-k: q0; band: [q0 cut, q1 cut)) */
    float p;            /* keep probability (random), in the work dtype */
    float dm, eps;      /* della: density - epsilon as f32, epsilon as f32 */
    float *pr;          /* della: [cols] keep probability by rank within a row */
    mk_dtype wd;        /* dtype of the random / della masking work */
    bool rescale;       /* L1 rescale applies to this model */
    float factor;       /* rescale factor (1 = none), in the work dtype */
    float w;            /* weight in the compute dtype */
} gta_model;

typedef struct gta_state {
    gta_def d;
    int phase;          /* 0 select, 1 L1 sums, 2 emit */
    size_t K;
    gta_model mdl[MK_KMAX];
    size_t ib;
    bool normalize, need_select, need_l1;
    float lambda, wsum;
    mk_select sel;
    mk_partials part;   /* phase 1: [2K] sums of |delta| and |kept| */
    mk_chunk_bits kept; /* phase 1 -> 2: every model's keep flags (random masks drawn once) */
} gta_state;

static mk_status gta_check(const mk_merge_job *job, gta_def d)
{
    MK_TRY(mk_check_inputs_max(job, "this method"));
    if (d.sp != SP_DELLA) return MK_OK;
    for (size_t k = 0; k < mk_job_n_nonbase(job); k++) {
        size_t i = mk_job_nonbase(job, k);
        double den = job->m[i][P_DENSITY], eps = job->m[i][P_EXTRA];
        if (den >= 1 || den <= 0) continue;
        /* sparsify.py della_magprune */
        if (den + eps >= 1 || den - eps <= 0)
            return mk_error(MK_ERR_RECIPE,
                            "tensor %s: della needs density - epsilon > 0 and density + epsilon < 1, got density %g, "
                            "epsilon %g",
                            job->name, den, eps);
        if (job->cols < 2)
            return mk_error(MK_ERR_RECIPE, "tensor %s: della ranks each row, and rows of one element have no rank",
                            job->name);
    }
    return MK_OK;
}

/* ---- DELLA: ranks of |delta| within each row -------------------------------------------- */

/* Keep probabilities by rank of one model's rows of n elements (sparsify.py
 * della_magprune): rank r (1..n, ascending |delta|) -> (r - 1)/(n - 1) -> density - eps +
 * 2 eps * that, each step in the work dtype. They depend on the rank alone: computed once
 * per tensor. */
static void della_rank_probs(const gta_model *m, uint64_t n, float *pr)
{
    const mk_dtype dt = m->wd;
    float rmin = RD(RD(0.0f) + 1.0f), rmax = RD(RD((float)(n - 1)) + 1.0f);
    float span = RD(rmax - rmin);
    for (uint64_t r = 0; r < n; r++) {
        float rank = RD(RD((float)r) + 1.0f);
        float rn = RD(RD(rank - rmin) / span);
        rn = rn < 0 ? 0 : rn > 1 ? 1 : rn;
        pr[r] = RD(m->dm + RD(RD(rn * 2.0f) * m->eps));
    }
}

/* ---- the chunk kernel ------------------------------------------------------------------- */

typedef struct chunk_ctx {
    float *u;          /* [n] uniforms (random masks) */
    uint32_t *words;   /* [n + 8] random words */
    float *delta;      /* [K + 2][n] deltas in the compute dtype, then two rows of scratch */
    uint32_t *keys;    /* [n] */
    uint8_t *keep;     /* [K + 1][n] */
    mk_della_buf db;
} chunk_ctx;

/* Carve a chunk's buffers out of the pass's per-thread scratch (no allocation per chunk). */
static mk_status ctx_init(chunk_ctx *c, const mk_chunk *ch, size_t K, uint64_t cols, bool della, bool random)
{
    const size_t n = (size_t)ch->n, nd = della ? (size_t)cols : 0, nr = random ? n + 8 : 0;
    size_t sz[] = {(K + 2) * n * sizeof(float), n * sizeof(uint32_t), nr * sizeof(float), nr * sizeof(uint32_t),
                   (nd ? mk_della_buf_words(nd) : 0) * sizeof(uint32_t), (K + 1) * n};
    uint8_t *p = mk_chunk_scratch(ch, sz, sizeof sz / sizeof *sz);
    if (!p) return mk_error(MK_ERR_NOMEM, "out of memory for chunk scratch");
    memset(c, 0, sizeof *c);
    c->delta = (float *)p;
    p += mk_tmp_round(sz[0]);
    c->keys = (uint32_t *)p;
    p += mk_tmp_round(sz[1]);
    c->u = (float *)p;
    p += mk_tmp_round(sz[2]);
    c->words = (uint32_t *)p;
    p += mk_tmp_round(sz[3]);
    mk_della_buf_carve(&c->db, (uint32_t *)p, nd);
    p += mk_tmp_round(sz[4]);
    c->keep = p;
    return MK_OK;
}

/* flags[i] = whether element i (key |d[i]|) is before the cut of q. keys: n scratch words. */
static void sel_flags(const mk_sel_query *q, uint64_t chunk, const float *d, uint64_t n, uint8_t *flags, uint32_t *keys)
{
    uint64_t seen = 0;
    MK_SIMD for (uint64_t i = 0; i < n; i++) keys[i] = mk_key_abs(d[i]);
    mk_sel_flags(q, chunk, keys, n, flags, &seen);
}

/* keep[k][i] for every model of this chunk. */
MK_KCLONE static mk_status compute_keep(const mk_merge_job *job, gta_state *st, const mk_chunk *ch, chunk_ctx *c)
{
    const uint64_t n = ch->n;
    for (size_t k = 0; k < st->K; k++) {
        const gta_model *m = &st->mdl[k];
        const float *dk = c->delta + k * n;
        uint8_t *kp = c->keep + k * n;
        switch (m->keep) {
        case MK_KEEP_ALL: memset(kp, 1, (size_t)n); break;
        case MK_KEEP_NONE: memset(kp, 0, (size_t)n); break;
        case MK_KEEP_TOPK: sel_flags(&st->sel.q[m->q0], ch->index, dk, n, kp, c->keys); break;
        case MK_KEEP_BAND: {
            /* before the high cut and not before the low one */
            uint8_t *lo = c->keep + st->K * n;
            sel_flags(&st->sel.q[m->q1], ch->index, dk, n, kp, c->keys);
            sel_flags(&st->sel.q[m->q0], ch->index, dk, n, lo, c->keys);
            MK_SIMD for (uint64_t i = 0; i < n; i++) kp[i] = kp[i] & !lo[i];
            break;
        }
        case MK_KEEP_RANDOM: {
            /* torch.bernoulli(p): keep with probability p */
            mk_uniforms(job->rng, m->in, ch->elem0, n, c->u, c->words);
            const float p = m->p, *u = c->u;
            MK_SIMD for (uint64_t i = 0; i < n; i++) kp[i] = u[i] < p;
            break;
        }
        case MK_KEEP_DELLA: {
            mk_uniforms(job->rng, m->in, ch->elem0, n, c->u, c->words);
            const uint64_t cols = job->cols;
            for (uint64_t r = 0; r < ch->nrows; r++)
                mk_della_row_keep(m->pr, dk + r * cols, c->u + r * cols, cols, &c->db, kp + r * cols);
            break;
        }
        }
    }
    return MK_OK;
}

static inline MK_HOT void gta_deltas(const mk_dtype dt, float *d, const float *x, const float *b, uint64_t n)
{
    MK_SIMD for (uint64_t i = 0; i < n; i++) d[i] = RD(x[i] - b[i]);
}

/* The magnitude keys of the deltas x - b (as gta_deltas rounds them), without storing them. */
static inline MK_HOT void gta_keys(const mk_dtype dt, uint32_t *keys, const float *x, const float *b, uint64_t n)
{
    MK_SIMD for (uint64_t i = 0; i < n; i++) keys[i] = mk_key_abs(RD(x[i] - b[i]));
}

/* One model's weighted kept deltas: d[i] is overwritten with them and they are added
 * into acc (first: acc starts from +0, as a zeroed sum would, so -0 never reaches it). */
static inline MK_HOT void gta_weigh(const mk_dtype dt, float *d, const uint8_t *kp, uint64_t n, float f, float w,
                                    float *acc, bool first)
{
    /* rescaled in the work dtype (the compute dtype, or float32 for fp16 random masks),
     * then cast to the compute dtype: one rounding to dt either way */
    if (f != 1.0f && first) {
        MK_SIMD for (uint64_t i = 0; i < n; i++) acc[i] = 0.0f + (d[i] = RD(RD((kp[i] ? d[i] : 0.0f) * f) * w));
    } else if (f != 1.0f) {
        MK_SIMD for (uint64_t i = 0; i < n; i++) acc[i] += (d[i] = RD(RD((kp[i] ? d[i] : 0.0f) * f) * w));
    } else if (first) {
        MK_SIMD for (uint64_t i = 0; i < n; i++) acc[i] = 0.0f + (d[i] = RD((kp[i] ? d[i] : 0.0f) * w));
    } else {
        MK_SIMD for (uint64_t i = 0; i < n; i++) acc[i] += (d[i] = RD((kp[i] ? d[i] : 0.0f) * w));
    }
}

/* The agreeing deltas of one model and their weights, into out and div (first: from +0). */
static inline MK_HOT void gta_agree(const float *d, const float *acc, float w, uint64_t n, float *out, float *div,
                                    bool first)
{
    /* sign(d) == (acc >= 0 ? +1 : -1): d times that sign is positive (never for zeros or
     * NaN); branch-free so it vectorises */
    if (first) {
        MK_SIMD for (uint64_t i = 0; i < n; i++) {
            const bool agree = d[i] * (acc[i] >= 0.0f ? 1.0f : -1.0f) > 0.0f;
            out[i] = 0.0f + (agree ? d[i] : 0.0f);
            div[i] = 0.0f + (agree ? w : 0.0f);
        }
    } else {
        MK_SIMD for (uint64_t i = 0; i < n; i++) {
            const bool agree = d[i] * (acc[i] >= 0.0f ? 1.0f : -1.0f) > 0.0f;
            out[i] += agree ? d[i] : 0.0f;
            div[i] += agree ? w : 0.0f;
        }
    }
}

/* The merged output of one chunk from the deltas and keep flags; delta is overwritten
 * with the weighted deltas, acc and div are scratch of n floats (none is read before
 * it is written, so nothing is zeroed first). */
static inline MK_HOT void gta_emit(const mk_dtype dt, const gta_state *st, const float *b, float *delta,
                                   const uint8_t *keep, uint64_t n, float *out, float *acc, float *div)
{
    const size_t K = st->K;
    for (size_t k = 0; k < K; k++)
        gta_weigh(dt, delta + k * n, keep + k * n, n, st->mdl[k].factor, st->mdl[k].w, acc, k == 0);
    const float lambda = st->lambda;
    const bool norm = st->normalize;
    if (!st->d.consensus) {
        const float ws = norm ? st->wsum : 1.0f;
        MK_SIMD for (uint64_t i = 0; i < n; i++) out[i] = RD(b[i] + RD(RD(RD(acc[i]) / ws) * lambda));
        return;
    }
    /* majority sign by sum (ties to +); zero deltas never agree */
    MK_SIMD for (uint64_t i = 0; i < n; i++) acc[i] = RD(acc[i]);
    for (size_t k = 0; k < K; k++) gta_agree(delta + k * n, acc, st->mdl[k].w, n, out, div, k == 0);
    /* without normalize the divisor is 1 and x / 1 == x; with lambda 1, x * 1 == x */
    MK_SIMD for (uint64_t i = 0; i < n; i++) {
        float dv = RD(div[i]);
        dv = !norm || dv == 0.0f ? 1.0f : dv;
        out[i] = RD(b[i] + RD(RD(RD(out[i]) / dv) * lambda));
    }
}

MK_KCLONE static mk_status gta_chunk(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    gta_state *st = user;
    const mk_dtype dt = job->compute_dtype;
    const uint64_t n = ch->n;
    const size_t K = st->K;
    const float *b = ch->in[st->ib];
    bool della = false, random = false;
    for (size_t k = 0; k < K; k++) {
        della |= st->mdl[k].keep == MK_KEEP_DELLA;
        random |= st->mdl[k].keep == MK_KEEP_DELLA || st->mdl[k].keep == MK_KEEP_RANDOM;
    }
    chunk_ctx c = {0};
    MK_TRY(ctx_init(&c, ch, K, job->cols, della && st->phase > 0, random && st->phase > 0));
    mk_status r = MK_OK;
    if (st->phase == 0) {
        /* selection: magnitude keys of the models that need them, straight from the inputs */
        for (size_t k = 0; k < K && r == MK_OK; k++) {
            if (st->mdl[k].keep != MK_KEEP_TOPK && st->mdl[k].keep != MK_KEEP_BAND) continue;
            MK_DT_DISPATCH(dt, gta_keys, c.keys, ch->in[st->mdl[k].in], b, n);
            r = mk_sel_count(&st->sel, k, ch->index, c.keys, n);
        }
        return r;
    }
    for (size_t k = 0; k < K; k++) MK_DT_DISPATCH(dt, gta_deltas, c.delta + k * n, ch->in[st->mdl[k].in], b, n);
    if (st->phase == 2 && mk_chunk_bits_have(&st->kept, ch->index)) {
        for (size_t k = 0; k < K; k++) mk_bits_unpack(mk_chunk_bits_at(&st->kept, ch->index, k), n, c.keep + k * n);
    } else {
        compute_keep(job, st, ch, &c);
    }
    if (st->phase == 1 && mk_chunk_bits_at(&st->kept, ch->index, 0)) {
        for (size_t k = 0; k < K; k++) mk_bits_pack(c.keep + k * n, n, mk_chunk_bits_at(&st->kept, ch->index, k));
        mk_chunk_bits_stored(&st->kept, ch->index);
    }
    if (st->phase == 1) {
        /* L1 norms of each delta and of what is kept, in the work dtype */
        double *row = mk_partials_row(&st->part, ch->index);
        for (size_t k = 0; k < K; k++) {
            if (!st->mdl[k].rescale) continue;
            const float *dk = c.delta + k * n;
            const uint8_t *kp = c.keep + k * n;
            mk_sum_abs_kept(dk, kp, n, &row[2 * k], &row[2 * k + 1]);
        }
        return MK_OK;
    }
    MK_DT_DISPATCH(dt, gta_emit, st, b, c.delta, c.keep, n, ch->out, c.delta + K * n, c.delta + (K + 1) * n);
    return MK_OK;
}

static bool gta_identity(const mk_merge_job *job) { return job->n_in == 1 && job->base == 0; }

/* Whether gta_run makes one pass: no selection, and no norms to rescale by. */
static bool gta_one_pass(const mk_merge_job *job, gta_def d)
{
    bool rescale = job->g[P_RESCALE] != 0;
    for (size_t k = 0; k < mk_job_n_nonbase(job); k++) {
        double den = job->m[mk_job_nonbase(job, k)][P_DENSITY];
        if (d.sp != SP_NONE && den < 1 && !(d.sp == SP_RANDOM && !rescale)) return false;
    }
    return true;
}

static mk_status gta_run(const mk_merge_job *job, gta_def d)
{
    const mk_dtype dt = job->compute_dtype;
    MK_TRY(mk_check_inputs_max(job, "this method"));
    gta_state st = {0};
    st.d = d;
    st.K = mk_job_n_nonbase(job);
    st.ib = (size_t)job->base;
    if (st.K == 0) return mk_emit_input(job, st.ib);
    st.normalize = job->g[P_NORMALIZE] != 0;
    bool rescale = job->g[P_RESCALE] != 0;
    st.lambda = (float)job->g[P_LAMBDA];
    const uint64_t N = job->numel;
    size_t nq = 0;
    float wsum = 0;
    mk_status r = MK_OK;
    for (size_t k = 0; k < st.K; k++) {
        gta_model *m = &st.mdl[k];
        m->in = mk_job_nonbase(job, k);
        m->w = RD((float)job->m[m->in][P_WEIGHT]);
        m->factor = 1.0f;
        m->wd = dt;
        wsum += m->w;
        double den = job->m[m->in][P_DENSITY];
        if (st.d.sp == SP_NONE || den >= 1) {
            m->keep = MK_KEEP_ALL;
            continue;
        }
        m->rescale = rescale;
        switch (st.d.sp) {
        case SP_MAGNITUDE:
            if (den <= 0 || N == 0) {
                m->keep = MK_KEEP_NONE;
                m->rescale = false;
            } else {
                m->keep = MK_KEEP_TOPK;
                m->q0 = nq++;
            }
            break;
        case SP_OUTLIERS: {
            double target = trunc(den * (double)N), n_top = trunc(job->m[m->in][P_EXTRA] * (double)N);
            double n_bot = (double)N - target - n_top;
            if (n_bot < 0) n_bot = 0;
            if (target <= 0) {
                m->keep = MK_KEEP_NONE;
                m->rescale = false;
                break;
            }
            m->keep = MK_KEEP_BAND;
            m->q0 = nq++;
            m->q1 = nq++;
            break;
        }
        case SP_RANDOM:
            /* torch.bernoulli works in bf16 for bf16 tensors, in f32 otherwise (CPU) */
            m->wd = dt == MK_BF16 ? MK_BF16 : MK_F32;
            m->keep = MK_KEEP_RANDOM;
            m->p = mk_dtype_round(m->wd, (float)den);
            break;
        case SP_DELLA:
            m->wd = dt == MK_BF16 ? MK_BF16 : MK_F32;
            if (den <= 0) {
                m->keep = MK_KEEP_NONE;
                m->rescale = false;
                break;
            }
            m->keep = MK_KEEP_DELLA;
            /* (density - epsilon) + tensor: the Python number is cast to the work dtype */
            m->dm = mk_dtype_round(m->wd, (float)(den - job->m[m->in][P_EXTRA]));
            m->eps = (float)job->m[m->in][P_EXTRA];
            if (job->cols >= 2 && (m->pr = malloc((size_t)job->cols * sizeof *m->pr))) della_rank_probs(m, job->cols, m->pr);
            else if (job->cols >= 2) r = mk_error(MK_ERR_NOMEM, "out of memory for della ranks");
            break;
        case SP_NONE: break;
        }
    }
    st.wsum = RD(wsum);
    if (fabsf(st.wsum) < 1e-8f) st.wsum = 1;
    if (r == MK_OK && nq) {
        r = mk_sel_init(&st.sel, N, job->n_chunks, st.K, nq);
        for (size_t k = 0; k < st.K && r == MK_OK; k++) {
            gta_model *m = &st.mdl[k];
            double den = job->m[m->in][P_DENSITY];
            if (m->keep == MK_KEEP_TOPK) {
                /* sparsify.py magnitude: k = max(1, int(density * numel)), largest first */
                uint64_t kc = mk_trunc_u64(den * (double)N);
                mk_sel_query_set(&st.sel, m->q0, (uint32_t)k, kc ? kc : 1, true, false);
            } else if (m->keep == MK_KEEP_BAND) {
                /* sparsify.py magnitude_outliers: ascending ranks [n_bot, n_bot + target) */
                double target = trunc(den * (double)N), n_top = trunc(job->m[m->in][P_EXTRA] * (double)N);
                double n_bot = (double)N - target - n_top;
                if (n_bot < 0) n_bot = 0;
                double hi = n_bot + target;
                mk_sel_query_set(&st.sel, m->q0, (uint32_t)k, (uint64_t)(n_bot < (double)N ? n_bot : (double)N), false, false);
                mk_sel_query_set(&st.sel, m->q1, (uint32_t)k, (uint64_t)(hi < (double)N ? hi : (double)N), false, false);
            }
        }
        if (r == MK_OK && mk_sel_start(&st.sel)) {
            do {
                st.phase = 0;
                r = job->pass(job, gta_chunk, &st, false);
            } while (r == MK_OK && mk_sel_next(&st.sel));
        }
    }
    bool need_l1 = false;
    for (size_t k = 0; k < st.K; k++) need_l1 |= st.mdl[k].rescale;
    if (r == MK_OK && need_l1) {
        /* masks that cost more than reading them back (random draws, della's row ranks,
         * selections) are kept for the emitting pass, up to the cap */
        bool keep_masks = false;
        for (size_t k = 0; k < st.K; k++) keep_masks |= st.mdl[k].keep != MK_KEEP_ALL && st.mdl[k].keep != MK_KEEP_NONE;
        if (keep_masks) mk_chunk_bits_init(&st.kept, job, st.K, job->keep_bytes);
        r = mk_partials_init(&st.part, job->n_chunks, 2 * st.K);
        if (r == MK_OK) {
            st.phase = 1;
            r = job->pass(job, gta_chunk, &st, false);
        }
        if (r == MK_OK) {
            double sums[2 * MK_KMAX];
            mk_partials_sum(&st.part, sums);
            for (size_t k = 0; k < st.K; k++) {
                gta_model *m = &st.mdl[k];
                if (!m->rescale) continue;
                /* sparsify.py rescaled_masked_tensor: norms below 1e-7 -> no rescale */
                float before = mk_reduced(m->wd, sums[2 * k]), after = mk_reduced(m->wd, sums[2 * k + 1]);
                if (before < 1e-7f || after < 1e-7f) continue;
                m->factor = mk_dtype_round(m->wd, before / after);
            }
        }
        mk_partials_free(&st.part);
    }
    if (r == MK_OK) {
        st.phase = 2;
        r = job->pass(job, gta_chunk, &st, true);
    }
    if (nq) mk_sel_free(&st.sel);
    mk_chunk_bits_free(&st.kept);
    for (size_t k = 0; k < st.K; k++) free(st.mdl[k].pr);
    return r;
}

#define GTA_METHOD(id, sp, cons, summ, prm)                                                                           \
    static mk_status id##_check(const mk_merge_job *job) { return gta_check(job, (gta_def){sp, cons}); }             \
    static mk_status id##_run(const mk_merge_job *job) { return gta_run(job, (gta_def){sp, cons}); }                 \
    static bool id##_one_pass(const mk_merge_job *job) { return gta_one_pass(job, (gta_def){sp, cons}); }            \
    const mk_method mk_method_##id = {                                                                                \
        .name = #id,                                                                                                  \
        .summary = summ,                                                                                              \
        .params = prm,                                                                                                \
        .base = MK_BASE_REQUIRED,                                                                                     \
        .min_inputs = 1,                                                                                              \
        .check = id##_check,                                                                                          \
        .run = id##_run,                                                                                              \
        .is_identity = gta_identity,                                                                                  \
        .one_pass = id##_one_pass,                                                                                    \
    }

GTA_METHOD(task_arithmetic, SP_NONE, false, "add the weighted task vectors (model - base) to the base", ta_params);
GTA_METHOD(ties, SP_MAGNITUDE, true, "TIES: trim each task vector to its largest entries, elect signs, merge", ties_params);
GTA_METHOD(dare_ties, SP_RANDOM, true, "DARE random drop and rescale, then TIES sign election", dare_ties_params);
GTA_METHOD(dare_linear, SP_RANDOM, false, "DARE random drop and rescale, then a weighted sum", dare_linear_params);
GTA_METHOD(breadcrumbs, SP_OUTLIERS, false, "drop the smallest and the largest (outlier) deltas", bc_params);
GTA_METHOD(breadcrumbs_ties, SP_OUTLIERS, true, "breadcrumbs with TIES sign election", bc_ties_params);
GTA_METHOD(della, SP_DELLA, true, "DELLA: magnitude-ranked random drop per row, rescale, TIES signs", della_params);
GTA_METHOD(della_linear, SP_DELLA, false, "DELLA drop and rescale, then a weighted sum", della_linear_params);
