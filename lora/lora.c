/* lora.c - see lora.h */
#include "lora.h"

#include "../core/mk_linalg.h"
#include "../core/mk_simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_ELEMS (1u << 18) /* elements per row block of a merged read */

/* ---- the update ------------------------------------------------------------------------- */

void mk_lora_update_rows(const float *C, const float *V, uint64_t r, uint64_t nrows, uint64_t cols, float scale, float *out)
{
    for (uint64_t i = 0; i < nrows; i++) {
        float *o = out + i * cols;
        memset(o, 0, (size_t)cols * sizeof *o);
        for (uint64_t k = 0; k < r; k++) mk_axpy_fma(o, V + k * cols, C[i * r + k], (size_t)cols);
        for (uint64_t j = 0; j < cols; j++) o[j] *= scale;
    }
}

static mk_status read_f32(mk_source *s, size_t i, uint64_t e0, uint64_t n, float *dst)
{
    const mk_tensor_info *t = &s->tensors[i];
    size_t bytes;
    if (!mk_mul_size((size_t)n, mk_dtype_size(t->dtype), &bytes)) return mk_error(MK_ERR_NOMEM, "size overflow");
    void *scratch = mk_malloc(bytes ? bytes : 1);
    if (!scratch) return MK_ERR_NOMEM;
    mk_status st = mk_source_read_f32(s, i, e0, n, dst, scratch);
    free(scratch);
    return st;
}

mk_status mk_lora_update_read(mk_source *ad, size_t a, size_t b, bool transposed, double scale, uint64_t rows,
                              uint64_t cols, uint64_t row0, uint64_t nrows, float *out)
{
    uint64_t r = (uint64_t)ad->tensors[a].shape[0];
    float *C = mk_malloc((size_t)(nrows * r) * sizeof *C + 1);
    float *V = mk_malloc((size_t)(r * cols) * sizeof *V + 1);
    mk_status s = (C && V) ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && !transposed) {
        /* C = B[row0 .. row0+nrows) [nrows, r]; V = A [r, cols] */
        s = read_f32(ad, b, row0 * r, nrows * r, C);
        if (s == MK_OK) s = read_f32(ad, a, 0, r * cols, V);
    } else if (s == MK_OK) {
        /* A is [r, rows]: C[i][k] = A[k][row0 + i]; B is [cols, r]: V[k][j] = B[j][k] */
        float *tmp = mk_malloc((size_t)(cols > nrows ? cols : nrows) * r * sizeof *tmp + 1);
        if (!tmp) s = MK_ERR_NOMEM;
        for (uint64_t k = 0; k < r && s == MK_OK; k++) {
            s = read_f32(ad, a, k * rows + row0, nrows, tmp);
            for (uint64_t i = 0; i < nrows && s == MK_OK; i++) C[i * r + k] = tmp[i];
        }
        if (s == MK_OK) s = read_f32(ad, b, 0, cols * r, tmp);
        for (uint64_t j = 0; j < cols && s == MK_OK; j++)
            for (uint64_t k = 0; k < r; k++) V[k * cols + j] = tmp[j * r + k];
        free(tmp);
    }
    if (s == MK_OK) mk_lora_update_rows(C, V, r, nrows, cols, (float)scale, out);
    free(C);
    free(V);
    return s;
}

/* ---- merged view ------------------------------------------------------------------------- */

typedef struct lora_src {
    mk_source *base, *adapter;
    long *target_of; /* per base tensor: index into t, or -1 */
    long *extra_of;  /* per base tensor: index into x, or -1 */
    mk_lora_target *t;
    mk_lora_extra *x;
    size_t nt, nx;
} lora_src;

