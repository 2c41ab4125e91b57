/* alloc_gguf.c - see alloc_gguf.h. */
#include "alloc_gguf.h"
#include "ggml.h"
#include "ggml_kquant.h"
#include "../core/mk_parallel.h"
#include "../model/gguf_names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_VALUES 65536u

const char mk_alloc_gguf_default_types[] = "q2_k,q3_k,q4_k,q5_k,q6_k,q8_0,f16";

static bool writable(uint32_t t)
{
    switch (t) {
    case MK_GGML_F32: case MK_GGML_F16: case MK_GGML_BF16: case MK_GGML_Q8_0: case MK_GGML_Q4_0: case MK_GGML_Q4_1:
    case MK_GGML_Q5_0: case MK_GGML_Q5_1: case MK_GGML_Q2_K: case MK_GGML_Q3_K: case MK_GGML_Q4_K: case MK_GGML_Q5_K:
    case MK_GGML_Q6_K: case MK_GGML_IQ4_NL: return true;
    default: return false;
    }
}

bool mk_alloc_gguf_weighted(uint32_t t)
{
    return writable(t) && t != MK_GGML_F32 && t != MK_GGML_F16 && t != MK_GGML_BF16 && t != MK_GGML_Q8_0;
}

mk_status mk_alloc_gguf_types_parse(const char *opt, const char *spec, uint32_t *types, size_t *n)
{
    const char *p = spec ? spec : mk_alloc_gguf_default_types;
    *n = 0;
    while (*p) {
        size_t len = strcspn(p, ",");
        char name[16];
        if (!len || len >= sizeof name) return mk_error(MK_ERR_USAGE, "%s: '%.*s' is not a type name", opt, (int)(len ? len : 1), len ? p : ",");
        memcpy(name, p, len);
        name[len] = 0;
        int id = mk_ggml_type_id(name);
        if (id < 0 || !writable((uint32_t)id))
            return mk_error(MK_ERR_USAGE, "%s: '%s' is not one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl",
                            opt, name);
        for (size_t j = 0; j < *n; j++)
            if (types[j] == (uint32_t)id) return mk_error(MK_ERR_USAGE, "%s: %s is listed twice", opt, name);
        if (*n == MK_ALLOC_GGUF_MAX_TYPES) return mk_error(MK_ERR_USAGE, "%s: at most %d types", opt, MK_ALLOC_GGUF_MAX_TYPES);
        types[(*n)++] = (uint32_t)id;
        p += len;
        if (*p == ',' && !*++p) return mk_error(MK_ERR_USAGE, "%s: the list ends with a comma", opt);
    }
    if (!*n) return mk_error(MK_ERR_USAGE, "%s: name at least one type", opt);
    return MK_OK;
}

/* One matrix: chunks of rows, each read once and put through every distinct type. */
typedef struct job {
    mk_source *src;
    const mk_alloc_gguf_mat *m;
    const uint32_t *type; /* [k] */
    const size_t *first;  /* [k]: the first candidate with the same type */
    size_t k;
    uint64_t rpc;         /* rows a chunk */
    double *se2, *err;    /* [chunks * k] */
} job;

typedef struct tls {
    float *x, *q;
    unsigned char *enc;
    void *scratch;
} tls;

static void tls_free(void *p)
{
    tls *t = p;
    if (!t) return;
    free(t->x);
    free(t->q);
    free(t->enc);
    free(t->scratch);
    free(t);
}

static void *tls_new(void *ctx)
{
    job *j = ctx;
    size_t v = (size_t)(j->rpc * j->m->cols);
    tls *t = mk_calloc(1, sizeof *t);
    if (t && (!(t->x = mk_malloc(v * sizeof *t->x)) || !(t->q = mk_malloc(v * sizeof *t->q)) || !(t->enc = mk_malloc(v * 4)) ||
              !(t->scratch = mk_malloc(v * 8)))) {
        tls_free(t);
        t = NULL;
    }
    return t;
}

