/* merge_hash.c - see merge_hash.h */
#include "merge_hash.h"

#include "../core/mk_hash.h"
#include "../core/mk_hubfetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* How far the hashing may read past the inputs of the tensor the merge computes
 * (mk_hash_pace.ahead): a few windows, far less than any page cache. */
#define HASH_AHEAD (32u << 20)

/* A split output shares the input hashing out: part I hashes the input files the byte-balanced
 * split gives it (mk_parts_split over the files' sizes); finalize takes the hashes from the
 * parts' records. share[n] gets 1 for the files this process hashes. */
static mk_status hash_share(const mk_merge_hash *h, size_t n, unsigned char *share)
{
    memset(share, 1, n ? n : 1);
    mk_part p = h->part;
    if (!p.n) return MK_OK;
    uint64_t *size = mk_calloc(n ? n : 1, sizeof *size);
    uint32_t *part_of = mk_calloc(n ? n : 1, sizeof *part_of);
    if (!size || !part_of) {
        free(size);
        free(part_of);
        return MK_ERR_NOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < h->n_src; i++)
        for (size_t f = 0; f < h->src[i]->n_files; f++, k++) {
            struct stat st;
            size[k] = stat(h->src[i]->files[f], &st) == 0 ? (uint64_t)st.st_size : 0;
        }
    mk_parts_split(size, n, p.n, part_of);
    for (k = 0; k < n; k++) share[k] = part_of[k] == p.i - 1;
    free(size);
    free(part_of);
    return MK_OK;
}

/* The input files this process records (its share) into h->ih; those to hash now (not
 * recorded by the parts, not on the Hub) are listed in todo[] (indices into h->ih). */
static mk_status hash_list(mk_merge_hash *h, const unsigned char *share, size_t *todo, size_t *n_todo)
{
    mk_input_hashes *ih = h->ih;
    size_t k = 0;
    for (size_t i = 0; i < h->n_src; i++) {
        for (size_t f = 0; f < h->src[i]->n_files; f++, k++) {
            if (!share[k]) continue;
            mk_out_file *of = &ih->files[ih->n];
            const char *rec = h->recorded ? mk_parts_inputs_find(h->recorded, h->src[i]->files[f]) : NULL;
            /* hashing a file fetched in part would fetch all of it: its sha256 on the Hub stands for it */
            bool remote = mk_hub_remote_sha256(h->src[i]->files[f], ih->sha256[ih->n]);
            if (!remote && rec) memcpy(of->hash, rec, 33);
            else if (!remote) {
                h->tap_of[k] = *n_todo;
                todo[(*n_todo)++] = ih->n;
            }
            if (!(of->name = mk_strdup(h->src[i]->files[f]))) return MK_ERR_NOMEM;
            ih->model_of[ih->n++] = i;
        }
    }
    return MK_OK;
}

/* The lists of hash_prepare; tap_of and upto too with `all` (the merge's mk_merge_hash_input_read
 * reads them until it is over: they go once the hashing is joined). */
static void hash_lists_free(mk_merge_hash *h, bool all)
{
    free(h->taps);
    free(h->todo);
    h->taps = NULL;
    h->todo = NULL;
    if (!all) return;
    free(h->tap_of);
    free(h->upto);
    h->tap_of = NULL;
    h->upto = NULL;
}

/* The files to hash: h->ih listed, h->todo the indices of those hashed now. */
static mk_status hash_prepare(mk_merge_hash *h)
{
    mk_input_hashes *ih = h->ih;
    size_t n = 0;
    for (size_t i = 0; i < h->n_src; i++) n += h->src[i]->n_files;
    ih->files = mk_calloc(n ? n : 1, sizeof *ih->files);
    ih->model_of = mk_calloc(n ? n : 1, sizeof *ih->model_of);
    ih->sha256 = mk_calloc(n ? n : 1, sizeof *ih->sha256);
    h->todo = mk_calloc(n ? n : 1, sizeof *h->todo);
    h->tap_of = mk_calloc(n ? n : 1, sizeof *h->tap_of);
    h->upto = mk_calloc(n ? n : 1, sizeof *h->upto);
    unsigned char *share = mk_calloc(n ? n : 1, 1);
    mk_status s = ih->files && ih->model_of && ih->sha256 && share && h->todo && h->tap_of && h->upto ? hash_share(h, n, share)
                                                                                                   : MK_ERR_NOMEM;
    for (size_t k = 0; h->tap_of && k < n; k++) h->tap_of[k] = SIZE_MAX;
    h->n_todo = 0;
    if (s == MK_OK) s = hash_list(h, share, h->todo, &h->n_todo);
    for (size_t t = 0; t < h->n_todo && s == MK_OK; t++) mk_info("hashing %s", ih->files[h->todo[t]].name);
    free(share);
    return s;
}

/* A tap per file to hash, before the merge opens any stream. */
static mk_status taps_open(mk_merge_hash *h)
{
    if (!(h->taps = mk_calloc(h->n_todo ? h->n_todo : 1, sizeof *h->taps))) return MK_ERR_NOMEM;
    for (size_t t = 0; t < h->n_todo; t++) MK_TRY(mk_dtap_open(h->ih->files[h->todo[t]].name, &h->taps[t]));
    return MK_OK;
}

static void taps_close(mk_merge_hash *h)
{
    for (size_t t = 0; h->taps && t < h->n_todo; t++) mk_dtap_close(h->taps[t]);
    free(h->taps);
    h->taps = NULL;
}

/* Fed hashing: what no stream has hashed, read behind the merge (each file up to the end of
 * the last input tensor the merge has read in it: the streams of the tensors it reads now are
 * past that), then the rest once it is over. The taps stay open until then, whatever fails:
 * the merge's streams feed them. */
