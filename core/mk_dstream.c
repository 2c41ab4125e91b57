/* mk_dstream.c - see mk_dstream.h */
#include "mk_dstream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define DS_ALIGN 4096u /* offsets, lengths and buffers of O_DIRECT reads */
#define DS_B ((uint64_t)MK_DSTREAM_BLOCK)

enum { SLOT_EMPTY, SLOT_FILLING, SLOT_READY };

typedef struct ds_slot {
    uint64_t blk;  /* the block it holds (state != SLOT_EMPTY) */
    uint64_t used; /* bytes of the range in it read so far */
    int state;
} ds_slot;

/* Tickets of a tap's streams that finished out of turn, by ticket mod TAP_TICKETS. */
#define TAP_TICKETS 64

struct mk_dtap {
    mk_rfile f;
    dev_t dev;
    ino_t ino;
    bool listed;            /* in g_taps: streams of the file feed it */
    mk_dtap *next;
    pthread_mutex_t mu;
    pthread_cond_t turn_cv;
    mk_hasher *h;
    uint64_t pos;           /* bytes [0, pos) hashed */
    uint64_t next_ticket, turn;
    uint64_t own;           /* bytes read by the tap itself */
    uint64_t fin[TAP_TICKETS]; /* ticket + 1 of a stream that is done, waiting for its turn */
    unsigned char *buf;     /* for gaps, TAP_WIN bytes */
    mk_status err;
    char msg[512];
};
#define TAP_WIN (1u << 20)

static pthread_mutex_t g_tap_mu = PTHREAD_MUTEX_INITIALIZER;
static mk_dtap *g_taps;

struct mk_dstream {
    const mk_rfile *f;
    dev_t dev;
    ino_t ino;
    mk_dtap *tap;                 /* the file's tap, or NULL */
    uint64_t ticket;
    bool keep;                    /* every block has a slot of its own and keeps it */
    int dfd;                      /* the file opened with O_DIRECT */
    int bfd;                      /* and without, reading no further ahead than asked (or -1) */
    bool direct_ok, uncached;     /* O_DIRECT still works; MK_DIO_ALWAYS */
    uint64_t off, end, a0, nb;    /* the range [off, end); blocks from a0 (aligned down), nb of them */
    const unsigned char *map;     /* [a0, end) mapped, only to ask which pages are cached */
    size_t map_len, page;
    unsigned char *vec;           /* mincore's answer for one block */
    unsigned char *ring;
    size_t ring_len;              /* the ring's mapped length (a kept ring may be longer) */
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
 * would be faulted in and zeroed each time, which a merge's held tensors did for every MLP
 * matrix: 0.3 CPU s of a 4.3 s ties merge of a 7B-shaped model). A stream takes the smallest
 * kept ring of at least its length and at most twice it, so rings of tensors of other shapes
 * serve too. At most POOL_BYTES are kept, the oldest going
 * first; a ring over POOL_RING_MAX (an embedding held whole) is unmapped. Mapped, not
 * malloc'd: freeing a block this large would raise malloc's mapping threshold and keep later
 * ones in the heap. */
#define POOL_MAX 16
#define POOL_RING_MAX (128 * DS_B)
#define POOL_BYTES MK_DSTREAM_POOL_BYTES
static struct {
    pthread_mutex_t mu;
    void *p[POOL_MAX];
    size_t len[POOL_MAX];
    size_t n, bytes;
} g_pool = {PTHREAD_MUTEX_INITIALIZER, {NULL}, {0}, 0, 0};

static uint64_t g_rings_mapped;

uint64_t mk_dstream_rings_mapped(void) { return __atomic_load_n(&g_rings_mapped, __ATOMIC_RELAXED); }

static void pool_drop(size_t i)
{
    g_pool.bytes -= g_pool.len[i];
    memmove(g_pool.p + i, g_pool.p + i + 1, (g_pool.n - i - 1) * sizeof *g_pool.p);
    memmove(g_pool.len + i, g_pool.len + i + 1, (g_pool.n - i - 1) * sizeof *g_pool.len);
    g_pool.n--;
}

