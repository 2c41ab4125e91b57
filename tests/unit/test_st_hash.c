/* test_st_hash.c - the safetensors sink hashes each shard as it is written (a thread that
 * follows the written prefix in file order): the hashes it records are the XXH3-128 of the
 * whole files (mk_hash_file, which xxhsum -H2 agrees with), whatever the order of the
 * writes, the output order against the file order (mixed element sizes), the shard count,
 * tensors larger than its read window and the write-behind wrapper in front, also where
 * shards in file order are written around the page cache (core/mk_dwrite.h, whose own hash
 * is recorded); a sink closed before commit stops its hasher; the hasher starts the writeback
 * of what it will hash. */
#include "harness.h"

#include "../../core/mk_hash.h"
#include "../../core/mk_io.h"
#include "../../formats/output.h"
#include "../../formats/output_hash.h"
#include "../../formats/safetensors.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static mk_tensor_info hti(const char *name, mk_dtype dt, int64_t numel)
{
    mk_tensor_info t = {.name = (char *)name, .dtype = dt, .ndim = 1, .shape = {numel}};
    mk_tensor_info_finish(&t);
    return t;
}

static unsigned char hbyte(size_t i, uint64_t b) { return (unsigned char)((i + 1) * 131 + b * 7 + (b >> 9)); }

typedef struct hpiece {
    mk_sink *k;
    size_t i;
    uint64_t len, piece;
    int first; /* pieces first, first + 2, ..., last to first */
    mk_status st;
} hpiece;

static void *hwrite(void *p)
{
    hpiece *j = p;
    unsigned char *buf = malloc((size_t)j->piece);
    uint64_t np = (j->len + j->piece - 1) / j->piece;
    for (uint64_t q = np; q-- > 0 && j->st == MK_OK;) {
        if ((int)(q % 2) != j->first) continue;
        uint64_t off = q * j->piece, n = j->len - off < j->piece ? j->len - off : j->piece;
        for (uint64_t b = 0; b < n; b++) buf[b] = hbyte(j->i, off + b);
        j->st = j->k->ops->write(j->k, j->i, off, buf, n);
    }
    free(buf);
    return NULL;
}

/* Write the tensors into dir (shard_size as --shard-size; wb: the write-behind sink in front;
 * direct: shards in file order written around the page cache), each in pieces from two
 * threads, last piece first; commit; every recorded hash checked against the file's. */
static void write_and_check(const char *dir, const mk_tensor_info *t, size_t n, uint64_t shard_size, bool wb,
                            bool direct, size_t want_files)
{
    mk_st_sink_opts o = {.shard_size = shard_size, .direct = direct};
    mk_sink *k = NULL;
    CHECK_OK(mk_mkdir_p(dir));
    CHECK_OK(mk_safetensors_sink(dir, &o, &k));
    if (!k) return;
    if (wb) CHECK_OK(mk_output_write_behind(&k));
    CHECK_OK(k->ops->begin(k, t, n));
    for (size_t i = 0; i < n; i++) {
        pthread_t th[2];
        hpiece j[2];
        for (int h = 0; h < 2; h++) {
            j[h] = (hpiece){k, i, t[i].nbytes, 300000, h, MK_OK};
            pthread_create(&th[h], NULL, hwrite, &j[h]);
        }
        for (int h = 0; h < 2; h++) {
            pthread_join(th[h], NULL);
            CHECK_OK(j[h].st);
        }
        CHECK_OK(k->ops->tensor_done(k, i));
    }
    CHECK_OK(k->ops->commit(k));
    size_t shards = 0;
    for (size_t f = 0; f < k->n_out_files; f++) {
        const mk_out_file *of = &k->out_files[f];
        char *p = mk_path_join(dir, of->name);
        mk_hash128 h;
        char hex[33] = "";
        CHECK_OK(mk_hash_file(p, &h));
        mk_hash128_hex(h, hex);
        CHECK_MSG(strcmp(hex, of->hash) == 0, "%s: recorded XXH3-128 %s, the file's is %s", of->name, of->hash, hex);
        shards += strstr(of->name, ".index.json") == NULL;
        free(p);
    }
    CHECK_EQ_INT(shards, want_files);
    mk_sink_close(k);
}

/* t[n] written four ways into tmp/STEM-CASE: one shard, and `shard` bytes per shard (making
 * `files` of them), each with and without the write-behind sink in front */
static void write_four_ways(const char *stem, const mk_tensor_info *t, size_t n, uint64_t shard, size_t files, bool direct)
{
    const struct {
        const char *name;
        uint64_t shard;
        bool wb;
        size_t files;
    } cases[] = {{"1", 0, false, 1}, {"1wb", 0, true, 1}, {"sh", shard, false, files}, {"shwb", shard, true, files}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char *dir = mk_asprintf("%s/%s-%s", mk_test_tmpdir(), stem, cases[c].name);
        CHECK(dir != NULL);
        if (dir) write_and_check(dir, t, n, cases[c].shard, cases[c].wb, direct, cases[c].files);
        free(dir);
    }
}

MK_TEST(st_sink_hashes_as_written)
{
    /* output order mixes element sizes, so the file order (largest element first) differs;
     * w.big spans two of the hasher's 4 MiB windows */
    mk_tensor_info t[] = {hti("a.u8", MK_U8, 1001),        hti("b.f32", MK_F32, 70000),  hti("c.bf16", MK_BF16, 333),
                          hti("d.empty", MK_F32, 0),       hti("e.i64", MK_I64, 5),      hti("w.big", MK_U8, 5u << 20),
                          hti("f.f16", MK_F16, 250001),    hti("g.f32", MK_F32, 3)};
    size_t n = sizeof t / sizeof *t;
    write_four_ways("h", t, n, 600000, 3, false);
    /* asked to write around the page cache: shards not in file order are not, the others are */
    write_four_ways("hd", t, n, 600000, 3, true);
    /* no tensors: the header-only file */
    char *dir = mk_path_join(mk_test_tmpdir(), "h0");
    write_and_check(dir, t, 0, 0, false, false, 1);
    free(dir);
    dir = mk_path_join(mk_test_tmpdir(), "h0d");
    write_and_check(dir, t, 0, 0, false, true, 1);
    free(dir);
}

