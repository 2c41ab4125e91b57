/* gguf_write.c - see gguf_write.h. Layout (gguf-py GGUFWriter, ggml/docs/gguf.md): magic,
 * u32 version 3, u64 tensor count, u64 KV count, the KVs (u64-length strings), the tensor
 * infos (name, u32 ndim, u64 ne[ndim], u32 type, u64 offset), padding to the alignment, then
 * the data, each tensor starting at an aligned offset. */
#include "gguf_write.h"

#include "../model/gguf_names.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void put_le(mk_buf *b, uint64_t v, unsigned n)
{
    unsigned char t[8];
    for (unsigned i = 0; i < n; i++) t[i] = (unsigned char)(v >> (8 * i));
    mk_buf_put(b, t, n);
}
static void put_sn(mk_buf *b, const char *s, size_t n)
{
    put_le(b, n, 8);
    mk_buf_put(b, s, n);
}
static void key(mk_gguf_w *w, const char *k, uint32_t type)
{
    put_sn(&w->kv, k, strlen(k));
    put_le(&w->kv, type, 4);
    w->n_kv++;
}
static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static uint64_t align_up(uint64_t v) { return (v + MK_GGUF_ALIGN - 1) / MK_GGUF_ALIGN * MK_GGUF_ALIGN; }

void mk_gguf_w_init(mk_gguf_w *w)
{
    memset(w, 0, sizeof *w);
    w->fd = -1;
}
void mk_gguf_w_str(mk_gguf_w *w, const char *k, const char *v)
{
    key(w, k, MK_GGUF_STRING);
    put_sn(&w->kv, v, strlen(v));
}
void mk_gguf_w_u32(mk_gguf_w *w, const char *k, uint32_t v)
{
    key(w, k, MK_GGUF_U32);
    put_le(&w->kv, v, 4);
}
void mk_gguf_w_i32(mk_gguf_w *w, const char *k, int32_t v)
{
    key(w, k, MK_GGUF_I32);
    put_le(&w->kv, (uint32_t)v, 4);
}
void mk_gguf_w_f32(mk_gguf_w *w, const char *k, float v)
{
    key(w, k, MK_GGUF_F32);
    put_le(&w->kv, f32_bits(v), 4);
}
void mk_gguf_w_bool(mk_gguf_w *w, const char *k, bool v)
{
    key(w, k, MK_GGUF_BOOL);
    put_le(&w->kv, v ? 1 : 0, 1);
}
static void arr(mk_gguf_w *w, const char *k, uint32_t type, uint64_t n)
{
    key(w, k, MK_GGUF_ARRAY);
    put_le(&w->kv, type, 4);
    put_le(&w->kv, n, 8);
}
void mk_gguf_w_arr_str(mk_gguf_w *w, const char *k, const char *const *s, const size_t *lens, uint64_t n)
{
    arr(w, k, MK_GGUF_STRING, n);
    for (uint64_t i = 0; i < n; i++) put_sn(&w->kv, s[i], lens ? lens[i] : strlen(s[i]));
}
void mk_gguf_w_arr_i32(mk_gguf_w *w, const char *k, const int32_t *v, uint64_t n)
{
    arr(w, k, MK_GGUF_I32, n);
    for (uint64_t i = 0; i < n; i++) put_le(&w->kv, (uint32_t)v[i], 4);
}
void mk_gguf_w_arr_f32(mk_gguf_w *w, const char *k, const float *v, uint64_t n)
{
    arr(w, k, MK_GGUF_F32, n);
    for (uint64_t i = 0; i < n; i++) put_le(&w->kv, f32_bits(v[i]), 4);
}