/* A ring of at least len bytes; *got: its length (for ring_put). */
static void *ring_get(size_t len, size_t *got)
{
    void *p = NULL;
    pthread_mutex_lock(&g_pool.mu);
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < g_pool.n; i++)
        if (g_pool.len[i] >= len && g_pool.len[i] / 2 <= len && (best == SIZE_MAX || g_pool.len[i] < g_pool.len[best]))
            best = i;
    if (best != SIZE_MAX) {
        p = g_pool.p[best];
        *got = g_pool.len[best];
        pool_drop(best);
    }
    pthread_mutex_unlock(&g_pool.mu);
    if (p) return p;
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    __atomic_fetch_add(&g_rings_mapped, 1, __ATOMIC_RELAXED);
    *got = len;
    return p == MAP_FAILED ? NULL : p;
}

void mk_dstream_rings_drop(void)
{
    pthread_mutex_lock(&g_pool.mu);
    while (g_pool.n) {
        munmap(g_pool.p[0], g_pool.len[0]);
        pool_drop(0);
    }
    pthread_mutex_unlock(&g_pool.mu);
}

static void ring_put(void *p, size_t len)
{
    if (!p) return;
    if (len > POOL_RING_MAX) {
        munmap(p, len);
        return;
    }
    pthread_mutex_lock(&g_pool.mu);
    while (g_pool.n && (g_pool.n == POOL_MAX || g_pool.bytes + len > POOL_BYTES)) { /* the oldest go */
        munmap(g_pool.p[0], g_pool.len[0]);
        pool_drop(0);
    }
    g_pool.p[g_pool.n] = p;
    g_pool.len[g_pool.n++] = len;
    g_pool.bytes += len;
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

/* ---- taps ------------------------------------------------------------------------------ */

/* Hash [t->pos, upto) read through the page cache, at most `windows` windows of TAP_WIN
 * (0: all); t->mu held. The first failure stays in t->err and t->msg. */
static void tap_read_to(mk_dtap *t, uint64_t upto, unsigned windows)
{
    if (t->pos < upto && !windows) mk_rfile_willneed(&t->f, t->pos, upto - t->pos); /* that far, no further */
    for (unsigned w = 0; t->err == MK_OK && t->pos < upto && (!windows || w < windows); w++) {
        size_t n = upto - t->pos < TAP_WIN ? (size_t)(upto - t->pos) : TAP_WIN;
        mk_status st = mk_rfile_read(&t->f, t->pos, t->buf, n);
        if (st != MK_OK) {
            t->err = st;
            snprintf(t->msg, sizeof t->msg, "%s", mk_errmsg());
            return;
        }
        mk_hasher_update(t->h, t->buf, n);
        t->pos += n;
        t->own += n;
    }
}

/* Bytes [fs, fs + n) of the file, read by a stream: hashed where they continue the hash (the
 * bytes before them read first where none has). */
static void tap_offer(mk_dtap *t, uint64_t fs, const unsigned char *p, uint64_t n)
{
    pthread_mutex_lock(&t->mu);
    if (fs + n > t->pos) {
        tap_read_to(t, fs, 0);
        if (t->err == MK_OK && t->pos >= fs && fs + n > t->pos) {
            mk_hasher_update(t->h, p + (t->pos - fs), (size_t)(fs + n - t->pos));
            t->pos = fs + n;
        }
    }
    pthread_mutex_unlock(&t->mu);
}

/* Wait until the stream with this ticket may read (false: it was stopped first). */
static bool tap_wait_turn(mk_dtap *t, uint64_t ticket, const bool *stop)
{
    pthread_mutex_lock(&t->mu);
    while (t->turn != ticket && !__atomic_load_n(stop, __ATOMIC_ACQUIRE)) pthread_cond_wait(&t->turn_cv, &t->mu);
    bool go = t->turn == ticket && !__atomic_load_n(stop, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&t->mu);
    return go;
}

/* The stream with this ticket has read its last block (or stopped): the next one's turn. */
static void tap_done(mk_dtap *t, uint64_t ticket)
{
    pthread_mutex_lock(&t->mu);
    t->fin[ticket % TAP_TICKETS] = ticket + 1;
    while (t->fin[t->turn % TAP_TICKETS] == t->turn + 1) {
        t->fin[t->turn % TAP_TICKETS] = 0;
        t->turn++;
    }
    pthread_cond_broadcast(&t->turn_cv);
    pthread_mutex_unlock(&t->mu);
}

/* The tap of file (dev, ino), or NULL; g_tap_mu held. */
static mk_dtap *tap_find(dev_t dev, ino_t ino)
{
    mk_dtap *t = g_taps;
    while (t && !(t->dev == dev && t->ino == ino)) t = t->next;
    return t;
}

/* The stream's file identity, and a ticket of its file's tap where there is one. */
static void tap_attach(mk_dstream *s)
{
    struct stat st;
    if (fstat(s->f->fd, &st) != 0) return;
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    pthread_mutex_lock(&g_tap_mu);
    mk_dtap *t = tap_find(s->dev, s->ino);
    if (t) {
        pthread_mutex_lock(&t->mu);
        if (t->next_ticket - t->turn < TAP_TICKETS) { /* else: read without feeding it */
            s->tap = t;
            s->ticket = t->next_ticket++;
        }
        pthread_mutex_unlock(&t->mu);
    }
    pthread_mutex_unlock(&g_tap_mu);
}

bool mk_dstream_keeps(const mk_dstream *s) { return s && s->keep; }

bool mk_dstream_same_file(const mk_dstream *a, const mk_dstream *b)
{
    return a && b && a->dev == b->dev && a->ino == b->ino;
}

mk_status mk_dtap_open(const char *path, mk_dtap **out)
{
    *out = NULL;
    mk_dtap *t = calloc(1, sizeof *t);
    if (!t) return MK_ERR_NOMEM;
    t->f.fd = -1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->turn_cv, NULL);
    mk_status s = mk_rfile_open(&t->f, path);
    if (s == MK_OK && (!(t->h = mk_hasher_new()) || !(t->buf = malloc(TAP_WIN)))) s = MK_ERR_NOMEM;
    struct stat st;
    if (s == MK_OK && !t->f.remote && fstat(t->f.fd, &st) == 0) {
        t->dev = st.st_dev;
        t->ino = st.st_ino;
        pthread_mutex_lock(&g_tap_mu);
        if (!tap_find(t->dev, t->ino)) {
            t->next = g_taps;
            g_taps = t;
            t->listed = true;
        }
        pthread_mutex_unlock(&g_tap_mu);
    }
    if (s != MK_OK) {
        mk_dtap_close(t);
        return s;
    }
    *out = t;
    return MK_OK;
}

