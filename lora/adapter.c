/* adapter.c - see adapter.h */
#include "adapter.h"

#include "../core/mk_parallel.h"

#include <stdlib.h>
#include <string.h>

void mk_lora_plan_free(mk_lora_plan *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n_modules; i++) {
        free(p->m[i].module);
        free(p->m[i].from);
    }
    free(p->m);
    free(p->whole);
    for (size_t i = 0; i < p->n_out; i++) free(p->out[i].name);
    free(p->out);
    for (size_t i = 0; i < p->n_save; i++) free(p->save[i]);
    free(p->save);
    memset(p, 0, sizeof *p);
}

/* Append an output tensor [d0] or [d0, d1] named `name` (taken, also on failure). */
static mk_status out_add(mk_lora_plan *p, char *name, mk_dtype dt, int64_t d0, int64_t d1, int ndim)
{
    if (!name) return MK_ERR_NOMEM;
    if (p->n_out == p->cap_out) {
        size_t cap = p->cap_out ? 2 * p->cap_out : 64;
        mk_tensor_info *t = mk_realloc_array(p->out, cap, sizeof *t);
        if (!t) {
            free(name);
            return MK_ERR_NOMEM;
        }
        p->out = t;
        p->cap_out = cap;
    }
    mk_tensor_info *t = &p->out[p->n_out++];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    return mk_tensor_info_finish(t);
}

mk_status mk_lora_plan_add_pair(mk_lora_plan *p, mk_lora_module *m, mk_dtype dt, const mk_lora_names *nm)
{
    m->oa = p->n_out;
    MK_TRY(out_add(p, mk_asprintf("%s%s.%s", nm->prefix, m->module, m->embedding ? nm->emb_a : nm->a), dt, m->k,
                   (int64_t)m->in, 2));
    m->ob = p->n_out;
    return out_add(p, mk_asprintf("%s%s.%s", nm->prefix, m->module, m->embedding ? nm->emb_b : nm->b), dt,
                   (int64_t)m->out, m->k, 2);
}

mk_status mk_lora_plan_add_whole(mk_lora_plan *p, const mk_tensor_info *F, char *name)
{
    MK_TRY(out_add(p, name, F->dtype, F->shape[0], F->ndim > 1 ? F->shape[1] : 0, F->ndim));
    if (F->ndim <= 2) return MK_OK;
    memcpy(p->out[p->n_out - 1].shape, F->shape, sizeof F->shape);
    return mk_tensor_info_finish(&p->out[p->n_out - 1]);
}

mk_status mk_lora_plan_add_save(mk_lora_plan *p, const char *key)
{
    for (size_t i = 0; i < p->n_save; i++)
        if (strcmp(p->save[i], key) == 0) return MK_OK;
    char **s = mk_realloc_array(p->save, p->n_save + 1, sizeof *s);
    if (!s) return MK_ERR_NOMEM;
    p->save = s;
    if (!(s[p->n_save] = mk_strdup(key))) return MK_ERR_NOMEM;
    p->n_save++;
    return MK_OK;
}

mk_status mk_lora_put_f32(mk_sink *k, const mk_lora_plan *p, size_t i, const float *v)
{
    const mk_tensor_info *t = &p->out[i];
    void *buf = mk_malloc((size_t)t->nbytes + 1);
    if (!buf) return MK_ERR_NOMEM;
    size_t first;
    mk_status s = MK_OK;
    if (mk_dtype_count_overflow(t->dtype, v, (size_t)t->numel, &first))
        s = mk_error(MK_ERR_NUMERIC, "%s: value %g overflows %s", t->name, (double)v[first], mk_dtype_name(t->dtype));
    if (s == MK_OK) {
        mk_dtype_info(t->dtype)->from_f32(v, buf, (size_t)t->numel);
        s = k->ops->write(k, i, 0, buf, t->nbytes);
    }
    free(buf);
    return s == MK_OK ? k->ops->tensor_done(k, i) : s;
}

typedef struct raw_ctx {
    mk_sink *k;
    size_t i;
} raw_ctx;

static mk_status raw_slice(void *ctx, uint64_t off, const void *data, uint64_t len)
{
    raw_ctx *r = ctx;
    return r->k->ops->write(r->k, r->i, off, data, len);
}

mk_status mk_lora_put_raw(mk_sink *k, size_t i, mk_source *src, size_t si)
{
    raw_ctx r = {k, i};
    MK_TRY(mk_source_copy_raw(src, si, raw_slice, &r));
    return k->ops->tensor_done(k, i);
}

float *mk_lora_read_all(mk_source *s, size_t i, mk_status *st)
{
    const mk_tensor_info *t = &s->tensors[i];
    float *v = mk_malloc((size_t)t->numel * sizeof *v + 1);
    void *scratch = mk_malloc((size_t)t->nbytes + 1);
    *st = v && scratch ? mk_source_read_f32(s, i, 0, t->numel, v, scratch) : MK_ERR_NOMEM;
    free(scratch);
    if (*st != MK_OK) {
        free(v);
        return NULL;
    }
    return v;
}