mk_status mk_gguf_w_tensor(mk_gguf_w *w, const char *name, uint32_t ndim, const uint64_t ne[4], uint32_t type)
{
    const mk_ggml_type *t = mk_ggml_type_of(type);
    size_t nl = strlen(name);
    if (!t || ndim < 1 || ndim > 4 || nl >= MK_GGUF_MAX_NAME)
        return mk_error(MK_ERR_USAGE, "tensor %s: cannot be stored in GGUF (type %u, %u dimensions, name of %zu bytes)", name, type,
                        ndim, nl);
    if (ne[0] % t->block)
        return mk_error(MK_ERR_USAGE, "tensor %s: rows of %llu values are not whole %s blocks of %u", name, (unsigned long long)ne[0],
                        t->name, t->block);
    uint64_t n = ne[0] / t->block * t->bytes;
    for (uint32_t d = 1; d < ndim; d++)
        if (ne[d] == 0 || n > UINT64_MAX / 2 / ne[d]) return mk_error(MK_ERR_USAGE, "tensor %s: too large for GGUF", name);
        else n *= ne[d];
    uint64_t *nb = realloc(w->nbytes, (size_t)(w->n_tensors + 1) * sizeof *nb);
    if (!nb) return MK_ERR_NOMEM;
    w->nbytes = nb;
    uint64_t *of = realloc(w->offs, (size_t)(w->n_tensors + 1) * sizeof *of);
    if (!of) return MK_ERR_NOMEM;
    w->offs = of;
    of[w->n_tensors] = w->data_size;
    nb[w->n_tensors++] = n;
    put_sn(&w->ti, name, nl);
    put_le(&w->ti, ndim, 4);
    for (uint32_t d = 0; d < ndim; d++) put_le(&w->ti, ne[d], 8);
    put_le(&w->ti, type, 4);
    put_le(&w->ti, w->data_size, 8);
    w->data_size = align_up(w->data_size + n);
    return MK_OK;
}

void mk_gguf_w_header(const mk_gguf_w *w, mk_buf *h)
{
    mk_buf_put(h, "GGUF", 4);
    put_le(h, 3, 4);
    put_le(h, w->n_tensors, 8);
    put_le(h, w->n_kv, 8);
    mk_buf_put(h, w->kv.data, w->kv.len);
    mk_buf_put(h, w->ti.data, w->ti.len);
    static const char zeros[MK_GGUF_ALIGN];
    mk_buf_put(h, zeros, (size_t)(align_up(h->len) - h->len));
    if (w->kv.failed || w->ti.failed) h->failed = true;
}

/* The file being written (OUT.tmp, or the shared file of a part). */
static const char *wpath(const mk_gguf_w *w) { return w->shared ? w->shared : w->od.tmp_path; }

/* Open the file (`flags`) and write the header at its start. */
static mk_status open_header(mk_gguf_w *w, int flags)
{
    mk_buf h = {0};
    mk_gguf_w_header(w, &h);
    if (h.failed) {
        mk_buf_free(&h);
        return MK_ERR_NOMEM;
    }
    mk_status s = MK_OK;
    w->fd = open(wpath(w), flags | O_CLOEXEC, 0644);
    if (w->fd < 0) s = mk_error(MK_ERR_IO, "%s: cannot create: %s", wpath(w), strerror(errno));
    if (s == MK_OK) s = mk_write_all(w->fd, h.data, h.len, wpath(w));
    w->pos = w->data0 = h.len;
    mk_buf_free(&h);
    return s;
}

mk_status mk_gguf_w_begin(mk_gguf_w *w, const char *out, bool force)
{
    MK_TRY(mk_outdir_begin(&w->od, out, true, force, false));
    w->begun = true;
    return open_header(w, O_WRONLY | O_CREAT | O_TRUNC);
}

/* The whole file at its final size (the padding between tensors reads as zeros), for
 * mk_gguf_w_at. */
static mk_status size_whole(mk_gguf_w *w)
{
    if (ftruncate(w->fd, (off_t)(w->data0 + w->data_size)) != 0)
        return mk_error(MK_ERR_IO, "%s: cannot size it to %llu bytes: %s", wpath(w),
                        (unsigned long long)(w->data0 + w->data_size), strerror(errno));
    w->random = true;
    w->pos = w->data0 + w->data_size;
    return MK_OK;
}