uint64_t mk_dtap_size(const mk_dtap *t) { return t->f.size; }

uint64_t mk_dtap_read_bytes(mk_dtap *t)
{
    pthread_mutex_lock(&t->mu);
    uint64_t n = t->own;
    pthread_mutex_unlock(&t->mu);
    return n;
}

mk_status mk_dtap_fill(mk_dtap *t, uint64_t upto)
{
    if (upto > t->f.size) upto = t->f.size;
    pthread_mutex_lock(&t->mu);
    if (t->pos < upto) mk_rfile_willneed(&t->f, t->pos, upto - t->pos); /* that far, no further */
    pthread_mutex_unlock(&t->mu);
    for (;;) { /* a window at a time: a stream's reader may be waiting to hand a block over */
        pthread_mutex_lock(&t->mu);
        tap_read_to(t, upto, 1);
        bool more = t->err == MK_OK && t->pos < upto;
        pthread_mutex_unlock(&t->mu);
        if (!more) break;
    }
    return t->err == MK_OK ? MK_OK : mk_error(t->err, "%s", t->msg);
}

mk_status mk_dtap_finish(mk_dtap *t, mk_hash128 *out)
{
    mk_status s = mk_dtap_fill(t, t->f.size);
    if (s == MK_OK) *out = mk_hasher_digest(t->h);
    mk_dtap_close(t);
    return s;
}

void mk_dtap_close(mk_dtap *t)
{
    if (!t) return;
    if (t->listed) {
        pthread_mutex_lock(&g_tap_mu);
        mk_dtap **pp = &g_taps;
        while (*pp && *pp != t) pp = &(*pp)->next;
        if (*pp) *pp = t->next;
        pthread_mutex_unlock(&g_tap_mu);
    }
    if (t->f.fd >= 0) mk_rfile_close(&t->f);
    mk_hasher_free(t->h);
    free(t->buf);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->turn_cv);
    free(t);
}