/* Values [e0, e0 + n) of base tensor i, merged, as f32 (e0 and n whole rows or not). */
static mk_status merged_f32(lora_src *L, size_t i, uint64_t e0, uint64_t n, float *dst)
{
    const mk_tensor_info *W = &L->base->tensors[i];
    if (L->extra_of[i] >= 0) {
        const mk_lora_extra *x = &L->x[L->extra_of[i]];
        MK_TRY(read_f32(L->adapter, x->src, e0, n, dst));
        if (!x->add) return MK_OK;
        float *w = mk_malloc((size_t)n * sizeof *w + 1);
        if (!w) return MK_ERR_NOMEM;
        mk_status s = read_f32(L->base, i, e0, n, w);
        float sc = (float)x->scale;
        for (uint64_t q = 0; q < n && s == MK_OK; q++) dst[q] = w[q] + dst[q] * sc;
        free(w);
        return s;
    }
    const mk_lora_target *t = &L->t[L->target_of[i]];
    uint64_t rows = (uint64_t)W->shape[0], cols = (uint64_t)W->shape[1];
    uint64_t r0 = e0 / cols, r1 = (e0 + n + cols - 1) / cols;
    float *upd = mk_malloc((size_t)((r1 - r0) * cols) * sizeof *upd + 1);
    if (!upd) return MK_ERR_NOMEM;
    mk_status s = mk_lora_update_read(L->adapter, t->a, t->b, t->transposed, t->scale, rows, cols, r0, r1 - r0, upd);
    if (s == MK_OK) s = t->wsrc >= 0 ? read_f32(L->adapter, (size_t)t->wsrc, e0, n, dst) : read_f32(L->base, i, e0, n, dst);
    if (s == MK_OK && t->round_update && W->dtype != MK_F32) {
        const mk_dtype_traits *dt = mk_dtype_info(W->dtype);
        size_t nu = (size_t)((r1 - r0) * cols);
        void *tmp = mk_malloc(nu * dt->size + 1);
        if (!tmp) s = MK_ERR_NOMEM;
        else {
            dt->from_f32(upd, tmp, nu);
            dt->to_f32(tmp, upd, nu);
            free(tmp);
        }
    }
    const float *u = upd + (e0 - r0 * cols);
    for (uint64_t q = 0; q < n && s == MK_OK; q++) dst[q] += u[q];
    free(upd);
    return s;
}

static mk_status lora_read(mk_source *s, size_t i, uint64_t off, uint64_t len, void *dst)
{
    lora_src *L = s->impl;
    if (L->target_of[i] < 0 && L->extra_of[i] < 0) return L->base->ops->read(L->base, i, off, len, dst);
    const mk_tensor_info *W = &s->tensors[i];
    unsigned es = mk_dtype_size(W->dtype);
    if (off % es || len % es) MK_BUG("unaligned read of a merged tensor");
    uint64_t cols = mk_tensor_cols(W);
    uint64_t block = cols >= BLOCK_ELEMS ? cols : (BLOCK_ELEMS / cols) * cols;
    float *f = mk_malloc((size_t)block * sizeof *f);
    if (!f) return MK_ERR_NOMEM;
    mk_status st = MK_OK;
    uint64_t e = off / es, end = (off + len) / es;
    unsigned char *d = dst;
    while (e < end && st == MK_OK) {
        uint64_t n = end - e < block ? end - e : block;
        st = merged_f32(L, i, e, n, f);
        if (st == MK_OK) {
            size_t bad, first;
            bad = mk_dtype_count_overflow(W->dtype, f, (size_t)n, &first);
            if (bad)
                st = mk_error(MK_ERR_NUMERIC, "%s: tensor %s: merged value %g at element %llu overflows %s", s->path, W->name,
                              (double)f[first], (unsigned long long)(e + first), mk_dtype_name(W->dtype));
            else
                mk_dtype_info(W->dtype)->from_f32(f, d, (size_t)n);
        }
        d += n * es;
        e += n;
    }
    free(f);
    return st;
}

static const void *lora_borrow(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    lora_src *L = s->impl;
    if (L->target_of[i] >= 0 || L->extra_of[i] >= 0 || !L->base->ops->borrow) return NULL;
    return L->base->ops->borrow(L->base, i, off, len);
}

static void lora_release(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    lora_src *L = s->impl;
    if (L->base->ops->release) L->base->ops->release(L->base, i, off, len);
}

