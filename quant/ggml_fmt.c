/* ggml_fmt.c - the decode-only family of llama.cpp's block types, read from a GGUF source
 * (formats/gguf.h lists each block-quantized tensor as U8 [rows, bytes per row] named
 * "NAME@TYPE"); qsource.c lists it as NAME, f32, decoded by quant/ggml.c. Not a row of
 * the format table: nothing writes it yet. */
#include "ggml.h"
#include "qformat.h"

#include "../model/gguf_names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const mk_qfamily mk_qfam_gguf;

#define ROW(n, b, id) {.name = n, .summary = "llama.cpp " n, .bits = b, .variant = id, .layouts = {&mk_qfam_gguf}}
/* bits: the nominal bits per weight llama.cpp quotes, rounded down */
static const mk_qformat rows[] = {
    ROW("q4_0", 4, MK_GGML_Q4_0),   ROW("q4_1", 5, MK_GGML_Q4_1),   ROW("q5_0", 5, MK_GGML_Q5_0),
    ROW("q5_1", 6, MK_GGML_Q5_1),   ROW("q8_0", 8, MK_GGML_Q8_0),   ROW("q2_k", 2, MK_GGML_Q2_K),
    ROW("q3_k", 3, MK_GGML_Q3_K),   ROW("q4_k", 4, MK_GGML_Q4_K),   ROW("q5_k", 5, MK_GGML_Q5_K),
    ROW("q6_k", 6, MK_GGML_Q6_K),   ROW("iq4_nl", 4, MK_GGML_IQ4_NL), ROW("iq4_xs", 4, MK_GGML_IQ4_XS),
    ROW("tq1_0", 1, MK_GGML_TQ1_0), ROW("tq2_0", 2, MK_GGML_TQ2_0), ROW("mxfp4", 4, MK_GGML_MXFP4),
};

static const mk_qformat *row_of(int id)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (rows[i].variant == id) return &rows[i];
    return NULL;
}

static mk_status gg_recognise(const mk_source *in, size_t i, char *mod, long *main)
{
    const mk_tensor_info *t = &in->tensors[i];
    const char *at = strrchr(t->name, '@');
    if (strcmp(in->kind, "gguf") != 0 || !at || t->dtype != MK_U8) return MK_OK;
    size_t n = (size_t)(at - t->name);
    if (n >= MK_QMOD_MAX) return MK_OK;
    memcpy(mod, t->name, n);
    mod[n] = 0;
    *main = (long)i;
    return MK_OK;
}

static mk_status gg_parse(mk_source *in, const char *mod, size_t i, const mk_qcfg *c, mk_qdec *d)
{
    (void)c;
    const mk_tensor_info *t = &in->tensors[i];
    int id = mk_ggml_type_id(strrchr(t->name, '@') + 1);
    const mk_ggml_type *ty = id >= 0 ? mk_ggml_type_of((uint32_t)id) : NULL;
    d->fmt = id >= 0 ? row_of(id) : NULL;
    if (!ty || !d->fmt) return mk_error(MK_ERR_FORMAT, "%s: tensor %s: not a ggml block type the reader decodes", in->path, t->name);
    uint64_t rb = (uint64_t)t->shape[t->ndim - 1];
    if (t->ndim < 1 || rb == 0 || rb % ty->bytes)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: rows of %llu bytes are not whole %s blocks of %u bytes", in->path, mod,
                        (unsigned long long)rb, ty->name, ty->bytes);
    d->ndim = t->ndim;
    memcpy(d->shape, t->shape, sizeof d->shape);
    d->shape[d->ndim - 1] = (int64_t)(rb / ty->bytes * ty->block);
    d->cols = (uint64_t)d->shape[d->ndim - 1];
    d->rows = t->numel / rb;
    d->numel = d->rows * d->cols;
    d->block = ty->block;
    d->orig = MK_F32;
    return MK_OK;
}

static void gg_info(const mk_qdec *d, const mk_qcfg *c, bool first, mk_qinfo *info)
{
    (void)c;
    if (first) {
        info->block = d->block;
        info->block_word = "block";
        info->dtype = MK_F32;
    } else if (strcmp(info->format, d->fmt->name) != 0) { /* llama.cpp's mixes: the types are in inspect's gguf line */
        snprintf(info->format, sizeof info->format, "mixed");
        info->block = 0;
        info->bits = 0;
    }
}

/* Values [e0, e0 + n): the whole blocks that hold them, decoded, then the slice. */
static mk_status gg_decode(mk_source *in, const mk_qdec *d, uint64_t e0, size_t n, float *out)
{
    const mk_ggml_type *ty = mk_ggml_type_of((uint32_t)d->fmt->variant);
    uint64_t b0 = e0 / ty->block, b1 = (e0 + n - 1) / ty->block, nb = b1 - b0 + 1;
    void *raw = NULL;
    MK_TRY(mk_qdec_read(in, d->main, b0 * ty->bytes, nb * ty->bytes, &raw));
    bool direct = e0 % ty->block == 0 && n == nb * ty->block;
    float *tmp = direct ? out : mk_malloc((size_t)(nb * ty->block) * sizeof *tmp);
    mk_status s = tmp ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && !mk_ggml_decode((uint32_t)d->fmt->variant, raw, nb, tmp)) MK_BUG("ggml type without a decoder");
    if (s == MK_OK && !direct) memcpy(out, tmp + (e0 - b0 * ty->block), n * sizeof *out);
    if (!direct) free(tmp);
    free(raw);
    return s;
}

/* "NAME@Q4_K" is listed as NAME */
static char *gg_logical_name(const char *stored) { return mk_strndup(stored, (size_t)(strrchr(stored, '@') - stored)); }

const mk_qfamily mk_qfam_gguf = {
    .layout = "gguf",
    .loaders = "llama.cpp",
    .main_suffix = "",
    .recognise = gg_recognise,
    .parse = gg_parse,
    .info = gg_info,
    .decode = gg_decode,
    .logical_name = gg_logical_name,
};
