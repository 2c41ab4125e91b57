/* test_dwrite.c - a file written around the page cache (core/mk_dwrite.h) holds exactly what
 * pwrite of every piece would leave: pieces put in order and out of it, by two threads, over
 * window ends and the file's unaligned end; bytes never put are zeros, also where a window's
 * buffer is reused from one that held other bytes; windows past the gathering cap go through
 * the page cache and still hash; the hash is the whole file's (mk_hash_file); the file ends at
 * its size; a put into a window already written is an error that names the file. */
#include "harness.h"

#include "../../core/mk_dwrite.h"
#include "../../core/mk_hash.h"
#include "../../core/mk_io.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct dw_piece {
    uint64_t off, len;
} dw_piece;

typedef struct dw_putter {
    mk_dwrite *d;
    const unsigned char *src; /* the file's bytes to put */
    const dw_piece *p;
    size_t n, from, step;     /* pieces from, from + step, ... */
    mk_status st;
} dw_putter;

static void *dw_put_some(void *arg)
{
    dw_putter *u = arg;
    for (size_t i = u->from; i < u->n && u->st == MK_OK; i += u->step)
        u->st = mk_dwrite_put(u->d, u->p[i].off, u->src + u->p[i].off, u->p[i].len);
    return NULL;
}

/* Waits until `k` windows are written. */
static void dw_wait_written(mk_dwrite *d, uint64_t k)
{
    for (int tries = 0; tries < 20000; tries++) {
        uint64_t a, b;
        mk_dwrite_counts(d, &a, &b);
        if (a + b >= k) return;
        usleep(500);
    }
    CHECK_MSG(0, "window %llu not written after 10 s", (unsigned long long)k);
}

/* A file of `size` bytes written from pieces p[n] (put by two threads, each piece once; the
 * bytes outside every piece stay zeros) with windows of `win` bytes, at most `gather`
 * gathering; checked against the bytes and hash pwrite would give. *direct, *through: the
 * windows written each way. serial: one thread puts the pieces in order, saying after each
 * that the bytes below its end are final and waiting until the windows below are written
 * (so each window takes the buffer the one before gave back). */
static void dw_check(const char *name, uint64_t size, const dw_piece *p, size_t n, uint64_t win, size_t gather,
                     bool serial, uint64_t *direct, uint64_t *through)
{
    char *path = mk_path_join(mk_test_tmpdir(), name);
    unsigned char *src = malloc((size_t)size + 1), *want = calloc(1, (size_t)size + 1), *got = malloc((size_t)size + 1);
    CHECK(path && src && want && got);
    if (!path || !src || !want || !got) goto out;
    for (uint64_t i = 0; i < size; i++) src[i] = (unsigned char)(i * 2654435761u >> 11 | 1); /* never 0 */
    for (size_t i = 0; i < n; i++) memcpy(want + p[i].off, src + p[i].off, (size_t)p[i].len);
    unlink(path);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    if (fd < 0) goto out;
    CHECK(ftruncate(fd, (off_t)size) == 0); /* as the sink preallocates: unwritten bytes read as zeros */
    mk_dwrite_limits(win, gather);
    mk_dwrite *d = NULL;
    CHECK_OK(mk_dwrite_open(fd, path, size, &d));
    mk_dwrite_limits(0, 0);
    CHECK_MSG(d != NULL, "no O_DIRECT writer for %s (a file system without O_DIRECT?)", path);
    if (!d) {
        close(fd);
        goto out;
    }
    if (serial) {
        for (size_t i = 0; i < n; i++) {
            CHECK_OK(mk_dwrite_put(d, p[i].off, src + p[i].off, p[i].len));
            mk_dwrite_final(d, p[i].off + p[i].len);
            dw_wait_written(d, (p[i].off + p[i].len) / win);
        }
    } else {
        dw_putter u[2] = {{d, src, p, n, 0, 2, MK_OK}, {d, src, p, n, 1, 2, MK_OK}};
        pthread_t th[2];
        for (int t = 0; t < 2; t++) CHECK(pthread_create(&th[t], NULL, dw_put_some, &u[t]) == 0);
        for (int t = 0; t < 2; t++) {
            pthread_join(th[t], NULL);
            CHECK_OK(u[t].st);
        }
    }
    char hex[33] = {0}, want_hex[33];
    CHECK_OK(mk_dwrite_finish(d, hex));
    mk_dwrite_counts(d, direct, through);
    mk_dwrite_close(d);
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && (uint64_t)st.st_size == size);
    CHECK(pread(fd, got, (size_t)size, 0) == (ssize_t)size);
    close(fd);
    uint64_t bad = 0, first = 0;
    for (uint64_t i = 0; i < size; i++)
        if (got[i] != want[i] && !bad++) first = i;
    CHECK_MSG(bad == 0, "%s: %llu byte(s) differ from pwrite's, first at %llu (got %u, want %u)", name,
              (unsigned long long)bad, (unsigned long long)first, bad ? got[first] : 0, bad ? want[first] : 0);
    mk_hash128 h;
    CHECK_OK(mk_hash_file(path, &h));
    mk_hash128_hex(h, want_hex);
    CHECK_STR(hex, want_hex);
    unlink(path);
