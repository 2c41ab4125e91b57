/* extract.c - see extract.h */
#include "extract.h"

#include "../core/mk_io.h"

#include <stdlib.h>
#include <string.h>

/* Whether `module` is in the comma list: as its last component or as the whole path. */
static bool in_list(const char *list, const char *module)
{
    if (!list) return false;
    const char *d = strrchr(module, '.');
    const char *last = d ? d + 1 : module;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if ((strlen(last) == l && strncmp(last, p, l) == 0) || (strlen(module) == l && strncmp(module, p, l) == 0))
            return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

static bool same_bytes(mk_source *a, size_t ia, mk_source *b, size_t ib)
{
    const mk_tensor_info *x = &a->tensors[ia], *y = &b->tensors[ib];
    if (x->dtype != y->dtype || !mk_shape_eq(x, y)) return false;
    uint64_t step = 16u << 20;
    void *p = malloc((size_t)step), *q = malloc((size_t)step);
    bool same = p && q;
    for (uint64_t off = 0; off < x->nbytes && same; off += step) {
        uint64_t n = x->nbytes - off < step ? x->nbytes - off : step;
        same = a->ops->read(a, ia, off, n, p) == MK_OK && b->ops->read(b, ib, off, n, q) == MK_OK && memcmp(p, q, (size_t)n) == 0;
    }
    free(p);
    free(q);
    return same;
}

typedef enum { KEEP_NONE, KEEP_WHOLE, KEEP_PAIR } keep_kind;

/* What the rules (extract.h) make of finetune tensor F, of module `module`. */
static keep_kind classify(const mk_lora_extract_opts *o, const mk_tensor_info *F, const char *module, bool emb,
                          bool vocab_changed)
{
    if (in_list(o->exclude, module)) return KEEP_NONE;
    if (emb && (!o->embed_lora || vocab_changed)) {
        if (vocab_changed && o->embed_lora) mk_warn("%s: vocabulary size changed; saving it whole, not as LoRA", F->name);
        return KEEP_WHOLE;
    }
    if (in_list(o->save, module)) return KEEP_WHOLE;
    if (o->modules && !in_list(o->modules, module)) return KEEP_NONE;
    if (mk_str_ends_with(F->name, ".weight") && F->ndim == 2 && mk_dtype_info(F->dtype)->is_float) return KEEP_PAIR;
    return o->skip_undecomposable ? KEEP_NONE : KEEP_WHOLE;
}

/* Finetune tensor i: checked against the base, then added to the plan as a module, a whole
 * tensor, or nothing. */
static mk_status plan_tensor(mk_source *base, mk_source *ft, size_t i, const mk_arch *arch, const mk_lora_extract_opts *o,
                             mk_lora_plan *p)
{
    const mk_tensor_info *F = &ft->tensors[i];
    long bi = mk_source_find(base, F->name);
    if (bi < 0) return mk_error(MK_ERR_USAGE, "%s: tensor %s is not in the base model %s", o->ft_name, F->name, o->base_name);
    const mk_tensor_info *Bt = &base->tensors[bi];
    mk_role role = mk_arch_role(arch, F->name).role;
    bool emb_in = mk_role_is_embedding(role), emb_out = role == MK_ROLE_LM_HEAD;
    bool vocab_changed = (emb_in || emb_out) && !mk_shape_eq(F, Bt);
    if (!vocab_changed && !mk_shape_eq(F, Bt)) {
        char a[160], b[160];
        return mk_error(MK_ERR_USAGE, "%s: tensor %s is %s but %s in the base %s", o->ft_name, F->name, mk_shape_str(F, a),
                        mk_shape_str(Bt, b), o->base_name);
    }
    bool is_w = mk_str_ends_with(F->name, ".weight");
    size_t nl = strlen(F->name) - (is_w ? 7 : (mk_str_ends_with(F->name, ".bias") ? 5 : 0));
    char *module = mk_strndup(F->name, nl);
    if (!module) return MK_ERR_NOMEM;
    keep_kind kind = classify(o, F, module, emb_in || emb_out, vocab_changed);
    if (kind != KEEP_NONE && !vocab_changed && same_bytes(ft, i, base, (size_t)bi)) {
        mk_debug("%s: identical in both models; left out", F->name);
        kind = KEEP_NONE;
    }
    mk_status s = MK_OK;
    if (kind == KEEP_WHOLE) {
        const char *d = strrchr(module, '.');
        p->whole[p->n_whole++] = (mk_lora_whole){0, i, 0};
        s = mk_lora_plan_add_save(p, d ? d + 1 : module);
    } else if (kind == KEEP_PAIR) {
        mk_lora_module *m = &p->m[p->n_modules++];
        m->module = module;
        module = NULL;
        m->embedding = emb_in;
        m->transposed = emb_in || (p->conv1d && !emb_out);
        m->out = (uint64_t)(m->transposed ? F->shape[1] : F->shape[0]);
        m->in = (uint64_t)(m->transposed ? F->shape[0] : F->shape[1]);
        uint64_t mn = m->out < m->in ? m->out : m->in;
        m->k = o->rank < (long)mn ? o->rank : (long)mn;
        m->base = (size_t)bi;
        m->ft = i;
    }
    free(module);
    return s;
}

mk_status mk_lora_extract_plan(mk_source *base, mk_source *ft, const mk_arch *arch, const mk_lora_extract_opts *o,
                               const mk_lora_names *names, mk_lora_plan *p)
{
    memset(p, 0, sizeof *p);
    p->conv1d = mk_arch_is_conv1d(arch);
    p->m = mk_calloc(ft->n_tensors + 1, sizeof *p->m);
    p->whole = mk_calloc(ft->n_tensors + 1, sizeof *p->whole);
    mk_status s = p->m && p->whole ? MK_OK : MK_ERR_NOMEM;
    for (size_t i = 0; i < ft->n_tensors && s == MK_OK; i++) s = plan_tensor(base, ft, i, arch, o, p);
    if (s == MK_OK && p->n_modules == 0 && p->n_whole == 0)
        s = mk_error(MK_ERR_USAGE, "%s and %s do not differ in any selected module; no adapter to write", o->base_name,
                     o->ft_name);
    /* output tensors: per module A then B, then the whole ones */
    for (size_t q = 0; q < p->n_modules && s == MK_OK; q++) {
        mk_lora_module *m = &p->m[q];
        s = mk_lora_plan_add_pair(p, m, o->dtype != MK_DTYPE_NONE ? o->dtype : ft->tensors[m->ft].dtype, names);
    }
    for (size_t q = 0; q < p->n_whole && s == MK_OK; q++) {
        const mk_tensor_info *F = &ft->tensors[p->whole[q].src];
        p->whole[q].out = p->n_out;
        s = mk_lora_plan_add_whole(p, F, mk_asprintf("%s%s", names->prefix, F->name));
    }
    if (s != MK_OK) mk_lora_plan_free(p);
    return s;
}

static void transpose(const float *in, uint64_t rows, uint64_t cols, float *out)
{
    for (uint64_t i = 0; i < rows; i++)
        for (uint64_t j = 0; j < cols; j++) out[j * rows + i] = in[i * cols + j];
}

/* Factor (finetuned - base) of one module as stored [rows, cols] into Bs [rows, k] and
 * As [k, cols], and write A and B: As and Bs, or for a transposed module (stored = (B A)^T
 * = Bs As) A = Bs^T [k, rows] and B = As^T [cols, k]. */
static mk_status extract_module(mk_lora_plan *p, mk_lora_module *m, mk_source *base, mk_source *ft,
                                const mk_lora_svd_opts *svd, mk_sink *k)
{
    mk_status s;
    float *d = mk_lora_read_all(ft, m->ft, &s);
    float *b0 = d ? mk_lora_read_all(base, m->base, &s) : NULL;
    if (!d || !b0) {
        free(d);
        return s;
    }
    const mk_tensor_info *F = &ft->tensors[m->ft];
    uint64_t rows = (uint64_t)F->shape[0], cols = (uint64_t)F->shape[1], kk = (uint64_t)m->k;
    for (uint64_t e = 0; e < F->numel; e++) d[e] -= b0[e];
    free(b0);
    float *Bs = mk_malloc((size_t)(rows * kk) * sizeof *Bs), *As = mk_malloc((size_t)(kk * cols) * sizeof *As);
    long got = 0;
    s = Bs && As ? mk_lora_factor(svd, d, rows, cols, m->k, Bs, As, &got, &m->kept, F->name) : MK_ERR_NOMEM;
    free(d);
    if (s == MK_OK && got != m->k) MK_BUG("rank mismatch");
    if (s == MK_OK && m->transposed) {
        float *A = mk_malloc((size_t)(rows * kk) * sizeof *A), *B = mk_malloc((size_t)(cols * kk) * sizeof *B);
        if (!A || !B) s = MK_ERR_NOMEM;
        else {
            transpose(Bs, rows, kk, A);
            transpose(As, kk, cols, B);
            s = mk_lora_put_f32(k, p, m->oa, A);
            if (s == MK_OK) s = mk_lora_put_f32(k, p, m->ob, B);
        }
        free(A);
        free(B);
    } else if (s == MK_OK) {
        s = mk_lora_put_f32(k, p, m->oa, As);
        if (s == MK_OK) s = mk_lora_put_f32(k, p, m->ob, Bs);
    }
    free(Bs);
    free(As);
    return s;
}

mk_status mk_lora_extract_run(mk_lora_plan *p, mk_source *base, mk_source *ft, const mk_lora_svd_opts *svd, mk_sink *k,
                              mk_lora_progress progress, void *pctx)
{
    size_t total = p->n_modules + p->n_whole;
    for (size_t q = 0; q < p->n_modules; q++) {
        if (mk_interrupted()) return mk_error(MK_ERR_IO, "interrupted");
        MK_TRY(extract_module(p, &p->m[q], base, ft, svd, k));
        if (progress) progress(pctx, q + 1, total, q + 1, total, p->m[q].module);
    }
    for (size_t q = 0; q < p->n_whole; q++) MK_TRY(mk_lora_put_raw(k, p->whole[q].out, ft, p->whole[q].src));
    return MK_OK;
}