static mk_status measure_chunk(void *ctx, uint64_t c, void *tp)
{
    job *j = ctx;
    tls *t = tp;
    const mk_alloc_gguf_mat *m = j->m;
    uint64_t r0 = c * j->rpc, nr = m->rows - r0 < j->rpc ? m->rows - r0 : j->rpc, nv = nr * m->cols;
    MK_TRY(mk_source_read_f32(j->src, m->src, r0 * m->cols, nv, t->x, t->scratch));
    for (size_t k = 0; k < j->k; k++) {
        uint32_t ty = j->type[k];
        double *se = &j->se2[c * j->k + k], *er = &j->err[c * j->k + k];
        if (ty == UINT32_MAX || j->first[k] != k) continue;
        const mk_ggml_type *g = mk_ggml_type_of(ty);
        bool ok = m->imp && mk_alloc_gguf_weighted(ty) ? mk_ggml_kquant_encode_w(ty, t->x, nr, m->cols, m->imp, t->enc)
                                                        : mk_ggml_encode(ty, t->x, nv / g->block, t->enc);
        if (!ok || !mk_ggml_decode(ty, t->enc, nv / g->block, t->q)) MK_BUG("ggml type without an encoder or decoder");
        double s = 0, w = 0;
        for (uint64_t r = 0; r < nr; r++) {
            const float *x = t->x + r * m->cols, *q = t->q + r * m->cols;
            for (uint64_t i = 0; i < m->cols; i++) {
                double d = (double)x[i] - (double)q[i];
                s += d * d;
                if (m->weigh_error) w += (double)m->imp[i] * d * d;
            }
        }
        *se = s;
        *er = m->weigh_error ? w : s;
    }
    return MK_OK;
}

mk_status mk_alloc_gguf_measure(mk_source *src, const mk_alloc_gguf_mat *m, size_t n, const uint32_t *type, size_t k, double *bits,
                                double *se2, double *err)
{
    size_t first[MK_ALLOC_GGUF_MAX_TYPES + 2];
    if (k > MK_ALLOC_GGUF_MAX_TYPES + 2) return mk_error(MK_ERR_USAGE, "at most %d candidate types", MK_ALLOC_GGUF_MAX_TYPES + 2);
    for (size_t i = 0; i < n; i++) {
        const uint32_t *ty = type + i * k;
        bool any = false;
        for (size_t j = 0; j < k; j++) {
            first[j] = j;
            for (size_t a = 0; a < j; a++)
                if (ty[a] == ty[j]) {
                    first[j] = a;
                    break;
                }
            const mk_ggml_type *g = ty[j] == UINT32_MAX ? NULL : mk_ggml_type_of(ty[j]);
            if (g && m[i].cols % g->block) MK_BUG("a candidate type whose blocks do not fit the row");
            bits[i * k + j] = g ? (double)(m[i].rows * (m[i].cols / g->block) * g->bytes) * 8 : -1;
            any |= g != NULL;
        }
        if (!any) continue;
        job j = {src, &m[i], ty, first, k, CHUNK_VALUES / m[i].cols ? CHUNK_VALUES / m[i].cols : 1, NULL, NULL};
        uint64_t nc = (m[i].rows + j.rpc - 1) / j.rpc;
        j.se2 = mk_calloc((size_t)(nc ? nc : 1) * k, sizeof *j.se2);
        j.err = mk_calloc((size_t)(nc ? nc : 1) * k, sizeof *j.err);
        mk_status s = j.se2 && j.err ? mk_parallel_chunks(nc, measure_chunk, &j, tls_new, tls_free) : MK_ERR_NOMEM;
        for (size_t a = 0; s == MK_OK && a < k; a++) {
            double se = 0, er = 0;
            for (uint64_t c = 0; c < nc; c++) { /* in chunk order: any thread count */
                se += j.se2[c * k + first[a]];
                er += j.err[c * k + first[a]];
            }
            se2[i * k + a] = se;
            err[i * k + a] = er;
        }
        free(j.se2);
        free(j.err);
        if (s != MK_OK) return s;
    }
    return MK_OK;
}
