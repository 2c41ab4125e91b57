/* tvstats.c - task-vector statistics of a merge plan (tvstats.h). */
#include "tvstats.h"
#include "methods/kernel.h"
#include "methods/select.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_VALUES 65536u

typedef struct tv_job {
    const mk_plan *p;
    const mk_plan_tensor *t;
    mk_tvstats *st;
    size_t row;          /* the stats row of this tensor */
    int *col;            /* [n_in] column of input k among the non-base models, -1 for the base */
    double *density;     /* [n_in] */
    float *weight;       /* [n_in] as mergekit's f32 weights tensor */
    float **x;           /* [n_in][chunk] */
    void *scratch;
    uint64_t chunk_rows;
    int *q;              /* [n_in] its trim query (and key stream) in sel, -1: kept whole or (none) dropped */
    bool *none;          /* [n_in] density <= 0: nothing kept */
    mk_select sel;       /* the top k = max(1, int(density x numel)) |delta| of each trimmed input */
    size_t nq;
    uint32_t *keys;      /* [chunk] */
    uint8_t *keep;       /* [n_in][chunk] kept by trimming */
} tv_job;

static mk_status read_chunk(tv_job *j, uint64_t row0, uint64_t nrows)
{
    const mk_plan_tensor *t = j->t;
    for (size_t k = 0; k < t->job.n_in; k++) {
        const mk_plan_input *in = &t->in[k];
        mk_source *src = j->p->models[in->model].src;
        MK_TRY(mk_source_read_f32_window(src, in->tensor, in->src_cols, row0, nrows, t->job.cols, j->x[k], j->scratch));
    }
    return MK_OK;
}

/* The keys |delta| of every trimmed input of chunk c (n values) into the selection. */
static mk_status count_keys(tv_job *j, uint64_t c, uint64_t n)
{
    size_t b = (size_t)j->t->job.base;
    for (size_t k = 0; k < j->t->job.n_in; k++) {
        if (j->q[k] < 0) continue;
        for (uint64_t e = 0; e < n; e++) j->keys[e] = mk_key_abs(j->x[k][e] - j->x[b][e]);
        MK_TRY(mk_sel_count(&j->sel, (size_t)j->q[k], c, j->keys, n));
    }
    return MK_OK;
}

/* pass 1: squared norms and dot products into the row, with the selection's first pass;
 * then its further passes (the exact cut of each trimmed input, as the merge finds it) */
static mk_status pass1(tv_job *j)
{
    const mk_plan_tensor *t = j->t;
    size_t nin = t->job.n_in, nm = j->st->n_models, b = (size_t)t->job.base;
    double *sq = j->st->sq + j->row * nm, *dot = j->st->dot + j->row * nm * nm;
    bool select = j->nq && mk_sel_start(&j->sel);
    for (uint64_t r0 = 0, c = 0; r0 < t->job.rows; r0 += j->chunk_rows, c++) {
        uint64_t nr = t->job.rows - r0 < j->chunk_rows ? t->job.rows - r0 : j->chunk_rows, n = nr * t->job.cols;
        MK_TRY(read_chunk(j, r0, nr));
        for (size_t k = 0; k < nin; k++) {
            if (j->col[k] < 0) continue;
            size_t ck = (size_t)j->col[k];
            double s = 0;
            for (uint64_t e = 0; e < n; e++) {
                float d = j->x[k][e] - j->x[b][e];
                s += (double)d * d;
            }
            sq[ck] += s;
            for (size_t l = k + 1; l < nin; l++) {
                if (j->col[l] < 0) continue;
                size_t cl = (size_t)j->col[l];
                double dl = 0;
                for (uint64_t e = 0; e < n; e++) dl += (double)(j->x[k][e] - j->x[b][e]) * (double)(j->x[l][e] - j->x[b][e]);
                dot[ck * nm + cl] += dl;
                dot[cl * nm + ck] += dl;
            }
        }
        if (select) MK_TRY(count_keys(j, c, n));
    }
    while (select && mk_sel_next(&j->sel))
        for (uint64_t r0 = 0, c = 0; r0 < t->job.rows; r0 += j->chunk_rows, c++) {
            uint64_t nr = t->job.rows - r0 < j->chunk_rows ? t->job.rows - r0 : j->chunk_rows;
            MK_TRY(read_chunk(j, r0, nr));
            MK_TRY(count_keys(j, c, nr * t->job.cols));
        }
    return MK_OK;
}

