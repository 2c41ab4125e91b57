/* mk_dwrite.c - see mk_dwrite.h */
#include "mk_dwrite.h"

#include "mk_hash.h"
#include "mk_io.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define DW_ALIGN 4096u /* offsets, lengths and buffers of O_DIRECT writes */

static uint64_t g_win = MK_DWRITE_WIN;
static size_t g_gather = MK_DWRITE_GATHER;

void mk_dwrite_limits(uint64_t win, size_t gather)
{
    g_win = win ? (win + DW_ALIGN - 1) / DW_ALIGN * DW_ALIGN : MK_DWRITE_WIN;
    g_gather = gather ? gather : MK_DWRITE_GATHER;
}

enum { W_NEW, W_GATHER, W_PASS, W_WRITING, W_DONE };

/* Bytes [a, b) of a window were put. */
typedef struct dw_span {
    uint64_t a, b;
} dw_span;

typedef struct dw_win {
    unsigned char *buf; /* W_GATHER: the window's bytes */
    dw_span *sp;        /* the bytes put so far, sorted, disjoint, not touching */
    size_t nsp, capsp;
    uint64_t covered;   /* their total */
    unsigned busy;      /* puts copying into it or writing it through */
    int state;
} dw_win;

struct mk_dwrite {
    int fd, dfd;        /* the file; the same opened with O_DIRECT */
    char *path;
    uint64_t size, win, nw;
    size_t max_gather, n_gather;
    dw_win *w;          /* [nw] */
    uint64_t final;     /* bytes below are final */
    uint64_t next;      /* the window the thread writes next */
    bool direct_ok;
    unsigned char *pool[MK_DWRITE_GATHER]; /* written windows' buffers, for reuse */
    size_t n_pool;
    mk_hasher *h;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    bool started, stop;
    uint64_t n_direct, n_through;
    mk_status err;
    char msg[1024];
};

static uint64_t win_start(const mk_dwrite *d, uint64_t k) { return k * d->win; }
static uint64_t win_len(const mk_dwrite *d, uint64_t k)
{
    uint64_t a = win_start(d, k);
    return d->size - a < d->win ? d->size - a : d->win;
}

static bool win_complete(const mk_dwrite *d, uint64_t k)
{
    const dw_win *w = &d->w[k];
    return !w->busy && (w->covered == win_len(d, k) || d->final >= win_start(d, k) + win_len(d, k));
}

/* Note bytes [a, b) of window w as put (merging with the spans they touch). */
static bool span_add(dw_win *w, uint64_t a, uint64_t b)
{
    size_t i = 0;
    while (i < w->nsp && w->sp[i].b < a) i++;
    size_t j = i;
    while (j < w->nsp && w->sp[j].a <= b) {
        if (w->sp[j].a < a) a = w->sp[j].a;
        if (w->sp[j].b > b) b = w->sp[j].b;
        w->covered -= w->sp[j].b - w->sp[j].a;
        j++;
    }
    if (j == i) {
        if (w->nsp == w->capsp) {
            size_t cap = w->capsp ? 2 * w->capsp : 4;
            dw_span *sp = realloc(w->sp, cap * sizeof *sp);
            if (!sp) return false;
            w->sp = sp;
            w->capsp = cap;
        }
        memmove(w->sp + i + 1, w->sp + i, (w->nsp - i) * sizeof *w->sp);
        w->nsp++;
    } else if (j > i + 1) {
        memmove(w->sp + i + 1, w->sp + j, (w->nsp - j) * sizeof *w->sp);
        w->nsp -= j - i - 1;
    }
    w->sp[i] = (dw_span){a, b};
    w->covered += b - a;
    return true;
}

static void set_err(mk_dwrite *d, mk_status s, const char *m)
{
    if (d->err != MK_OK) return;
    d->err = s;
    snprintf(d->msg, sizeof d->msg, "%s", m);
}

/* Window k gathered in buf: the bytes never put zeroed, hashed, written; *direct: O_DIRECT
 * may be tried (in), still works (out). Called without mu. */
