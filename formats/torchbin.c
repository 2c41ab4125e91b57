/* torchbin.c - see torchbin.h: the two containers (torch/serialization.py: _save writes the
 * zip archive, _legacy_save the stream), tensor views checked against their storages, and
 * the source. */
#include "torchbin.h"
#include "modeldir.h"
#include "safetensors.h"
#include "sniff.h"
#include "torchbin_int.h"

#include "../core/mk_io.h"
#include "../core/mk_json.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAME 1024 /* bytes of a tensor name */

/* _legacy_save: MAGIC_NUMBER = 0x1950a86a20f9469cfc6c (a LONG1 of 10 bytes, little-endian),
 * PROTOCOL_VERSION = 1001 */
static const uint8_t LEGACY_MAGIC[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
#define LEGACY_PROTOCOL 1001

static uint64_t le64(const uint8_t *p)
{
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--) x = x << 8 | p[i];
    return x;
}

static mk_status in_read(const mk_tb_input *in, const char *what, uint64_t off, void *dst, size_t len)
{
    if (off > in->size || len > in->size - off)
        return mk_error(MK_ERR_FORMAT, "%s: %zu bytes at byte %llu run past the end of the file (%llu bytes; truncated?)", what,
                        len, (unsigned long long)off, (unsigned long long)in->size);
    return in->read(in->ctx, off, dst, len);
}

void mk_tb_file_free(mk_tb_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) free(f->t[i].name);
    free(f->t);
    free(f->v);
    memset(f, 0, sizeof *f);
}

/* ---- tensors: the state dict's entries, each view checked against its storage ----------- */

static bool contiguous(const tb_tensor *t)
{
    uint64_t want = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->size[d] == 0) return true; /* no elements: nothing to read */
        if (t->size[d] != 1 && (uint64_t)t->stride[d] != want) return false;
        want *= (uint64_t)t->size[d];     /* <= numel, checked before */
    }
    return true;
}

/* Distinct indices reach distinct elements: sorted by stride, each dimension (of size > 1)
 * steps over everything the smaller ones cover. Rules out expand (stride 0) and overlapping
 * as_strided views, and bounds the elements read by the storage's size. */
static bool non_overlapping(const tb_tensor *t)
{
    int idx[MK_MAX_DIMS], n = 0;
    for (int d = 0; d < t->ndim; d++)
        if (t->size[d] > 1) idx[n++] = d;
    for (int a = 1; a < n; a++) /* insertion sort by stride */
        for (int b = a; b > 0 && t->stride[idx[b]] < t->stride[idx[b - 1]]; b--) {
            int x = idx[b];
            idx[b] = idx[b - 1];
            idx[b - 1] = x;
        }
    for (int k = 0; k < n; k++) {
        if (t->stride[idx[k]] < 1) return false;
        if (k) {
            uint64_t span;
            if (!mk_mul_u64((uint64_t)t->stride[idx[k - 1]], (uint64_t)t->size[idx[k - 1]], &span)) return false;
            if ((uint64_t)t->stride[idx[k]] < span) return false;
        }
    }
    return true;
}

static mk_status build_tensor(const tb_pickle *p, const char *what, const char *name, const tb_tensor *t,
                              mk_tensor_info *info, mk_tb_view *view)
{
    const tb_storage *st = &p->st[t->storage];
    if (t->type->dtype == MK_DTYPE_NONE)
        return mk_error(MK_ERR_UNSUPPORTED,
                        "%s: tensor %s: dtype %s is not supported (float64/32/16, bfloat16, float8_e4m3fn/e5m2, "
                        "integer and bool tensors are)",
                        what, name, t->type->torch);
    if (t->flagged)
        return mk_error(MK_ERR_UNSUPPORTED,
                        "%s: tensor %s: has its conjugate or negative bit set (save it after .resolve_conj().resolve_neg())",
                        what, name);
    info->dtype = t->type->dtype;
    info->ndim = t->ndim;
    memcpy(info->shape, t->size, sizeof t->size);
    MK_TRY(mk_tensor_info_finish(info));
    uint64_t es = t->type->size, end;
    if (info->numel == 0) {
        /* no element is read; the offset must still be inside the storage */
        if (!mk_mul_u64(t->offset, es, &end) || end > st->bytes)
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s: storage offset %llu is past the end of storage '%.*s' (%llu bytes)",
                            what, name, (unsigned long long)t->offset, (int)st->key_len,
                            (const char *)p->buf + st->key_off, (unsigned long long)st->bytes);
    } else {
        if (!non_overlapping(t))
            return mk_error(MK_ERR_UNSUPPORTED,
                            "%s: tensor %s: its strides make elements overlap (an expanded or as_strided view); "
                            "save it after .contiguous()",
                            what, name);
        /* the last element's index: offset + sum (size - 1) x stride */
        uint64_t last = t->offset;
        bool ok = true;
        for (int d = 0; d < t->ndim && ok; d++) {
            uint64_t step;
            ok = mk_mul_u64((uint64_t)(t->size[d] - 1), (uint64_t)t->stride[d], &step) && mk_add_u64(last, step, &last);
        }
        if (!ok || !mk_add_u64(last, 1, &end) || !mk_mul_u64(end, es, &end) || end > st->bytes)
            return mk_error(MK_ERR_FORMAT,
                            "%s: tensor %s: %s elements from storage offset %llu with strides reach past the end of "
                            "storage '%.*s' (%llu bytes)",
                            what, name, t->type->torch, (unsigned long long)t->offset, (int)st->key_len,
                            (const char *)p->buf + st->key_off, (unsigned long long)st->bytes);
    }
    view->base = st->base;
    view->storage_bytes = st->bytes;
    view->offset = t->offset;
    memcpy(view->stride, t->stride, sizeof t->stride);
    view->contiguous = contiguous(t);
    info->file = 0;
    info->offset = st->base + t->offset * es; /* <= base + storage bytes */
    return MK_OK;
}