/* What trimming keeps of chunk c (n values) of each non-base input, into keep[k]. */
static void trim_chunk(tv_job *j, uint64_t c, uint64_t n)
{
    size_t b = (size_t)j->t->job.base;
    for (size_t k = 0; k < j->t->job.n_in; k++) {
        uint8_t *kp = j->keep + k * j->chunk_rows * j->t->job.cols;
        if (j->col[k] < 0) continue;
        if (j->q[k] < 0) {
            memset(kp, !j->none[k], (size_t)n);
            continue;
        }
        const mk_sel_query *q = &j->sel.q[j->q[k]];
        uint64_t seen = 0;
        for (uint64_t e = 0; e < n; e++) kp[e] = mk_sel_before(q, c, mk_key_abs(j->x[k][e] - j->x[b][e]), &seen);
    }
}

/* pass 2: trim, elect the sign of the weighted sum, count conflicts and kept elements */
static mk_status pass2(tv_job *j)
{
    const mk_plan_tensor *t = j->t;
    size_t nin = t->job.n_in, nm = j->st->n_models, b = (size_t)t->job.base;
    uint64_t active = 0, conflict = 0, *kept = j->st->kept + j->row * nm, cap = j->chunk_rows * t->job.cols;
    for (uint64_t r0 = 0, c = 0; r0 < t->job.rows; r0 += j->chunk_rows, c++) {
        uint64_t nr = t->job.rows - r0 < j->chunk_rows ? t->job.rows - r0 : j->chunk_rows, n = nr * t->job.cols;
        MK_TRY(read_chunk(j, r0, nr));
        trim_chunk(j, c, n);
        for (uint64_t e = 0; e < n; e++) {
            /* as mergekit's generalized_task_arithmetic: deltas x weights, then get_mask's sum,
             * in f32 (the sign is what counts) */
            float sum = 0;
            unsigned pos = 0, neg = 0;
            for (size_t k = 0; k < nin; k++) {
                if (j->col[k] < 0 || !j->keep[k * cap + e]) continue;
                float wd = (j->x[k][e] - j->x[b][e]) * j->weight[k];
                sum += wd;
                pos += wd > 0;
                neg += wd < 0;
            }
            active += pos + neg > 0;
            conflict += pos > 0 && neg > 0;
            for (size_t k = 0; k < nin && pos + neg > 0; k++) {
                if (j->col[k] < 0 || !j->keep[k * cap + e]) continue;
                float wd = (j->x[k][e] - j->x[b][e]) * j->weight[k];
                /* get_mask(method="sum"): the majority sign is + where the sum is >= 0 */
                kept[j->col[k]] += (wd > 0 && sum >= 0) || (wd < 0 && sum < 0);
            }
        }
    }
    j->st->active[j->row] += active;
    j->st->conflict[j->row] += conflict;
    j->st->elems[j->row] += t->job.numel;
    return MK_OK;
}

static mk_status one_tensor(const mk_plan *p, const mk_plan_tensor *t, mk_tvstats *st, const size_t *colmap, int pd, int pw)
{
    size_t nin = t->job.n_in;
    if (t->job.base < 0 || nin < 2 || t->job.numel == 0) {
        st->skipped++;
        return MK_OK;
    }
    for (size_t k = 0; k < nin; k++)
        if (t->in[k].rowmap) { /* a merged vocabulary: rows do not line up with the base's */
            st->skipped++;
            return MK_OK;
        }
    tv_job j = {.p = p, .t = t, .st = st};
    j.row = t->out_layer >= 0 ? (size_t)t->out_layer : st->n_rows - 1;
    uint64_t cols = t->job.cols ? t->job.cols : 1, max_src = cols;
    j.chunk_rows = CHUNK_VALUES / cols ? CHUNK_VALUES / cols : 1;
    for (size_t k = 0; k < nin; k++) max_src = t->in[k].src_cols > max_src ? t->in[k].src_cols : max_src;
    uint64_t n_chunks = (t->job.rows + j.chunk_rows - 1) / j.chunk_rows, chunk = j.chunk_rows * cols;
    mk_status s = MK_OK;
    j.col = mk_calloc(nin, sizeof *j.col);
    j.density = mk_calloc(nin, sizeof *j.density);
    j.weight = mk_calloc(nin, sizeof *j.weight);
    j.x = mk_calloc(nin, sizeof *j.x);
    j.q = mk_calloc(nin, sizeof *j.q);
    j.none = mk_calloc(nin, sizeof *j.none);
    j.keys = mk_malloc(chunk * sizeof *j.keys);
    j.keep = mk_malloc(nin * chunk);
    j.scratch = mk_malloc(j.chunk_rows * max_src * 8); /* the widest dtype */
    if (!j.col || !j.density || !j.weight || !j.x || !j.q || !j.none || !j.keys || !j.keep || !j.scratch) s = MK_ERR_NOMEM;
    for (size_t k = 0; k < nin && s == MK_OK; k++) {
        j.x[k] = mk_malloc(chunk * sizeof(float));
        if (!j.x[k]) s = MK_ERR_NOMEM;
        size_t c = colmap[t->in[k].model];
        j.col[k] = (int)k == t->job.base || c == SIZE_MAX ? -1 : (int)c;
        j.density[k] = pd >= 0 && t->m ? t->m[k][pd] : 1;
        j.weight[k] = (float)(pw >= 0 && t->m ? t->m[k][pw] : 1);
        j.none[k] = !(j.density[k] > 0); /* sparsify.magnitude: nothing kept */
        j.q[k] = j.col[k] >= 0 && j.density[k] < 1 && !j.none[k] ? (int)j.nq++ : -1;
    }
    bool sel = s == MK_OK && j.nq;
    if (sel) s = mk_sel_init(&j.sel, t->job.numel, n_chunks, j.nq, j.nq);
    for (size_t k = 0; k < nin && sel && s == MK_OK; k++) {
        /* mergekit keeps k = max(1, int(density x numel)) largest |delta|, ties by index */
        uint64_t kc = j.q[k] < 0 ? 0 : mk_trunc_u64(j.density[k] * (double)t->job.numel);
        if (j.q[k] >= 0) mk_sel_query_set(&j.sel, (size_t)j.q[k], (uint32_t)j.q[k], kc ? kc : 1, true, false);
    }
    if (s == MK_OK) s = pass1(&j);
    if (s == MK_OK) s = pass2(&j);
    if (s == MK_OK) st->tensors++;
    if (sel) mk_sel_free(&j.sel);
    for (size_t k = 0; j.x && k < nin; k++) free(j.x[k]);
    free(j.col), free(j.density), free(j.weight), free(j.x), free(j.q), free(j.none), free(j.keys), free(j.keep), free(j.scratch);
    return s;
}

