/* safetensors.c - see safetensors.h */
#include "safetensors.h"

#include "sniff.h"
#include "modeldir.h"
#include "output_hash.h"

#include "../core/mk_dstream.h"
#include "../core/mk_dwrite.h"
#include "../core/mk_hash.h"
#include "../core/mk_io.h"
#include "../core/mk_json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* dtype names the reference knows that mergekit-c does not compute with */
static const char *const st_other_dtypes[] = {"F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ",
                                              "C64"};

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

void mk_st_header_free(mk_st_header *h)
{
    if (!h) return;
    for (size_t i = 0; i < h->n; i++) free(h->t[i].name);
    free(h->t);
    for (size_t i = 0; i < h->n_meta; i++) {
        free(h->meta_keys[i]);
        free(h->meta_vals[i]);
    }
    free(h->meta_keys);
    free(h->meta_vals);
    memset(h, 0, sizeof *h);
}

typedef struct span {
    uint64_t begin, end;
    size_t i;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static mk_status parse_uint_array(const mk_json *j, uint32_t node, const char *what, const char *name,
                                  const char *field, uint64_t *vals, int max, int *count)
{
    const mk_json_node *a = mk_json_at(j, node);
    if (a->type != MK_JSON_ARR)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: '%s' is a %s, expected an array", what, name, field,
                        mk_json_type_name(a->type));
    if ((int)a->count > max)
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: '%s' has %u entries (at most %d supported)", what, name,
                        field, a->count, max);
    int k = 0;
    for (uint32_t c = a->first; c; c = mk_json_at(j, c)->next) {
        const mk_json_node *v = mk_json_at(j, c);
        if (v->type != MK_JSON_NUM || !v->is_uint)
            return mk_error(MK_ERR_FORMAT,
                            "%s: tensor %s: '%s' entry %d is not a non-negative integer (found %s%s)", what, name,
                            field, k, v->type == MK_JSON_NUM ? "a number like " : mk_json_type_name(v->type),
                            v->type == MK_JSON_NUM ? (v->d < 0 ? "-1" : "1.0 or 1e3") : "");
        vals[k++] = v->u;
    }
    *count = k;
    return MK_OK;
}

