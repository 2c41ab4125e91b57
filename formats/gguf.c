/* gguf.c - see gguf.h. File layout (ggml/docs/gguf.md): "GGUF", u32 version, u64 tensor
 * count, u64 KV count; KVs (string key, u32 type, value); tensor infos (string name, u32
 * n_dims, u64 ne[n_dims], u32 ggml type, u64 offset); padding to general.alignment (32 by
 * default); the data section. Strings are u64 length + bytes. Everything little-endian. */
#include "gguf.h"

#include "../core/mk_dtype.h"
#include "../core/mk_io.h"
#include "../model/gguf_names.h"
#include "sniff.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_DEFAULT_ALIGNMENT 32

static const char *const type_names[MK_GGUF_TYPE_COUNT] = {"u8",  "i8",    "u16",   "i16", "u32", "i32", "f32",
                                                           "bool", "string", "array", "u64", "i64", "f64"};
static const unsigned type_size[MK_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *mk_gguf_type_name(uint32_t t) { return t < MK_GGUF_TYPE_COUNT ? type_names[t] : "unknown"; }

static uint64_t rd(const unsigned char *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- the parser ---- */

typedef struct cur {
    const unsigned char *b;
    size_t len;
    uint64_t file_size;
    uint64_t pos;
    const char *what;
    mk_gguf *g;
} cur;

/* n more bytes are there, or an error: truncated file, or (when the file has them) a
 * request for a longer image. */
static mk_status need(cur *c, uint64_t n, const char *item)
{
    uint64_t end;
    if (!mk_add_u64(c->pos, n, &end) || end > c->file_size)
        return mk_error(MK_ERR_FORMAT, "%s: %s at byte %llu runs past the end of the file (%llu bytes)", c->what, item,
                        (unsigned long long)c->pos, (unsigned long long)c->file_size);
    if (end > c->len) {
        if (end > MK_GGUF_MAX_HEADER)
            return mk_error(MK_ERR_FORMAT, "%s: the metadata is larger than %llu bytes", c->what, (unsigned long long)MK_GGUF_MAX_HEADER);
        c->g->need = end;
        return mk_error(MK_ERR_FORMAT, "%s: header needs %llu bytes", c->what, (unsigned long long)end);
    }
    return MK_OK;
}

static mk_status get(cur *c, unsigned n, uint64_t *v, const char *item)
{
    MK_TRY(need(c, n, item));
    *v = rd(c->b + c->pos, n);
    c->pos += n;
    return MK_OK;
}

/* A string: its length checked against cap and the bytes left; *s points into the image. */
static mk_status get_str(cur *c, uint64_t cap, const char *item, const char **s, uint64_t *n)
{
    uint64_t len;
    MK_TRY(get(c, 8, &len, item));
    if (len > cap)
        return mk_error(MK_ERR_FORMAT, "%s: %s at byte %llu: length %llu is over the limit of %llu", c->what, item,
                        (unsigned long long)(c->pos - 8), (unsigned long long)len, (unsigned long long)cap);
    MK_TRY(need(c, len, item));
    *s = (const char *)c->b + c->pos;
    *n = len;
    c->pos += len;
    return MK_OK;
}

static mk_status skip_value(cur *c, uint32_t type, const char *key, uint64_t *count)
{
    if (type == MK_GGUF_STRING) {
        const char *s;
        return get_str(c, MK_GGUF_MAX_STRING, key, &s, count);
    }
    uint64_t v;
    MK_TRY(get(c, type_size[type], &v, key));
    if (type == MK_GGUF_BOOL && v > 1)
        return mk_error(MK_ERR_FORMAT, "%s: key %s: boolean value %llu is not 0 or 1", c->what, key, (unsigned long long)v);
    return MK_OK;
}

static mk_status parse_kv(cur *c, mk_gguf_kv *kv)
{
    const char *k;
    uint64_t klen, t;
    MK_TRY(get_str(c, MK_GGUF_MAX_KEY, "a metadata key", &k, &klen));
    if (klen == 0) return mk_error(MK_ERR_FORMAT, "%s: empty metadata key at byte %llu", c->what, (unsigned long long)(c->pos - 8));
    if (memchr(k, 0, (size_t)klen)) return mk_error(MK_ERR_FORMAT, "%s: metadata key with a NUL byte at byte %llu", c->what, (unsigned long long)(c->pos - klen));
    kv->key = mk_strndup(k, (size_t)klen);
    if (!kv->key) return MK_ERR_NOMEM;
    MK_TRY(get(c, 4, &t, kv->key));
    if (t >= MK_GGUF_TYPE_COUNT)
        return mk_error(MK_ERR_FORMAT, "%s: key %s: unknown value type %llu", c->what, kv->key, (unsigned long long)t);
    kv->type = (uint32_t)t;
    if (t != MK_GGUF_ARRAY) {
        kv->off = c->pos + (t == MK_GGUF_STRING ? 8 : 0);
        return skip_value(c, kv->type, kv->key, &kv->n);
    }
    uint64_t at, n;
    MK_TRY(get(c, 4, &at, kv->key));
    if (at >= MK_GGUF_TYPE_COUNT || at == MK_GGUF_ARRAY)
        return mk_error(MK_ERR_FORMAT, "%s: key %s: array of %s", c->what, kv->key, at == MK_GGUF_ARRAY ? "arrays (nested arrays are not GGUF)" : "an unknown type");
    MK_TRY(get(c, 8, &n, kv->key));
    kv->atype = (uint32_t)at;
    kv->n = n;
    kv->off = c->pos;
    /* each element takes at least its size (a string its 8-byte length) */
    uint64_t min = at == MK_GGUF_STRING ? 8 : type_size[at], bytes;
    if (!mk_mul_u64(n, min, &bytes) || bytes > c->file_size - c->pos)
        return mk_error(MK_ERR_FORMAT, "%s: key %s: array of %llu %s elements is larger than the rest of the file", c->what, kv->key,
                        (unsigned long long)n, type_names[at]);
    if (at != MK_GGUF_STRING && at != MK_GGUF_BOOL) {
        MK_TRY(need(c, bytes, kv->key));
        c->pos += bytes;
        return MK_OK;
    }
    uint64_t dummy;
    for (uint64_t i = 0; i < n; i++) MK_TRY(skip_value(c, (uint32_t)at, kv->key, &dummy));
    return MK_OK;
}

static mk_status parse_tensor(cur *c, mk_gguf_tensor *t, uint64_t k)
{
    const char *nm;
    uint64_t nlen, v;
    MK_TRY(get_str(c, 1u << 20, "a tensor name", &nm, &nlen));
    if (nlen == 0 || nlen >= MK_GGUF_MAX_NAME)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %llu: name of %llu bytes (1 to %u allowed)", c->what, (unsigned long long)k,
                        (unsigned long long)nlen, MK_GGUF_MAX_NAME - 1);
    if (memchr(nm, 0, (size_t)nlen) || memchr(nm, '@', (size_t)nlen))
        return mk_error(MK_ERR_FORMAT, "%s: tensor %llu: name contains a NUL or '@'", c->what, (unsigned long long)k);
    t->name = mk_strndup(nm, (size_t)nlen);
    if (!t->name) return MK_ERR_NOMEM;
    MK_TRY(get(c, 4, &v, t->name));
    if (v < 1 || v > 4) return mk_error(MK_ERR_FORMAT, "%s: tensor %s: %llu dimensions (1 to 4 allowed)", c->what, t->name, (unsigned long long)v);
    t->ndim = (uint32_t)v;
    uint64_t numel = 1;
    for (uint32_t d = 0; d < t->ndim; d++) {
        MK_TRY(get(c, 8, &t->ne[d], t->name));
        if (t->ne[d] == 0) return mk_error(MK_ERR_FORMAT, "%s: tensor %s: dimension %u is 0", c->what, t->name, d);
        if (t->ne[d] > (uint64_t)INT64_MAX || !mk_mul_u64(numel, t->ne[d], &numel) || numel > (uint64_t)INT64_MAX)
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s: dimension %u (%llu) makes the element count overflow", c->what, t->name,
                            d, (unsigned long long)t->ne[d]);
    }
    for (uint32_t d = t->ndim; d < 4; d++) t->ne[d] = 1;
    MK_TRY(get(c, 4, &v, t->name));
    const mk_ggml_type *gt = mk_ggml_type_of((uint32_t)v);
    if (!gt) return mk_error(MK_ERR_FORMAT, "%s: tensor %s: unknown ggml type %llu", c->what, t->name, (unsigned long long)v);
    if (!gt->decodable)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: tensor %s: ggml type %s is not supported", c->what, t->name, gt->name);
    t->type = (uint32_t)v;
    if (t->ne[0] % gt->block)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: first dimension %llu is not a multiple of the %s block of %u", c->what, t->name,
                        (unsigned long long)t->ne[0], gt->name, gt->block);
    uint64_t nb = t->ne[0] / gt->block * gt->bytes;
    for (uint32_t d = 1; d < t->ndim; d++)
        if (!mk_mul_u64(nb, t->ne[d], &nb)) return mk_error(MK_ERR_FORMAT, "%s: tensor %s: byte size overflows", c->what, t->name);
    t->nbytes = nb;
    MK_TRY(get(c, 8, &t->offset, t->name));
    return MK_OK;
}