mk_status mk_tvstats_compute(const mk_plan *p, mk_tvstats *st)
{
    memset(st, 0, sizeof *st);
    /* the base: the model every tensor with a base input names there */
    long base = -1;
    for (size_t i = 0; i < p->n && base < 0; i++)
        if (p->t[i].job.base >= 0) base = (long)p->t[i].in[p->t[i].job.base].model;
    if (base < 0)
        return mk_error(MK_ERR_RECIPE, "%s: the recipe has no base_model, so its models have no task vectors to compare",
                        p->recipe ? p->recipe->path : "recipe");
    st->base = (size_t)base;
    size_t *colmap = mk_calloc(p->n_models ? p->n_models : 1, sizeof *colmap);
    st->model = mk_calloc(p->n_models ? p->n_models : 1, sizeof *st->model);
    if (!colmap || !st->model) {
        free(colmap);
        return MK_ERR_NOMEM;
    }
    for (size_t m = 0; m < p->n_models; m++) {
        colmap[m] = m == st->base ? SIZE_MAX : st->n_models;
        if (m != st->base) st->model[st->n_models++] = m;
    }
    long layers = 0;
    for (size_t i = 0; i < p->n; i++)
        if (p->t[i].out_layer + 1 > layers) layers = p->t[i].out_layer + 1;
    st->n_rows = (size_t)layers + 1;
    size_t nm = st->n_models ? st->n_models : 1;
    st->sq = mk_calloc(st->n_rows * nm, sizeof *st->sq);
    st->dot = mk_calloc(st->n_rows * nm * nm, sizeof *st->dot);
    st->elems = mk_calloc(st->n_rows, sizeof *st->elems);
    st->active = mk_calloc(st->n_rows, sizeof *st->active);
    st->conflict = mk_calloc(st->n_rows, sizeof *st->conflict);
    st->kept = mk_calloc(st->n_rows * nm, sizeof *st->kept);
    mk_status s = st->sq && st->dot && st->elems && st->active && st->conflict && st->kept ? MK_OK : MK_ERR_NOMEM;
    int pd = mk_method_param(p->method, "density"), pw = mk_method_param(p->method, "weight");
    st->trimmed = pd >= 0;
    for (size_t i = 0; i < p->n && s == MK_OK; i++) {
        s = one_tensor(p, &p->t[i], st, colmap, pd, pw);
        if (s != MK_OK) s = mk_error_prefix(s, "tensor %s", p->t[i].out.name);
    }
    free(colmap);
    if (s != MK_OK) mk_tvstats_free(st);
    return s;
}

void mk_tvstats_free(mk_tvstats *st)
{
    if (!st) return;
    free(st->model), free(st->sq), free(st->dot), free(st->elems), free(st->active), free(st->conflict), free(st->kept);
    memset(st, 0, sizeof *st);
}
