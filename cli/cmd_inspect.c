/* cmd_inspect.c - `mergekit-c inspect PATH`: tensors, dtypes, shapes, sizes, shards,
 * totals and architecture; opening the model validates every header, so a damaged file
 * is reported (one line, exit 1), not crashed on. */
#include "cli.h"

#include "../core/mk_hash.h"
#include "../core/mk_io.h"
#include "../formats/gguf.h"
#include "../formats/mkz.h"
#include "../model/gguf_names.h"
#include "../model/arch.h"
#include "../quant/qsource.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *file_base(const mk_source *s, uint32_t f)
{
    const char *p = f < s->n_files ? s->files[f] : "?";
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

/* XXH3-128 of tensor i's raw bytes, as hex. */
static mk_status tensor_hash(mk_source *s, size_t i, char out[33])
{
    const uint64_t total = s->tensors[i].nbytes, step = 8u << 20;
    mk_hasher *h = mk_hasher_new();
    void *buf = NULL;
    mk_status st = h ? MK_OK : mk_error(MK_ERR_NOMEM, "out of memory");
    for (uint64_t off = 0; off < total && st == MK_OK; off += step) {
        uint64_t len = total - off < step ? total - off : step;
        const void *p = s->ops->borrow ? s->ops->borrow(s, i, off, len) : NULL;
        if (!p) {
            if (!buf && !(buf = mk_malloc((size_t)step))) st = MK_ERR_NOMEM;
            if (st == MK_OK) st = s->ops->read(s, i, off, len, buf);
            p = buf;
        }
        if (st == MK_OK) mk_hasher_update(h, p, (size_t)len);
        if (s->ops->release) s->ops->release(s, i, off, len);
    }
    if (st == MK_OK) mk_hash128_hex(mk_hasher_digest(h), out);
    mk_hasher_free(h);
    free(buf);
    return st;
}

/* What inspect reports besides the tensor list. */
typedef struct insp {
    mk_source *s;
    const char *path;
    mk_arch arch;
    mk_qinfo qi;
    double bpw;                 /* quantized weights' bits per weight */
    const mk_mkz_index *zx;     /* a .mkz container: bytes each tensor takes stored */
    uint64_t params, bytes, stored; /* params: the model's (logical), not the stored elements */
    uint64_t elements;          /* elements of the stored tensors */
    uint64_t by_dtype[MK_DTYPE_COUNT], n_dtype[MK_DTYPE_COUNT], st_dtype[MK_DTYPE_COUNT];
    bool list, hashes;
} insp;

static void totals(insp *x)
{
    mk_source *s = x->s;
    x->bpw = x->qi.q_numel ? 8.0 * (double)x->qi.q_bytes / (double)x->qi.q_numel : 0;
    x->zx = mk_mkz_source_index(s);
    for (size_t i = 0; i < s->n_tensors; i++) {
        x->elements += s->tensors[i].numel;
        x->bytes += s->tensors[i].nbytes;
        x->by_dtype[s->tensors[i].dtype] += s->tensors[i].nbytes;
        x->n_dtype[s->tensors[i].dtype]++;
        if (x->zx) {
            x->stored += x->zx->streams[x->zx->model[i]].stored;
            x->st_dtype[s->tensors[i].dtype] += x->zx->streams[x->zx->model[i]].stored;
        }
    }
    /* a quantized weight of n values is n parameters, whatever its codes and scales hold */
    x->params = x->qi.quantized ? x->qi.params : x->elements;
}

static mk_status json_tensors(const insp *x, mk_buf *b)
{
    mk_source *s = x->s;
    const mk_mkz_index *zx = x->zx;
    mk_status st = MK_OK;
    mk_buf_puts(b, ", \"tensor_list\": [");
    for (size_t i = 0; i < s->n_tensors && x->list; i++) {
        const mk_tensor_info *t = &s->tensors[i];
        char sh[160];
        mk_buf_puts(b, i ? ",\n  " : "\n  ");
        mk_buf_puts(b, "{\"name\": ");
        mk_buf_json_str(b, t->name);
        mk_buf_printf(b, ", \"dtype\": \"%s\", \"shape\": %s, \"bytes\": %llu, \"file\": ", mk_dtype_name(t->dtype),
                      mk_shape_str(t, sh), (unsigned long long)t->nbytes);
        mk_buf_json_str(b, file_base(s, t->file));
        if (zx) {
            uint64_t sb = zx->streams[zx->model[i]].stored;
            mk_buf_printf(b, ", \"stored_bytes\": %llu, \"ratio\": %.4f", (unsigned long long)sb,
                          sb ? (double)t->nbytes / (double)sb : 0.0);
        }
        char hx[33];
        if (x->hashes && st == MK_OK && (st = tensor_hash(s, i, hx)) == MK_OK) mk_buf_printf(b, ", \"xxh3\": \"%s\"", hx);
        mk_buf_puts(b, "}");
    }
    return st;
}


/* A GGUF file's own description: version, key metadata, and how many tensors of each ggml
 * type (text: one line; JSON: an object). */
static void gguf_summary(const mk_source *s, mk_buf *b, bool json)
{
    const mk_gguf *g = mk_gguf_of_source(s);
    if (!g) return;
    char arch[64] = "", name[128] = "", tm[32] = "", pre[64] = "";
    int64_t ft = -1;
    mk_gguf_get_str(g, "general.architecture", arch, sizeof arch);
    mk_gguf_get_str(g, "general.name", name, sizeof name);
    mk_gguf_get_str(g, "tokenizer.ggml.model", tm, sizeof tm);
    mk_gguf_get_str(g, "tokenizer.ggml.pre", pre, sizeof pre);
    mk_gguf_get_int(g, "general.file_type", &ft);
    if (json) {
        mk_buf_printf(b, ", \"gguf\": {\"version\": %u, \"metadata_keys\": %llu, \"alignment\": %llu, \"architecture\": ", g->version,
                      (unsigned long long)g->n_kv, (unsigned long long)g->alignment);
        mk_buf_json_str(b, arch);
        mk_buf_puts(b, ", \"name\": ");
        mk_buf_json_str(b, name);
        mk_buf_printf(b, ", \"file_type\": %lld, \"tokenizer\": ", (long long)ft);
        mk_buf_json_str(b, tm);
        mk_buf_puts(b, ", \"pre_tokenizer\": ");
        mk_buf_json_str(b, pre);
        mk_buf_puts(b, ", \"types\": {");
    } else {
        mk_buf_printf(b, "gguf: version %u, %llu metadata keys, alignment %llu; architecture %s", g->version, (unsigned long long)g->n_kv,
                      (unsigned long long)g->alignment, arch[0] ? arch : "(none)");
        if (!mk_gguf_arch_find(arch)) mk_buf_puts(b, " (not one mergekit-c knows: GGUF tensor names kept, no config.json)");
        if (name[0]) mk_buf_printf(b, ", name '%s'", name);
        if (ft >= 0) mk_buf_printf(b, ", file type %lld", (long long)ft);
        if (tm[0]) mk_buf_printf(b, ", tokenizer %s%s%s%s", tm, pre[0] ? " (" : "", pre, pre[0] ? ")" : "");
        mk_buf_puts(b, "\n  ggml types:");
    }
    bool first = true;
    for (uint32_t ty = 0; ty < MK_GGML_TYPE_LIMIT; ty++) {
        uint64_t n = 0;
        for (uint64_t i = 0; i < g->n_tensors; i++) n += g->t[i].type == ty;
        if (!n) continue;
        if (json) mk_buf_printf(b, "%s\"%s\": %llu", first ? "" : ", ", mk_ggml_type_of(ty)->name, (unsigned long long)n);
        else mk_buf_printf(b, " %s %llu", mk_ggml_type_of(ty)->name, (unsigned long long)n);
        first = false;
    }
    mk_buf_puts(b, json ? "}}" : "\n");
}

static mk_status print_json(const insp *x)
{
    mk_source *s = x->s;
    const mk_mkz_index *zx = x->zx;
    mk_status st = MK_OK;
    mk_buf b = {0};
    mk_buf_puts(&b, "{\"path\": ");
    mk_buf_json_str(&b, x->path);
    mk_buf_printf(&b, ", \"format\": \"%s\", \"architecture\": ", s->kind);
    if (x->arch.arch_name) mk_buf_json_str(&b, x->arch.arch_name);
    else mk_buf_puts(&b, "null");
    mk_buf_printf(&b, ", \"layers\": %ld, \"tensors\": %zu, \"parameters\": %llu, \"bytes\": %llu, ", x->arch.num_layers,
                  s->n_tensors, (unsigned long long)x->params, (unsigned long long)x->bytes);
    if (x->qi.quantized) mk_buf_printf(&b, "\"stored_elements\": %llu, ", (unsigned long long)x->elements);
    mk_buf_puts(&b, "\"files\": [");
    for (size_t f = 0; f < s->n_files; f++) {
        if (f) mk_buf_puts(&b, ", ");
        mk_buf_json_str(&b, s->files[f]);
    }
    mk_buf_puts(&b, "], \"dtypes\": {");
    bool first = true;
    for (int d = 0; d < MK_DTYPE_COUNT; d++) {
        if (!x->n_dtype[d]) continue;
        mk_buf_printf(&b, "%s\"%s\": {\"tensors\": %llu, \"bytes\": %llu", first ? "" : ", ", mk_dtype_name((mk_dtype)d),
                      (unsigned long long)x->n_dtype[d], (unsigned long long)x->by_dtype[d]);
        if (zx)
            mk_buf_printf(&b, ", \"stored_bytes\": %llu, \"ratio\": %.4f", (unsigned long long)x->st_dtype[d],
                          x->st_dtype[d] ? (double)x->by_dtype[d] / (double)x->st_dtype[d] : 0.0);
        mk_buf_puts(&b, "}");
        first = false;
    }
    mk_buf_puts(&b, "}, \"quantization\": ");
    if (x->qi.quantized) {
        mk_buf_printf(&b, "{\"format\": \"%s\", \"layout\": \"%s\", \"bits\": %u, \"block_size\": %llu, \"per_row\": %s, "
                          "\"per_tensor\": %s, \"double_quant\": %s, \"zero_points\": %s, \"quantized_tensors\": %zu, "
                          "\"quantized_parameters\": %llu, \"quantized_bytes\": %llu, \"bits_per_weight\": %.4f}",
                      x->qi.format, x->qi.layout, x->qi.bits, (unsigned long long)x->qi.block, x->qi.per_channel ? "true" : "false",
                      x->qi.per_tensor ? "true" : "false", x->qi.double_quant ? "true" : "false", x->qi.asym ? "true" : "false",
                      x->qi.n_quantized, (unsigned long long)x->qi.q_numel, (unsigned long long)x->qi.q_bytes, x->bpw);
    } else {
        mk_buf_puts(&b, "null");
    }
    st = json_tensors(x, &b);
    mk_buf_puts(&b, "]");
    if (zx) {
        uint64_t fb = 0;
        for (size_t f = 0; f < zx->n_files; f++) fb += zx->files[f].size;
        mk_buf_printf(&b, ", \"container\": {\"bytes\": %llu, \"files\": %zu, \"file_bytes\": %llu, \"ratio\": %.4f, "
                          "\"tensor_stored_bytes\": %llu, \"tensor_ratio\": %.4f}",
                      (unsigned long long)zx->file_size, zx->n_files, (unsigned long long)fb,
                      zx->file_size ? (double)fb / (double)zx->file_size : 0.0, (unsigned long long)x->stored,
                      x->stored ? (double)x->bytes / (double)x->stored : 0.0);
        if (zx->base_hint) {
            mk_buf_puts(&b, ", \"delta_base\": ");
            mk_buf_json_str(&b, zx->base_hint);
            mk_buf_printf(&b, ", \"delta_tensors\": %zu", zx->n_delta);
        }
    }
    gguf_summary(s, &b, true);
    mk_buf_puts(&b, "}\n");
    if (b.failed) st = mk_error(MK_ERR_NOMEM, "out of memory");
    else if (st == MK_OK) fputs(b.data, stdout);
    mk_buf_free(&b);
    return st;
}

static mk_status print_text(const insp *x)
{
    mk_source *s = x->s;
    const mk_mkz_index *zx = x->zx;
    mk_status st = MK_OK;
    char qdesc[160];
    char a[32];
    printf("%s: %s, %zu file(s)", x->path, s->kind, s->n_files);
    if (x->arch.arch_name) printf(", %s", x->arch.arch_name);
    if (x->arch.num_layers >= 0) printf(", %ld layers", x->arch.num_layers);
    printf("\n");
    if (x->list) {
        for (size_t i = 0; i < s->n_tensors; i++) {
            const mk_tensor_info *t = &s->tensors[i];
            char sh[160];
            char hx[33] = "";
            if (x->hashes && st == MK_OK) st = tensor_hash(s, i, hx);
            if (zx) {
                uint64_t sb = zx->streams[zx->model[i]].stored;
                printf("  %-60s %-8s %-18s %14llu %14llu %7.3fx%s%s\n", t->name, mk_dtype_name(t->dtype), mk_shape_str(t, sh),
                       (unsigned long long)t->nbytes, (unsigned long long)sb, sb ? (double)t->nbytes / (double)sb : 0.0,
                       x->hashes ? "  " : "", hx);
            } else {
                printf("  %-60s %-8s %-18s %14llu  %s%s%s\n", t->name, mk_dtype_name(t->dtype), mk_shape_str(t, sh),
                       (unsigned long long)t->nbytes, file_base(s, t->file), x->hashes ? "  " : "", hx);
            }
        }
    }
    if (x->qi.quantized)
        printf("tensors: %zu  parameters: %llu (the %llu stored elements hold them quantized)  bytes: %s\n", s->n_tensors,
               (unsigned long long)x->params, (unsigned long long)x->elements, mk_fmt_bytes(x->bytes, a));
    else
        printf("tensors: %zu  parameters: %llu  bytes: %s\n", s->n_tensors, (unsigned long long)x->params, mk_fmt_bytes(x->bytes, a));
    for (int d = 0; d < MK_DTYPE_COUNT; d++) {
        if (!x->n_dtype[d]) continue;
        printf("  %-8s %6llu tensors  %s", mk_dtype_name((mk_dtype)d), (unsigned long long)x->n_dtype[d],
               mk_fmt_bytes(x->by_dtype[d], a));
        if (zx) printf("  stored %s (%.3fx)", mk_fmt_bytes(x->st_dtype[d], a), x->st_dtype[d] ? (double)x->by_dtype[d] / x->st_dtype[d] : 0.0);
        printf("\n");
    }
    if (zx) {
        uint64_t fb = 0;
        for (size_t f = 0; f < zx->n_files; f++) fb += zx->files[f].size;
        char c2[32], c3[32], c4[32];
        printf("container: %zu files, %s in %s (%.3fx); tensors %s in %s (%.3fx)\n", zx->n_files, mk_fmt_bytes(fb, a),
               mk_fmt_bytes(zx->file_size, c2), zx->file_size ? (double)fb / zx->file_size : 0.0,
               mk_fmt_bytes(x->bytes, c3), mk_fmt_bytes(x->stored, c4), x->stored ? (double)x->bytes / x->stored : 0.0);
        if (zx->base_hint)
            printf("delta: %zu tensors stored as deltas against base %s (reading them needs it: --base, MK_DELTA_BASE or "
                   "that path, relative to the container)\n",
                   zx->n_delta, zx->base_hint);
    }
    if (x->qi.quantized)
        printf("quantized: %s; %zu weights, %llu parameters, %.3f bits per weight\n", mk_qinfo_describe(&x->qi, qdesc),
               x->qi.n_quantized, (unsigned long long)x->qi.q_numel, x->bpw);
    mk_buf gb = {0};
    gguf_summary(s, &gb, false);
    if (gb.data) fputs(gb.data, stdout);
    mk_buf_free(&gb);
    return st;
}

int mk_cmd_inspect(int argc, char **argv)
{
    mk_common c = {0};
    bool quiet_list = false, hashes = false;
    const mk_opt opts[] = {
        {"summary", 's', MK_OPT_FLAG, &quiet_list, NULL, "totals only, no per-tensor lines", NULL},
        {"hashes", 0, MK_OPT_FLAG, &hashes, NULL, "also the XXH3-128 of each tensor's bytes", NULL},
        MK_COMMON_OPTS(c),
        MK_HUB_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {"inspect", "PATH [options]",
                              "Show a model's tensors (name, dtype, shape, bytes, shard), totals, parameter count and\n"
                              "architecture. PATH is a model folder, a .safetensors file, a PyTorch .bin/.pt/.pth file\n"
                              "(read without unpickling), a .mkz container (then also the stored bytes and compression\n"
                              "ratio per tensor and per dtype) or a llama.cpp .gguf file (then also its version, key\n"
                              "metadata and ggml types; block-quantized tensors are listed as NAME@TYPE); every header is\n"
                              "validated.",
                              "A quantized checkpoint lists its tensors as stored (codes, scales, maps) and counts the\n"
                              "parameters of the model they hold: a 4-bit weight of n values is n parameters, as `estimate`\n"
                              "and the unquantized model count it.",
                              opts, 1, 1, 0x1};
    char *pos[1];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, false, &rc)) return rc;
    insp x = {.path = pos[0], .list = !quiet_list, .hashes = hashes};
    mk_status st = mk_cli_open_model(pos[0], &x.s);
    if (st == MK_OK) st = mk_arch_of_source(x.s, &x.arch);
    if (st == MK_OK) st = mk_qsource_probe(x.s, &x.qi); /* quantized checkpoints: format, block or group, bits per weight */
    if (st == MK_OK) {
        totals(&x);
        st = c.json ? print_json(&x) : print_text(&x);
    }
    mk_arch_free(&x.arch);
    mk_source_close(x.s);
    return st == MK_OK ? 0 : mk_cli_fail(st);
}