void mk_gguf_free(mk_gguf *g)
{
    if (!g) return;
    for (uint64_t i = 0; g->kv && i < g->n_kv; i++) free(g->kv[i].key);
    for (uint64_t i = 0; g->t && i < g->n_tensors; i++) free(g->t[i].name);
    free(g->kv);
    free(g->t);
    memset(g, 0, sizeof *g);
}

static int cmp_key(const void *a, const void *b) { return strcmp(**(char *const *const *)a, **(char *const *const *)b); }

/* Duplicate strings among n pointers to char* fields: the first found, or NULL. */
static const char *find_dup(char **const *p, uint64_t n)
{
    qsort((void *)p, (size_t)n, sizeof *p, cmp_key);
    for (uint64_t i = 1; i < n; i++)
        if (strcmp(*p[i], *p[i - 1]) == 0) return *p[i];
    return NULL;
}

typedef struct span {
    uint64_t off, end;
    const char *name;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off ? 1 : x->end < y->end ? -1 : x->end > y->end;
}

static mk_status check_layout(cur *c, mk_gguf *g)
{
    /* duplicates among keys and among tensor names */
    uint64_t m = g->n_kv > g->n_tensors ? g->n_kv : g->n_tensors;
    char ***p = mk_calloc(m ? (size_t)m : 1, sizeof *p);
    if (!p) return MK_ERR_NOMEM;
    for (uint64_t i = 0; i < g->n_kv; i++) p[i] = &g->kv[i].key;
    const char *d = find_dup(p, g->n_kv);
    if (d) {
        mk_status s = mk_error(MK_ERR_FORMAT, "%s: metadata key %s appears twice", c->what, d);
        free(p);
        return s;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) p[i] = &g->t[i].name;
    d = find_dup(p, g->n_tensors);
    free(p);
    if (d) return mk_error(MK_ERR_FORMAT, "%s: tensor %s appears twice", c->what, d);

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const mk_gguf_kv *a = mk_gguf_find(g, "general.alignment");
    if (a) {
        if (a->type != MK_GGUF_U32) return mk_error(MK_ERR_FORMAT, "%s: general.alignment is a %s, not a u32", c->what, mk_gguf_type_name(a->type));
        uint64_t v = rd(c->b + a->off, 4);
        if (v == 0 || (v & (v - 1)) || v > MK_GGUF_MAX_ALIGN)
            return mk_error(MK_ERR_FORMAT, "%s: general.alignment %llu is not a power of two up to %u", c->what, (unsigned long long)v, MK_GGUF_MAX_ALIGN);
        g->alignment = v;
    }
    uint64_t start = (c->pos + g->alignment - 1) / g->alignment * g->alignment;
    if (start > c->file_size) {
        if (g->n_tensors)
            return mk_error(MK_ERR_FORMAT, "%s: the data section (at byte %llu) starts past the end of the file (%llu bytes)", c->what,
                            (unsigned long long)start, (unsigned long long)c->file_size);
        start = c->file_size; /* metadata only, unpadded */
    }
    g->data_offset = start;
    uint64_t room = c->file_size - start;
    span *sp = mk_calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof *sp);
    if (!sp) return MK_ERR_NOMEM;
    mk_status s = MK_OK;
    for (uint64_t i = 0; i < g->n_tensors && s == MK_OK; i++) {
        const mk_gguf_tensor *t = &g->t[i];
        if (t->offset % g->alignment)
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: offset %llu is not a multiple of the alignment %llu", c->what, t->name,
                         (unsigned long long)t->offset, (unsigned long long)g->alignment);
        else if (t->offset > room || t->nbytes > room - t->offset)
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: bytes [%llu, +%llu) of the data section run past the end of the file (%llu bytes of data)",
                         c->what, t->name, (unsigned long long)t->offset, (unsigned long long)t->nbytes, (unsigned long long)room);
        sp[i] = (span){t->offset, t->offset + t->nbytes, t->name};
    }
    if (s == MK_OK && g->n_tensors > 1) {
        qsort(sp, (size_t)g->n_tensors, sizeof *sp, cmp_span);
        for (uint64_t i = 1; i < g->n_tensors && s == MK_OK; i++)
            if (sp[i].off < sp[i - 1].end)
                s = mk_error(MK_ERR_FORMAT, "%s: tensors %s and %s overlap (bytes %llu..%llu and %llu..%llu of the data section)", c->what,
                             sp[i - 1].name, sp[i].name, (unsigned long long)sp[i - 1].off, (unsigned long long)sp[i - 1].end,
                             (unsigned long long)sp[i].off, (unsigned long long)sp[i].end);
    }
    free(sp);
    return s;
}