/* The pickle's result must be a dict of name -> tensor. */
static mk_status build_state_dict(const tb_pickle *p, const char *what, uint32_t root, mk_tb_file *f)
{
    const tb_value *d = &p->v[root];
    if (d->type != TV_DICT)
        return mk_error(MK_ERR_FORMAT, "%s: holds %s, not a state dict (a dict of tensors): mergekit-c reads state dicts", what,
                        tb_value_type_name(p, root));
    size_t n = d->n / 2;
    f->t = mk_calloc(n ? n : 1, sizeof *f->t);
    f->v = mk_calloc(n ? n : 1, sizeof *f->v);
    if (!f->t || !f->v) return MK_ERR_NOMEM;
    for (size_t e = 0; e < n; e++) {
        uint32_t k = d->u.items[2 * e], v = d->u.items[2 * e + 1];
        const tb_value *key = &p->v[k];
        if (key->type != TV_STR)
            return mk_error(MK_ERR_FORMAT, "%s: state dict key %zu is %s, expected a tensor name", what, e,
                            tb_value_type_name(p, k));
        const char *name = (const char *)p->buf + key->u.s.off;
        size_t len = key->u.s.len;
        if (len == 0 || len > MAX_NAME || memchr(name, 0, len) || !mk_utf8_check(name, len))
            return mk_error(MK_ERR_FORMAT, "%s: state dict key %zu is not a tensor name (empty, over %d bytes, NUL or not UTF-8)",
                            what, e, MAX_NAME);
        mk_tensor_info *info = &f->t[f->n];
        if (!(info->name = mk_strndup(name, len))) return MK_ERR_NOMEM;
        f->n++;
        if (p->v[v].type != TV_TENSOR)
            return mk_error(MK_ERR_FORMAT,
                            "%s: entry %s is %s, not a tensor (mergekit-c reads plain state dicts: name -> tensor)", what,
                            info->name, tb_value_type_name(p, v));
        MK_TRY(build_tensor(p, what, info->name, &p->tn[p->v[v].u.aux], info, &f->v[e]));
    }
    mk_name_index ix;
    size_t dup = 0;
    mk_status s = mk_name_index_build(&ix, f->t, f->n, &dup);
    mk_name_index_free(&ix);
    if (s == MK_ERR_FORMAT) return mk_error(MK_ERR_FORMAT, "%s: the state dict names tensor %s twice", what, f->t[dup].name);
    return s;
}

/* ---- the zip archive ----------------------------------------------------------------------- */