static mk_status hash_fed(mk_merge_hash *h, mk_hash128 *d)
{
    mk_status s = MK_OK;
    while (__atomic_load_n(&h->ppm, __ATOMIC_ACQUIRE) < 1000000u) {
        for (size_t t = 0; t < h->n_todo && s == MK_OK; t++)
            s = mk_dtap_fill(h->taps[t], __atomic_load_n(&h->upto[t], __ATOMIC_ACQUIRE));
        struct timespec ts = {0, 2000000}; /* 2 ms: the merge moves on a tensor at a time */
        nanosleep(&ts, NULL);
    }
    for (size_t t = 0; t < h->n_todo; t++) {
        mk_status f = s == MK_OK ? mk_dtap_finish(h->taps[t], &d[t]) : MK_OK;
        if (s != MK_OK) mk_dtap_close(h->taps[t]);
        h->taps[t] = NULL;
        if (s == MK_OK) s = f;
    }
    return s;
}

/* Hash the listed files (fed, where taps are open), and record the hashes. */
static mk_status hash_run(mk_merge_hash *h)
{
    mk_input_hashes *ih = h->ih;
    const char **paths = mk_calloc(h->n_todo ? h->n_todo : 1, sizeof *paths);
    mk_hash128 *d = mk_calloc(h->n_todo ? h->n_todo : 1, sizeof *d);
    mk_status s = paths && d ? MK_OK : MK_ERR_NOMEM;
    for (size_t t = 0; t < h->n_todo && s == MK_OK; t++) paths[t] = ih->files[h->todo[t]].name;
    mk_hash_pace pace = {&h->ppm, HASH_AHEAD};
    if (s == MK_OK && h->taps) s = hash_fed(h, d);
    else if (s == MK_OK) s = mk_hash_files(paths, h->n_todo, d, &pace);
    for (size_t t = 0; t < h->n_todo && s == MK_OK; t++) mk_hash128_hex(d[t], ih->files[h->todo[t]].hash);
    free(paths);
    free(d);
    hash_lists_free(h, false);
    return s;
}

static void *hash_thread(void *arg)
{
    mk_merge_hash *h = arg;
    h->status = hash_run(h);
    if (h->status != MK_OK) snprintf(h->msg, sizeof h->msg, "%s", mk_errmsg());
    return NULL;
}

mk_status mk_merge_hash_start(mk_merge_hash *h)
{
    h->started = false;
    __atomic_store_n(&h->ppm, h->unpaced ? 1000000u : 0, __ATOMIC_RELEASE);
    mk_status s = hash_prepare(h);
    if (s != MK_OK) {
        hash_lists_free(h, true);
        return s;
    }
    /* the merge reads around the page cache: feed the hashing what it reads */
    if (!h->unpaced && mk_dstream_mode() != MK_DIO_OFF && h->n_todo && taps_open(h) != MK_OK) {
        mk_error_clear();
        taps_close(h); /* hash as before */
    }
    if (pthread_create(&h->thread, NULL, hash_thread, h) == 0) {
        h->started = true;
        return MK_OK;
    }
    taps_close(h);
    __atomic_store_n(&h->ppm, 1000000u, __ATOMIC_RELEASE);
    s = hash_run(h); /* fall back: inline */
    hash_lists_free(h, true);
    return s;
}

mk_status mk_merge_hash_now(mk_merge_hash *h)
{
    __atomic_store_n(&h->ppm, 1000000u, __ATOMIC_RELEASE);
    mk_status s = hash_prepare(h);
    if (s == MK_OK) s = hash_run(h);
    hash_lists_free(h, true);
    return s;
}

void mk_merge_hash_pace(void *ctx, uint64_t through, uint64_t total)
{
    mk_merge_hash *h = ctx;
    uint32_t ppm = total ? (uint32_t)((double)through / (double)total * 1e6) : 1000000u;
    if (ppm >= 1000000u) ppm = 999999u; /* 1000000: the merge is over (mk_merge_hash_join) */
    __atomic_store_n(&h->ppm, ppm, __ATOMIC_RELEASE);
}

void mk_merge_hash_input_read(void *ctx, const mk_source *src, size_t tensor)
{
    mk_merge_hash *h = ctx;
    size_t k = 0, i = 0;
    for (; i < h->n_src && h->src[i] != src; i++) k += h->src[i]->n_files;
    if (i == h->n_src || !h->tap_of || !h->upto || tensor >= src->n_tensors) return;
    const mk_tensor_info *t = &src->tensors[tensor];
    size_t tt = t->file < src->n_files ? h->tap_of[k + t->file] : SIZE_MAX;
    uint64_t end = t->offset + t->nbytes;
    if (tt != SIZE_MAX && end > __atomic_load_n(&h->upto[tt], __ATOMIC_ACQUIRE))
        __atomic_store_n(&h->upto[tt], end, __ATOMIC_RELEASE);
}

mk_status mk_merge_hash_join(mk_merge_hash *h)
{
    if (!h->started) return MK_OK;
    __atomic_store_n(&h->ppm, 1000000u, __ATOMIC_RELEASE); /* the merge is over: finish */
    pthread_join(h->thread, NULL);
    h->started = false;
    hash_lists_free(h, true);
    return h->status == MK_OK ? MK_OK : mk_error(h->status, "%s", h->msg);
}

void mk_input_hashes_free(mk_input_hashes *ih)
{
    if (!ih) return;
    for (size_t i = 0; ih->files && i < ih->n; i++) free(ih->files[i].name);
    free(ih->files);
    free(ih->model_of);
    free(ih->sha256);
    memset(ih, 0, sizeof *ih);
}