mk_status mk_gguf_parse(const unsigned char *buf, size_t len, uint64_t file_size, const char *what, mk_gguf *g)
{
    memset(g, 0, sizeof *g);
    cur c = {buf, len < file_size ? len : (size_t)file_size, file_size, 0, what, g};
    g->img = buf;
    g->img_len = c.len;
    if (file_size < 4 || memcmp(buf, "GGUF", 4) != 0) {
        char d[160];
        const char *desc = mk_sniff(buf, c.len < MK_SNIFF_BYTES ? c.len : MK_SNIFF_BYTES, file_size, true, d, sizeof d);
        return mk_error(MK_ERR_FORMAT, "%s: not a GGUF file (%s)", what, desc);
    }
    c.pos = 4;
    uint64_t v, nt, nkv;
    MK_TRY(get(&c, 4, &v, "the version"));
    if (v == 0x02000000u || v == 0x03000000u)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: a big-endian GGUF file (only little-endian files are read)", what);
    if (v != 2 && v != 3) return mk_error(MK_ERR_UNSUPPORTED, "%s: GGUF version %llu (versions 2 and 3 are read)", what, (unsigned long long)v);
    g->version = (uint32_t)v;
    MK_TRY(get(&c, 8, &nt, "the tensor count"));
    MK_TRY(get(&c, 8, &nkv, "the metadata count"));
    /* a KV takes at least 8 + 1 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 8 + 4 + 8 */
    if (nt > MK_GGUF_MAX_TENSORS || nt > file_size / 33)
        return mk_error(MK_ERR_FORMAT, "%s: tensor count %llu is over the limit (%u, and what the file size allows)", what,
                        (unsigned long long)nt, MK_GGUF_MAX_TENSORS);
    if (nkv > MK_GGUF_MAX_KV || nkv > file_size / 14)
        return mk_error(MK_ERR_FORMAT, "%s: metadata count %llu is over the limit (%u, and what the file size allows)", what,
                        (unsigned long long)nkv, MK_GGUF_MAX_KV);
    g->kv = mk_calloc(nkv ? (size_t)nkv : 1, sizeof *g->kv);
    g->t = mk_calloc(nt ? (size_t)nt : 1, sizeof *g->t);
    if (!g->kv || !g->t) {
        mk_gguf_free(g);
        return MK_ERR_NOMEM;
    }
    mk_status s = MK_OK;
    for (uint64_t i = 0; i < nkv && s == MK_OK; i++) {
        s = parse_kv(&c, &g->kv[i]);
        g->n_kv = i + 1;
    }
    for (uint64_t i = 0; i < nt && s == MK_OK; i++) {
        s = parse_tensor(&c, &g->t[i], i);
        g->n_tensors = i + 1;
    }
    if (s == MK_OK) s = check_layout(&c, g);
    if (s != MK_OK) {
        uint64_t keep = g->need;
        mk_gguf_free(g);
        g->need = keep;
    }
    return s;
}