mk_status mk_st_parse(const unsigned char *buf, size_t len, uint64_t file_size, const char *what, mk_st_header *h)
{
    memset(h, 0, sizeof *h);
    if (file_size < 8 || len < 8)
        return mk_error(MK_ERR_FORMAT, "%s: file is %llu bytes, too short for a safetensors header", what,
                        (unsigned long long)file_size);
    uint64_t n = le64(buf);
    if (n > MK_ST_MAX_HEADER)
        return mk_error(MK_ERR_FORMAT, "%s: header length %llu is over the %llu-byte limit", what,
                        (unsigned long long)n, MK_ST_MAX_HEADER);
    if (n > file_size - 8)
        return mk_error(MK_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%llu bytes)", what,
                        (unsigned long long)n, (unsigned long long)file_size);
    if (8 + n > len) return mk_error(MK_ERR_FORMAT, "%s: header is not complete in the bytes given", what);
    h->header_len = n;
    h->data_start = 8 + n;

    mk_json j;
    mk_json_limits lim = {16, (size_t)n / 2 + 16};
    char jwhat[600];
    snprintf(jwhat, sizeof jwhat, "%s: header", what);
    MK_TRY(mk_json_parse(&j, (const char *)buf + 8, (size_t)n, &lim, jwhat));
    mk_status s = MK_OK;
    span *spans = NULL;
    const mk_json_node *root = mk_json_at(&j, 0);
    if (root->type != MK_JSON_OBJ) {
        s = mk_error(MK_ERR_FORMAT, "%s: header is a JSON %s, expected an object", what, mk_json_type_name(root->type));
        goto done;
    }
    uint32_t dup = mk_json_dup_key(&j, 0);
    if (dup) {
        s = mk_error(MK_ERR_FORMAT, "%s: header names '%s' twice", what, mk_json_key(&j, dup));
        goto done;
    }
    h->t = mk_calloc(root->count ? root->count : 1, sizeof *h->t);
    spans = mk_calloc(root->count ? root->count : 1, sizeof *spans);
    if (!h->t || !spans) {
        s = MK_ERR_NOMEM;
        goto done;
    }
    for (uint32_t c = root->first; c; c = mk_json_at(&j, c)->next) {
        const mk_json_node *m = mk_json_at(&j, c);
        const char *key = mk_json_key(&j, c);
        if (strcmp(key, "__metadata__") == 0 && !m->has_nul) {
            if (m->type != MK_JSON_OBJ) {
                s = mk_error(MK_ERR_FORMAT, "%s: __metadata__ is a %s, expected an object of strings", what,
                             mk_json_type_name(m->type));
                goto done;
            }
            h->meta_keys = mk_calloc(m->count ? m->count : 1, sizeof(char *));
            h->meta_vals = mk_calloc(m->count ? m->count : 1, sizeof(char *));
            if (!h->meta_keys || !h->meta_vals) {
                s = MK_ERR_NOMEM;
                goto done;
            }
            for (uint32_t e = m->first; e; e = mk_json_at(&j, e)->next) {
                const mk_json_node *v = mk_json_at(&j, e);
                if (v->type != MK_JSON_STR) {
                    s = mk_error(MK_ERR_FORMAT, "%s: __metadata__ value '%s' is a %s, expected a string", what,
                                 mk_json_key(&j, e), mk_json_type_name(v->type));
                    goto done;
                }
                h->meta_keys[h->n_meta] = mk_strdup(mk_json_key(&j, e));
                h->meta_vals[h->n_meta] = mk_strdup(mk_json_strv(&j, e));
                h->n_meta++;
                if (!h->meta_keys[h->n_meta - 1] || !h->meta_vals[h->n_meta - 1]) {
                    s = MK_ERR_NOMEM;
                    goto done;
                }
            }
            continue;
        }
        if (m->has_nul || !key[0]) {
            s = mk_error(MK_ERR_FORMAT, "%s: a tensor name is empty or contains NUL", what);
            goto done;
        }
        if (m->type != MK_JSON_OBJ) {
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: entry is a %s, expected an object", what, key,
                         mk_json_type_name(m->type));
            goto done;
        }
        uint32_t jd = mk_json_get(&j, c, "dtype"), js = mk_json_get(&j, c, "shape"),
                 jo = mk_json_get(&j, c, "data_offsets");
        if (!jd || !js || !jo) {
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: missing '%s'", what, key,
                         !jd ? "dtype" : !js ? "shape" : "data_offsets");
            goto done;
        }
        if (mk_json_at(&j, jd)->type != MK_JSON_STR) {
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: dtype is a %s, expected a string", what, key,
                         mk_json_type_name(mk_json_at(&j, jd)->type));
            goto done;
        }
        const char *dts = mk_json_strv(&j, jd);
        mk_dtype dt = mk_dtype_from_name(dts);
        if (dt == MK_DTYPE_NONE) {
            bool other = false;
            for (size_t k = 0; k < sizeof st_other_dtypes / sizeof *st_other_dtypes; k++)
                other |= strcmp(dts, st_other_dtypes[k]) == 0;
            s = mk_error(other ? MK_ERR_UNSUPPORTED : MK_ERR_FORMAT, "%s: tensor %s: %s dtype '%.40s'", what, key,
                         other ? "mergekit-c does not support" : "unknown", dts);
            goto done;
        }
        mk_tensor_info *t = &h->t[h->n];
        uint64_t shape[MK_MAX_DIMS], offs[2];
        int nd, no;
        s = parse_uint_array(&j, js, what, key, "shape", shape, MK_MAX_DIMS, &nd);
        if (s) goto done;
        s = parse_uint_array(&j, jo, what, key, "data_offsets", offs, 2, &no);
        if (s) goto done;
        if (no != 2) {
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: data_offsets has %d entries, expected 2", what, key, no);
            goto done;
        }
        t->name = mk_strdup(key);
        if (!t->name) {
            s = MK_ERR_NOMEM;
            goto done;
        }
        h->n++;
        t->dtype = dt;
        t->ndim = nd;
        for (int d = 0; d < nd; d++) {
            if (shape[d] > (uint64_t)INT64_MAX) {
                s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: dimension %d is too large", what, key, d);
                goto done;
            }
            t->shape[d] = (int64_t)shape[d];
        }
        if ((s = mk_tensor_info_finish(t)) != MK_OK) {
            mk_error_prefix(s, "%s", what);
            goto done;
        }
        if (offs[1] < offs[0]) {
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: data_offsets end %llu is before begin %llu", what, key,
                         (unsigned long long)offs[1], (unsigned long long)offs[0]);
            goto done;
        }
        if (offs[1] - offs[0] != t->nbytes) {
            char sh[160];
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: data_offsets cover %llu bytes but %s %s needs %llu", what, key,
                         (unsigned long long)(offs[1] - offs[0]), dts, mk_shape_str(t, sh),
                         (unsigned long long)t->nbytes);
            goto done;
        }
        spans[h->n - 1] = (span){offs[0], offs[1], h->n - 1};
    }
    qsort(spans, h->n, sizeof *spans, cmp_span);
    uint64_t cursor = 0;
    for (size_t k = 0; k < h->n; k++) {
        if (spans[k].begin != cursor) {
            const char *name = h->t[spans[k].i].name;
            if (spans[k].begin < cursor)
                s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu) overlap another tensor", what,
                             name, (unsigned long long)spans[k].begin, (unsigned long long)spans[k].end);
            else
                s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: data_offsets begin at %llu, leaving a hole after %llu",
                             what, name, (unsigned long long)spans[k].begin, (unsigned long long)cursor);
            goto done;
        }
        cursor = spans[k].end;
    }
    if (cursor != file_size - h->data_start) {
        s = mk_error(MK_ERR_FORMAT, "%s: data section is %llu bytes but the tensors cover %llu (%s)", what,
                     (unsigned long long)(file_size - h->data_start), (unsigned long long)cursor,
                     cursor > file_size - h->data_start ? "file truncated" : "trailing bytes after the last tensor");
        goto done;
    }
    for (size_t k = 0; k < h->n; k++) h->t[spans[k].i].offset = h->data_start + spans[k].begin;
done:
    free(spans);
    mk_json_free(&j);
    if (s != MK_OK) mk_st_header_free(h);
    return s;
}

/* ---- index ---------------------------------------------------------------------------- */

void mk_st_index_free(mk_st_index *ix)
{
    if (!ix) return;
    for (size_t i = 0; i < ix->n_shards; i++) free(ix->shards[i]);
    for (size_t i = 0; i < ix->n; i++) free(ix->names[i]);
    free(ix->shards);
    free(ix->names);
    free(ix->shard_of);
    memset(ix, 0, sizeof *ix);
}