static void lora_prefetch(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    lora_src *L = s->impl;
    if (L->base->ops->prefetch) L->base->ops->prefetch(L->base, i, off, len);
}

static mk_status lora_aux_read(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    lora_src *L = s->impl;
    return L->base->ops->aux_read(L->base, name, cap, data, len);
}

static const char *const *lora_aux_list(mk_source *s)
{
    lora_src *L = s->impl;
    return L->base->ops->aux_list(L->base);
}

static void lora_close(mk_source *s)
{
    if (!s) return;
    lora_src *L = s->impl;
    if (L) {
        mk_source_close(L->base);
        mk_source_close(L->adapter);
        free(L->target_of);
        free(L->extra_of);
        free(L->t);
        free(L->x);
        free(L);
    }
    for (size_t i = 0; i < s->n_tensors; i++) free(s->tensors[i].name);
    free(s->tensors);
    mk_name_index_free(&s->index);
    for (size_t i = 0; i < s->n_files; i++) free(s->files[i]);
    free(s->files);
    free(s->path);
    free(s->kind);
    free(s);
}

static const mk_source_ops lora_ops = {lora_read, lora_borrow, lora_release, lora_prefetch,
                                       lora_aux_read, lora_aux_list, lora_close, NULL};

mk_status mk_lora_source_open(mk_source *base, mk_source *adapter, const mk_lora_target *t, size_t nt,
                              const mk_lora_extra *x, size_t nx, const char *name, mk_source **out)
{
    *out = NULL;
    mk_source *s = mk_calloc(1, sizeof *s);
    lora_src *L = mk_calloc(1, sizeof *L);
    if (!s || !L) {
        free(s);
        free(L);
        mk_source_close(base);
        mk_source_close(adapter);
        return MK_ERR_NOMEM;
    }
    s->ops = &lora_ops;
    s->impl = L;
    L->base = base;
    L->adapter = adapter;
    size_t nb = base->n_tensors;
    L->target_of = mk_malloc((nb ? nb : 1) * sizeof *L->target_of);
    L->extra_of = mk_malloc((nb ? nb : 1) * sizeof *L->extra_of);
    L->t = mk_calloc(nt ? nt : 1, sizeof *L->t);
    L->x = mk_calloc(nx ? nx : 1, sizeof *L->x);
    s->path = mk_strdup(name);
    s->kind = mk_strdup("safetensors+lora");
    s->tensors = mk_calloc(nb ? nb : 1, sizeof *s->tensors);
    s->files = mk_calloc(base->n_files + adapter->n_files + 1, sizeof *s->files);
    mk_status st = (L->target_of && L->extra_of && L->t && L->x && s->path && s->kind && s->tensors && s->files)
                       ? MK_OK
                       : MK_ERR_NOMEM;
    if (st == MK_OK) {
        memcpy(L->t, t, nt * sizeof *t);
        memcpy(L->x, x, nx * sizeof *x);
        L->nt = nt;
        L->nx = nx;
        for (size_t i = 0; i < nb; i++) L->target_of[i] = L->extra_of[i] = -1;
        for (size_t q = 0; q < nt && st == MK_OK; q++) {
            if (t[q].base >= nb || t[q].a >= adapter->n_tensors || t[q].b >= adapter->n_tensors ||
                t[q].wsrc >= (long)adapter->n_tensors)
                MK_BUG("bad LoRA target");
            if (L->target_of[t[q].base] >= 0)
                st = mk_error(MK_ERR_FORMAT, "%s: tensor %s is updated twice", name, base->tensors[t[q].base].name);
            L->target_of[t[q].base] = (long)q;
        }
        for (size_t q = 0; q < nx && st == MK_OK; q++) {
            if (x[q].base >= nb || x[q].src >= adapter->n_tensors) MK_BUG("bad LoRA extra");
            if (L->extra_of[x[q].base] >= 0 || L->target_of[x[q].base] >= 0)
                st = mk_error(MK_ERR_FORMAT, "%s: tensor %s is replaced twice", name, base->tensors[x[q].base].name);
            L->extra_of[x[q].base] = (long)q;
        }
    }
    for (size_t i = 0; i < nb && st == MK_OK; i++) {
        s->tensors[i] = base->tensors[i];
        s->tensors[i].name = mk_strdup(base->tensors[i].name);
        if (!s->tensors[i].name) st = MK_ERR_NOMEM;
        else s->n_tensors++;
    }
    for (size_t f = 0; f < base->n_files + adapter->n_files && st == MK_OK; f++) {
        const char *fn = f < base->n_files ? base->files[f] : adapter->files[f - base->n_files];
        s->files[f] = mk_strdup(fn);
        if (!s->files[f]) st = MK_ERR_NOMEM;
        else s->n_files++;
    }
    if (st == MK_OK) st = mk_name_index_build(&s->index, s->tensors, s->n_tensors, NULL);
    if (st != MK_OK) {
        lora_close(s);
        return st;
    }
    *out = s;
    return MK_OK;
}