/* ---- metadata ---- */

const mk_gguf_kv *mk_gguf_find(const mk_gguf *g, const char *key)
{
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

static bool int_of(const unsigned char *p, uint32_t type, int64_t *v)
{
    switch (type) {
    case MK_GGUF_U8: case MK_GGUF_BOOL: *v = p[0]; return true;
    case MK_GGUF_I8: *v = (int8_t)p[0]; return true;
    case MK_GGUF_U16: *v = (int64_t)rd(p, 2); return true;
    case MK_GGUF_I16: *v = (int16_t)rd(p, 2); return true;
    case MK_GGUF_U32: *v = (int64_t)rd(p, 4); return true;
    case MK_GGUF_I32: *v = (int32_t)rd(p, 4); return true;
    case MK_GGUF_U64: { uint64_t u = rd(p, 8); if (u > INT64_MAX) return false; *v = (int64_t)u; return true; }
    case MK_GGUF_I64: *v = (int64_t)rd(p, 8); return true;
    default: return false;
    }
}

bool mk_gguf_get_int(const mk_gguf *g, const char *key, int64_t *v)
{
    const mk_gguf_kv *kv = mk_gguf_find(g, key);
    return kv && int_of(g->img + kv->off, kv->type, v);
}

bool mk_gguf_get_float(const mk_gguf *g, const char *key, double *v)
{
    const mk_gguf_kv *kv = mk_gguf_find(g, key);
    if (!kv) return false;
    if (kv->type == MK_GGUF_F32 || kv->type == MK_GGUF_F64) {
        uint64_t bits = rd(g->img + kv->off, kv->type == MK_GGUF_F32 ? 4 : 8);
        if (kv->type == MK_GGUF_F32) {
            uint32_t b = (uint32_t)bits;
            float f;
            memcpy(&f, &b, 4);
            *v = f;
        } else {
            memcpy(v, &bits, 8);
        }
        return true;
    }
    int64_t i;
    if (!int_of(g->img + kv->off, kv->type, &i)) return false;
    *v = (double)i;
    return true;
}

bool mk_gguf_get_str(const mk_gguf *g, const char *key, char *buf, size_t cap)
{
    const mk_gguf_kv *kv = mk_gguf_find(g, key);
    if (!kv || kv->type != MK_GGUF_STRING || cap == 0) return false;
    size_t n = kv->n < cap - 1 ? (size_t)kv->n : cap - 1;
    memcpy(buf, g->img + kv->off, n);
    buf[n] = 0;
    return true;
}

void mk_gguf_next_str(const mk_gguf *g, uint64_t *pos, const char **s, uint64_t *len)
{
    *len = rd(g->img + *pos, 8);
    *s = (const char *)g->img + *pos + 8;
    *pos += 8 + *len;
}

bool mk_gguf_arr_int(const mk_gguf *g, const mk_gguf_kv *kv, uint64_t i, int64_t *v)
{
    if (kv->type != MK_GGUF_ARRAY || i >= kv->n || kv->atype == MK_GGUF_STRING) return false;
    return int_of(g->img + kv->off + i * type_size[kv->atype], kv->atype, v);
}

/* ---- as a source ---- */

typedef struct gg_source {
    mk_rfile f;
    unsigned char *img; /* the header image g borrows */
    mk_gguf g;
    uint64_t *row_bytes; /* per listed tensor */
    uint64_t *heads;     /* per listed tensor: Q/K rows to put back in Hugging Face order (0: none) */
    char *config;        /* config.json made from the metadata, or NULL */
    char *tokenizer;     /* tokenizer.json made from the metadata, or NULL */
    const char *aux[3];
} gg_source;

static mk_status gg_read(mk_source *s, size_t i, uint64_t off, uint64_t len, void *dst)
{
    gg_source *gs = s->impl;
    const mk_tensor_info *t = &s->tensors[i];
    if (!gs->heads[i]) return mk_rfile_read(&gs->f, t->offset + off, dst, (size_t)len);
    uint64_t rb = gs->row_bytes[i], rows = t->nbytes / rb;
    unsigned char *d = dst;
    while (len) {
        uint64_t r = off / rb, in = off % rb, take = rb - in < len ? rb - in : len;
        uint64_t sr = mk_gguf_unpermute_row(r, rows, gs->heads[i]);
        MK_TRY(mk_rfile_read(&gs->f, t->offset + sr * rb + in, d, (size_t)take));
        d += take;
        off += take;
        len -= take;
    }
    return MK_OK;
}

static void gg_prefetch(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    gg_source *gs = s->impl;
    const mk_tensor_info *t = &s->tensors[i];
    if (gs->heads[i]) off = 0, len = t->nbytes; /* rows come from all over the tensor */
    mk_rfile_willneed(&gs->f, t->offset + off, len);
}

static mk_status gg_aux_read(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    gg_source *gs = s->impl;
    const char *text = strcmp(name, "config.json") == 0 ? gs->config : strcmp(name, "tokenizer.json") == 0 ? gs->tokenizer : NULL;
    *data = NULL;
    *len = 0;
    if (!text) return MK_OK;
    size_t n = strlen(text);
    if (n > cap) return mk_error(MK_ERR_FORMAT, "%s: %s made from the metadata is over %llu bytes", s->path, name, (unsigned long long)cap);
    *data = mk_strdup(text);
    if (!*data) return MK_ERR_NOMEM;
    *len = n;
    return MK_OK;
}

static const char *const *gg_aux_list(mk_source *s)
{
    gg_source *gs = s->impl;
    return gs->aux;
}

static void gg_close(mk_source *s)
{
    if (!s) return;
    gg_source *gs = s->impl;
    if (gs) {
        mk_rfile_close(&gs->f);
        mk_gguf_free(&gs->g);
        free(gs->img);
        free(gs->row_bytes);
        free(gs->heads);
        free(gs->config);
        free(gs->tokenizer);
        free(gs);
    }
    mk_source_free_fields(s);
}

static const mk_source_ops gg_ops = {gg_read, NULL, NULL, gg_prefetch, gg_aux_read, gg_aux_list, gg_close, NULL};

const mk_gguf *mk_gguf_of_source(const mk_source *s)
{
    return s && s->ops == &gg_ops ? &((const gg_source *)s->impl)->g : NULL;
}

bool mk_gguf_probe(const char *path)
{
    if (!mk_is_file(path)) return false;
    if (mk_str_ends_with(path, ".gguf")) return true;
    mk_rfile f;
    if (mk_rfile_open(&f, path) != MK_OK) {
        mk_error_clear();
        return false;
    }
    unsigned char m[4] = {0};
    bool ok = f.size >= 4 && mk_rfile_read(&f, 0, m, 4) == MK_OK && memcmp(m, "GGUF", 4) == 0;
    mk_rfile_close(&f);
    mk_error_clear();
    return ok;
}

/* Read and parse the header, growing the image until it holds it. */
static mk_status read_header(const char *path, gg_source *gs)
{
    MK_TRY(mk_rfile_open(&gs->f, path));
    uint64_t want = 1u << 20;
    for (;;) {
        size_t n = (size_t)(want < gs->f.size ? want : gs->f.size);
        free(gs->img);
        gs->img = mk_malloc(n ? n : 1);
        if (!gs->img) return MK_ERR_NOMEM;
        if (n) MK_TRY(mk_rfile_read(&gs->f, 0, gs->img, n));
        mk_status s = mk_gguf_parse(gs->img, n, gs->f.size, path, &gs->g);
        if (s == MK_OK || !gs->g.need || gs->g.need <= n) return s;
        mk_error_clear();
        want = gs->g.need > 2 * want ? gs->g.need : 2 * want;
        if (want > MK_GGUF_MAX_HEADER) want = MK_GGUF_MAX_HEADER;
    }
}

static bool add_num(cJSON *o, const char *k, double v) { return cJSON_AddNumberToObject(o, k, v) != NULL; }

/* An f32 metadata value as the shortest decimal that reads back as the same f32 (1e-05,
 * not 9.99999974737875e-06), as config.json files write it. */
static double f32_short(double v)
{
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        double r = strtod(buf, NULL);
        if ((float)r == (float)v) return r;
    }
    return v;
}

