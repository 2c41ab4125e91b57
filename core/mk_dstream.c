/* mk_dstream.c - see mk_dstream.h */
#include "mk_dstream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define DS_ALIGN 4096u /* offsets, lengths and buffers of O_DIRECT reads */
#define DS_B ((uint64_t)MK_DSTREAM_BLOCK)

enum { SLOT_EMPTY, SLOT_FILLING, SLOT_READY };

typedef struct ds_slot {
    uint64_t blk;  /* the block it holds (state != SLOT_EMPTY) */
    uint64_t used; /* bytes of the range in it read so far */
    int state;
} ds_slot;

struct mk_dstream {
    const mk_rfile *f;
    int dfd;                      /* the file opened with O_DIRECT */
    bool direct_ok, uncached;     /* O_DIRECT still works; MK_DIO_ALWAYS */
    uint64_t off, end, a0, nb;    /* the range [off, end); blocks from a0 (aligned down), nb of them */
    const unsigned char *map;     /* [a0, end) mapped, only to ask which pages are cached */
    size_t map_len, page;
    unsigned char *vec;           /* mincore's answer for one block */
    unsigned char *ring;
    ds_slot *slot;
    size_t S;
    pthread_mutex_t mu;
    pthread_cond_t ready, freed;
    pthread_t th;
    bool started, stop;
    mk_status err;                /* the reader's failure, at block err_blk */
    uint64_t err_blk;
    char msg[512];
    uint64_t n_direct, n_cached;
};

/* Rings of streams closed, kept for the next ones (a run opens one per tensor: fresh pages
 * would be faulted in and zeroed each time). Mapped, not malloc'd: freeing a block this large
 * would raise malloc's mapping threshold and keep later ones in the heap. */
#define POOL_MAX 4
static struct {
    pthread_mutex_t mu;
    void *p[POOL_MAX];
    size_t len[POOL_MAX];
    size_t n;
} g_pool = {PTHREAD_MUTEX_INITIALIZER, {NULL}, {0}, 0};