out:
    free(src);
    free(want);
    free(got);
    free(path);
}

MK_TEST(dwrite_in_order_writes_every_window_directly)
{
    /* pieces of odd lengths covering 1 MiB + 777 bytes whole, windows of 128 KiB: all 9 gather */
    const uint64_t size = (1u << 20) + 777;
    dw_piece p[64];
    size_t n = 0;
    for (uint64_t off = 0; off < size; n++) {
        uint64_t len = 28000 + (n * 7919) % 9000;
        p[n] = (dw_piece){off, len < size - off ? len : size - off};
        off += p[n].len;
    }
    uint64_t direct = 0, through = 0;
    dw_check("dw-in-order", size, p, n, 128 << 10, 16, false, &direct, &through);
    CHECK_MSG(direct == 9 && through == 0, "windows: %llu direct, %llu through (want 9 and 0)",
              (unsigned long long)direct, (unsigned long long)through);
}

MK_TEST(dwrite_holes_read_as_zeros_in_reused_windows)
{
    /* windows 0-3 whole (their buffer goes back to the pool with these bytes in it), then
     * windows with gaps: at their start, in their middle, at the file's end; at most two
     * gathering, each window written as soon as it can be, so each reuses a buffer before */
    const uint64_t W = 64 << 10, size = 9 * W + 100;
    dw_piece p[] = {{0, W},       {W, W},     {2 * W, W},         {3 * W, W}, {4 * W + 10, W - 10}, {5 * W, 300},
                    {5 * W + 4096, W - 8192}, {6 * W, W}, {7 * W + 1, 5}, {8 * W, W}, {9 * W, 50}};
    uint64_t direct = 0, through = 0;
    dw_check("dw-holes", size, p, sizeof p / sizeof *p, W, 2, true, &direct, &through);
    CHECK_MSG(direct == 10 && through == 0, "windows: %llu direct, %llu through (want 10 and 0)",
              (unsigned long long)direct, (unsigned long long)through);
}

MK_TEST(dwrite_out_of_order_past_the_cap_goes_through_the_cache)
{
    /* pieces of 5000 bytes put back to front: every window but the last gets its last piece
     * long after its first, so at most 3 gather and the rest are written through the page
     * cache, then read back for the hash */
    const uint64_t size = 700000;
    dw_piece p[160];
    size_t n = 0;
    for (uint64_t end = size; end > 0; n++) {
        uint64_t len = end < 5000 ? end : 5000;
        p[n] = (dw_piece){end - len, len};
        end -= len;
    }
    uint64_t direct = 0, through = 0;
    dw_check("dw-reverse", size, p, n, 64 << 10, 3, false, &direct, &through);
    CHECK_MSG(direct >= 3 && through >= 1 && direct + through == 11,
              "windows: %llu direct, %llu through (want at least 3 and 1, 11 in all)", (unsigned long long)direct,
              (unsigned long long)through);
}

MK_TEST(dwrite_refuses_a_put_into_a_written_window)
{
    char *path = mk_path_join(mk_test_tmpdir(), "dw-late");
    CHECK(path != NULL);
    if (!path) return;
    unlink(path);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    CHECK(fd >= 0 && ftruncate(fd, 8192) == 0);
    static unsigned char b[4096];
    memset(b, 7, sizeof b);
    mk_dwrite *d = NULL;
    CHECK_OK(mk_dwrite_open(fd, path, 8192, &d));
    if (d) {
        char hex[33];
        CHECK_OK(mk_dwrite_put(d, 0, b, sizeof b));
        CHECK_OK(mk_dwrite_finish(d, hex));
        CHECK_ERR(mk_dwrite_put(d, 100, b, 10), MK_ERR_IO, "dw-late: bytes at offset 100 put after their window was written");
        mk_dwrite_close(d);
    }
    close(fd);
    unlink(path);
    free(path);
}