static mk_status write_gathered(mk_dwrite *d, uint64_t k, unsigned char *buf, const dw_win *w, bool *direct)
{
    const uint64_t off = win_start(d, k), len = win_len(d, k);
    const uint64_t alen = (len + DW_ALIGN - 1) / DW_ALIGN * DW_ALIGN;
    uint64_t at = 0;
    for (size_t s = 0; s <= w->nsp; s++) { /* the gaps between spans, and after the last */
        uint64_t to = s < w->nsp ? w->sp[s].a : alen;
        if (to > at) memset(buf + at, 0, (size_t)(to - at));
        if (s < w->nsp) at = w->sp[s].b;
    }
    mk_hasher_update(d->h, buf, (size_t)len);
    if (*direct) {
        uint64_t done = 0;
        while (done < alen) {
            ssize_t r = pwrite(d->dfd, buf + done, (size_t)(alen - done), (off_t)(off + done));
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 && errno == EINVAL && done == 0) break; /* refused: through the page cache */
            if (r <= 0) return mk_error(MK_ERR_IO, "%s: write failed: %s", d->path, r < 0 ? strerror(errno) : "no progress");
            done += (uint64_t)r;
            if (done % DW_ALIGN) break; /* a short write off the alignment: the rest through the cache */
        }
        if (done >= alen) return MK_OK;
        *direct = false;
        return done < len ? mk_pwrite_all(d->fd, buf + done, (size_t)(len - done), off + done, d->path) : MK_OK;
    }
    return mk_pwrite_all(d->fd, buf, (size_t)len, off, d->path);
}

/* Window k written through the page cache (or never put: the file's zeros): hashed from it. */
static mk_status hash_through(mk_dwrite *d, uint64_t k, void *scratch)
{
    const uint64_t off = win_start(d, k), len = win_len(d, k);
    MK_TRY(mk_hasher_update_fd(d->h, d->fd, d->path, off, len, scratch, (size_t)d->win));
    sync_file_range(d->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE); /* advisory: fsync reports errors */
    return MK_OK;
}

static void *dw_main(void *p)
{
    mk_dwrite *d = p;
    void *scratch = NULL;
    pthread_mutex_lock(&d->mu);
    while (d->next < d->nw && d->err == MK_OK && !d->stop) {
        const uint64_t k = d->next;
        dw_win *w = &d->w[k];
        if (!win_complete(d, k)) {
            pthread_cond_wait(&d->cv, &d->mu);
            continue;
        }
        const int state = w->state;
        unsigned char *buf = w->buf;
        bool direct = d->direct_ok, tried = state == W_GATHER && direct;
        w->state = W_WRITING; /* a put now is refused: its spans are read below */
        pthread_mutex_unlock(&d->mu);
        mk_status s = MK_OK;
        if (state == W_GATHER) {
            s = write_gathered(d, k, buf, w, &direct);
        } else {
            if (!scratch && !(scratch = malloc((size_t)d->win))) s = mk_error(MK_ERR_NOMEM, "out of memory for the output hash");
            if (s == MK_OK) s = hash_through(d, k, scratch);
        }
        const char *m = s != MK_OK ? mk_errmsg() : NULL;
        pthread_mutex_lock(&d->mu);
        if (m) {
            set_err(d, s, m);
            break;
        }
        if (tried && direct) d->n_direct++;
        else d->n_through++;
        if (!direct) d->direct_ok = false;
        if (state == W_GATHER) {
            if (d->n_pool < MK_DWRITE_GATHER) d->pool[d->n_pool++] = buf;
            else munmap(buf, (size_t)d->win);
            w->buf = NULL;
            d->n_gather--;
        }
        free(w->sp);
        w->sp = NULL;
        w->nsp = w->capsp = 0;
        w->state = W_DONE;
        d->next++;
        pthread_cond_broadcast(&d->cv);
    }
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    free(scratch);
    return NULL;
}

mk_status mk_dwrite_open(int fd, const char *path, uint64_t size, mk_dwrite **out)
{
    *out = NULL;
    int dfd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0) {
        if (errno == EINVAL) return MK_OK; /* no O_DIRECT here */
        return mk_error(MK_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    }
    mk_dwrite *d = mk_calloc(1, sizeof *d);
    if (!d) {
        close(dfd);
        return MK_ERR_NOMEM;
    }
    d->fd = fd;
    d->dfd = dfd;
    d->size = size;
    d->win = g_win;
    d->max_gather = g_gather < MK_DWRITE_GATHER ? g_gather : MK_DWRITE_GATHER;
    d->nw = (size + d->win - 1) / d->win;
    d->direct_ok = true;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    d->path = mk_strdup(path);
    d->w = mk_calloc(d->nw ? d->nw : 1, sizeof *d->w);
    d->h = mk_hasher_new();
    if (!d->path || !d->w || !d->h) {
        mk_dwrite_close(d);
        return MK_ERR_NOMEM;
    }
    if (pthread_create(&d->th, NULL, dw_main, d) != 0) {
        mk_dwrite_close(d);
        return mk_error(MK_ERR_NOMEM, "%s: cannot start the writing thread", path);
    }
    d->started = true;
    *out = d;
    return MK_OK;
}