/* config.json for a known architecture, from "{arch}.*" keys (gguf-py constants.py Keys.LLM,
 * Keys.Attention, Keys.Rope) and the tensors. */
static mk_status make_config(mk_source *s, gg_source *gs, const mk_gguf_arch *a, const char *arch)
{
    const mk_gguf *g = &gs->g;
    char key[160];
    int64_t v;
    double f;
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    cJSON *o = cJSON_CreateObject();
    cJSON *archs = cJSON_CreateArray();
    bool ok = o && archs;
    if (ok) {
        cJSON_AddItemToArray(archs, cJSON_CreateString(a->hf_class));
        cJSON_AddItemToObject(o, "architectures", archs);
        ok = cJSON_AddStringToObject(o, "model_type", a->model_type) != NULL;
    } else {
        cJSON_Delete(archs);
    }
    static const struct {
        const char *suffix, *hf;
        bool required;
    } ints[] = {
        {"embedding_length", "hidden_size", true},        {"block_count", "num_hidden_layers", true},
        {"feed_forward_length", "intermediate_size", true}, {"attention.head_count", "num_attention_heads", true},
        {"context_length", "max_position_embeddings", false}, {"attention.key_length", "head_dim", false},
    };
    int64_t heads = 0;
    for (size_t i = 0; ok && i < sizeof ints / sizeof ints[0]; i++) {
        snprintf(key, sizeof key, "%s.%s", arch, ints[i].suffix);
        if (!mk_gguf_get_int(g, key, &v) || v <= 0) {
            if (!ints[i].required) continue;
            cJSON_Delete(o);
            return mk_error(MK_ERR_FORMAT, "%s: metadata %s is missing or not a positive integer", s->path, key);
        }
        if (i == 3) heads = v;
        ok = add_num(o, ints[i].hf, (double)v);
    }
    if (ok) ok = add_num(o, "num_key_value_heads", (double)(mk_gguf_get_int(g, K("attention.head_count_kv"), &v) && v > 0 ? v : heads));
    if (ok && mk_gguf_get_float(g, K("attention.layer_norm_rms_epsilon"), &f)) ok = add_num(o, "rms_norm_eps", f32_short(f));
    if (ok) ok = add_num(o, "rope_theta", mk_gguf_get_float(g, K("rope.freq_base"), &f) ? f32_short(f) : 10000.0);
    char rtype[32];
    if (ok && mk_gguf_get_str(g, K("rope.scaling.type"), rtype, sizeof rtype) && strcmp(rtype, "none") != 0 &&
        mk_gguf_get_float(g, K("rope.scaling.factor"), &f)) {
        cJSON *r = cJSON_AddObjectToObject(o, "rope_scaling");
        ok = r && cJSON_AddStringToObject(r, "rope_type", rtype) && add_num(r, "factor", f32_short(f));
        if (ok && mk_gguf_get_int(g, K("rope.scaling.original_context_length"), &v)) ok = add_num(r, "original_max_position_embeddings", (double)v);
    }
    /* the vocabulary: the embedding's rows (the token list may be longer or absent) */
    long emb = mk_source_find(s, "model.embed_tokens.weight");
    if (emb < 0) {
        char nm[96];
        snprintf(nm, sizeof nm, "model.embed_tokens.weight@");
        for (size_t i = 0; i < s->n_tensors && emb < 0; i++)
            if (strncmp(s->tensors[i].name, nm, strlen(nm)) == 0) emb = (long)i;
    }
    if (ok && emb >= 0) ok = add_num(o, "vocab_size", (double)s->tensors[emb].shape[0]);
    else if (ok && mk_gguf_get_int(g, K("vocab_size"), &v)) ok = add_num(o, "vocab_size", (double)v);
    bool has_head = false;
    for (size_t i = 0; i < s->n_tensors; i++) has_head |= mk_str_starts_with(s->tensors[i].name, "lm_head.weight");
    if (ok) ok = cJSON_AddBoolToObject(o, "tie_word_embeddings", !has_head) != NULL;
    if (ok && mk_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v)) ok = add_num(o, "bos_token_id", (double)v);
    if (ok && mk_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v)) ok = add_num(o, "eos_token_id", (double)v);
    if (ok) ok = cJSON_AddStringToObject(o, "torch_dtype", "float32") != NULL;
    if (ok) ok = cJSON_AddStringToObject(o, "hidden_act", "silu") != NULL;
    /* Llama 3's RoPE scaling is stored as the factors it computes, not as its parameters */
    if (mk_source_find(s, "rope_freqs.weight") >= 0)
        mk_warn("%s: rope_freqs.weight (llama.cpp's per-frequency RoPE factors) has no config.json equivalent: "
                "a forward pass (eval) runs without them, so its results are not the model's",
                s->path);