/* ---- streams ---------------------------------------------------------------------------- */

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
        r = read_at_least(s->bfd >= 0 ? s->bfd : s->f->fd, buf, fs, need, need);
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
    bool go = !s->tap || tap_wait_turn(s->tap, s->ticket, &s->stop);
    for (uint64_t j = 0; go && j < s->nb; j++) {
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
        unsigned char *buf = s->ring + (size_t)(j % s->S) * DS_B;
        mk_status st = fill(s, j, buf);
        if (st == MK_OK && s->tap) {
            uint64_t fs = s->a0 + j * DS_B;
            tap_offer(s->tap, fs, buf, (fs + DS_B < s->end ? fs + DS_B : s->end) - fs);
        }
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
    if (s->tap) tap_done(s->tap, s->ticket);
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
        if (!s->keep) {
            pthread_mutex_lock(&s->mu);
            sl->used += take;
            if (sl->used == blk_need(s, j)) {
                sl->state = SLOT_EMPTY;
                pthread_cond_broadcast(&s->freed);
            }
            pthread_mutex_unlock(&s->mu);
        }
        d += take;
        p += take;
        n -= take;
    }
    return MK_OK;
}

const void *mk_dstream_borrow(mk_dstream *s, uint64_t pos, size_t n)
{
    uint64_t p = s->off + pos;
    if (pos > s->end - s->off || n > s->end - p) MK_BUG("stream read past its range");
    if (!s->keep) return NULL;
    /* kept: block j sits in slot j, so the range lies in the ring in file order */
    uint64_t j0 = (p - s->a0) / DS_B, j1 = n ? (p + n - 1 - s->a0) / DS_B : j0;
    bool ok = true;
    pthread_mutex_lock(&s->mu);
    for (uint64_t j = j0; j <= j1 && ok && n; j++) {
        ds_slot *sl = &s->slot[j];
        while (!(sl->state == SLOT_READY && sl->blk == j) && !(s->err != MK_OK && s->err_blk <= j))
            pthread_cond_wait(&s->ready, &s->mu);
        ok = sl->state == SLOT_READY && sl->blk == j;
    }
    pthread_mutex_unlock(&s->mu);
    return ok ? s->ring + (p - s->a0) : NULL;
}

void mk_dstream_close(mk_dstream *s)
{
    if (!s) return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        __atomic_store_n(&s->stop, true, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&s->freed);
        pthread_mutex_unlock(&s->mu);
        if (s->tap) { /* a reader waiting for its turn */
            pthread_mutex_lock(&s->tap->mu);
            pthread_cond_broadcast(&s->tap->turn_cv);
            pthread_mutex_unlock(&s->tap->mu);
        }
        pthread_join(s->th, NULL);
    } else if (s->tap) {
        tap_done(s->tap, s->ticket);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->ready);
    pthread_cond_destroy(&s->freed);
    if (s->map) munmap((void *)s->map, s->map_len);
    if (s->dfd >= 0) close(s->dfd);
    if (s->bfd >= 0) close(s->bfd);
    ring_put(s->ring, s->ring_len);
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
    s->keep = s->S == s->nb; /* nothing to reuse: keep every block */
    s->ring = ring_get(s->S * (size_t)DS_B, &s->ring_len);
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
    /* A cached block read through the file's own descriptor would start the kernel's
     * read-ahead past it, into the blocks after it: those would then be cached too, read
     * through the page cache in turn, and so on to the end. */
    s->bfd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (s->bfd >= 0) posix_fadvise(s->bfd, 0, 0, POSIX_FADV_RANDOM);
    s->direct_ok = true;
    s->uncached = g_mode == MK_DIO_ALWAYS;
    s->off = off;
    s->end = off + len;
    s->a0 = off / al * al;
    s->nb = (s->end - s->a0 + DS_B - 1) / DS_B;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->ready, NULL);
    pthread_cond_init(&s->freed, NULL);
    tap_attach(s);
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