static mk_status parse_zip(const mk_tb_input *in, const char *what, mk_tb_file *f)
{
    tb_zip z;
    MK_TRY(tb_zip_open(in, what, &z));
    tb_pickle p = {0};
    uint8_t *pkl = NULL, *rec = NULL;
    char *prefix = NULL, *pwhat = NULL, *ename = NULL;
    size_t len = 0;
    mk_status s = MK_OK;
    /* PREFIX/data.pkl: PREFIX is the archive's one top-level folder (torch names it after
     * the file; PyTorchStreamReader takes it from the first entry) */
    for (size_t k = 0; k < z.n && s == MK_OK; k++) {
        const char *nm = z.e[k].name, *slash = strchr(nm, '/');
        if (!slash || strcmp(slash, "/data.pkl") != 0) continue;
        if (prefix)
            s = mk_error(MK_ERR_FORMAT, "%s: the archive holds two object pickles, %s/data.pkl and %s", what, prefix, nm);
        else if (!(prefix = mk_strndup(nm, (size_t)(slash - nm))))
            s = MK_ERR_NOMEM;
    }
    if (s == MK_OK && !prefix)
        s = mk_error(MK_ERR_FORMAT, "%s: a zip archive without FOLDER/data.pkl: not a torch.save checkpoint", what);
    if (s == MK_OK) {
        const tb_zentry *e = NULL;
        const char *const vnames[] = {"version", ".data/version"};
        for (int k = 0; k < 2 && !e && s == MK_OK; k++) {
            free(ename);
            ename = mk_asprintf("%s/%s", prefix, vnames[k]);
            if (!ename) s = MK_ERR_NOMEM;
            else e = tb_zip_find(&z, ename);
        }
        if (s == MK_OK && !e)
            s = mk_error(MK_ERR_FORMAT, "%s: no %s/version record: not a torch.save checkpoint", what, prefix);
        if (s == MK_OK) s = tb_zip_read(in, what, e, 64, &rec, &len);
        /* a decimal serialization format version ("3\n") */
        size_t digits = s == MK_OK ? strspn((const char *)rec, "0123456789") : 0;
        if (s == MK_OK && (digits == 0 || digits > 4 || strspn((const char *)rec + digits, "\n") != len - digits))
            s = mk_error(MK_ERR_FORMAT, "%s: %s is not a version number", what, e->name);
        free(rec);
        rec = NULL;
    }
    if (s == MK_OK) {
        free(ename);
        ename = mk_asprintf("%s/byteorder", prefix);
        const tb_zentry *e = ename ? tb_zip_find(&z, ename) : NULL;
        if (!ename) s = MK_ERR_NOMEM;
        /* absent before torch 1.10: little-endian */
        else if (e) s = tb_zip_read(in, what, e, 64, &rec, &len);
        if (s == MK_OK && rec && !(len == 6 && memcmp(rec, "little", 6) == 0))
            s = mk_error(len == 3 && memcmp(rec, "big", 3) == 0 ? MK_ERR_UNSUPPORTED : MK_ERR_FORMAT,
                         "%s: %s is '%.10s'; only little-endian checkpoints are read", what, e->name, (const char *)rec);
    }
    if (s == MK_OK) {
        free(ename);
        ename = mk_asprintf("%s/data.pkl", prefix);
        pwhat = mk_asprintf("%s: %s/data.pkl", what, prefix);
        if (!ename || !pwhat) s = MK_ERR_NOMEM;
        else s = tb_zip_read(in, what, tb_zip_find(&z, ename), MK_TB_MAX_PICKLE, &pkl, &len);
    }
    uint32_t root = 0;
    if (s == MK_OK) {
        p.buf = pkl;
        p.len = len;
        p.what = pwhat;
        p.pid_arity = 5;
        size_t end = 0;
        s = tb_pickle_run(&p, 0, &end, &root);
        if (s == MK_OK && end != len)
            s = mk_error(MK_ERR_FORMAT, "%s: %zu bytes after the pickle's STOP", pwhat, len - end);
    }
    /* each storage is PREFIX/data/KEY, stored, exactly its declared size */
    for (size_t i = 0; i < p.nst && s == MK_OK; i++) {
        tb_storage *st = &p.st[i];
        free(ename);
        ename = mk_asprintf("%s/data/%.*s", prefix, (int)st->key_len, (const char *)pkl + st->key_off);
        const tb_zentry *e = ename ? tb_zip_find(&z, ename) : NULL;
        if (!ename) s = MK_ERR_NOMEM;
        else if (!e)
            s = mk_error(MK_ERR_FORMAT, "%s: storage '%.*s' has no entry %s", what, (int)st->key_len,
                         (const char *)pkl + st->key_off, ename);
        else if ((s = tb_zip_check_stored(e, what)) != MK_OK) break;
        else if (e->size != st->bytes)
            s = mk_error(MK_ERR_FORMAT, "%s: storage '%.*s' declares %llu bytes (%llu x %s) but entry %s holds %llu", what,
                         (int)st->key_len, (const char *)pkl + st->key_off, (unsigned long long)st->bytes,
                         (unsigned long long)st->numel, st->type->torch, e->name, (unsigned long long)e->size);
        else {
            st->base = e->data_off;
            st->located = true;
        }
    }
    if (s == MK_OK) s = build_state_dict(&p, pwhat, root, f);
    tb_pickle_free(&p);
    tb_zip_free(&z);
    free(pkl);
    free(rec);
    free(prefix);
    free(pwhat);
    free(ename);
    return s;
}

/* ---- the legacy stream ------------------------------------------------------------------- */

/* Value of key `name` in dict d, or 0 (value indices are never 0 for a dict's items: the
 * dict itself comes first). */
static uint32_t dict_get(const tb_pickle *p, uint32_t d, const char *name)
{
    const tb_value *x = &p->v[d];
    for (uint32_t i = 0; i + 1 < x->n; i += 2) {
        const tb_value *k = &p->v[x->u.items[i]];
        if (k->type == TV_STR && k->u.s.len == strlen(name) && memcmp(p->buf + k->u.s.off, name, k->u.s.len) == 0)
            return x->u.items[i + 1];
    }
    return 0;
}