MK_TEST(st_sink_hashes_shards_written_around_the_page_cache)
{
    /* one element size, so file order is output order: every shard written with O_DIRECT in
     * windows (core/mk_dwrite.h), each tensor's pieces put last first by two threads, tensors
     * spanning windows and ending inside them */
    mk_tensor_info t[] = {hti("a", MK_BF16, 3000001), hti("b", MK_BF16, 5),       hti("c", MK_BF16, 0),
                          hti("d", MK_BF16, 4194304), hti("e", MK_BF16, 1234567), hti("f", MK_BF16, 77)};
    write_four_ways("dw", t, sizeof t / sizeof *t, 7000000, 3, true);
}

MK_TEST(st_sink_hasher_stops_on_close)
{
    mk_tensor_info t[] = {hti("a", MK_F32, 1000), hti("b", MK_F32, 1000)};
    char *dir = mk_path_join(mk_test_tmpdir(), "habort");
    mk_st_sink_opts o = {.shard_size = 0};
    mk_sink *k = NULL;
    CHECK_OK(mk_mkdir_p(dir));
    CHECK_OK(mk_safetensors_sink(dir, &o, &k));
    if (!k) return;
    CHECK_OK(k->ops->begin(k, t, 2));
    float v[1000] = {1};
    CHECK_OK(k->ops->write(k, 0, 0, v, sizeof v));
    CHECK_OK(k->ops->tensor_done(k, 0));
    mk_sink_close(k); /* the shard is unfinished: its hasher waits on b, and must be stopped */
    free(dir);
}

/* mk_whash_ready: the hashing thread takes over a finished piece's writeback when its file is
 * hashed (true, once per piece), not otherwise (false: the writer starts it); the file's hash
 * is still the whole file's. */
MK_TEST(whash_takes_over_writeback)
{
    char *path = mk_path_join(mk_test_tmpdir(), "wb.bin");
    unsigned char data[3000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = hbyte(i, i);
    CHECK_OK(mk_write_file_atomic(path, data, sizeof data));
    int fd = open(path, O_RDWR | O_CLOEXEC);
    CHECK(fd >= 0);
    /* file 0: head [0, 1000), pieces [1000, 2000) and [2000, 3000); file 1 (piece 2): not hashed */
    uint32_t file_of[3] = {0, 0, 1};
    uint64_t off[3] = {1000, 2000, 0}, len[3] = {1000, 1000, 10};
    mk_whash *h = NULL;
    CHECK_OK(mk_whash_new(3, file_of, off, len, 2, &h));
    CHECK_OK(mk_whash_file(h, 0, fd, path, data, 1000));
    CHECK_OK(mk_whash_start(h));
    CHECK_MSG(mk_whash_ready(h, 1), "piece 1 of a hashed file: the thread should start its writeback");
    CHECK_MSG(!mk_whash_ready(h, 1), "piece 1 again: queued twice");
    CHECK_MSG(!mk_whash_ready(h, 2), "a piece of a file not hashed: the writer starts its writeback");
    CHECK_MSG(mk_whash_ready(h, 0), "piece 0 of a hashed file: the thread should start its writeback");
    char hex[33], want[33];
    mk_hash128 fh;
    CHECK_OK(mk_whash_wait(h, 0, hex));
    CHECK_OK(mk_hash_file(path, &fh));
    mk_hash128_hex(fh, want);
    CHECK_STR(hex, want);
    mk_whash_free(h);
    close(fd);
    free(path);
}

static void *whash_free_thread(void *p)
{
    mk_whash_free(p);
    return NULL;
}

/* mk_whash_free while the thread is busy (starting a writeback, or hashing a 24 MiB piece
 * window by window, with its lock dropped): the stop must be seen before the thread waits
 * again, else the join never returns. Stops at several moments; each free must end within
 * 10 s (a hang fails the test instead of the suite). */
MK_TEST(whash_free_stops_a_busy_thread)
{
    char *path = mk_path_join(mk_test_tmpdir(), "stop.bin");
    const size_t head = 4096, n = 24u << 20;
    unsigned char *data = malloc(n);
    CHECK(data != NULL);
    if (!data) return;
    for (size_t i = 0; i < n; i++) data[i] = hbyte(3, i);
    CHECK_OK(mk_write_file_atomic(path, data, n));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    uint32_t file_of[1] = {0};
    uint64_t off[1] = {head}, len[1] = {n - head};
    for (unsigned t = 0; t < 24 && fd >= 0; t++) {
        mk_whash *h = NULL;
        CHECK_OK(mk_whash_new(1, file_of, off, len, 1, &h));
        if (!h) break;
        CHECK_OK(mk_whash_file(h, 0, fd, path, data, head));
        CHECK_OK(mk_whash_start(h));
        mk_whash_ready(h, 0);
        usleep(t * 250u); /* 0 to 5.75 ms into the hashing */
        pthread_t th;
        CHECK(pthread_create(&th, NULL, whash_free_thread, h) == 0);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 10;
        int jr = pthread_timedjoin_np(th, NULL, &ts);
        CHECK_MSG(jr == 0, "stop after %u us: mk_whash_free did not return within 10 s (the thread waits on)", t * 250u);
        if (jr != 0) break;
    }
    if (fd >= 0) close(fd);
    free(data);
    free(path);
}