/* ---- factorisation ------------------------------------------------------------------------ */

/* B [m, k] = U_k diag(sqrt S_k), A [k, n] = diag(sqrt S_k) Vh_k from row-major U [m, ku] and
 * Vh [ku rows, n], each pair signed so that the largest |U[i, q]| (first on ties) is positive. */
static void split_factors(const float *u, uint64_t ku, const float *s, const float *vh, uint64_t m, uint64_t n, long k,
                          float *B, float *A)
{
    for (long q = 0; q < k; q++) {
        uint64_t best = 0;
        float bv = -1;
        for (uint64_t i = 0; i < m; i++) {
            float v = fabsf(u[i * ku + q]);
            if (v > bv) bv = v, best = i;
        }
        float sg = u[best * ku + q] < 0 ? -1.0f : 1.0f;
        float rs = sqrtf(s[q]);
        for (uint64_t i = 0; i < m; i++) B[i * k + q] = sg * u[i * ku + q] * rs;
        for (uint64_t j = 0; j < n; j++) A[q * n + j] = sg * vh[q * n + j] * rs;
    }
}

mk_status mk_lora_svd(const float *d, uint64_t m, uint64_t n, long rank, float *B, float *A, long *k_out, double *kept,
                      float *sv, const char *what)
{
    if (m == 0 || n == 0 || rank <= 0) MK_BUG("empty SVD");
    MK_TRY(mk_linalg_check_size(m, n, what));
    uint64_t kf = m < n ? m : n;
    long k = rank < (long)kf ? rank : (long)kf;
    float *s = mk_malloc((size_t)kf * sizeof *s);
    float *vh = mk_malloc((size_t)(kf * n) * sizeof *vh);
    float *u = mk_malloc((size_t)(m * kf) * sizeof *u);
    mk_status st = (s && vh && u) ? mk_svd_thin(d, m, n, u, s, vh, what) : MK_ERR_NOMEM;
    if (st == MK_OK) {
        double tot = 0, keep = 0;
        for (uint64_t q = kf; q-- > 0;) tot += (double)s[q] * s[q];
        for (long q = k; q-- > 0;) keep += (double)s[q] * s[q];
        *kept = tot > 0 ? keep / tot : 1.0;
        if (sv) memcpy(sv, s, (size_t)kf * sizeof *s);
        split_factors(u, kf, s, vh, m, n, k, B, A);
        *k_out = k;
    }
    free(s);
    free(vh);
    free(u);
    return st;
}