/* The five pickles; the storages follow them at *data_start. */
static mk_status legacy_pickles(tb_pickle *p, const char *what, uint32_t *root, uint32_t *keys, size_t *data_start)
{
    size_t pos = 0, end = 0;
    uint32_t v = 0;
    MK_TRY(tb_pickle_run(p, pos, &end, &v));
    const tb_value *m = &p->v[v];
    if (m->type != TV_BIGINT || m->u.s.len != sizeof LEGACY_MAGIC || memcmp(p->buf + m->u.s.off, LEGACY_MAGIC, sizeof LEGACY_MAGIC))
        return mk_error(MK_ERR_FORMAT, "%s: starts with a pickle but not torch's magic number: not a PyTorch checkpoint", what);
    pos = end;
    MK_TRY(tb_pickle_run(p, pos, &end, &v));
    if (p->v[v].type != TV_INT || p->v[v].u.i != LEGACY_PROTOCOL)
        return mk_error(MK_ERR_FORMAT, "%s: legacy protocol version is not %d", what, LEGACY_PROTOCOL);
    pos = end;
    MK_TRY(tb_pickle_run(p, pos, &end, &v));
    if (p->v[v].type != TV_DICT) return mk_error(MK_ERR_FORMAT, "%s: sys_info is %s, expected a dict", what, tb_value_type_name(p, v));
    uint32_t le = dict_get(p, v, "little_endian");
    if (le && !(p->v[le].type == TV_BOOL && p->v[le].u.i == 1))
        return mk_error(MK_ERR_UNSUPPORTED, "%s: written on a big-endian machine; only little-endian checkpoints are read", what);
    pos = end;
    MK_TRY(tb_pickle_run(p, pos, &end, root));
    pos = end;
    MK_TRY(tb_pickle_run(p, pos, &end, keys));
    if (p->v[*keys].type != TV_LIST)
        return mk_error(MK_ERR_FORMAT, "%s: the storage key list is %s", what, tb_value_type_name(p, *keys));
    *data_start = end;
    return MK_OK;
}

static mk_status parse_legacy(const mk_tb_input *in, const char *what, mk_tb_file *f)
{
    /* read as much of the file as the pickles need: start small, double on running out */
    uint64_t cap = in->size < MK_TB_MAX_PICKLE ? in->size : MK_TB_MAX_PICKLE;
    size_t have = (size_t)(cap < (1u << 20) ? cap : (1u << 20));
    tb_pickle p = {0};
    uint8_t *buf = NULL;
    uint32_t root = 0, keys = 0;
    size_t data = 0;
    mk_status s;
    for (;;) {
        tb_pickle_free(&p);
        free(buf);
        buf = mk_malloc(have ? have : 1);
        if (!buf) return MK_ERR_NOMEM;
        s = in_read(in, what, 0, buf, have);
        if (s != MK_OK) break;
        p.buf = buf;
        p.len = have;
        p.what = what;
        p.pid_arity = 6;
        s = legacy_pickles(&p, what, &root, &keys, &data);
        if (s == MK_OK || !p.hit_end || have == cap) break;
        have = cap - have < have ? (size_t)cap : have * 2;
    }
    if (s != MK_OK && p.hit_end && have == cap && cap < in->size)
        s = mk_error(MK_ERR_FORMAT, "%s: the pickles are longer than %llu bytes (the limit)", what,
                     (unsigned long long)MK_TB_MAX_PICKLE);
    /* the storages, in the order of the key list: an 8-byte element count, then the bytes */
    uint64_t pos = data;
    const tb_value *kl = s == MK_OK ? &p.v[keys] : NULL;
    for (uint32_t i = 0; s == MK_OK && i < kl->n; i++) {
        const tb_value *k = &p.v[kl->u.items[i]];
        long si = k->type == TV_STR ? tb_pickle_find_storage(&p, buf + k->u.s.off, k->u.s.len) : -1;
        if (si < 0) {
            s = mk_error(MK_ERR_FORMAT, "%s: storage key list entry %u is not a storage of the pickle", what, i);
            break;
        }
        tb_storage *st = &p.st[si];
        uint8_t cnt[8];
        if (st->located) {
            s = mk_error(MK_ERR_FORMAT, "%s: storage '%.*s' is listed twice", what, (int)st->key_len, (const char *)buf + st->key_off);
            break;
        }
        s = in_read(in, what, pos, cnt, 8);
        if (s != MK_OK) break;
        if (le64(cnt) != st->numel) {
            s = mk_error(MK_ERR_FORMAT, "%s: storage '%.*s' at byte %llu holds %llu elements, the pickle says %llu", what,
                         (int)st->key_len, (const char *)buf + st->key_off, (unsigned long long)pos,
                         (unsigned long long)le64(cnt), (unsigned long long)st->numel);
            break;
        }
        if (in->size - pos - 8 < st->bytes) {
            s = mk_error(MK_ERR_FORMAT, "%s: storage '%.*s' needs %llu bytes at byte %llu; the file ends at %llu (truncated?)",
                         what, (int)st->key_len, (const char *)buf + st->key_off, (unsigned long long)st->bytes,
                         (unsigned long long)(pos + 8), (unsigned long long)in->size);
            break;
        }
        st->base = pos + 8;
        st->located = true;
        pos += 8 + st->bytes;
    }
    for (size_t i = 0; s == MK_OK && i < p.nst; i++)
        if (!p.st[i].located)
            s = mk_error(MK_ERR_FORMAT, "%s: storage '%.*s' is not in the storage key list", what, (int)p.st[i].key_len,
                         (const char *)buf + p.st[i].key_off);
    if (s == MK_OK && pos != in->size)
        s = mk_error(MK_ERR_FORMAT, "%s: %llu bytes after the last storage", what, (unsigned long long)(in->size - pos));
    if (s == MK_OK) s = build_state_dict(&p, what, root, f);
    tb_pickle_free(&p);
    free(buf);
    return s;
}

