/* test_dstream.c - a stream reads a file range once, around the page cache: every byte comes
 * back as written, for ranges that start and end off the alignment O_DIRECT needs, read by
 * several threads taking pieces in order; with O_DIRECT for blocks the page cache lacks and an
 * ordinary read for those it holds; a file that ends early is an error naming it; a stream
 * closed with bytes unread stops; streams turned off give none. A stream whose reach covers
 * its range keeps every block for repeated reads in any order. A closed stream's ring serves
 * the next one it fits.
 *
 * A tap hashes a file from what its streams read: the hash is the file's (mk_hash_file)
 * whether streams cover it in order, leave gaps (a header, tensors not streamed), overlap at
 * their aligned ends, or come out of order; a later stream of the file waits for the one
 * before it, so both hand their blocks over in file order; a stream closed unread gives its
 * turn away; a file cut short is an error naming it. */
#include "harness.h"

#include "../../core/mk_dstream.h"
#include "../../core/mk_hash.h"
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

/* Reads all of stream s ([off, off + len) of the file) front to back in pieces of `piece`
 * bytes and checks them; false where it could not. */
static bool read_all(mk_dstream *s, uint64_t off, uint64_t len, size_t piece)
{
    unsigned char *buf = malloc(piece);
    bool ok = buf != NULL;
    for (uint64_t p = 0; ok && p < len; p += piece) {
        size_t n = len - p < piece ? (size_t)(len - p) : piece;
        ok = mk_dstream_read(s, p, buf, n) == MK_OK;
        for (size_t i = 0; ok && i < n; i++)
            if (buf[i] != dbyte(off + p + i)) {
                CHECK_MSG(0, "stream at %llu: byte %llu differs", (unsigned long long)off, (unsigned long long)(p + i));
                ok = false;
            }
    }
    free(buf);
    return ok;
}

/* The tap's hash of a file read by streams over `ranges` (in that order, each read whole
 * before the next unless `together`: then all are opened first and read in turn), against
 * the file's own hash. */
static void tap_case(const char *path, const uint64_t (*ranges)[2], size_t nr, bool together, uint64_t own,
                     const char *what)
{
    mk_hash128 want, got = {0, 0};
    CHECK_OK(mk_hash_file(path, &want));
    mk_rfile f;
    mk_dtap *t = NULL;
    CHECK_OK(mk_rfile_open(&f, path));
    CHECK_OK(mk_dtap_open(path, &t));
    if (!t) return;
    mk_dstream *s[8] = {NULL};
    for (size_t r = 0; r < nr && r < 8; r++) {
        CHECK_OK(mk_dstream_open(&f, ranges[r][0], ranges[r][1], 4 * 65536, &s[r]));
        CHECK_MSG(s[r] != NULL, "%s: no stream over %s (a file system without O_DIRECT?)", what, path);
        if (!together && s[r]) {
            CHECK(read_all(s[r], ranges[r][0], ranges[r][1], 65536 + 5));
            mk_dstream_close(s[r]);
            s[r] = NULL;
        }
    }
    for (size_t r = 0; together && r < nr && r < 8; r++) {
        if (s[r]) CHECK(read_all(s[r], ranges[r][0], ranges[r][1], 4093));
        mk_dstream_close(s[r]);
    }
    /* what the streams did not hand over, the tap read itself: no more */
    uint64_t read = mk_dtap_read_bytes(t);
    if (own != UINT64_MAX)
        CHECK_MSG(read == own, "%s: the tap read %llu bytes itself, not %llu", what, (unsigned long long)read,
                  (unsigned long long)own);
    CHECK_OK(mk_dtap_finish(t, &got));
    CHECK_MSG(mk_hash128_eq(got, want), "%s: the tap's hash %016llx%016llx, the file's %016llx%016llx", what,
              (unsigned long long)got.hi, (unsigned long long)got.lo, (unsigned long long)want.hi,
              (unsigned long long)want.lo);
    mk_rfile_close(&f);
}

