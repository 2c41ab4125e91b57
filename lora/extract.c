/* extract.c - see extract.h */
#include "extract.h"

#include "../core/mk_io.h"

#include <stdlib.h>
#include <string.h>

/* Whether the comma list has `item` as an entry. */
static bool list_has(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && strncmp(item, p, l) == 0) return true;
        p = e ? e + 1 : NULL;
    }
    return false;
}

/* Whether `module` is in the comma list by its whole path, as the checkpoint stores it or as
 * the model names it (`canon`, e.g. GPT-2's "transformer.h.0..."). */
static bool in_list_path(const char *list, const char *module, const char *canon)
{
    return list_has(list, module) || list_has(list, canon);
}

/* Whether `module` is in the comma list: by its last component or by its whole path. */
static bool in_list(const char *list, const char *module, const char *canon)
{
    const char *d = strrchr(module, '.');
    return list_has(list, d ? d + 1 : module) || in_list_path(list, module, canon);
}

static const char *last_component(const char *path)
{
    const char *d = strrchr(path, '.');
    return d ? d + 1 : path;
}

/* The module of tensor `name`: the name without ".weight" or ".bias" (allocated). */
static char *module_of(const char *name)
{
    size_t nl = strlen(name);
    if (mk_str_ends_with(name, ".weight")) nl -= 7;
    else if (mk_str_ends_with(name, ".bias")) nl -= 5;
    return mk_strndup(name, nl);
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

/* What the rules (extract.h) make of finetune tensor F, of module `module` (`canon` as the
 * model names it). */
static keep_kind classify(const mk_lora_extract_opts *o, const mk_tensor_info *F, const char *module, const char *canon,
                          bool emb, bool vocab_changed)
{
    if (in_list(o->exclude, module, canon)) return KEEP_NONE;
    if (emb && (!o->embed_lora || vocab_changed)) {
        if (vocab_changed && o->embed_lora) mk_warn("%s: vocabulary size changed; saving it whole, not as LoRA", F->name);
        return KEEP_WHOLE;
    }
    if (in_list(o->save, module, canon)) return KEEP_WHOLE;
    if (o->modules && !in_list(o->modules, module, canon)) return KEEP_NONE;
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
    char *module = module_of(F->name);
    char *canon = module ? mk_arch_canonical(arch, module) : NULL;
    if (!module || !canon) {
        free(module);
        return MK_ERR_NOMEM;
    }
    keep_kind kind = classify(o, F, module, canon, emb_in || emb_out, vocab_changed);
    if (kind != KEEP_NONE && !vocab_changed && same_bytes(ft, i, base, (size_t)bi)) {
        mk_debug("%s: identical in both models; left out", F->name);
        kind = KEEP_NONE;
    }
    if (kind == KEEP_WHOLE) {
        p->whole[p->n_whole++] = (mk_lora_whole){0, i, 0, -1};
    } else if (kind == KEEP_PAIR) {
        mk_lora_module *m = &p->m[p->n_modules++];
        m->module = canon; /* PEFT's module path */
        canon = NULL;
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
    free(canon);
    return MK_OK;
}

/* Whether whole tensor q (named `name`, of module `module`) is the bias of a layer PEFT wraps
 * in LoRA: a Linear of a targeted kind (its last name component is a pair module's, as
 * target_modules lists them) whose weight is not itself saved whole. PEFT keeps such a bias
 * in the wrapped base layer, where modules_to_save cannot reach it without taking the module
 * out of LoRA's targets. */
static bool is_layer_bias(const mk_lora_plan *p, mk_source *ft, const char *name, const char *module)
{
    if (!mk_str_ends_with(name, ".bias")) return false;
    size_t ml = strlen(module);
    for (size_t q = 0; q < p->n_whole; q++) {
        const char *w = ft->tensors[p->whole[q].src].name;
        if (strncmp(w, module, ml) == 0 && strcmp(w + ml, ".weight") == 0) return false;
    }
    const char *last = last_component(module);
    for (size_t q = 0; q < p->n_modules; q++)
        if (!p->m[q].embedding && strcmp(last_component(p->m[q].module), last) == 0) return true;
    return false;
}

/* Output tensor and modules_to_save entry of whole tensor q: its module's last name
 * component, or its path where --save-module names the path (that module alone). */
static mk_status plan_whole_out(mk_lora_plan *p, mk_source *ft, const mk_arch *arch, const mk_lora_extract_opts *o,
                                const mk_lora_names *names, size_t q)
{
    const mk_tensor_info *F = &ft->tensors[p->whole[q].src];
    char *module = module_of(F->name);
    char *canon = module ? mk_arch_canonical(arch, module) : NULL;
    mk_status s = module && canon ? MK_OK : MK_ERR_NOMEM;
    p->whole[q].out = p->n_out;
    if (s == MK_OK && is_layer_bias(p, ft, F->name, module)) {
        s = mk_lora_plan_add_whole(p, F, mk_asprintf("%s%s.%s", names->prefix, canon, names->layer_bias));
    } else if (s == MK_OK) {
        char *full = mk_arch_canonical(arch, F->name);
        s = mk_lora_plan_add_whole(p, F, full ? mk_asprintf("%s%s", names->prefix, full) : NULL);
        free(full);
        if (s == MK_OK) s = mk_lora_plan_add_save(p, in_list_path(o->save, module, canon) ? canon : last_component(module));
    }
    free(module);
    free(canon);
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
    for (size_t q = 0; q < p->n_whole && s == MK_OK; q++) s = plan_whole_out(p, ft, arch, o, names, q);
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
    size_t total = p->n_modules + p->n_whole, done = 0;
    uint64_t bytes = 0, bytes_done = 0;
    for (size_t q = 0; q < p->n_modules; q++) bytes += ft->tensors[p->m[q].ft].nbytes;
    for (size_t q = 0; q < p->n_whole; q++) bytes += ft->tensors[p->whole[q].src].nbytes;
    for (size_t q = 0; q < p->n_modules; q++) {
        if (mk_interrupted()) return mk_error(MK_ERR_IO, "interrupted");
        MK_TRY(extract_module(p, &p->m[q], base, ft, svd, k));
        bytes_done += ft->tensors[p->m[q].ft].nbytes;
        if (progress) progress(pctx, ++done, total, bytes_done, bytes, p->m[q].module);
    }
    for (size_t q = 0; q < p->n_whole; q++) {
        MK_TRY(mk_lora_put_raw(k, p->whole[q].out, ft, p->whole[q].src));
        bytes_done += ft->tensors[p->whole[q].src].nbytes;
        if (progress) progress(pctx, ++done, total, bytes_done, bytes, ft->tensors[p->whole[q].src].name);
    }
    return MK_OK;
}