static void *ring_get(size_t len)
{
    void *p = NULL;
    pthread_mutex_lock(&g_pool.mu);
    for (size_t i = 0; i < g_pool.n; i++)
        if (g_pool.len[i] == len) {
            p = g_pool.p[i];
            g_pool.p[i] = g_pool.p[g_pool.n - 1];
            g_pool.len[i] = g_pool.len[--g_pool.n];
            break;
        }
    pthread_mutex_unlock(&g_pool.mu);
    if (p) return p;
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void ring_put(void *p, size_t len)
{
    if (!p) return;
    pthread_mutex_lock(&g_pool.mu);
    if (g_pool.n == POOL_MAX) { /* the oldest goes */
        munmap(g_pool.p[0], g_pool.len[0]);
        memmove(g_pool.p, g_pool.p + 1, (POOL_MAX - 1) * sizeof *g_pool.p);
        memmove(g_pool.len, g_pool.len + 1, (POOL_MAX - 1) * sizeof *g_pool.len);
        g_pool.n--;
    }
    g_pool.p[g_pool.n] = p;
    g_pool.len[g_pool.n++] = len;
    pthread_mutex_unlock(&g_pool.mu);
}

static mk_dio_mode g_mode = MK_DIO_AUTO;
static uint64_t g_bytes_direct, g_bytes_cached; /* every stream's, atomically */

void mk_dstream_totals(uint64_t *direct, uint64_t *cached)
{
    *direct = __atomic_load_n(&g_bytes_direct, __ATOMIC_RELAXED);
    *cached = __atomic_load_n(&g_bytes_cached, __ATOMIC_RELAXED);
}
void mk_dstream_set_mode(mk_dio_mode m) { g_mode = m; }
mk_dio_mode mk_dstream_mode(void) { return g_mode; }

void mk_dstream_counts(const mk_dstream *s, uint64_t *direct, uint64_t *cached)
{
    *direct = s ? s->n_direct : 0;
    *cached = s ? s->n_cached : 0;
}

/* Bytes of the range in block j. */
static uint64_t blk_need(const mk_dstream *s, uint64_t j)
{
    uint64_t b0 = s->a0 + j * DS_B, b1 = b0 + DS_B;
    if (b0 < s->off) b0 = s->off;
    if (b1 > s->end) b1 = s->end;
    return b1 - b0;
}

/* Whether every page of [fs, fe) is in the page cache (false when the kernel will not say). */
static bool cached(const mk_dstream *s, uint64_t fs, uint64_t fe)
{
    if (!s->map) return false;
    uint64_t a = (fs - s->a0) / s->page * s->page;
    size_t len = (size_t)(fe - s->a0 - a), np = (len + s->page - 1) / s->page;
    if (mincore((void *)(s->map + a), len, s->vec) != 0) return false;
    for (size_t i = 0; i < np; i++)
        if (!(s->vec[i] & 1)) return false;
    return true;
}

/* Reads [fs, fs + want) into buf until at least need bytes are in; the count read, or -errno. */
static int64_t read_at_least(int fd, unsigned char *buf, uint64_t fs, uint64_t want, uint64_t need)
{
    uint64_t got = 0;
    while (got < need) {
        ssize_t r = pread(fd, buf + got, (size_t)(want - got), (off_t)(fs + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -(int64_t)errno;
        if (r == 0) break;
        got += (uint64_t)r;
    }
    return (int64_t)got;
}

/* Block j into buf; on failure the message is in s->msg. */
static mk_status fill(mk_dstream *s, uint64_t j, unsigned char *buf)
{
    uint64_t fs = s->a0 + j * DS_B, fe = fs + DS_B < s->end ? fs + DS_B : s->end, need = fe - fs;
    int64_t r = 0;
    bool done = false;
    if (s->direct_ok && (s->uncached || !cached(s, fs, fe))) {
        uint64_t want = (need + DS_ALIGN - 1) / DS_ALIGN * DS_ALIGN;
        r = read_at_least(s->dfd, buf, fs, want, need);
        done = r != -EINVAL;
        if (done) {
            s->n_direct++;
            __atomic_fetch_add(&g_bytes_direct, need, __ATOMIC_RELAXED);
        }
        else s->direct_ok = false; /* alignment this file system refuses: read it as before */
    }
    if (!done) {
        r = read_at_least(s->f->fd, buf, fs, need, need);
        s->n_cached++;
        __atomic_fetch_add(&g_bytes_cached, need, __ATOMIC_RELAXED);
    }
    if (r < 0) {
        snprintf(s->msg, sizeof s->msg, "%s: read failed: %s", s->f->path, strerror((int)-r));
        return MK_ERR_IO;
    }
    if ((uint64_t)r < need) {
        snprintf(s->msg, sizeof s->msg, "%s: file ended at byte %llu while reading (was it truncated during the run?)",
                 s->f->path, (unsigned long long)(fs + (uint64_t)r));
        return MK_ERR_IO;
    }
    return MK_OK;
}

static void *reader(void *arg)
{
    mk_dstream *s = arg;
    for (uint64_t j = 0; j < s->nb; j++) {
        ds_slot *sl = &s->slot[j % s->S];
        pthread_mutex_lock(&s->mu);
        while (!s->stop && sl->state != SLOT_EMPTY) pthread_cond_wait(&s->freed, &s->mu);
        bool stop = s->stop;
        if (!stop) {
            sl->blk = j;
            sl->used = 0;
            sl->state = SLOT_FILLING;
        }
        pthread_mutex_unlock(&s->mu);
        if (stop) break;
        mk_status st = fill(s, j, s->ring + (size_t)(j % s->S) * DS_B);
        pthread_mutex_lock(&s->mu);
        if (st != MK_OK) {
            s->err = st;
            s->err_blk = j;
        } else {
            sl->state = SLOT_READY;
        }
        pthread_cond_broadcast(&s->ready);
        pthread_mutex_unlock(&s->mu);
        if (st != MK_OK) break;
    }
    return NULL;
}

mk_status mk_dstream_read(mk_dstream *s, uint64_t pos, void *dst, size_t n)
{
    uint64_t p = s->off + pos;
    unsigned char *d = dst;
    if (pos > s->end - s->off || n > s->end - p) MK_BUG("stream read past its range");
    while (n) {
        uint64_t j = (p - s->a0) / DS_B, in = (p - s->a0) % DS_B;
        size_t take = DS_B - in < n ? (size_t)(DS_B - in) : n;
        ds_slot *sl = &s->slot[j % s->S];
        pthread_mutex_lock(&s->mu);
        while (!(sl->state == SLOT_READY && sl->blk == j) && !(s->err != MK_OK && s->err_blk <= j))
            pthread_cond_wait(&s->ready, &s->mu);
        bool ok = sl->state == SLOT_READY && sl->blk == j;
        pthread_mutex_unlock(&s->mu);
        if (!ok) return mk_error(s->err, "%s", s->msg);
        memcpy(d, s->ring + (size_t)(j % s->S) * DS_B + in, take);
        pthread_mutex_lock(&s->mu);
        sl->used += take;
        if (sl->used == blk_need(s, j)) {
            sl->state = SLOT_EMPTY;
            pthread_cond_broadcast(&s->freed);
        }
        pthread_mutex_unlock(&s->mu);
        d += take;
        p += take;
        n -= take;
    }
    return MK_OK;
}

void mk_dstream_close(mk_dstream *s)
{
    if (!s) return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->freed);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->ready);
    pthread_cond_destroy(&s->freed);
    if (s->map) munmap((void *)s->map, s->map_len);
    if (s->dfd >= 0) close(s->dfd);
    ring_put(s->ring, s->S * (size_t)DS_B);
    free(s->slot);
    free(s->vec);
    free(s);
}

/* The ring and the mapping for mincore; false when memory is short. */
static bool ds_alloc(mk_dstream *s, uint64_t reach)
{
    if (reach > (1ull << 30)) reach = 1ull << 30;
    s->S = (size_t)((reach + DS_B - 1) / DS_B) + 2;
    if (s->S < 4) s->S = 4;
    if (s->S > s->nb) s->S = (size_t)s->nb;
    s->ring = ring_get(s->S * (size_t)DS_B);
    s->slot = calloc(s->S, sizeof *s->slot);
    s->vec = malloc((size_t)(DS_B / s->page) + 2);
    if (!s->ring || !s->slot || !s->vec) return false;
    s->map_len = (size_t)(s->end - s->a0);
    void *m = mmap(NULL, s->map_len, PROT_READ, MAP_SHARED, s->f->fd, (off_t)s->a0);
    s->map = m == MAP_FAILED ? NULL : m;
    return true;
}

mk_status mk_dstream_open(const mk_rfile *f, uint64_t off, uint64_t len, uint64_t reach, mk_dstream **out)
{
    *out = NULL;
    if (g_mode == MK_DIO_OFF || !len || f->remote || f->fd < 0 || off > f->size || len > f->size - off) return MK_OK;
    int dfd = open(f->path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (dfd < 0) return MK_OK; /* no O_DIRECT here (tmpfs, some network file systems) */
    mk_dstream *s = calloc(1, sizeof *s);
    if (!s) {
        close(dfd);
        return MK_ERR_NOMEM;
    }
    long pg = sysconf(_SC_PAGESIZE);
    s->page = pg > 0 ? (size_t)pg : 4096;
    size_t al = s->page > DS_ALIGN ? s->page : DS_ALIGN; /* mmap's offset is in pages */
    s->f = f;
    s->dfd = dfd;
    s->direct_ok = true;
    s->uncached = g_mode == MK_DIO_ALWAYS;
    s->off = off;
    s->end = off + len;
    s->a0 = off / al * al;
    s->nb = (s->end - s->a0 + DS_B - 1) / DS_B;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->ready, NULL);
    pthread_cond_init(&s->freed, NULL);
    if (!ds_alloc(s, reach)) {
        mk_dstream_close(s);
        return mk_error(MK_ERR_NOMEM, "%s: out of memory for read buffers", f->path);
    }
    if (pthread_create(&s->th, NULL, reader, s) != 0) {
        mk_dstream_close(s);
        return MK_OK; /* no thread to spare: read as before */
    }
    s->started = true;
    *out = s;
    return MK_OK;
}