mk_status mk_gguf_w_begin_at(mk_gguf_w *w, const char *out, bool force)
{
    MK_TRY(mk_gguf_w_begin(w, out, force));
    return size_whole(w);
}

mk_status mk_gguf_w_begin_shared(mk_gguf_w *w, const char *path)
{
    if (!(w->shared = mk_strdup(path))) return MK_ERR_NOMEM;
    /* O_CREAT without O_TRUNC: the other parts' bytes stay; every part writes the same header */
    MK_TRY(open_header(w, O_WRONLY | O_CREAT));
    return size_whole(w);
}

mk_status mk_gguf_w_sync(mk_gguf_w *w)
{
    if (fsync(w->fd) != 0) return mk_error(MK_ERR_IO, "%s: fsync: %s", wpath(w), strerror(errno));
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0) return mk_error(MK_ERR_IO, "%s: close: %s", wpath(w), strerror(errno));
    return MK_OK;
}

mk_status mk_gguf_w_at(mk_gguf_w *w, uint64_t i, uint64_t off, const void *p, size_t len)
{
    if (!w->random || i >= w->n_tensors || off > w->nbytes[i] || len > w->nbytes[i] - off)
        MK_BUG("GGUF data outside its declared tensor");
    const char *c = p;
    uint64_t at = w->data0 + w->offs[i] + off;
    while (len) {
        ssize_t k = pwrite(w->fd, c, len, (off_t)at);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return mk_error(MK_ERR_IO, "%s: write: %s", wpath(w), k < 0 ? strerror(errno) : "no progress");
        __atomic_add_fetch(&w->placed, (uint64_t)k, __ATOMIC_RELAXED);
        c += k;
        at += (uint64_t)k;
        len -= (size_t)k;
    }
    return MK_OK;
}

mk_status mk_gguf_w_data(mk_gguf_w *w, const void *p, size_t len)
{
    static const char zeros[MK_GGUF_ALIGN];
    const char *c = p;
    while (len) {
        if (w->next >= w->n_tensors) MK_BUG("GGUF data past the declared tensors");
        uint64_t left = w->nbytes[w->next] - w->done;
        size_t k = len < left ? len : (size_t)left;
        MK_TRY(mk_write_all(w->fd, c, k, w->od.tmp_path));
        w->pos += k;
        w->done += k;
        c += k;
        len -= k;
        if (w->done == w->nbytes[w->next]) {
            size_t pad = (size_t)(align_up(w->nbytes[w->next]) - w->nbytes[w->next]);
            MK_TRY(mk_write_all(w->fd, zeros, pad, w->od.tmp_path));
            w->pos += pad;
            w->next++;
            w->done = 0;
        }
    }
    return MK_OK;
}

mk_status mk_gguf_w_commit(mk_gguf_w *w)
{
    uint64_t all = 0;
    for (uint64_t i = 0; w->random && i < w->n_tensors; i++) all += w->nbytes[i];
    if (w->random ? __atomic_load_n(&w->placed, __ATOMIC_RELAXED) != all : w->next != w->n_tensors)
        MK_BUG("GGUF file committed before all its tensor data");
    MK_TRY(mk_gguf_w_sync(w));
    MK_TRY(mk_outdir_commit(&w->od));
    w->committed = true;
    return MK_OK;
}

void mk_gguf_w_free(mk_gguf_w *w)
{
    if (w->fd >= 0) close(w->fd);
    if (w->begun && !w->committed) mk_outdir_abort(&w->od);
    mk_buf_free(&w->kv);
    mk_buf_free(&w->ti);
    free(w->nbytes);
    free(w->offs);
    free(w->shared);
    mk_gguf_w_init(w);
}