static mk_status dw_failed(mk_dwrite *d)
{
    mk_status s = d->err;
    char m[sizeof d->msg];
    memcpy(m, d->msg, sizeof m);
    pthread_mutex_unlock(&d->mu);
    return mk_error(s, "%s", m);
}

mk_status mk_dwrite_put(mk_dwrite *d, uint64_t off, const void *p, uint64_t len)
{
    if (off > d->size || len > d->size - off) MK_BUG("put past the end of a direct-written file");
    const unsigned char *src = p;
    while (len) {
        const uint64_t k = off / d->win, a = off - win_start(d, k);
        const uint64_t n = win_len(d, k) - a < len ? win_len(d, k) - a : len;
        pthread_mutex_lock(&d->mu);
        if (d->err != MK_OK) return dw_failed(d);
        dw_win *w = &d->w[k];
        if (w->state >= W_WRITING) {
            pthread_mutex_unlock(&d->mu);
            return mk_error(MK_ERR_IO, "%s: bytes at offset %llu put after their window was written", d->path,
                            (unsigned long long)off);
        }
        if (w->state == W_NEW) {
            if (d->n_gather < d->max_gather && d->direct_ok) {
                unsigned char *b = d->n_pool ? d->pool[--d->n_pool] : NULL;
                if (!b) {
                    b = mmap(NULL, (size_t)d->win, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                    if (b == MAP_FAILED) b = NULL;
                }
                if (b) {
                    w->buf = b;
                    w->state = W_GATHER;
                    d->n_gather++;
                }
            }
            if (w->state == W_NEW) w->state = W_PASS;
        }
        if (!span_add(w, a, a + n)) {
            pthread_mutex_unlock(&d->mu);
            return MK_ERR_NOMEM;
        }
        w->busy++;
        const int state = w->state;
        unsigned char *buf = w->buf;
        pthread_mutex_unlock(&d->mu);
        mk_status s = MK_OK;
        if (state == W_GATHER) memcpy(buf + a, src, (size_t)n);
        else s = mk_pwrite_all(d->fd, src, (size_t)n, off, d->path);
        pthread_mutex_lock(&d->mu);
        if (--w->busy == 0) pthread_cond_broadcast(&d->cv);
        pthread_mutex_unlock(&d->mu);
        MK_TRY(s);
        off += n;
        src += n;
        len -= n;
    }
    return MK_OK;
}

void mk_dwrite_final(mk_dwrite *d, uint64_t upto)
{
    pthread_mutex_lock(&d->mu);
    if (upto > d->final) {
        d->final = upto;
        pthread_cond_broadcast(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
}

mk_status mk_dwrite_finish(mk_dwrite *d, char hex[33])
{
    mk_dwrite_final(d, d->size);
    pthread_mutex_lock(&d->mu);
    while (d->next < d->nw && d->err == MK_OK) pthread_cond_wait(&d->cv, &d->mu);
    if (d->err != MK_OK) return dw_failed(d);
    pthread_mutex_unlock(&d->mu);
    /* the last window was written whole blocks long: the file's own end */
    if (ftruncate(d->fd, (off_t)d->size) != 0)
        return mk_error(MK_ERR_IO, "%s: cannot set size: %s", d->path, strerror(errno));
    mk_hash128_hex(mk_hasher_digest(d->h), hex);
    return MK_OK;
}

void mk_dwrite_counts(mk_dwrite *d, uint64_t *direct, uint64_t *through)
{
    pthread_mutex_lock(&d->mu);
    *direct = d->n_direct;
    *through = d->n_through;
    pthread_mutex_unlock(&d->mu);
}

void mk_dwrite_close(mk_dwrite *d)
{
    if (!d) return;
    if (d->started) {
        pthread_mutex_lock(&d->mu);
        d->stop = true;
        pthread_cond_broadcast(&d->cv);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->th, NULL);
    }
    for (uint64_t k = 0; d->w && k < d->nw; k++) {
        if (d->w[k].buf) munmap(d->w[k].buf, (size_t)d->win);
        free(d->w[k].sp);
    }
    for (size_t i = 0; i < d->n_pool; i++) munmap(d->pool[i], (size_t)d->win);
    if (d->dfd >= 0) close(d->dfd);
    mk_hasher_free(d->h);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d->w);
    free(d->path);
    free(d);
}
