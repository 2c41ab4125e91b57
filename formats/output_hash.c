/* output_hash.c - see output_hash.h */
#include "output_hash.h"

#include "../core/mk_hash.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define WIN (4u << 20) /* bytes read back at a time */

typedef struct wh_file {
    int fd;                /* -1: not hashed */
    const char *path;
    const size_t *order;   /* its pieces by offset (into mk_whash.order) */
    size_t n, n_hashed;
    mk_hasher *h;
    bool hashed;           /* hex holds the digest */
    char hex[33];
} wh_file;

struct mk_whash {
    size_t n, n_files;
    uint32_t *file_of;
    uint64_t *off, *len;
    bool *ready;
    size_t *wb, wb_n, wb_done; /* pieces whose writeback is to start, in ready order */
    size_t *order;         /* piece indices by file, then offset */
    wh_file *f;
    pthread_mutex_t mu;    /* guards ready, the files' progress, err, msg */
    pthread_cond_t cv;     /* a piece became ready, a file was hashed, an error, or stop */
    pthread_t th;
    bool started, stop;
    mk_status err;
    char msg[1024];
};

static int cmp_piece(const void *a, const void *b, void *ctx)
{
    const mk_whash *h = ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    if (h->file_of[x] != h->file_of[y]) return h->file_of[x] < h->file_of[y] ? -1 : 1;
    if (h->off[x] != h->off[y]) return h->off[x] < h->off[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

mk_status mk_whash_new(size_t n, const uint32_t *file_of, const uint64_t *off, const uint64_t *len, size_t n_files,
                       mk_whash **out)
{
    mk_whash *h = mk_calloc(1, sizeof *h);
    if (!h) return MK_ERR_NOMEM;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->n = n;
    h->n_files = n_files;
    size_t m = n ? n : 1;
    h->file_of = mk_calloc(m, sizeof *h->file_of);
    h->off = mk_calloc(m, sizeof *h->off);
    h->len = mk_calloc(m, sizeof *h->len);
    h->ready = mk_calloc(m, sizeof *h->ready);
    h->order = mk_calloc(m, sizeof *h->order);
    h->wb = mk_calloc(m, sizeof *h->wb);
    h->f = mk_calloc(n_files ? n_files : 1, sizeof *h->f);
    *out = h;
    if (!h->file_of || !h->off || !h->len || !h->ready || !h->order || !h->wb || !h->f) return MK_ERR_NOMEM;
    memcpy(h->file_of, file_of, n * sizeof *file_of);
    memcpy(h->off, off, n * sizeof *off);
    memcpy(h->len, len, n * sizeof *len);
    for (size_t i = 0; i < n; i++) h->order[i] = i;
    qsort_r(h->order, n, sizeof *h->order, cmp_piece, h);
    size_t at = 0;
    for (size_t f = 0; f < n_files; f++) {
        h->f[f].fd = -1;
        h->f[f].order = h->order + at;
        while (at < n && h->file_of[h->order[at]] == f) at++;
        h->f[f].n = (size_t)(h->order + at - h->f[f].order);
    }
    return MK_OK;
}

mk_status mk_whash_file(mk_whash *h, size_t f, int fd, const char *path, const void *head, size_t head_len)
{
    wh_file *F = &h->f[f];
    if (!(F->h = mk_hasher_new())) return MK_ERR_NOMEM;
    F->fd = fd;
    F->path = path;
    mk_hasher_update(F->h, head, head_len);
    return MK_OK;
}

static bool stopping(mk_whash *h) { return __atomic_load_n(&h->stop, __ATOMIC_RELAXED); }

/* Hash bytes [off, off + len) of F (len <= WIN) from the page cache: mapped (MAP_POPULATE:
 * the page tables filled in one call, and no copy), else read into buf. A window past the
 * file's end (truncated under us) is read instead, so that the error names the file rather
 * than a SIGBUS ending the run. */
static mk_status hash_window(wh_file *F, uint64_t off, size_t len, void *buf)
{
    const uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE), a = off / pg * pg;
    struct stat st;
    if (fstat(F->fd, &st) == 0 && (uint64_t)st.st_size >= off + len) {
        size_t mlen = (size_t)(off + len - a);
        void *m = mmap(NULL, mlen, PROT_READ, MAP_SHARED | MAP_POPULATE, F->fd, (off_t)a);
        if (m != MAP_FAILED) {
            mk_hasher_update(F->h, (const unsigned char *)m + (off - a), len);
            munmap(m, mlen);
            return MK_OK;
        }
    }
    return mk_hasher_update_fd(F->h, F->fd, F->path, off, len, buf, WIN);
}

/* Hash every ready piece that continues a file's hashed prefix; a file whose last piece is
 * hashed gets its digest. Called with mu held, dropped while reading. True if anything moved. */
static bool step(mk_whash *h, void *buf)
{
    bool moved = false;
    for (size_t f = 0; f < h->n_files && h->err == MK_OK && !stopping(h); f++) {
        wh_file *F = &h->f[f];
        if (!F->h || F->hashed) continue;
        while (F->n_hashed < F->n && h->ready[F->order[F->n_hashed]] && h->err == MK_OK) {
            size_t i = F->order[F->n_hashed];
            uint64_t off = h->off[i], left = h->len[i];
            mk_status st = MK_OK;
            pthread_mutex_unlock(&h->mu);
            while (left && st == MK_OK && !stopping(h)) {
                size_t len = left < WIN ? (size_t)left : WIN;
                st = hash_window(F, off, len, buf);
                off += len;
                left -= len;
            }
            const char *m = st != MK_OK ? mk_errmsg() : NULL;
            pthread_mutex_lock(&h->mu);
            if (m) {
                snprintf(h->msg, sizeof h->msg, "%s", m);
                h->err = st;
            }
            if (st != MK_OK || left) break; /* failed, or stopped */
            F->n_hashed++;
            moved = true;
        }
        if (F->n_hashed == F->n && h->err == MK_OK && !stopping(h)) {
            mk_hash128_hex(mk_hasher_digest(F->h), F->hex);
            F->hashed = moved = true;
        }
    }
    return moved;
}

/* Start the writeback of the pieces queued by mk_whash_ready (advisory: the writer's fsync
 * reports errors). Called with mu held, dropped around each call. */
static void start_writeback(mk_whash *h)
{
    while (h->wb_done < h->wb_n && !stopping(h)) {
        size_t i = h->wb[h->wb_done++];
        const wh_file *F = &h->f[h->file_of[i]];
        if (F->hashed) continue; /* the writer may have closed it: only this thread sets hashed */
        int fd = F->fd;
        pthread_mutex_unlock(&h->mu);
        if (h->len[i]) sync_file_range(fd, (off_t)h->off[i], (off_t)h->len[i], SYNC_FILE_RANGE_WRITE);
        pthread_mutex_lock(&h->mu);
    }
}

static void *whash_main(void *p)
{
    mk_whash *h = p;
    void *buf = malloc(WIN);
    pthread_mutex_lock(&h->mu);
    if (!buf) {
        snprintf(h->msg, sizeof h->msg, "out of memory for the output hashing buffer");
        h->err = MK_ERR_NOMEM;
    }
    while (h->err == MK_OK && !stopping(h)) {
        start_writeback(h);
        if (step(h, buf)) {
            pthread_cond_broadcast(&h->cv);
            continue;
        }
        bool left = false;
        for (size_t f = 0; f < h->n_files; f++) left |= h->f[f].h && !h->f[f].hashed;
        if (!left) break;
        /* stop is set under mu, but step and start_writeback drop mu: look again before
         * waiting, or a stop that came meanwhile is never seen (mk_whash_free would hang) */
        if (h->wb_done == h->wb_n && !stopping(h)) pthread_cond_wait(&h->cv, &h->mu);
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    free(buf);
    return NULL;
}

mk_status mk_whash_start(mk_whash *h)
{
    bool any = false;
    for (size_t f = 0; f < h->n_files; f++) any |= h->f[f].h != NULL;
    if (!any) return MK_OK;
    if (pthread_create(&h->th, NULL, whash_main, h) != 0) return mk_error(MK_ERR_NOMEM, "cannot start the output hashing thread");
    h->started = true;
    return MK_OK;
}

bool mk_whash_ready(mk_whash *h, size_t i)
{
    pthread_mutex_lock(&h->mu);
    const wh_file *F = &h->f[h->file_of[i]];
    /* the thread runs until every hashed file is; a failed one leaves the writer's fsync to write */
    bool queued = h->started && F->h && !F->hashed && !h->ready[i] && h->err == MK_OK && !stopping(h);
    h->ready[i] = true;
    if (queued) h->wb[h->wb_n++] = i;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return queued;
}

mk_status mk_whash_wait(mk_whash *h, size_t f, char hex[33])
{
    wh_file *F = &h->f[f];
    pthread_mutex_lock(&h->mu);
    while (!F->hashed && h->err == MK_OK && h->started) pthread_cond_wait(&h->cv, &h->mu);
    bool ok = F->hashed;
    mk_status st = h->err;
    if (ok) memcpy(hex, F->hex, 33);
    pthread_mutex_unlock(&h->mu);
    if (ok) return MK_OK;
    if (st == MK_OK) MK_BUG("waiting for a file that is not being hashed");
    return mk_error(st, "%s", h->msg);
}

void mk_whash_free(mk_whash *h)
{
    if (!h) return;
    if (h->started) {
        pthread_mutex_lock(&h->mu);
        __atomic_store_n(&h->stop, true, __ATOMIC_RELAXED);
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->th, NULL);
    }
    for (size_t f = 0; h->f && f < h->n_files; f++) mk_hasher_free(h->f[f].h);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h->file_of);
    free(h->off);
    free(h->len);
    free(h->ready);
    free(h->order);
    free(h->wb);
    free(h->f);
    free(h);
}
