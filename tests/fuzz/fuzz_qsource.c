/* fuzz_qsource.c - the reader of quantized checkpoints: a config.json text, then (after a
 * NUL byte) a safetensors image. The image becomes a source in memory; the reader must
 * recognise or refuse it, and every logical tensor it lists must dequantize (in chunks of
 * rows, as dequantize reads) without reading outside the stored tensors. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../formats/safetensors.h"
#include "../../quant/qsource.h"

#include <stdlib.h>
#include <string.h>

typedef struct mem {
    const uint8_t *img;
    size_t len;
    const char *config;
    size_t config_len;
} mem;

static mk_status m_read(mk_source *s, size_t i, uint64_t off, uint64_t len, void *dst)
{
    mem *m = s->impl;
    const mk_tensor_info *t = &s->tensors[i];
    if (off > t->nbytes || len > t->nbytes - off || t->offset + t->nbytes > m->len) __builtin_trap();
    memcpy(dst, m->img + t->offset + off, (size_t)len);
    return MK_OK;
}

static mk_status m_aux(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    mem *m = s->impl;
    *data = NULL;
    *len = 0;
    if (strcmp(name, "config.json") != 0 || !m->config_len || m->config_len > cap) return MK_OK;
    *data = mk_strndup(m->config, m->config_len);
    *len = m->config_len;
    return *data ? MK_OK : MK_ERR_NOMEM;
}

static void m_close(mk_source *s)
{
    mk_name_index_free(&s->index);
}

static const mk_source_ops m_ops = {m_read, NULL, NULL, NULL, m_aux, NULL, m_close, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    const uint8_t *nul = memchr(data, 0, size);
    if (!nul) return 0;
    size_t clen = (size_t)(nul - data), off = clen + 1;
    mk_st_header h;
    if (mk_st_parse(data + off, size - off, size - off, "fuzz/model.safetensors", &h) != MK_OK) return 0;
    mem m = {data + off, size - off, (const char *)data, clen};
    mk_source src = {&m_ops, "fuzz", "safetensors", h.n, h.t, {0}, 0, NULL, &m};
    if (mk_name_index_build(&src.index, h.t, h.n, NULL) == MK_OK) {
        mk_source *q = NULL;
        mk_qinfo qi;
        mk_source *owned = malloc(sizeof *owned);
        if (owned) {
            *owned = src;
            src.index.slots = NULL; /* now owned->index */
            if (mk_qsource_open(owned, &q, &qi) == MK_OK) {
                for (size_t i = 0; i < q->n_tensors; i++) {
                    const mk_tensor_info *t = &q->tensors[i];
                    if (t->dtype != MK_F32 || t->numel > (1u << 22)) continue;
                    uint64_t cols = t->ndim ? (uint64_t)t->shape[t->ndim - 1] : 1, rows = cols ? t->numel / cols : 0;
                    float *buf = malloc((size_t)(cols * 4 * 3 + 4));
                    for (uint64_t r = 0; buf && r < rows && r < 64; r += 3) {
                        uint64_t nr = rows - r < 3 ? rows - r : 3;
                        (void)q->ops->read(q, i, r * cols * 4, nr * cols * 4, buf);
                    }
                    free(buf);
                }
                if (q != owned) mk_source_close(q); /* closes owned too */
                else mk_source_close(owned);
            } else {
                mk_source_close(owned);
            }
            free(owned);
        }
    }
    mk_name_index_free(&src.index);
    mk_st_header_free(&h);
    return 0;
}
