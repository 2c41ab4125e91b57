/* st_layout.c - see safetensors.h: where an output's tensors go (its shards, their names,
 * headers and offsets) and the shard index, shared by the sink and by the commands that
 * plan a split output. */
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t mk_st_assign_shards(const mk_tensor_info *t, size_t n, uint64_t shard_size, uint32_t *shard_of)
{
    uint64_t cur = 0;
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        if (ns == 0 || (shard_size && cur > 0 && cur + t[i].nbytes > shard_size)) {
            ns++;
            cur = 0;
        }
        shard_of[i] = (uint32_t)(ns - 1);
        cur += t[i].nbytes;
    }
    return ns ? ns : 1; /* a model with no tensors still gets one (empty) file */
}

static char *shard_name(const char *stem, size_t k, size_t n_shards)
{
    if (n_shards == 1) return mk_asprintf("%s.safetensors", stem);
    return mk_asprintf("%s-%05zu-of-%05zu.safetensors", stem, k + 1, n_shards);
}

char *mk_st_shard_name(size_t k, size_t n_shards) { return shard_name("model", k, n_shards); }

static int cmp_by_size_desc(const void *a, const void *b, void *ctx)
{
    const mk_tensor_info *t = ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    unsigned sx = mk_dtype_size(t[x].dtype), sy = mk_dtype_size(t[y].dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return x < y ? -1 : x > y; /* stable: keep output order within one element size */
}

void mk_st_layout_free(mk_st_layout *L)
{
    if (!L) return;
    for (size_t sh = 0; sh < L->n_shards; sh++) {
        free(L->names ? L->names[sh] : NULL);
        if (L->header) mk_buf_free(&L->header[sh]);
    }
    free(L->names);
    free(L->header);
    free(L->size);
    free(L->n_tensors);
    free(L->shard_of);
    free(L->offset);
    memset(L, 0, sizeof *L);
}

mk_status mk_st_layout_build(const mk_tensor_info *t, size_t n, uint64_t shard_size, const char *stem, mk_st_layout *L)
{
    memset(L, 0, sizeof *L);
    L->n = n;
    L->shard_of = mk_calloc(n ? n : 1, sizeof *L->shard_of);
    L->offset = mk_calloc(n ? n : 1, sizeof *L->offset);
    size_t *order = mk_calloc(n ? n : 1, sizeof *order);
    size_t cap = n ? n : 1; /* at most one shard per tensor */
    L->names = mk_calloc(cap, sizeof *L->names);
    L->header = mk_calloc(cap, sizeof *L->header);
    L->size = mk_calloc(cap, sizeof *L->size);
    L->n_tensors = mk_calloc(cap, sizeof *L->n_tensors);
    if (!L->shard_of || !L->offset || !order || !L->names || !L->header || !L->size || !L->n_tensors) {
        free(order);
        mk_st_layout_free(L);
        return MK_ERR_NOMEM;
    }
    size_t ns = mk_st_assign_shards(t, n, shard_size, L->shard_of);
    L->n_shards = ns;
    mk_status s = MK_OK;
    for (size_t sh = 0; sh < ns && s == MK_OK; sh++) {
        L->names[sh] = shard_name(stem ? stem : "model", sh, ns);
        if (!L->names[sh]) {
            s = MK_ERR_NOMEM;
            break;
        }
        /* tensors of this shard, largest element size first: natural alignment */
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (L->shard_of[i] == sh) order[m++] = i;
        qsort_r(order, m, sizeof *order, cmp_by_size_desc, (void *)t);
        L->n_tensors[sh] = m;
        mk_buf *hb = &L->header[sh];
        mk_buf_puts(hb, "{\"__metadata__\":{\"format\":\"pt\"}");
        uint64_t off = 0;
        for (size_t q = 0; q < m; q++) {
            const mk_tensor_info *ti = &t[order[q]];
            mk_buf_puts(hb, ",");
            mk_buf_json_str(hb, ti->name);
            mk_buf_printf(hb, ":{\"dtype\":\"%s\",\"shape\":[", mk_dtype_name(ti->dtype));
            for (int d = 0; d < ti->ndim; d++) mk_buf_printf(hb, "%s%lld", d ? "," : "", (long long)ti->shape[d]);
            mk_buf_printf(hb, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                          (unsigned long long)(off + ti->nbytes));
            L->offset[order[q]] = off; /* relative for now */
            off += ti->nbytes;
        }
        mk_buf_puts(hb, "}");
        while (hb->len % 8) mk_buf_puts(hb, " "); /* data section 8-byte aligned, as the reference pads */
        if (hb->failed) {
            s = mk_error(MK_ERR_NOMEM, "out of memory building a safetensors header");
            break;
        }
        if (hb->len > MK_ST_MAX_HEADER) {
            s = mk_error(MK_ERR_UNSUPPORTED, "%s: header would be %zu bytes, over the safetensors limit", L->names[sh],
                         hb->len);
            break;
        }
        L->size[sh] = 8 + hb->len + off;
        for (size_t q = 0; q < m; q++) L->offset[order[q]] += 8 + hb->len;
    }
    free(order);
    if (s != MK_OK) mk_st_layout_free(L);
    return s;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

mk_status mk_st_index_json(const mk_tensor_info *t, size_t n, const uint32_t *shard_of, const char *const *shard_names,
                           mk_buf *b)
{
    /* model.safetensors.index.json as huggingface_hub writes it (keys sorted, indent 2) */
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) total += t[i].nbytes;
    mk_buf_printf(b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {", (unsigned long long)total);
    const char **names = mk_calloc(n ? n : 1, sizeof *names);
    if (!names) return MK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) names[i] = t[i].name;
    qsort(names, n, sizeof *names, cmp_str);
    /* a name -> index lookup keeps this O(n) */
    mk_name_index nix;
    mk_status s = mk_name_index_build(&nix, t, n, NULL);
    if (s != MK_OK) {
        free(names);
        mk_name_index_free(&nix);
        return s;
    }
    for (size_t q = 0; q < n; q++) {
        long i = mk_name_index_find(&nix, names[q]);
        mk_buf_puts(b, q ? ",\n    " : "\n    ");
        mk_buf_json_str(b, names[q]);
        mk_buf_puts(b, ": ");
        mk_buf_json_str(b, shard_names[shard_of[i]]);
    }
    mk_buf_puts(b, "\n  }\n}\n");
    mk_name_index_free(&nix);
    free(names);
    if (b->failed) return mk_error(MK_ERR_NOMEM, "out of memory building the shard index");
    return MK_OK;
}