mk_status mk_lora_rsvd(const float *d, uint64_t m, uint64_t n, long rank, unsigned power, uint64_t oversample, mk_rng rng,
                       float *B, float *A, long *k_out, double *kept, const char *what)
{
    if (m == 0 || n == 0 || rank <= 0) MK_BUG("empty SVD");
    MK_TRY(mk_linalg_check_size(m, n, what));
    uint64_t kf = m < n ? m : n;
    long k = rank < (long)kf ? rank : (long)kf;
    if ((uint64_t)k + oversample >= kf) return mk_lora_svd(d, m, n, rank, B, A, k_out, kept, NULL, what); /* nothing to save */
    float *u = mk_malloc((size_t)(m * (uint64_t)k) * sizeof *u), *s = mk_malloc((size_t)k * sizeof *s);
    float *vh = mk_malloc((size_t)((uint64_t)k * n) * sizeof *vh);
    mk_status st = (u && s && vh) ? mk_svd_rand(d, m, n, (uint64_t)k, power, oversample, rng, u, s, vh, what) : MK_ERR_NOMEM;
    if (st == MK_OK) {
        double tot = 0, keep = 0;
        for (uint64_t e = 0; e < m * n; e++) tot += (double)d[e] * d[e];
        for (long q = k; q-- > 0;) keep += (double)s[q] * s[q];
        *kept = tot > 0 ? (keep < tot ? keep / tot : 1.0) : 1.0;
        split_factors(u, (uint64_t)k, s, vh, m, n, k, B, A);
        *k_out = k;
    }
    free(u);
    free(s);
    free(vh);
    return st;
}

mk_status mk_lora_factor(const mk_lora_svd_opts *o, const float *d, uint64_t m, uint64_t n, long rank, float *B, float *A,
                         long *k, double *kept, const char *what)
{
    if (!o->randomized) return mk_lora_svd(d, m, n, rank, B, A, k, kept, NULL, what);
    return mk_lora_rsvd(d, m, n, rank, o->power, 10, mk_rng_key(0, what), B, A, k, kept, what);
}

/* ---- combining ---------------------------------------------------------------------------- */

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

mk_status mk_lora_prune_magnitude(float *x, uint64_t n, double density)
{
    if (density >= 1) return MK_OK;
    uint64_t k = (uint64_t)(density * (double)n); /* Python int(density * numel) */
    if (k == 0) {
        memset(x, 0, (size_t)n * sizeof *x);
        return MK_OK;
    }
    float *mag = mk_malloc((size_t)n * sizeof *mag);
    if (!mag) return MK_ERR_NOMEM;
    for (uint64_t i = 0; i < n; i++) mag[i] = fabsf(x[i]);
    qsort(mag, (size_t)n, sizeof *mag, cmp_desc);
    float thr = mag[k - 1];
    uint64_t above = 0;
    for (uint64_t i = 0; i < n; i++) above += fabsf(x[i]) > thr;
    uint64_t ties_left = k - above; /* elements equal to the threshold that are kept */
    for (uint64_t i = 0; i < n; i++) {
        float v = fabsf(x[i]);
        if (v > thr) continue;
        if (v == thr && ties_left) {
            ties_left--;
            continue;
        }
        x[i] = 0;
    }
    free(mag);
    return MK_OK;
}

void mk_lora_prune_random(float *x, uint64_t n, double density, mk_rng rng, uint64_t stream)
{
    if (density >= 1) return;
    float d = (float)density;
    for (uint64_t i = 0; i < n; i++) {
        bool keep = mk_rng_uniform(rng, stream, i) < d;
        x[i] = keep ? x[i] / d : 0.0f;
    }
}

void mk_lora_weighted_sum(const float *const *d, const float *w, size_t nd, uint64_t n, float *out)
{
    for (uint64_t e = 0; e < n; e++) {
        float acc = 0;
        for (size_t i = 0; i < nd; i++) acc += d[i][e] * w[i];
        out[e] = acc;
    }
}

void mk_lora_ties_merge(const float *const *d, const float *w, size_t nd, uint64_t n, float *out)
{
    for (uint64_t e = 0; e < n; e++) {
        float sum = 0;
        for (size_t i = 0; i < nd; i++) sum += d[i][e];
        float maj = sum >= 0 ? 1.0f : -1.0f;
        float acc = 0, cnt = 0;
        for (size_t i = 0; i < nd; i++) {
            float v = d[i][e];
            float sg = v > 0 ? 1.0f : v < 0 ? -1.0f : 0.0f;
            if (sg == maj) {
                acc += v * w[i];
                cnt += 1;
            }
        }
        out[e] = acc / (cnt < 1 ? 1.0f : cnt);
    }
}