/* A shard name must be a plain file name in the model folder. */
static bool shard_name_ok(const char *s, const char *suffix)
{
    if (!s[0] || strchr(s, '/') || strchr(s, '\\') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return false;
    if (strlen(s) >= 2 && s[1] == ':') return false; /* drive letter */
    if (mk_str_starts_with(s, "..")) return false;
    return mk_str_ends_with(s, suffix);
}

mk_status mk_st_index_parse(const char *text, size_t len, const char *what, mk_st_index *ix)
{
    return mk_st_index_parse_ext(text, len, what, ".safetensors", ix);
}

mk_status mk_st_index_parse_ext(const char *text, size_t len, const char *what, const char *suffix, mk_st_index *ix)
{
    memset(ix, 0, sizeof *ix);
    ix->total_size = UINT64_MAX;
    mk_json j;
    mk_json_limits lim = {16, len / 2 + 16};
    MK_TRY(mk_json_parse(&j, text, len, &lim, what));
    mk_status s = MK_OK;
    if (mk_json_at(&j, 0)->type != MK_JSON_OBJ) {
        s = mk_error(MK_ERR_FORMAT, "%s: expected a JSON object", what);
        goto done;
    }
    uint32_t meta = mk_json_get(&j, 0, "metadata");
    if (meta && mk_json_at(&j, meta)->type == MK_JSON_OBJ) {
        uint32_t ts = mk_json_get(&j, meta, "total_size");
        if (ts && mk_json_at(&j, ts)->type == MK_JSON_NUM && mk_json_at(&j, ts)->is_uint)
            ix->total_size = mk_json_at(&j, ts)->u;
    }
    uint32_t wm = mk_json_get(&j, 0, "weight_map");
    if (!wm || mk_json_at(&j, wm)->type != MK_JSON_OBJ) {
        s = mk_error(MK_ERR_FORMAT, "%s: missing 'weight_map' object", what);
        goto done;
    }
    uint32_t dup = mk_json_dup_key(&j, wm);
    if (dup) {
        s = mk_error(MK_ERR_FORMAT, "%s: weight_map lists tensor '%s' twice", what, mk_json_key(&j, dup));
        goto done;
    }
    uint32_t n = mk_json_at(&j, wm)->count;
    ix->names = mk_calloc(n ? n : 1, sizeof(char *));
    ix->shard_of = mk_calloc(n ? n : 1, sizeof(uint32_t));
    ix->shards = mk_calloc(n ? n : 1, sizeof(char *));
    if (!ix->names || !ix->shard_of || !ix->shards) {
        s = MK_ERR_NOMEM;
        goto done;
    }
    for (uint32_t c = mk_json_at(&j, wm)->first; c; c = mk_json_at(&j, c)->next) {
        const mk_json_node *v = mk_json_at(&j, c);
        const char *name = mk_json_key(&j, c);
        if (v->has_nul || !name[0]) {
            s = mk_error(MK_ERR_FORMAT, "%s: weight_map has an empty tensor name or one containing NUL", what);
            goto done;
        }
        if (v->type != MK_JSON_STR) {
            s = mk_error(MK_ERR_FORMAT, "%s: weight_map[%s] is a %s, expected a file name", what, name,
                         mk_json_type_name(v->type));
            goto done;
        }
        const char *file = mk_json_strv(&j, c);
        if (strlen(file) != v->str_len || !shard_name_ok(file, suffix)) {
            s = mk_error(MK_ERR_FORMAT, "%s: weight_map[%s] = '%.200s' is not a %s file name inside the model folder",
                         what, name, file, suffix);
            goto done;
        }
        size_t k;
        for (k = 0; k < ix->n_shards; k++)
            if (strcmp(ix->shards[k], file) == 0) break;
        if (k == ix->n_shards) {
            /* shard lists are short (tens); a linear scan keeps this simple */
            if (!(ix->shards[k] = mk_strdup(file))) {
                s = MK_ERR_NOMEM;
                goto done;
            }
            ix->n_shards++;
        }
        if (!(ix->names[ix->n] = mk_strdup(name))) {
            s = MK_ERR_NOMEM;
            goto done;
        }
        ix->shard_of[ix->n++] = (uint32_t)k;
    }
done:
    mk_json_free(&j);
    if (s != MK_OK) mk_st_index_free(ix);
    return s;
}

mk_status mk_st_index_pick(const mk_st_index *ix, const char *index_path, const mk_tensor_info *const *shard_t,
                           const size_t *shard_n, size_t *pick)
{
    mk_name_index *shard_ix = mk_calloc(ix->n_shards ? ix->n_shards : 1, sizeof *shard_ix);
    if (!shard_ix) return MK_ERR_NOMEM;
    mk_status r = MK_OK;
    size_t total = 0;
    for (size_t k = 0; k < ix->n_shards && r == MK_OK; k++) {
        r = mk_name_index_build(&shard_ix[k], shard_t[k], shard_n[k], NULL);
        total += shard_n[k];
    }
    /* each index entry must be in its shard; a tensor must not be in two shards */
    for (size_t e = 0; e < ix->n && r == MK_OK; e++) {
        uint32_t k = ix->shard_of[e];
        long ti = mk_name_index_find(&shard_ix[k], ix->names[e]);
        if (ti < 0) {
            r = mk_error(MK_ERR_FORMAT, "%s: index maps tensor %s to %s, which does not contain it", index_path, ix->names[e],
                         ix->shards[k]);
            break;
        }
        for (size_t o = 0; o < ix->n_shards; o++) {
            if (o != k && mk_name_index_find(&shard_ix[o], ix->names[e]) >= 0) {
                r = mk_error(MK_ERR_FORMAT, "%s: tensor %s is in two shards, %s and %s", index_path, ix->names[e],
                             ix->shards[k], ix->shards[o]);
                break;
            }
        }
        pick[e] = (size_t)ti;
    }
    for (size_t k = 0; k < ix->n_shards; k++) mk_name_index_free(&shard_ix[k]);
    free(shard_ix);
    if (r == MK_OK && ix->n < total)
        mk_warn("%s: %zu tensor(s) in the shards are not listed in the index; they are ignored", index_path, total - ix->n);
    return r;
}

/* ---- source --------------------------------------------------------------------------- */

/* Tensor data is read with pread, not mapped: a shard truncated or failing during a long run
 * gives an error naming it instead of SIGBUS, and resident memory is only our buffers. */
typedef struct st_source {
    mk_rfile *files;
    size_t n_files;
    mk_modeldir aux;
} st_source;

static mk_status st_read(mk_source *s, size_t i, uint64_t off, uint64_t len, void *dst)
{
    st_source *st = s->impl;
    const mk_tensor_info *t = &s->tensors[i];
    return mk_rfile_read(&st->files[t->file], t->offset + off, dst, (size_t)len);
}

static void st_prefetch(mk_source *s, size_t i, uint64_t off, uint64_t len)
{
    st_source *st = s->impl;
    const mk_tensor_info *t = &s->tensors[i];
    mk_rfile_willneed(&st->files[t->file], t->offset + off, len);
}

static mk_status st_aux_read(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    st_source *st = s->impl;
    return mk_modeldir_read(&st->aux, name, cap, data, len);
}

static const char *const *st_aux_list(mk_source *s)
{
    st_source *st = s->impl;
    return (const char *const *)st->aux.names;
}

static void st_close(mk_source *s)
{
    if (!s) return;
    st_source *st = s->impl;
    if (st) {
        for (size_t i = 0; i < st->n_files; i++) mk_rfile_close(&st->files[i]);
        free(st->files);
        mk_modeldir_free(&st->aux);
        free(st);
    }
    mk_source_free_fields(s);
}

static mk_status st_stream(mk_source *s, size_t i, uint64_t len, uint64_t reach, mk_dstream **out)
{
    st_source *st = s->impl;
    const mk_tensor_info *t = &s->tensors[i];
    if (len > t->nbytes) MK_BUG("stream past the end of a tensor");
    return mk_dstream_open(&st->files[t->file], t->offset, len, reach, out);
}

static const mk_source_ops st_ops = {st_read, NULL, NULL, st_prefetch, st_aux_read, st_aux_list, st_close, st_stream};

/* Open a shard and validate its header (read with pread: the 8-byte length, then at most
 * MK_ST_MAX_HEADER bytes, never more than the file holds). */
/* A file whose first 8 bytes are not a plausible header length: when its start says what it
 * is (JSON, a pickle, a zip, text...), or its name does not claim to be safetensors, say that
 * it is not a safetensors file; otherwise leave it to mk_st_parse (a damaged one). */
static mk_status not_safetensors(const char *path, mk_rfile *f)
{
    unsigned char head[MK_SNIFF_BYTES];
    size_t got = f->size < sizeof head ? (size_t)f->size : sizeof head;
    if (got && mk_rfile_read(f, 0, head, got) != MK_OK) return MK_OK;
    char what[160];
    bool named = mk_str_ends_with(path, ".safetensors");
    /* a short .safetensors file that is plain text is reported as too short by mk_st_parse */
    const char *d = mk_sniff(head, got, f->size, !named, what, sizeof what);
    if (!d || (named && got < 8 && strncmp(d, "text", 4) == 0)) return MK_OK;
    return mk_error(MK_ERR_FORMAT, "%s: not a safetensors file (%s)", path, d);
}

static mk_status open_and_parse(const char *path, mk_rfile *f, mk_st_header *h)
{
    MK_TRY(mk_rfile_open(f, path));
    unsigned char len8[8] = {0};
    mk_status s = MK_OK;
    size_t got = f->size < 8 ? (size_t)f->size : 8;
    if (got) s = mk_rfile_read(f, 0, len8, got);
    uint64_t n = le64(len8);
    size_t take = got;
    bool plausible = f->size >= 8 && n <= MK_ST_MAX_HEADER && n <= f->size - 8;
    if (s == MK_OK && plausible) take = (size_t)(8 + n);
    if (s == MK_OK && !plausible) s = not_safetensors(path, f);
    unsigned char *buf = s == MK_OK ? mk_malloc(take ? take : 1) : NULL;
    if (s == MK_OK && !buf) s = MK_ERR_NOMEM;
    if (s == MK_OK && take) s = mk_rfile_read(f, 0, buf, take);
    /* mk_st_parse reports the short-file and bad-length cases from the first 8 bytes */
    if (s == MK_OK) s = mk_st_parse(buf, take, f->size, path, h);
    free(buf);
    if (s != MK_OK) mk_rfile_close(f);
    return s;
}

bool mk_safetensors_probe(const char *path)
{
    if (mk_is_file(path)) return mk_str_ends_with(path, ".safetensors");
    if (!mk_is_dir(path)) return false;
    char *a = mk_path_join(path, "model.safetensors.index.json"), *b = mk_path_join(path, "model.safetensors");
    bool ok = (a && mk_path_exists(a)) || (b && mk_path_exists(b));
    free(a);
    free(b);
    return ok;
}

mk_status mk_safetensors_open(const char *path, mk_source **out)
{
    *out = NULL;
    mk_source *s = mk_calloc(1, sizeof *s);
    st_source *st = mk_calloc(1, sizeof *st);
    if (!s || !st) {
        free(s);
        free(st);
        return MK_ERR_NOMEM;
    }
    s->ops = &st_ops;
    s->impl = st;
    s->path = mk_strdup(path);
    s->kind = mk_strdup("safetensors");
    mk_status r = (s->path && s->kind) ? MK_OK : MK_ERR_NOMEM;
    char *dir = NULL, *index_path = NULL;
    mk_st_index ix = {0};
    mk_st_header *hs = NULL;

    if (r == MK_OK && mk_is_file(path)) {
        dir = mk_path_dirname(path);
        st->files = mk_calloc(1, sizeof *st->files);
        s->files = mk_calloc(1, sizeof *s->files);
        hs = mk_calloc(1, sizeof *hs);
        if (!dir || !st->files || !s->files || !hs) r = MK_ERR_NOMEM;
        if (r == MK_OK) r = open_and_parse(path, &st->files[0], &hs[0]);
        if (r == MK_OK) {
            st->n_files = 1;
            s->files[0] = mk_strdup(path);
            s->n_files = 1;
            s->tensors = hs[0].t;
            s->n_tensors = hs[0].n;
            hs[0].t = NULL;
            hs[0].n = 0;
        }
        if (r == MK_OK) r = mk_modeldir_open(&st->aux, dir, false);
        goto finish;
    }
    if (r == MK_OK && !mk_is_dir(path)) {
        r = mk_path_exists(path) ? mk_error(MK_ERR_FORMAT, "%s: not a model folder or .safetensors file", path)
                                 : mk_error(MK_ERR_IO, "%s: no such file or folder", path);
        goto finish;
    }
    if (r == MK_OK) r = mk_modeldir_open(&st->aux, path, true);
    if (r != MK_OK) goto finish;
    dir = mk_strdup(path);
    index_path = mk_path_join(path, "model.safetensors.index.json");
    if (!dir || !index_path) {
        r = MK_ERR_NOMEM;
        goto finish;
    }
    if (mk_path_exists(index_path)) {
        char *text = NULL;
        size_t len = 0;
        r = mk_modeldir_read(&st->aux, "model.safetensors.index.json", 64u << 20, &text, &len);
        if (r == MK_OK) r = mk_st_index_parse(text, len, index_path, &ix);
        free(text);
        if (r != MK_OK) goto finish;
        st->files = mk_calloc(ix.n_shards ? ix.n_shards : 1, sizeof *st->files);
        s->files = mk_calloc(ix.n_shards ? ix.n_shards : 1, sizeof *s->files);
        hs = mk_calloc(ix.n_shards ? ix.n_shards : 1, sizeof *hs);
        if (!st->files || !s->files || !hs) {
            r = MK_ERR_NOMEM;
            goto finish;
        }
        for (size_t k = 0; k < ix.n_shards; k++) {
            char *sp = NULL;
            r = mk_modeldir_resolve(&st->aux, ix.shards[k], &sp);
            if (r != MK_OK) {
                mk_error_prefix(r, "%s: index lists shard '%s'", index_path, ix.shards[k]);
                goto finish;
            }
            s->files[k] = sp;
            s->n_files++;
            r = open_and_parse(sp, &st->files[k], &hs[k]);
            if (r != MK_OK) goto finish;
            st->n_files++;
        }
        s->tensors = mk_calloc(ix.n ? ix.n : 1, sizeof *s->tensors);
        size_t *pick = mk_calloc(ix.n ? ix.n : 1, sizeof *pick);
        const mk_tensor_info **shard_t = mk_calloc(ix.n_shards ? ix.n_shards : 1, sizeof *shard_t);
        size_t *shard_n = mk_calloc(ix.n_shards ? ix.n_shards : 1, sizeof *shard_n);
        r = s->tensors && pick && shard_t && shard_n ? MK_OK : MK_ERR_NOMEM;
        for (size_t k = 0; k < ix.n_shards && r == MK_OK; k++) {
            shard_t[k] = hs[k].t;
            shard_n[k] = hs[k].n;
        }
        if (r == MK_OK) r = mk_st_index_pick(&ix, index_path, shard_t, shard_n, pick);
        for (size_t e = 0; e < ix.n && r == MK_OK; e++) {
            uint32_t k = ix.shard_of[e];
            mk_tensor_info *t = &s->tensors[s->n_tensors];
            *t = hs[k].t[pick[e]];
            t->name = mk_strdup(ix.names[e]);
            t->file = k;
            if (!t->name) r = MK_ERR_NOMEM;
            else s->n_tensors++;
        }
        free(pick);
        free(shard_t);
        free(shard_n);
        goto finish;
    }
    {
        char *single = NULL;
        r = mk_modeldir_resolve(&st->aux, "model.safetensors", &single);
        if (r != MK_OK) {
            r = mk_error(MK_ERR_FORMAT, "%s: no model.safetensors or model.safetensors.index.json in this folder", path);
            goto finish;
        }
        st->files = mk_calloc(1, sizeof *st->files);
        s->files = mk_calloc(1, sizeof *s->files);
        hs = mk_calloc(1, sizeof *hs);
        if (!st->files || !s->files || !hs) {
            free(single);
            r = MK_ERR_NOMEM;
            goto finish;
        }
        s->files[0] = single;
        s->n_files = 1;
        r = open_and_parse(single, &st->files[0], &hs[0]);
        if (r == MK_OK) {
            st->n_files = 1;
            s->tensors = hs[0].t;
            s->n_tensors = hs[0].n;
            hs[0].t = NULL;
            hs[0].n = 0;
        }
    }
finish:
    if (hs) {
        size_t nh = ix.n_shards ? ix.n_shards : 1;
        for (size_t k = 0; k < nh; k++) mk_st_header_free(&hs[k]);
        free(hs);
    }
    mk_st_index_free(&ix);
    free(dir);
    free(index_path);
    if (r == MK_OK) r = mk_name_index_build(&s->index, s->tensors, s->n_tensors, NULL);
    if (r != MK_OK) {
        st_close(s);
        return r;
    }
    *out = s;
    return MK_OK;
}

/* ---- sink ------------------------------------------------------------------------------ */

typedef struct st_shard {
    char *name;
    char *path;
    int fd;
    uint64_t data_start;  /* 8 + header length */
    uint64_t size;        /* whole file */
    size_t n_tensors, n_done;
    bool done;            /* fsynced and hashed (or recovered from the journal) */
    bool foreign;         /* another part's (mk_st_sink_split.own) */
    char hash[33];
    mk_buf header;
    mk_dwrite *dw;        /* written around the page cache (mk_st_sink_opts.direct), or NULL */
    size_t *order;        /* with dw: its tensors in file order, which is the order declared */
    size_t n_final;       /* with dw: order[0 .. n_final) are done */
} st_shard;

typedef struct st_sink {
    mk_st_sink_opts opts;
    mk_st_sink_split split;
    bool split_own;       /* a part: no index */
    char *resume_key;
    size_t n;
    mk_tensor_info *t;    /* copies of the declared tensors (names borrowed from caller) */
    uint32_t *shard_of;
    uint64_t *offset;     /* absolute file offset of each tensor */
    size_t n_shards;
    st_shard *shards;
    uint64_t total;
    int journal_fd;
    char *journal_path;
    char *stem;           /* shard file stem, "model" by default */
    mk_whash *wh;         /* hashes each shard as it is written (tensors are its pieces) */
    bool *tdone;          /* [n] tensor_done seen (shards written with dw) */
} st_sink;

static mk_status journal_load(mk_sink *k)
{
    st_sink *w = k->impl;
    char *text = NULL;
    size_t len = 0;
    if (!mk_path_exists(w->journal_path)) return MK_OK;
    MK_TRY(mk_read_file(w->journal_path, 16u << 20, &text, &len));
    mk_status s = MK_OK;
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    if (!line || strncmp(line, "key ", 4) != 0 || strcmp(line + 4, w->resume_key) != 0) {
        s = mk_error(MK_ERR_USAGE,
                     "%s: the partial output was made by a different recipe, inputs or options; "
                     "run without --resume to start over",
                     k->dir);
        free(text);
        return s;
    }
    size_t reused = 0;
    while ((line = strtok_r(NULL, "\n", &save))) {
        char name[256], hex[64];
        unsigned long long size;
        if (sscanf(line, "shard %255s %llu %63s", name, &size, hex) != 3) continue; /* a torn last line */
        for (size_t i = 0; i < w->n_shards; i++) {
            st_shard *sh = &w->shards[i];
            if (sh->foreign || strcmp(sh->name, name) != 0 || sh->size != size) continue;
            mk_hash128 h;
            char got[33];
            if (mk_hash_file(sh->path, &h) != MK_OK) break;
            mk_hash128_hex(h, got);
            if (strcmp(got, hex) != 0) {
                mk_warn("%s: does not match its journal entry; it will be written again", sh->path);
                break;
            }
            sh->done = true;
            memcpy(sh->hash, got, 33);
            reused++;
        }
    }
    free(text);
    if (reused) mk_info("resuming: %zu of %zu shard(s) already complete", reused, w->n_shards);
    return s;
}

static mk_status journal_append(st_sink *w, const st_shard *sh)
{
    if (w->journal_fd < 0) return MK_OK;
    char line[400];
    int n = snprintf(line, sizeof line, "shard %s %llu %s\n", sh->name, (unsigned long long)sh->size, sh->hash);
    MK_TRY(mk_write_all(w->journal_fd, line, (size_t)n, w->journal_path));
    if (fdatasync(w->journal_fd) != 0) return mk_error(MK_ERR_IO, "%s: fsync failed: %s", w->journal_path, strerror(errno));
    return MK_OK;
}

static mk_status prealloc(int fd, uint64_t size, const char *path)
{
    if (size == 0) return MK_OK;
    if (fallocate(fd, 0, 0, (off_t)size) == 0) return MK_OK;
    if (errno == ENOSPC || errno == EFBIG)
        return mk_error(MK_ERR_IO, "%s: cannot reserve %llu bytes: %s", path, (unsigned long long)size, strerror(errno));
    /* filesystems without fallocate: set the size; ENOSPC then shows up at write time */
    if (ftruncate(fd, (off_t)size) != 0)
        return mk_error(MK_ERR_IO, "%s: cannot set size: %s", path, strerror(errno));
    return MK_OK;
}

/* Hash the shards to be written as their tensors finish (output_hash.h): each file's header
 * now, its tensors from the page cache as they are done. */
static mk_status hash_start(st_sink *w)
{
    uint64_t *len = mk_calloc(w->n ? w->n : 1, sizeof *len);
    if (!len) return MK_ERR_NOMEM;
    for (size_t i = 0; i < w->n; i++) len[i] = w->t[i].nbytes;
    mk_status s = mk_whash_new(w->n, w->shard_of, w->offset, len, w->n_shards, &w->wh);
    free(len);
    for (size_t sh = 0; sh < w->n_shards && s == MK_OK; sh++) {
        st_shard *S = &w->shards[sh];
        if (S->fd < 0 || S->dw) continue; /* not written here, or hashed by its writer */
        unsigned char *head = mk_malloc(8 + S->header.len);
        if (!head) return MK_ERR_NOMEM;
        for (int b = 0; b < 8; b++) head[b] = (unsigned char)((uint64_t)S->header.len >> (8 * b));
        memcpy(head + 8, S->header.data, S->header.len);
        s = mk_whash_file(w->wh, sh, S->fd, S->path, head, 8 + S->header.len);
        free(head);
    }
    return s == MK_OK ? mk_whash_start(w->wh) : s;
}

/* Shard sh written around the page cache where its tensors lie in the file in the order they
 * are declared (so the usual order of writing finishes its windows one after another; a
 * quantized model's tensors, sorted by element size, do not) and the file system takes
 * O_DIRECT. */
static mk_status direct_open(st_sink *w, size_t sh)
{
    st_shard *S = &w->shards[sh];
    if (!w->tdone && !(w->tdone = mk_calloc(w->n ? w->n : 1, sizeof *w->tdone))) return MK_ERR_NOMEM;
    if (!(S->order = mk_calloc(S->n_tensors ? S->n_tensors : 1, sizeof *S->order))) return MK_ERR_NOMEM;
    size_t m = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (w->shard_of[i] != sh) continue;
        if (m && w->offset[i] < w->offset[S->order[m - 1]]) return MK_OK; /* not in file order */
        S->order[m++] = i;
    }
    return mk_dwrite_open(S->fd, S->path, S->size, &S->dw);
}

