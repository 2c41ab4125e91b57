/* test_dstream.c - a stream reads a file range once, around the page cache: every byte comes
 * back as written, for ranges that start and end off the alignment O_DIRECT needs, read by
 * several threads taking pieces in order; with O_DIRECT for blocks the page cache lacks and an
 * ordinary read for those it holds; a file that ends early is an error naming it; a stream
 * closed with bytes unread stops; streams turned off give none. */
#include "harness.h"

#include "../../core/mk_dstream.h"
#include "../../core/mk_io.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned char dbyte(uint64_t i) { return (unsigned char)(i * 2654435761u >> 13); }

/* A file of n pattern bytes, flushed to the disk and dropped from the page cache where the
 * kernel lets it. */
static char *dfile(const char *name, uint64_t n)
{
    char *path = mk_path_join(mk_test_tmpdir(), name);
    unsigned char *d = malloc((size_t)n);
    if (!path || !d) {
        free(d);
        free(path);
        return NULL;
    }
    for (uint64_t i = 0; i < n; i++) d[i] = dbyte(i);
    mk_status s = mk_write_file_atomic(path, d, (size_t)n);
    free(d);
    int fd = s == MK_OK ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    return s == MK_OK ? path : NULL;
}

typedef struct dreader {
    mk_dstream *s;
    uint64_t off, len, piece, *next; /* pieces handed out in order from *next */
    pthread_mutex_t *mu;
    mk_status st;
    uint64_t bad; /* bytes that differ from the file's (first one at bad_at) */
    uint64_t bad_at;
} dreader;

static void *dread(void *p)
{
    dreader *r = p;
    unsigned char *buf = malloc((size_t)r->piece);
    if (!buf) {
        r->st = MK_ERR_NOMEM;
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(r->mu);
        uint64_t pos = *r->next;
        *r->next = pos + r->piece;
        pthread_mutex_unlock(r->mu);
        if (pos >= r->len) break;
        size_t n = (size_t)(r->len - pos < r->piece ? r->len - pos : r->piece);
        r->st = mk_dstream_read(r->s, pos, buf, n);
        if (r->st != MK_OK) break;
        for (size_t i = 0; i < n; i++)
            if (buf[i] != dbyte(r->off + pos + i) && !r->bad++) r->bad_at = pos + i;
    }
    free(buf);
    return NULL;
}

/* Reads [off, off + len) of f with `threads` threads in pieces of `piece` bytes; the blocks read
 * with O_DIRECT and with an ordinary read, through *direct and *cached. */
static void read_range(const mk_rfile *f, uint64_t off, uint64_t len, uint64_t piece, int threads, uint64_t *direct,
                       uint64_t *cached)
{
    mk_dstream *s = NULL;
    CHECK_OK(mk_dstream_open(f, off, len, (uint64_t)threads * piece, &s));
    CHECK_MSG(s != NULL, "no stream over %s (a file system without O_DIRECT?)", f->path);
    if (!s) return;
    uint64_t next = 0;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    dreader r[4];
    pthread_t th[4];
    for (int t = 0; t < threads; t++) {
        r[t] = (dreader){s, off, len, piece, &next, &mu, MK_OK, 0, 0};
        CHECK(pthread_create(&th[t], NULL, dread, &r[t]) == 0);
    }
    for (int t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
        CHECK_OK(r[t].st);
        CHECK_MSG(r[t].bad == 0, "range [%llu, +%llu), pieces of %llu: %llu byte(s) differ, first at %llu",
                  (unsigned long long)off, (unsigned long long)len, (unsigned long long)piece,
                  (unsigned long long)r[t].bad, (unsigned long long)r[t].bad_at);
    }
    mk_dstream_counts(s, direct, cached);
    mk_dstream_close(s);
}