mk_status mk_tb_parse(const mk_tb_input *in, const char *what, mk_tb_file *f)
{
    memset(f, 0, sizeof *f);
    uint8_t head[265] = {0};
    size_t n = (size_t)(in->size < sizeof head ? in->size : sizeof head);
    if (n) MK_TRY(in->read(in->ctx, 0, head, n));
    mk_status s;
    if (n >= 4 && memcmp(head, "PK\3\4", 4) == 0) {
        s = parse_zip(in, what, f);
    } else if (n >= 1 && head[0] == 0x80) {
        f->legacy = true;
        s = parse_legacy(in, what, f);
    } else if (n >= 262 && memcmp(head + 257, "ustar", 5) == 0) {
        s = mk_error(MK_ERR_UNSUPPORTED, "%s: a tar archive (the PyTorch 0.1-0.3 checkpoint format) is not supported", what);
    } else {
        char kind[160];
        s = mk_error(MK_ERR_FORMAT, "%s: not a PyTorch checkpoint (%s)", what,
                     mk_sniff(head, n < MK_SNIFF_BYTES ? n : MK_SNIFF_BYTES, in->size, true, kind, sizeof kind));
    }
    if (s != MK_OK) mk_tb_file_free(f);
    return s;
}

/* ---- views: gathering a tensor's elements -------------------------------------------------- */

/* Bytes that a read may spend beyond what it uses (reading a span whole rather than element by
 * element): twice the useful bytes plus this much. */
#define GATHER_SLACK 256u

/* Copy n elements of size es, src stepping by `step` elements. */
static void pick(uint8_t *dst, const uint8_t *src, uint64_t n, uint64_t step, unsigned es)
{
    switch (es) {
    case 1:
        for (uint64_t j = 0; j < n; j++) dst[j] = src[j * step];
        break;
    case 2:
        for (uint64_t j = 0; j < n; j++) memcpy(dst + 2 * j, src + 2 * j * step, 2);
        break;
    case 4:
        for (uint64_t j = 0; j < n; j++) memcpy(dst + 4 * j, src + 4 * j * step, 4);
        break;
    default:
        for (uint64_t j = 0; j < n; j++) memcpy(dst + (size_t)es * j, src + (size_t)es * j * step, es);
        break;
    }
}