#undef K
    gs->config = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    return gs->config ? MK_OK : mk_error(MK_ERR_NOMEM, "out of memory making config.json for %s", s->path);
}

/* The listed tensors: Hugging Face names where the architecture is known, shapes in
 * row-major order (ne reversed), block-quantized tensors as U8 rows. */
static mk_status list_tensors(mk_source *s, gg_source *gs, const mk_gguf_arch *a, const char *arch)
{
    const mk_gguf *g = &gs->g;
    int64_t nh = 0, nkv = 0;
    char key[160];
    snprintf(key, sizeof key, "%s.attention.head_count", arch);
    if (!mk_gguf_get_int(g, key, &nh)) nh = 0;
    snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
    if (!mk_gguf_get_int(g, key, &nkv) || nkv <= 0) nkv = nh;
    size_t n = (size_t)g->n_tensors;
    s->tensors = mk_calloc(n ? n : 1, sizeof *s->tensors);
    gs->row_bytes = mk_calloc(n ? n : 1, sizeof *gs->row_bytes);
    gs->heads = mk_calloc(n ? n : 1, sizeof *gs->heads);
    if (!s->tensors || !gs->row_bytes || !gs->heads) return MK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const mk_gguf_tensor *gt = &g->t[i];
        const mk_ggml_type *ty = mk_ggml_type_of(gt->type);
        mk_tensor_info *t = &s->tensors[i];
        char hf[MK_GGUF_MAX_NAME + 64], qk = 0;
        const char *base = mk_gguf_hf_name(a, gt->name, hf, sizeof hf, &qk) ? hf : gt->name;
        bool plain = ty->mk_dtype >= 0;
        t->name = plain ? mk_strdup(base) : mk_asprintf("%s@%s", base, ty->name);
        s->n_tensors = i + 1;
        if (!t->name) return MK_ERR_NOMEM;
        t->ndim = (int)gt->ndim;
        for (uint32_t d = 0; d < gt->ndim; d++) t->shape[d] = (int64_t)gt->ne[gt->ndim - 1 - d];
        uint64_t rb = gt->ne[0] / ty->block * ty->bytes;
        if (plain) {
            t->dtype = (mk_dtype)ty->mk_dtype;
        } else {
            t->dtype = MK_U8;
            t->shape[t->ndim - 1] = (int64_t)rb;
        }
        MK_TRY(mk_tensor_info_finish(t));
        if (t->nbytes != gt->nbytes) MK_BUG("gguf byte count");
        t->file = 0;
        t->offset = g->data_offset + gt->offset;
        gs->row_bytes[i] = rb;
        if (qk) {
            uint64_t heads = (uint64_t)(qk == 'q' ? nh : nkv), rows = gt->nbytes / rb;
            if (gt->ndim != 2 || heads == 0 || rows % (2 * heads))
                return mk_error(MK_ERR_FORMAT, "%s: tensor %s: %llu rows do not split into %llu heads of rotary pairs", s->path, gt->name,
                                (unsigned long long)rows, (unsigned long long)heads);
            gs->heads[i] = heads;
        }
    }
    size_t dup = 0;
    if (mk_name_index_build(&s->index, s->tensors, n, &dup) != MK_OK)
        return mk_error(MK_ERR_FORMAT, "%s: two tensors are both named %s", s->path, s->tensors[dup].name);
    return MK_OK;
}