MK_TEST(dstream_reads_every_byte_once)
{
    const uint64_t n = 3 * MK_DSTREAM_BLOCK + 12345;
    char *path = dfile("ds.bin", n);
    CHECK(path != NULL);
    if (!path) return;
    mk_rfile f;
    CHECK_OK(mk_rfile_open(&f, path));
    /* ranges off the 4096-byte alignment at either end, within one block, across all */
    const uint64_t ranges[][2] = {{0, n}, {4097, n - 4097 - 511}, {13, 4000}, {MK_DSTREAM_BLOCK - 5, 10}, {8192, 4096}};
    const uint64_t pieces[] = {1, 4093, 65536 + 7, MK_DSTREAM_BLOCK + 3};
    mk_dstream_set_mode(MK_DIO_ALWAYS);
    for (size_t k = 0; k < sizeof ranges / sizeof *ranges; k++)
        for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++) {
            if (pieces[p] == 1 && ranges[k][1] > 65536) continue; /* byte by byte: the short ranges */
            uint64_t d = 0, c = 0, nb = (ranges[k][0] % 4096 + ranges[k][1] + MK_DSTREAM_BLOCK - 1) / MK_DSTREAM_BLOCK;
            read_range(&f, ranges[k][0], ranges[k][1], pieces[p], 1 + (int)(p % 3), &d, &c);
            CHECK_MSG(d == nb && c == 0, "always: %llu direct and %llu ordinary block reads for %llu blocks",
                      (unsigned long long)d, (unsigned long long)c, (unsigned long long)nb);
        }
    /* auto: all of it cached now (read it through the page cache first) */
    mk_dstream_set_mode(MK_DIO_AUTO);
    char *all = malloc((size_t)n);
    CHECK(all && mk_rfile_read(&f, 0, all, (size_t)n) == MK_OK);
    free(all);
    uint64_t d = 0, c = 0;
    read_range(&f, 4097, n - 4097, 65536 + 7, 2, &d, &c);
    CHECK_MSG(d == 0 && c > 0, "auto, cached: %llu direct and %llu ordinary block reads", (unsigned long long)d,
              (unsigned long long)c);
    /* auto, none of it cached: O_DIRECT (unless the kernel would not drop the pages) */
    posix_fadvise(f.fd, 0, 0, POSIX_FADV_DONTNEED);
    read_range(&f, 0, n, 65536, 2, &d, &c);
    mk_rfile_close(&f);
    free(path);
}

MK_TEST(dstream_names_a_file_that_ends_early)
{
    const uint64_t n = 8 * MK_DSTREAM_BLOCK;
    char *path = dfile("ds_short.bin", n);
    CHECK(path != NULL);
    if (!path) return;
    mk_rfile f;
    CHECK_OK(mk_rfile_open(&f, path));
    mk_dstream_set_mode(MK_DIO_ALWAYS);
    mk_dstream *s = NULL;
    CHECK_OK(mk_dstream_open(&f, 100, n - 100, MK_DSTREAM_BLOCK, &s));
    /* the ring holds at most half the range: its second half is read after this */
    CHECK(truncate(path, (off_t)(n / 2)) == 0);
    unsigned char *buf = malloc(MK_DSTREAM_BLOCK);
    mk_status st = MK_OK;
    uint64_t pos = 0;
    for (; s && buf && pos < n - 100 && st == MK_OK; pos += MK_DSTREAM_BLOCK) {
        size_t len = n - 100 - pos < MK_DSTREAM_BLOCK ? (size_t)(n - 100 - pos) : MK_DSTREAM_BLOCK;
        st = mk_dstream_read(s, pos, buf, len);
    }
    CHECK_MSG(st == MK_ERR_IO, "a file cut to half its size during the read: status %d", st);
    CHECK_MSG(strstr(mk_errmsg(), path) && strstr(mk_errmsg(), "file ended"), "message: %s", mk_errmsg());
    mk_dstream_close(s);
    /* closed with bytes unread (a failed pass): returns */
    CHECK_OK(mk_dstream_open(&f, 0, n / 2, MK_DSTREAM_BLOCK, &s));
    if (s && buf) CHECK_OK(mk_dstream_read(s, 0, buf, 4096));
    mk_dstream_close(s);
    /* off: no stream */
    mk_dstream_set_mode(MK_DIO_OFF);
    s = (mk_dstream *)1;
    CHECK_OK(mk_dstream_open(&f, 0, n / 2, MK_DSTREAM_BLOCK, &s));
    CHECK(s == NULL);
    mk_dstream_set_mode(MK_DIO_AUTO);
    free(buf);
    mk_rfile_close(&f);
    free(path);
}