MK_TEST(dtap_hashes_the_file_its_streams_read)
{
    const uint64_t B = MK_DSTREAM_BLOCK, n = 5 * B + 7777;
    char *path = dfile("tap.bin", n);
    CHECK(path != NULL);
    if (!path) return;
    mk_dstream_set_mode(MK_DIO_ALWAYS);
    /* a header left to the tap, then ranges end to end, off the alignment */
    const uint64_t in_order[][2] = {{5000, B - 5000 + 13}, {B + 13, 2 * B}, {3 * B + 13, n - 3 * B - 13}};
    tap_case(path, in_order, 3, false, 4096, "in order"); /* the header up to the first block */
    /* gaps between the ranges (tensors read through the page cache), and a tail */
    const uint64_t gaps[][2] = {{100, 4000}, {B + 1, B / 2}, {3 * B + 4097, B}};
    tap_case(path, gaps, 3, false, UINT64_MAX, "gaps");
    /* out of file order: the later bytes first, then an earlier range the tap is past */
    const uint64_t back[][2] = {{3 * B, B}, {10, 2 * B}, {4 * B + 5, n - 4 * B - 5}};
    tap_case(path, back, 3, false, 3 * B, "out of order"); /* all before the first */
    /* opened together, read one after another: each waits for the one before it */
    tap_case(path, in_order, 3, true, 4096, "opened together");
    tap_case(path, back, 3, true, 3 * B, "opened together, out of order");
    /* the first longer than its ring: it stops until read, and the second waits its turn
     * instead of handing over blocks the tap would have to reach by reading the gap itself */
    const uint64_t long_first[][2] = {{5000, 5 * B - 5000}, {5 * B, n - 5 * B}};
    tap_case(path, long_first, 2, true, 4096, "a later stream waits for the one before it");
    /* an ordinary read for blocks the page cache holds feeds it the same */
    mk_dstream_set_mode(MK_DIO_AUTO);
    mk_hash128 h;
    CHECK_OK(mk_hash_file(path, &h)); /* cached now */
    tap_case(path, in_order, 3, false, 4096, "from the page cache");
    mk_dstream_set_mode(MK_DIO_AUTO);
    free(path);
}

MK_TEST(dtap_turns_pass_when_a_stream_closes_unread)
{
    const uint64_t B = MK_DSTREAM_BLOCK, n = 8 * B;
    char *path = dfile("tap_turn.bin", n);
    CHECK(path != NULL);
    if (!path) return;
    mk_dstream_set_mode(MK_DIO_ALWAYS);
    mk_hash128 want, got = {0, 0};
    CHECK_OK(mk_hash_file(path, &want));
    mk_rfile f;
    mk_dtap *t = NULL;
    CHECK_OK(mk_rfile_open(&f, path));
    CHECK_OK(mk_dtap_open(path, &t));
    /* the first stream's ring holds a fraction of its range: it stops half read */
    mk_dstream *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(mk_dstream_open(&f, 0, 6 * B, B, &a));
    CHECK_OK(mk_dstream_open(&f, 6 * B, B, B, &b));
    CHECK_OK(mk_dstream_open(&f, 7 * B, B, B, &c));
    if (a) CHECK(read_all(a, 0, B, 4096));
    mk_dstream_close(a);
    mk_dstream_close(b); /* never read: its turn goes to c */
    if (c) CHECK(read_all(c, 7 * B, B, 65536));
    mk_dstream_close(c);
    CHECK_OK(mk_dtap_finish(t, &got));
    CHECK_MSG(mk_hash128_eq(got, want), "streams closed unread: the tap's hash differs from the file's");
    /* a second tap on the same file is fed by its own reads alone, and agrees */
    mk_dtap *t1 = NULL, *t2 = NULL;
    CHECK_OK(mk_dtap_open(path, &t1));
    CHECK_OK(mk_dtap_open(path, &t2));
    CHECK_OK(mk_dstream_open(&f, 0, n, 0, &a));
    if (a) CHECK(read_all(a, 0, n, 1 << 20));
    mk_dstream_close(a);
    CHECK_OK(mk_dtap_fill(t2, B + 3));
    mk_hash128 g1 = {0, 0}, g2 = {0, 0};
    CHECK_OK(mk_dtap_finish(t1, &g1));
    CHECK_OK(mk_dtap_finish(t2, &g2));
    CHECK(mk_hash128_eq(g1, want) && mk_hash128_eq(g2, want));
    mk_dstream_set_mode(MK_DIO_AUTO);
    mk_rfile_close(&f);
    free(path);
}