mk_status mk_tb_gather(const mk_tb_input *in, const mk_tensor_info *t, const mk_tb_view *v, void *dst)
{
    unsigned es = mk_dtype_size(t->dtype);
    if (t->numel == 0) return MK_OK;
    if (v->contiguous) return in->read(in->ctx, v->base + v->offset * es, dst, (size_t)t->nbytes);
    /* bounds were checked by the parser: every element lies in [offset, last] of the storage */
    int nd = t->ndim;
    uint64_t last = v->offset;
    for (int d = 0; d < nd; d++) last += (uint64_t)(t->shape[d] - 1) * (uint64_t)v->stride[d];
    uint64_t span = (last - v->offset + 1) * es;
    uint64_t cols = (uint64_t)t->shape[nd - 1], cstep = (uint64_t)v->stride[nd - 1], rows = t->numel / cols;
    uint8_t *out = dst, *buf = NULL;
    int64_t idx[MK_MAX_DIMS] = {0};
    mk_status s = MK_OK;
    bool whole = span <= 2 * t->nbytes + GATHER_SLACK;
    uint64_t row_span = ((cols - 1) * cstep + 1) * es;
    bool by_row = !whole && row_span <= 2 * cols * es + GATHER_SLACK;
    if (whole || by_row) {
        buf = mk_malloc((size_t)(whole ? span : row_span));
        if (!buf) return MK_ERR_NOMEM;
    }
    if (whole) s = in->read(in->ctx, v->base + v->offset * es, buf, (size_t)span);
    for (uint64_t r = 0; r < rows && s == MK_OK; r++) {
        uint64_t first = 0; /* the row's first element, relative to the storage offset */
        for (int d = 0; d < nd - 1; d++) first += (uint64_t)idx[d] * (uint64_t)v->stride[d];
        uint8_t *o = out + r * cols * es;
        if (whole) {
            pick(o, buf + first * es, cols, cstep, es);
        } else if (by_row) {
            s = in->read(in->ctx, v->base + (v->offset + first) * es, buf, (size_t)row_span);
            if (s == MK_OK) pick(o, buf, cols, cstep, es);
        } else {
            for (uint64_t j = 0; j < cols && s == MK_OK; j++)
                s = in->read(in->ctx, v->base + (v->offset + first + j * cstep) * es, o + j * es, es);
        }
        for (int d = nd - 2; d >= 0; d--) { /* next row: odometer over the leading dimensions */
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    free(buf);
    return s;
}

/* ---- the source ----------------------------------------------------------------------------- */

/* Non-contiguous tensors are gathered whole and kept, so the row chunks of a transposed
 * matrix do not each read the whole storage; two at a time, shared between threads. Memory:
 * up to two such tensors, plus the span of the one being gathered. */
#define TB_CACHE 2

typedef struct tb_cached {
    size_t tensor;
    uint8_t *data;
    int refs;
    uint64_t tick;
    bool valid;
} tb_cached;

typedef struct tb_source {
    mk_rfile *files;
    mk_tb_input *in; /* [n_files], reading files[k] */
    size_t n_files;
    mk_tb_view *views; /* [n_tensors] */
    mk_modeldir aux;
    pthread_mutex_t mu;
    bool mu_ok;
    tb_cached cache[TB_CACHE];
    uint64_t tick;
} tb_source;

static mk_status rfile_read(void *ctx, uint64_t off, void *dst, size_t len) { return mk_rfile_read(ctx, off, dst, len); }

static mk_status cache_get(mk_source *s, size_t i, tb_cached **out, uint8_t **temp)
{
    tb_source *tb = s->impl;
    *out = NULL;
    *temp = NULL;
    /* the lock is held while gathering: threads reading chunks of the same view wait for
     * one gather instead of each making its own */
    pthread_mutex_lock(&tb->mu);
    for (int e = 0; e < TB_CACHE; e++)
        if (tb->cache[e].valid && tb->cache[e].tensor == i) {
            tb->cache[e].refs++;
            tb->cache[e].tick = ++tb->tick;
            *out = &tb->cache[e];
            pthread_mutex_unlock(&tb->mu);
            return MK_OK;
        }
    const mk_tensor_info *t = &s->tensors[i];
    uint8_t *buf = mk_malloc((size_t)t->nbytes);
    mk_status st = buf ? mk_tb_gather(&tb->in[t->file], t, &tb->views[i], buf) : MK_ERR_NOMEM;
    if (st != MK_OK) {
        pthread_mutex_unlock(&tb->mu);
        free(buf);
        return st;
    }
    tb_cached *victim = NULL;
    for (int e = 0; e < TB_CACHE; e++) {
        tb_cached *c = &tb->cache[e];
        if (c->refs) continue;
        if (!victim || !c->valid || (victim->valid && c->tick < victim->tick)) victim = c;
    }
    if (victim) {
        free(victim->data);
        *victim = (tb_cached){i, buf, 1, ++tb->tick, true};
        *out = victim;
    } else {
        *temp = buf; /* every entry in use: this read keeps its own copy */
    }
    pthread_mutex_unlock(&tb->mu);
    return MK_OK;
}

static mk_status tb_read(mk_source *s, size_t i, uint64_t off, uint64_t len, void *dst)
{
    tb_source *tb = s->impl;
    const mk_tensor_info *t = &s->tensors[i];
    if (tb->views[i].contiguous) return mk_rfile_read(&tb->files[t->file], t->offset + off, dst, (size_t)len);
    tb_cached *c = NULL;
    uint8_t *temp = NULL;
    MK_TRY(cache_get(s, i, &c, &temp));
    memcpy(dst, (c ? c->data : temp) + off, (size_t)len);
    free(temp);
    if (c) {
        pthread_mutex_lock(&tb->mu);
        c->refs--;
        pthread_mutex_unlock(&tb->mu);
    }
    return MK_OK;
}

static void tb_prefetch(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    tb_source *tb = s->impl;
    const mk_tensor_info *t = &s->tensors[i];
    if (tb->views[i].contiguous) mk_rfile_willneed(&tb->files[t->file], t->offset + off, len);
}

static mk_status tb_aux_read(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    tb_source *tb = s->impl;
    return mk_modeldir_read(&tb->aux, name, cap, data, len);
}

static const char *const *tb_aux_list(mk_source *s)
{
    tb_source *tb = s->impl;
    return (const char *const *)tb->aux.names;
}

static void tb_close(mk_source *s)
{
    if (!s) return;
    tb_source *tb = s->impl;
    if (tb) {
        for (size_t k = 0; k < tb->n_files; k++) mk_rfile_close(&tb->files[k]);
        free(tb->files);
        free(tb->in);
        free(tb->views);
        for (int e = 0; e < TB_CACHE; e++) free(tb->cache[e].data);
        if (tb->mu_ok) pthread_mutex_destroy(&tb->mu);
        mk_modeldir_free(&tb->aux);
        free(tb);
    }
    mk_source_free_fields(s);
}

static const mk_source_ops tb_ops = {tb_read, NULL, NULL, tb_prefetch, tb_aux_read, tb_aux_list, tb_close, NULL};

#define TB_INDEX "pytorch_model.bin.index.json"
#define TB_SINGLE "pytorch_model.bin"

static bool torch_name(const char *path)
{
    return mk_str_ends_with(path, ".bin") || mk_str_ends_with(path, ".pt") || mk_str_ends_with(path, ".pth");
}

bool mk_torchbin_probe(const char *path)
{
    if (mk_is_dir(path)) {
        char *a = mk_path_join(path, TB_INDEX), *b = mk_path_join(path, TB_SINGLE);
        bool ok = (a && mk_path_exists(a)) || (b && mk_path_exists(b));
        free(a);
        free(b);
        return ok;
    }
    if (!mk_is_file(path)) return false;
    if (torch_name(path)) return true;
    /* by content: a zip archive, or a pickle of torch's magic number */
    mk_rfile f;
    if (mk_rfile_open(&f, path) != MK_OK) {
        mk_error_clear();
        return false;
    }
    uint8_t h[4 + sizeof LEGACY_MAGIC] = {0};
    bool ok = f.size >= sizeof h && mk_rfile_read(&f, 0, h, sizeof h) == MK_OK &&
              (memcmp(h, "PK\3\4", 4) == 0 ||
               (h[0] == 0x80 && h[2] == 0x8a && h[3] == sizeof LEGACY_MAGIC && memcmp(h + 4, LEGACY_MAGIC, sizeof LEGACY_MAGIC) == 0));
    mk_rfile_close(&f);
    mk_error_clear();
    return ok;
}

/* Open and parse one checkpoint file as data file k of the source. */
static mk_status open_file(tb_source *tb, size_t k, const char *path, mk_tb_file *pf)
{
    MK_TRY(mk_rfile_open(&tb->files[k], path));
    tb->n_files = k + 1;
    tb->in[k] = (mk_tb_input){rfile_read, &tb->files[k], tb->files[k].size};
    return mk_tb_parse(&tb->in[k], path, pf);
}

mk_status mk_torchbin_open(const char *path, mk_source **out)
{
    *out = NULL;
    mk_source *s = mk_calloc(1, sizeof *s);
    tb_source *tb = mk_calloc(1, sizeof *tb);
    if (!s || !tb) {
        free(s);
        free(tb);
        return MK_ERR_NOMEM;
    }
    s->ops = &tb_ops;
    s->impl = tb;
    s->path = mk_strdup(path);
    s->kind = mk_strdup("pytorch");
    mk_status r = s->path && s->kind ? MK_OK : MK_ERR_NOMEM;
    if (r == MK_OK) {
        r = pthread_mutex_init(&tb->mu, NULL) == 0 ? MK_OK : mk_error(MK_ERR_NOMEM, "cannot create a lock");
        tb->mu_ok = r == MK_OK;
    }
    mk_st_index ix = {0};
    mk_tb_file *pf = NULL;
    size_t n_pf = 0;
    char *index_path = NULL, *dir = NULL;
    if (r == MK_OK && !mk_is_dir(path)) {
        dir = mk_path_dirname(path);
        r = dir ? mk_modeldir_open(&tb->aux, dir, false) : MK_ERR_NOMEM;
        n_pf = 1;
        pf = mk_calloc(1, sizeof *pf);
        tb->files = mk_calloc(1, sizeof *tb->files);
        tb->in = mk_calloc(1, sizeof *tb->in);
        s->files = mk_calloc(1, sizeof *s->files);
        if (r == MK_OK && (!pf || !tb->files || !tb->in || !s->files)) r = MK_ERR_NOMEM;
        if (r == MK_OK && !(s->files[0] = mk_strdup(path))) r = MK_ERR_NOMEM;
        if (r == MK_OK) {
            s->n_files = 1;
            r = open_file(tb, 0, path, &pf[0]);
        }
    } else if (r == MK_OK) {
        r = mk_modeldir_open(&tb->aux, path, true);
        index_path = mk_path_join(path, TB_INDEX);
        if (r == MK_OK && !index_path) r = MK_ERR_NOMEM;
        char *text = NULL;
        size_t len = 0;
        if (r == MK_OK && mk_path_exists(index_path)) {
            r = mk_modeldir_read(&tb->aux, TB_INDEX, 64u << 20, &text, &len);
            if (r == MK_OK) r = mk_st_index_parse_ext(text, len, index_path, ".bin", &ix);
        } else if (r == MK_OK) {
            /* one file: an index of one shard that lists everything in it */
            ix.shards = mk_calloc(1, sizeof *ix.shards);
            if (!ix.shards || !(ix.shards[0] = mk_strdup(TB_SINGLE))) r = MK_ERR_NOMEM;
            else ix.n_shards = 1;
        }
        free(text);
        n_pf = ix.n_shards;
        pf = mk_calloc(n_pf ? n_pf : 1, sizeof *pf);
        tb->files = mk_calloc(n_pf ? n_pf : 1, sizeof *tb->files);
        tb->in = mk_calloc(n_pf ? n_pf : 1, sizeof *tb->in);
        s->files = mk_calloc(n_pf ? n_pf : 1, sizeof *s->files);
        if (r == MK_OK && (!pf || !tb->files || !tb->in || !s->files)) r = MK_ERR_NOMEM;
        for (size_t k = 0; k < n_pf && r == MK_OK; k++) {
            char *sp = NULL;
            r = mk_modeldir_resolve(&tb->aux, ix.shards[k], &sp);
            if (r != MK_OK) {
                if (ix.names) mk_error_prefix(r, "%s: index lists shard '%s'", index_path, ix.shards[k]);
                else r = mk_error(MK_ERR_FORMAT, "%s: no %s or %s in this folder", path, TB_SINGLE, TB_INDEX);
                break;
            }
            s->files[k] = sp;
            s->n_files++;
            r = open_file(tb, k, sp, &pf[k]);
        }
    }
    /* the tensors, in the index's order (or the one file's) */
    size_t total = 0;
    for (size_t k = 0; k < n_pf && r == MK_OK; k++) total += pf[k].n;
    size_t n = ix.names ? ix.n : total;
    size_t *pick = mk_calloc(n ? n : 1, sizeof *pick);
    uint32_t *shard_of = mk_calloc(n ? n : 1, sizeof *shard_of);
    s->tensors = mk_calloc(n ? n : 1, sizeof *s->tensors);
    tb->views = mk_calloc(n ? n : 1, sizeof *tb->views);
    if (r == MK_OK && (!pick || !shard_of || !s->tensors || !tb->views)) r = MK_ERR_NOMEM;
    if (r == MK_OK && ix.names) {
        const mk_tensor_info **shard_t = mk_calloc(n_pf ? n_pf : 1, sizeof *shard_t);
        size_t *shard_n = mk_calloc(n_pf ? n_pf : 1, sizeof *shard_n);
        r = shard_t && shard_n ? MK_OK : MK_ERR_NOMEM;
        for (size_t k = 0; k < n_pf && r == MK_OK; k++) {
            shard_t[k] = pf[k].t;
            shard_n[k] = pf[k].n;
        }
        if (r == MK_OK) r = mk_st_index_pick(&ix, index_path, shard_t, shard_n, pick);
        for (size_t e = 0; e < n && r == MK_OK; e++) shard_of[e] = ix.shard_of[e];
        free(shard_t);
        free(shard_n);
    } else if (r == MK_OK) {
        for (size_t e = 0; e < n; e++) pick[e] = e; /* one file */
    }
    for (size_t e = 0; e < n && r == MK_OK; e++) {
        uint32_t k = shard_of[e];
        mk_tensor_info *t = &s->tensors[e];
        *t = pf[k].t[pick[e]];
        t->file = k;
        tb->views[e] = pf[k].v[pick[e]];
        if (!(t->name = mk_strdup(pf[k].t[pick[e]].name))) r = MK_ERR_NOMEM;
        else s->n_tensors++;
    }
    free(pick);
    free(shard_of);
    for (size_t k = 0; k < n_pf && pf; k++) mk_tb_file_free(&pf[k]);
    free(pf);
    mk_st_index_free(&ix);
    free(index_path);
    free(dir);
    if (r == MK_OK) r = mk_name_index_build(&s->index, s->tensors, s->n_tensors, NULL);
    if (r != MK_OK) {
        tb_close(s);
        return r;
    }
    *out = s;
    return MK_OK;
}