static mk_status sink_begin(mk_sink *k, const mk_tensor_info *t, size_t n)
{
    st_sink *w = k->impl;
    w->n = n;
    w->t = mk_calloc(n ? n : 1, sizeof *w->t);
    w->shards = mk_calloc(n ? n : 1, sizeof *w->shards);
    if (!w->t || !w->shards) return MK_ERR_NOMEM;
    memcpy(w->t, t, n * sizeof *t);
    for (size_t i = 0; i < n; i++) w->total += t[i].nbytes;
    mk_st_layout L;
    MK_TRY(mk_st_layout_build(t, n, w->opts.shard_size, w->stem, &L));
    size_t ns = L.n_shards;
    w->n_shards = ns;
    w->shard_of = L.shard_of;
    w->offset = L.offset;
    L.shard_of = NULL;
    L.offset = NULL;
    mk_status s = MK_OK;
    for (size_t sh = 0; sh < ns && s == MK_OK; sh++) {
        st_shard *S = &w->shards[sh];
        S->fd = -1;
        S->name = L.names[sh];
        L.names[sh] = NULL;
        S->header = L.header[sh];
        memset(&L.header[sh], 0, sizeof L.header[sh]);
        S->path = mk_path_join(k->dir, S->name);
        if (!S->path) s = MK_ERR_NOMEM;
        S->n_tensors = L.n_tensors[sh];
        S->data_start = 8 + S->header.len;
        S->size = L.size[sh];
    }
    mk_st_layout_free(&L);
    MK_TRY(s);
    for (size_t sh = 0; sh < ns; sh++) {
        st_shard *S = &w->shards[sh];
        if (w->split.own && !w->split.own[sh]) S->done = S->foreign = true;
        if (w->split.adopt) {
            S->done = true;
            memcpy(S->hash, w->split.adopt[sh].hash, 33);
        }
    }

    if (w->opts.resume_key) {
        w->resume_key = mk_strdup(w->opts.resume_key);
        w->journal_path = mk_path_join(k->dir, w->split.journal ? w->split.journal : MK_ST_JOURNAL);
        if (!w->resume_key || !w->journal_path) return MK_ERR_NOMEM;
        if (w->opts.resume) MK_TRY(journal_load(k));
    }
    /* early out-of-space check for the shards still to write */
    uint64_t need = 0;
    for (size_t sh = 0; sh < ns; sh++)
        if (!w->shards[sh].done) need += w->shards[sh].size;
    struct statvfs vfs;
    if (statvfs(k->dir, &vfs) == 0) {
        uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        char a[32], b[32];
        if (need > avail)
            return mk_error(MK_ERR_IO, "%s: needs %s of free space, only %s available", k->dir, mk_fmt_bytes(need, a),
                            mk_fmt_bytes(avail, b));
    }
    for (size_t sh = 0; sh < ns; sh++) {
        st_shard *S = &w->shards[sh];
        if (S->done) continue;
        unlink(S->path); /* a leftover from an interrupted run: rewrite it */
        S->fd = open(S->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (S->fd < 0) return mk_error(MK_ERR_IO, "%s: cannot create: %s", S->path, strerror(errno));
        MK_TRY(prealloc(S->fd, S->size, S->path));
        if (w->opts.direct) MK_TRY(direct_open(w, sh));
        unsigned char len8[8];
        uint64_t hl = S->header.len;
        for (int b = 0; b < 8; b++) len8[b] = (unsigned char)(hl >> (8 * b));
        if (S->dw) {
            MK_TRY(mk_dwrite_put(S->dw, 0, len8, 8));
            MK_TRY(mk_dwrite_put(S->dw, 8, S->header.data, S->header.len));
        } else {
            MK_TRY(mk_pwrite_all(S->fd, len8, 8, 0, S->path));
            MK_TRY(mk_pwrite_all(S->fd, S->header.data, S->header.len, 8, S->path));
        }
    }
    if (w->journal_path) {
        bool fresh = !w->opts.resume || !mk_path_exists(w->journal_path);
        w->journal_fd = open(w->journal_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | (fresh ? O_TRUNC : 0),
                             0644);
        if (w->journal_fd < 0) return mk_error(MK_ERR_IO, "%s: cannot open: %s", w->journal_path, strerror(errno));
        if (fresh) {
            char *line = mk_asprintf("key %s\n", w->resume_key);
            if (!line) return MK_ERR_NOMEM;
            mk_status js = mk_write_all(w->journal_fd, line, strlen(line), w->journal_path);
            free(line);
            MK_TRY(js);
        }
    }
    return hash_start(w);
}

static bool sink_is_done(mk_sink *k, size_t i)
{
    st_sink *w = k->impl;
    return w->shards[w->shard_of[i]].done;
}

static mk_status sink_write(mk_sink *k, size_t i, uint64_t off, const void *data, uint64_t len)
{
    st_sink *w = k->impl;
    st_shard *S = &w->shards[w->shard_of[i]];
    if (off > w->t[i].nbytes || len > w->t[i].nbytes - off) MK_BUG("write past the end of an output tensor");
    if (S->done) return MK_OK;
    if (S->dw) return mk_dwrite_put(S->dw, w->offset[i] + off, data, len);
    return mk_pwrite_all(S->fd, data, (size_t)len, w->offset[i] + off, S->path);
}

static mk_status finish_shard(st_sink *w, st_shard *S)
{
    const bool own_hash = S->dw != NULL;
    if (S->dw) {
        uint64_t nd, nt;
        MK_TRY(mk_dwrite_finish(S->dw, S->hash));
        mk_dwrite_counts(S->dw, &nd, &nt);
        mk_debug("%s: %llu window(s) written around the page cache, %llu through it", S->name, (unsigned long long)nd,
                 (unsigned long long)nt);
        mk_dwrite_close(S->dw);
        S->dw = NULL;
    }
    if (fsync(S->fd) != 0) return mk_error(MK_ERR_IO, "%s: fsync failed: %s", S->path, strerror(errno));
    if (!own_hash) MK_TRY(mk_whash_wait(w->wh, (size_t)(S - w->shards), S->hash)); /* it reads through S->fd */
    if (close(S->fd) != 0) {
        S->fd = -1;
        return mk_error(MK_ERR_IO, "%s: close failed: %s", S->path, strerror(errno));
    }
    S->fd = -1;
    S->done = true;
    MK_TRY(journal_append(w, S));
    mk_testpoint(); /* between shards */
    return MK_OK;
}

static mk_status sink_tensor_done(mk_sink *k, size_t i)
{
    st_sink *w = k->impl;
    st_shard *S = &w->shards[w->shard_of[i]];
    if (S->done) return MK_OK;
    if (S->dw) {
        /* the bytes up to the end of the tensors done in file order are final */
        w->tdone[i] = true;
        while (S->n_final < S->n_tensors && w->tdone[S->order[S->n_final]]) S->n_final++;
        if (S->n_final) {
            size_t l = S->order[S->n_final - 1];
            mk_dwrite_final(S->dw, w->offset[l] + w->t[l].nbytes);
        }
    } else if (!mk_whash_ready(w->wh, i) && w->t[i].nbytes)
        /* start writing this tensor back now, so the disk works while we compute the next
         * one and the final fsync has little left to wait for (advisory: fsync reports errors) */
        sync_file_range(S->fd, (off_t)w->offset[i], (off_t)w->t[i].nbytes, SYNC_FILE_RANGE_WRITE);
    mk_testpoint(); /* mid-shard */
    if (++S->n_done == S->n_tensors) return finish_shard(w, S);
    return MK_OK;
}

static mk_status sink_add_file(mk_sink *k, const char *name, const void *data, size_t len)
{
    char *p = mk_path_join(k->dir, name);
    if (!p) return MK_ERR_NOMEM;
    mk_status s = mk_write_file_atomic(p, data, len);
    free(p);
    return s;
}

static mk_status sink_commit(mk_sink *k)
{
    st_sink *w = k->impl;
    for (size_t sh = 0; sh < w->n_shards; sh++) {
        st_shard *S = &w->shards[sh];
        if (!S->done && S->n_tensors == 0) MK_TRY(finish_shard(w, S)); /* the empty-model file */
        if (!S->done) MK_BUG("commit with an unfinished shard");
    }
    k->out_files = mk_calloc(w->n_shards + 1, sizeof *k->out_files);
    if (!k->out_files) return MK_ERR_NOMEM;
    for (size_t sh = 0; sh < w->n_shards; sh++) {
        if (w->shards[sh].foreign) continue;
        mk_out_file *f = &k->out_files[k->n_out_files++];
        f->name = mk_strdup(w->shards[sh].name);
        f->size = w->shards[sh].size;
        memcpy(f->hash, w->shards[sh].hash, 33);
        if (!f->name) return MK_ERR_NOMEM;
    }
    if (w->n_shards > 1 && !w->split_own) {
        mk_buf b = {0};
        const char **names = mk_calloc(w->n_shards, sizeof *names);
        if (!names) return MK_ERR_NOMEM;
        for (size_t sh = 0; sh < w->n_shards; sh++) names[sh] = w->shards[sh].name;
        mk_status s = mk_st_index_json(w->t, w->n, w->shard_of, names, &b);
        free(names);
        if (s != MK_OK) {
            mk_buf_free(&b);
            return s;
        }
        char *ixname = mk_asprintf("%s.safetensors.index.json", w->stem);
        s = ixname ? sink_add_file(k, ixname, b.data, b.len) : MK_ERR_NOMEM;
        if (s == MK_OK) {
            mk_out_file *f = &k->out_files[k->n_out_files++];
            f->name = ixname;
            ixname = NULL;
            f->size = b.len;
            mk_hash128_hex(mk_hash128_bytes(b.data, b.len), f->hash);
        }
        free(ixname);
        mk_buf_free(&b);
        MK_TRY(s);
    }
    if (w->journal_fd >= 0) {
        close(w->journal_fd);
        w->journal_fd = -1;
    }
    if (w->journal_path) unlink(w->journal_path);
    return MK_OK;
}

static void sink_close(mk_sink *k)
{
    if (!k) return;
    st_sink *w = k->impl;
    if (w) {
        mk_whash_free(w->wh); /* before the files it reads are closed */
        for (size_t sh = 0; sh < w->n_shards; sh++) {
            mk_dwrite_close(w->shards[sh].dw); /* before the file it writes is closed */
            free(w->shards[sh].order);
            if (w->shards[sh].fd >= 0) close(w->shards[sh].fd);
            free(w->shards[sh].name);
            free(w->shards[sh].path);
            mk_buf_free(&w->shards[sh].header);
        }
        if (w->journal_fd >= 0) close(w->journal_fd);
        free(w->journal_path);
        free(w->stem);
        free(w->resume_key);
        free(w->shards);
        free(w->t);
        free(w->shard_of);
        free(w->offset);
        free(w->tdone);
        free(w);
    }
    for (size_t i = 0; i < k->n_out_files; i++) free(k->out_files[i].name);
    free(k->out_files);
    free(k->dir);
    free(k);
}

static const mk_sink_ops st_sink_ops = {sink_begin,    sink_is_done, sink_write, sink_tensor_done,
                                        sink_add_file, sink_commit,  sink_close, NULL};

mk_status mk_safetensors_sink(const char *dir, const mk_st_sink_opts *opts, mk_sink **out)
{
    return mk_safetensors_sink_stem(dir, "model", opts, out);
}

mk_status mk_safetensors_sink_split(const char *dir, const char *stem, const mk_st_sink_opts *opts, const mk_st_sink_split *sp,
                                    mk_sink **out)
{
    MK_TRY(mk_safetensors_sink_stem(dir, stem ? stem : "model", opts, out));
    st_sink *w = (*out)->impl;
    w->split = *sp;
    w->split_own = sp->own != NULL;
    return MK_OK;
}

mk_status mk_safetensors_sink_stem(const char *dir, const char *stem, const mk_st_sink_opts *opts, mk_sink **out)
{
    mk_sink *k = mk_calloc(1, sizeof *k);
    st_sink *w = mk_calloc(1, sizeof *w);
    if (!k || !w) {
        free(k);
        free(w);
        return MK_ERR_NOMEM;
    }
    w->opts = *opts;
    w->journal_fd = -1;
    k->ops = &st_sink_ops;
    k->impl = w;
    k->dir = mk_strdup(dir);
    w->stem = mk_strdup(stem);
    if (!k->dir || !w->stem) {
        sink_close(k);
        return MK_ERR_NOMEM;
    }
    *out = k;
    return MK_OK;
}