MK_TEST(dstream_keeps_a_range_it_holds_whole)
{
    const uint64_t B = MK_DSTREAM_BLOCK, n = 6 * B + 999;
    char *path = dfile("keep.bin", n);
    CHECK(path != NULL);
    if (!path) return;
    mk_dstream_set_mode(MK_DIO_ALWAYS);
    mk_rfile f;
    CHECK_OK(mk_rfile_open(&f, path));
    mk_dstream *s = NULL;
    const uint64_t off = 333, len = n - 333 - 7;
    CHECK_OK(mk_dstream_open(&f, off, len, len, &s));
    unsigned char *buf = malloc(B);
    /* backwards, then forwards twice: every piece comes back each time */
    for (int pass = 0; s && buf && pass < 3; pass++)
        for (uint64_t k = 0; k < 8; k++) {
            uint64_t p = pass == 0 ? (7 - k) * (len / 8) : k * (len / 8);
            size_t m = (size_t)(len / 8);
            CHECK_OK(mk_dstream_read(s, p, buf, m));
            uint64_t bad = 0;
            for (size_t i = 0; i < m; i++) bad += buf[i] != dbyte(off + p + i);
            CHECK_MSG(bad == 0, "kept stream, pass %d, piece %llu: %llu byte(s) differ", pass, (unsigned long long)k,
                      (unsigned long long)bad);
        }
    /* borrowed in place, across block boundaries: the same bytes, no copy */
    for (uint64_t k = 0; s && k < 8; k++) {
        uint64_t p = (7 - k) * (len / 8);
        const unsigned char *b = mk_dstream_borrow(s, p, (size_t)(len / 8));
        CHECK_MSG(b != NULL, "a kept stream lends piece %llu", (unsigned long long)k);
        uint64_t bad = 0;
        for (size_t i = 0; b && i < (size_t)(len / 8); i++) bad += b[i] != dbyte(off + p + i);
        CHECK_MSG(bad == 0, "kept stream, borrowed piece %llu: %llu byte(s) differ", (unsigned long long)k,
                  (unsigned long long)bad);
    }
    mk_dstream_close(s);
    /* a stream that reuses its ring lends nothing */
    s = NULL;
    CHECK_OK(mk_dstream_open(&f, off, len, B, &s));
    CHECK_MSG(s && !mk_dstream_keeps(s) && mk_dstream_borrow(s, 0, 16) == NULL, "a ring stream lends its bytes");
    for (uint64_t p = 0; s && buf && p < len; p += B) CHECK_OK(mk_dstream_read(s, p, buf, (size_t)(len - p < B ? len - p : B)));
    mk_dstream_close(s);
    free(buf);
    mk_dstream_set_mode(MK_DIO_AUTO);
    mk_rfile_close(&f);
    free(path);
}

/* A closed stream's ring serves the next stream that fits it (no fresh pages to fault in and
 * zero), and its blocks are the new range's, not the old one's; a ring more than twice a
 * stream's length does not serve it. */
MK_TEST(dstream_takes_a_kept_ring)
{
    const uint64_t B = MK_DSTREAM_BLOCK, n = 20 * B;
    char *path = dfile("rings.bin", n);
    CHECK(path != NULL);
    if (!path) return;
    mk_dstream_set_mode(MK_DIO_ALWAYS);
    mk_dstream_rings_drop();
    mk_rfile f;
    CHECK_OK(mk_rfile_open(&f, path));
    unsigned char *buf = malloc((size_t)(12 * B));
    /* 12 blocks held whole (fresh), then 10 (the ring of 12 serves), then 11 from another
     * offset (it serves again), then 5 (12 is over twice 5: fresh), then 18 (fresh) */
    const uint64_t off[] = {0, 5 * B + 100, 3 * B, 7 * B, 0}, len[] = {12 * B, 10 * B - 200, 11 * B, 5 * B, 18 * B};
    const uint64_t want[] = {1, 0, 0, 1, 1};
    for (int k = 0; k < 5 && buf; k++) {
        uint64_t before = mk_dstream_rings_mapped();
        mk_dstream *s = NULL;
        CHECK_OK(mk_dstream_open(&f, off[k], len[k], len[k], &s));
        uint64_t bad = 0;
        for (uint64_t p = 0; s && p < len[k]; p += 12 * B / 2) {
            size_t m = (size_t)(len[k] - p < 12 * B / 2 ? len[k] - p : 12 * B / 2);
            CHECK_OK(mk_dstream_read(s, p, buf, m));
            for (size_t i = 0; i < m; i++) bad += buf[i] != dbyte(off[k] + p + i);
        }
        CHECK_MSG(bad == 0, "stream %d: %llu byte(s) differ from the file's", k, (unsigned long long)bad);
        mk_dstream_close(s);
        uint64_t fresh = mk_dstream_rings_mapped() - before;
        CHECK_MSG(fresh == want[k], "stream %d (%llu blocks): %llu ring(s) mapped, %llu expected", k,
                  (unsigned long long)((len[k] + B - 1) / B), (unsigned long long)fresh, (unsigned long long)want[k]);
    }
    free(buf);
    mk_dstream_set_mode(MK_DIO_AUTO);
    mk_rfile_close(&f);
    free(path);
}

MK_TEST(dtap_names_a_file_cut_short)
{
    const uint64_t B = MK_DSTREAM_BLOCK, n = 4 * B;
    char *path = dfile("tap_short.bin", n);
    CHECK(path != NULL);
    if (!path) return;
    mk_dtap *t = NULL;
    CHECK_OK(mk_dtap_open(path, &t));
    CHECK_OK(mk_dtap_fill(t, B));
    CHECK(truncate(path, (off_t)(2 * B)) == 0);
    mk_hash128 h;
    mk_status st = t ? mk_dtap_finish(t, &h) : MK_OK;
    CHECK_MSG(st == MK_ERR_IO || st == MK_ERR_FORMAT, "a file cut during hashing: status %d", st);
    CHECK_MSG(strstr(mk_errmsg(), path) != NULL, "message: %s", mk_errmsg());
    free(path);
}