mk_status mk_gguf_open(const char *path, mk_source **out)
{
    *out = NULL;
    mk_source *s = mk_calloc(1, sizeof *s);
    gg_source *gs = mk_calloc(1, sizeof *gs);
    if (!s || !gs) {
        free(s);
        free(gs);
        return MK_ERR_NOMEM;
    }
    gs->f.fd = -1;
    s->ops = &gg_ops;
    s->impl = gs;
    s->path = mk_strdup(path);
    s->kind = mk_strdup("gguf");
    s->files = mk_calloc(1, sizeof *s->files);
    mk_status r = s->path && s->kind && s->files ? MK_OK : MK_ERR_NOMEM;
    if (r == MK_OK) {
        s->files[0] = mk_strdup(path);
        s->n_files = 1;
        r = s->files[0] ? read_header(path, gs) : MK_ERR_NOMEM;
    }
    char arch[64] = "";
    const mk_gguf_arch *a = NULL;
    if (r == MK_OK) {
        mk_gguf_get_str(&gs->g, "general.architecture", arch, sizeof arch);
        a = mk_gguf_arch_find(arch);
        r = list_tensors(s, gs, a, arch);
    }
    if (r == MK_OK && a) r = make_config(s, gs, a, arch);
    if (r == MK_OK) r = mk_gguf_tokenizer_json(&gs->g, &gs->tokenizer);
    size_t k = 0;
    if (gs->config) gs->aux[k++] = "config.json";
    if (gs->tokenizer) gs->aux[k++] = "tokenizer.json";
    if (r != MK_OK) {
        gg_close(s);
        return r;
    }
    *out = s;
    return MK_OK;
}
