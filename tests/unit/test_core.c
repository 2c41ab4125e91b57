/* test_core.c - strict JSON reader, CRC-32 and UTF-8 checks, counter-based RNG, deterministic
 * math helpers, atomic output folders, path helpers, the parallel chunk loop and its thread
 * pool, and the fma kernel. */
#include "harness.h"

#include "../../core/mk_hash.h"
#include "../../core/mk_hub.h"
#include "../../core/mk_io.h"
#include "../../core/mk_json.h"
#include "../../core/mk_parallel.h"
#include "../../core/mk_rng.h"
#include "../../core/mk_simd.h"
#include "../../core/mk_thread.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

static mk_status jparse(const char *text, mk_json *j)
{
    mk_json_limits lim = {16, strlen(text) / 2 + 16};
    return mk_json_parse(j, text, strlen(text), &lim, "t.json");
}

MK_TEST(json_values)
{
    mk_json j;
    CHECK_OK(jparse("{\"a\": [1, 18446744073709551615, -2, 3.5, 1e2, true, null, \"x\\u00e9\\ud83d\\ude00\"], \"b\": {}}", &j));
    uint32_t a = mk_json_get(&j, 0, "a");
    CHECK(a && mk_json_at(&j, a)->count == 8);
    uint32_t e = mk_json_at(&j, a)->first;
    CHECK(mk_json_at(&j, e)->is_uint && mk_json_at(&j, e)->u == 1);
    e = mk_json_at(&j, e)->next;
    CHECK(mk_json_at(&j, e)->is_uint && mk_json_at(&j, e)->u == UINT64_MAX); /* exact beyond 2^53 */
    e = mk_json_at(&j, e)->next;
    CHECK(!mk_json_at(&j, e)->is_uint && mk_json_at(&j, e)->d == -2);
    e = mk_json_at(&j, e)->next;
    CHECK(!mk_json_at(&j, e)->is_uint && mk_json_at(&j, e)->d == 3.5);
    e = mk_json_at(&j, e)->next;
    CHECK(!mk_json_at(&j, e)->is_uint && mk_json_at(&j, e)->d == 100);
    e = mk_json_at(&j, e)->next;
    CHECK(mk_json_at(&j, e)->type == MK_JSON_BOOL && mk_json_at(&j, e)->b);
    e = mk_json_at(&j, e)->next;
    CHECK(mk_json_at(&j, e)->type == MK_JSON_NULL);
    e = mk_json_at(&j, e)->next;
    CHECK_STR(mk_json_strv(&j, e), "x\xc3\xa9\xf0\x9f\x98\x80");
    CHECK(mk_json_get(&j, 0, "b") && mk_json_get(&j, 0, "c") == 0);
    mk_json_free(&j);
    /* 18446744073709551616 does not fit: a number, but not an exact uint */
    CHECK_OK(jparse("[18446744073709551616]", &j));
    CHECK(!mk_json_at(&j, mk_json_at(&j, 0)->first)->is_uint);
    mk_json_free(&j);
}

MK_TEST(json_rejects)
{
    static const char *const bad[] = {
        "", "{", "[1,]", "{\"a\":1,}", "{'a':1}", "[01]", "[1.]", "[.5]", "[1e]", "[-]", "[+1]", "[tru]",
        "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"a\nb\"", "[1] [2]", "nul",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mk_json j;
        mk_status s = jparse(bad[i], &j);
        CHECK_MSG(s == MK_ERR_FORMAT && strstr(mk_errmsg(), "t.json: invalid JSON at byte"), "'%s' accepted or wrong message: %s",
                  bad[i], s ? mk_errmsg() : "ok");
    }
    mk_json j;
    CHECK_OK(jparse("{\"k\":1,\"k\":2}", &j));
    CHECK(mk_json_dup_key(&j, 0) != 0);
    mk_json_free(&j);
    /* node budget: a huge flat array in a small budget */
    mk_json_limits lim = {16, 10};
    CHECK_ERR(mk_json_parse(&j, "[1,1,1,1,1,1,1,1,1,1,1,1]", 25, &lim, "t"), MK_ERR_FORMAT, "too many values");
}

MK_TEST(rng_counter_based)
{
    mk_rng k1 = mk_rng_key(7, "model.layers.0.mlp.up_proj.weight");
    mk_rng k2 = mk_rng_key(7, "model.layers.1.mlp.up_proj.weight");
    mk_rng k3 = mk_rng_key(8, "model.layers.0.mlp.up_proj.weight");
    CHECK(k1.k0 != k2.k0 || k1.k1 != k2.k1);
    CHECK(k1.k0 != k3.k0 || k1.k1 != k3.k1);
    /* the same (key, stream, index) gives the same value, in any order */
    uint32_t a = mk_rng_u32(k1, 3, 1000003), b = mk_rng_u32(k1, 3, 5);
    CHECK(mk_rng_u32(k1, 3, 5) == b && mk_rng_u32(k1, 3, 1000003) == a);
    CHECK(mk_rng_u32(k1, 4, 5) != b);
    /* uniform: mean and a coarse chi-square over 16 bins, 1e6 draws */
    double sum = 0;
    long bins[16] = {0};
    const long n = 1000000;
    for (long i = 0; i < n; i++) {
        float u = mk_rng_uniform(k1, 0, (uint64_t)i);
        CHECK_MSG(u >= 0 && u < 1, "uniform out of range: %g", u);
        sum += u;
        bins[(int)(u * 16)]++;
    }
    CHECK_MSG(fabs(sum / n - 0.5) < 0.002, "mean %g", sum / n);
    double chi = 0, expect = n / 16.0;
    for (int i = 0; i < 16; i++) chi += (bins[i] - expect) * (bins[i] - expect) / expect;
    CHECK_MSG(chi < 40, "chi-square %g over 15 degrees of freedom", chi); /* p ~ 0.0005 */
}

MK_TEST(det_math_accuracy)
{
    for (double x = 1e-12; x < 1e6; x *= 1.37) CHECK_MSG(fabs(mk_det_log(x) - log(x)) <= 4e-16 * fmax(1, fabs(log(x))), "log(%g)", x);
    for (double x = -3.2; x <= 3.2; x += 0.013) {
        double s, c;
        mk_det_sincos(x, &s, &c);
        CHECK_MSG(fabs(s - sin(x)) < 1e-15 && fabs(c - cos(x)) < 1e-15, "sincos(%g)", x);
    }
    /* Box-Muller: standard normal moments over 2e5 pairs */
    mk_rng k = mk_rng_key(1, "n");
    double m1 = 0, m2 = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double z0, z1, u1 = (mk_rng_u32(k, 0, 2 * i) + 1.0) * 0x1p-32, u2 = mk_rng_u32(k, 0, 2 * i + 1) * 0x1p-32;
        mk_det_normal2(u1, u2, &z0, &z1);
        m1 += z0 + z1;
        m2 += z0 * z0 + z1 * z1;
    }
    m1 /= 2 * n;
    m2 /= 2 * n;
    CHECK_MSG(fabs(m1) < 0.01 && fabs(m2 - 1) < 0.01, "normal mean %g, variance %g", m1, m2);
}

MK_TEST(hash_formats)
{
    mk_hash128 h = mk_hash128_bytes("abc", 3);
    char hex[33];
    mk_hash128_hex(h, hex);
    mk_hash128 back;
    CHECK(mk_hash128_parse(hex, &back) && mk_hash128_eq(h, back));
    CHECK(!mk_hash128_parse("xyz", &back));
    /* XXH3-128 of "abc" as xxhsum -H2 prints it (a published test vector of xxHash 0.8) */
    CHECK_STR(hex, "06b05ab6733a618578af5f94892f3950");
    char *p = mk_path_join(mk_test_tmpdir(), "h.bin");
    CHECK_OK(mk_write_file_atomic(p, "abc", 3));
    mk_hash128 fh;
    CHECK_OK(mk_hash_file(p, &fh));
    CHECK(mk_hash128_eq(fh, h));
    free(p);
}

typedef struct paced_hash {
    const char *path;
    mk_hash_pace pace;
    mk_hash128 out;
    mk_status st;
    int finished; /* atomic */
} paced_hash;

static void *paced_hash_main(void *arg)
{
    paced_hash *ph = arg;
    ph->st = mk_hash_files(&ph->path, 1, &ph->out, &ph->pace);
    __atomic_store_n(&ph->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* mk_hash_files: each file's digest is mk_hash_file's whatever the others (windows taken in
 * turn); paced, it reads no further than the pace allows and finishes once let go. */
MK_TEST(hash_files_together_and_paced)
{
    const size_t big = (20u << 20) + 5; /* two whole 8 MiB windows and a part */
    unsigned char *data = malloc(big);
    CHECK(data != NULL);
    if (!data) return;
    for (size_t i = 0; i < big; i++) data[i] = (unsigned char)(i * 2654435761u >> 13);
    char *paths[3] = {mk_path_join(mk_test_tmpdir(), "hf-empty"), mk_path_join(mk_test_tmpdir(), "hf-big"),
                      mk_path_join(mk_test_tmpdir(), "hf-small")};
    CHECK_OK(mk_write_file_atomic(paths[0], "", 0));
    CHECK_OK(mk_write_file_atomic(paths[1], data, big));
    CHECK_OK(mk_write_file_atomic(paths[2], "abc", 3));
    mk_hash128 got[3], want;
    CHECK_OK(mk_hash_files((const char *const *)paths, 3, got, NULL));
    for (int k = 0; k < 3; k++) {
        CHECK_OK(mk_hash_file(paths[k], &want));
        CHECK_MSG(mk_hash128_eq(got[k], want), "file %d: mk_hash_files differs from mk_hash_file", k);
    }
    /* paced: 0 ppm + 8 MiB ahead lets one window through; half the file + 8 MiB lets two */
    uint32_t ppm = 0;
    paced_hash ph = {paths[1], {&ppm, 8u << 20}, {0, 0}, MK_OK, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, paced_hash_main, &ph) == 0);
    struct timespec ts = {0, 150000000};
    nanosleep(&ts, NULL);
    CHECK_MSG(!__atomic_load_n(&ph.finished, __ATOMIC_ACQUIRE), "finished at 0 ppm: read past the pace");
    __atomic_store_n(&ppm, 500000u, __ATOMIC_RELEASE);
    nanosleep(&ts, NULL);
    CHECK_MSG(!__atomic_load_n(&ph.finished, __ATOMIC_ACQUIRE), "finished at half: read past the pace");
    __atomic_store_n(&ppm, 1000000u, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    CHECK_OK(ph.st);
    CHECK(mk_hash128_eq(ph.out, got[1]));
    char *missing = mk_path_join(mk_test_tmpdir(), "hf-missing");
    const char *two[2] = {paths[2], missing};
    CHECK_ERR(mk_hash_files(two, 2, got, NULL), MK_ERR_IO, "hf-missing");
    free(missing);
    for (int k = 0; k < 3; k++) free(paths[k]);
    free(data);
}

MK_TEST(sha256_vectors)
{
    /* FIPS 180-2 appendix B: "abc", the two-block message and a million 'a'; and the empty one */
    static const struct {
        const char *msg;
        size_t repeat;
        const char *hex;
    } v[] = {
        {"abc", 1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", 1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1,
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"a", 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        mk_sha256 s;
        char hex[65];
        mk_sha256_init(&s);
        for (size_t r = 0; r < v[i].repeat; r++) mk_sha256_update(&s, v[i].msg, strlen(v[i].msg));
        mk_sha256_hex(&s, hex);
        CHECK_STR(hex, v[i].hex);
    }
    /* any split of the input gives the one-shot digest (the partial-block path) */
    unsigned char msg[200];
    for (size_t i = 0; i < sizeof msg; i++) msg[i] = (unsigned char)(i * 37 + 11);
    char want[65], got[65];
    mk_sha256 s;
    mk_sha256_init(&s);
    mk_sha256_update(&s, msg, sizeof msg);
    mk_sha256_hex(&s, want);
    for (size_t cut = 0; cut <= sizeof msg; cut += 7) {
        mk_sha256_init(&s);
        mk_sha256_update(&s, msg, cut);
        mk_sha256_update(&s, msg + cut, sizeof msg - cut);
        mk_sha256_hex(&s, got);
        CHECK_STR(got, want);
    }
    char *p = mk_path_join(mk_test_tmpdir(), "sha.bin");
    CHECK_OK(mk_write_file_atomic(p, msg, sizeof msg));
    CHECK_OK(mk_sha256_file(p, got));
    CHECK_STR(got, want);
    free(p);
}

MK_TEST(hub_ids)
{
    char *cache = mk_path_join(mk_test_tmpdir(), "no-hub-cache");
    setenv("HF_HUB_CACHE", cache, 1);
    setenv("HF_HUB_OFFLINE", "1", 1); /* the cache alone: nothing is fetched */
    char *out = NULL;
    /* malformed ids, subfolders and revisions: usage errors naming the reference */
    static const char *const bad[] = {"a/b/../c", "a/b/./c", "a/b//c", "-a/b", "a./b", "a/b.git", "a--b/c",
                                      "a..b/c", "a b/c", "acme/x@", "acme/x@../../y", "acme/x@/main", "acme/x@a b",
                                      "acme/x@a\\b", "@"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mk_status s = mk_hub_resolve(bad[i], NULL, &out, NULL);
        CHECK_MSG(s == MK_ERR_USAGE, "%s: status %d, want usage error", bad[i], (int)s);
        CHECK_MSG(strstr(mk_errmsg(), bad[i]) != NULL, "%s: message does not name it: %s", bad[i], mk_errmsg());
        CHECK(out == NULL);
    }
    /* well-formed ids not in the cache: I/O errors naming the cache folder */
    static const char *const missing[] = {"acme/x", "acme/x@v1.0", "acme/x@refs/pr/1", "a_b.c-d/E_f.9/sub/dir", "acme/x@main"};
    for (size_t i = 0; i < sizeof missing / sizeof *missing; i++) {
        mk_status s = mk_hub_resolve(missing[i], NULL, &out, NULL);
        CHECK_MSG(s == MK_ERR_IO, "%s: status %d, want I/O error", missing[i], (int)s);
        CHECK_MSG(strstr(mk_errmsg(), cache) != NULL, "%s: message does not name the cache: %s", missing[i], mk_errmsg());
    }
    /* local-looking paths and bare names not cached come back unchanged */
    static const char *const local[] = {"./x/y", "/nonexistent/x", "../x", "plain-name", "~/x", "a/b/"};
    for (size_t i = 0; i < sizeof local / sizeof *local; i++) {
        bool cached = true;
        CHECK_OK(mk_hub_resolve(local[i], NULL, &out, &cached));
        CHECK_STR(out, local[i]);
        CHECK(!cached);
        free(out);
        out = NULL;
    }
    /* the cache folder: HF_HUB_CACHE, then HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub */
    char *d = mk_hub_cache_dir();
    CHECK_STR(d, cache);
    free(d);
    const char *home = getenv("HOME");
    char *home_save = home ? mk_strdup(home) : NULL;
    unsetenv("HF_HUB_CACHE");
    unsetenv("HUGGINGFACE_HUB_CACHE");
    setenv("HF_HOME", "/h", 1);
    setenv("XDG_CACHE_HOME", "/x", 1);
    setenv("HOME", "/u", 1);
    CHECK_STR((d = mk_hub_cache_dir()), "/h/hub");
    free(d);
    setenv("HF_HOME", "~/hf", 1);
    CHECK_STR((d = mk_hub_cache_dir()), "/u/hf/hub");
    free(d);
    unsetenv("HF_HOME");
    CHECK_STR((d = mk_hub_cache_dir()), "/x/huggingface/hub");
    free(d);
    unsetenv("XDG_CACHE_HOME");
    CHECK_STR((d = mk_hub_cache_dir()), "/u/.cache/huggingface/hub");
    free(d);
    if (home_save) setenv("HOME", home_save, 1);
    free(home_save);
    /* HF_HUB_OFFLINE: huggingface_hub's true values, in any case; else TRANSFORMERS_OFFLINE */
    static const struct {
        const char *hub, *tf;
        bool want;
    } off[] = {{"1", NULL, true}, {"yes", NULL, true}, {"On", NULL, true}, {"TRUE", NULL, true}, {"0", "1", false},
               {"", "1", true}, {NULL, "true", true}, {"2", NULL, false}, {NULL, NULL, false}};
    for (size_t i = 0; i < sizeof off / sizeof *off; i++) {
        if (off[i].hub) setenv("HF_HUB_OFFLINE", off[i].hub, 1);
        else unsetenv("HF_HUB_OFFLINE");
        if (off[i].tf) setenv("TRANSFORMERS_OFFLINE", off[i].tf, 1);
        else unsetenv("TRANSFORMERS_OFFLINE");
        CHECK_MSG(mk_hub_offline() == off[i].want, "HF_HUB_OFFLINE=%s TRANSFORMERS_OFFLINE=%s", off[i].hub ? off[i].hub : "(unset)",
                  off[i].tf ? off[i].tf : "(unset)");
    }
    unsetenv("HF_HUB_OFFLINE");
    unsetenv("TRANSFORMERS_OFFLINE");
    free(cache);
}

MK_TEST(crc32_and_utf8)
{
    /* the CRC-32 check value of "123456789" (the catalogue's CRC-32/ISO-HDLC, zip's) */
    CHECK_EQ_INT(mk_crc32(0, "123456789", 9), 0xcbf43926);
    CHECK_EQ_INT(mk_crc32(0, "", 0), 0);
    /* chained in two parts = in one */
    CHECK_EQ_INT(mk_crc32(mk_crc32(0, "1234", 4), "56789", 5), 0xcbf43926);
    CHECK(mk_utf8_check("model.layers.0.weight", 21));
    CHECK(mk_utf8_check("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9)); /* e-acute, euro sign, an emoji */
    CHECK(!mk_utf8_check("\xc3", 1));                 /* cut short */
    CHECK(!mk_utf8_check("\xc0\xaf", 2));             /* overlong '/' */
    CHECK(!mk_utf8_check("\xed\xa0\x80", 3));         /* a surrogate */
    CHECK(!mk_utf8_check("\xff", 1));
}

MK_TEST(outdir_atomic)
{
    char *out = mk_path_join(mk_test_tmpdir(), "o1");
    mk_outdir o;
    CHECK_OK(mk_outdir_begin(&o, out, false, false, false));
    char *f = mk_path_join(o.tmp_path, "x");
    CHECK_OK(mk_write_file_atomic(f, "1", 1));
    CHECK(!mk_path_exists(out));
    CHECK_OK(mk_outdir_commit(&o));
    char *fin = mk_path_join(out, "x"), *tmp = mk_asprintf("%s.tmp", out), *marker = mk_path_join(out, MK_OUTDIR_MARKER);
    CHECK(mk_is_file(fin) && !mk_path_exists(tmp) && !mk_path_exists(marker));
    /* exists: refused without force; with force replaced, old content gone only after */
    CHECK_ERR(mk_outdir_begin(&o, out, false, false, false), MK_ERR_EXISTS, "already exists");
    CHECK_OK(mk_outdir_begin(&o, out, false, true, false));
    CHECK(mk_is_file(fin)); /* the old output stays while the new one is written */
    mk_outdir_abort(&o);
    CHECK(mk_is_file(fin) && !mk_path_exists(tmp)); /* abort keeps the old one */
    /* a foreign OUT.tmp is not ours to delete */
    char *out2 = mk_path_join(mk_test_tmpdir(), "o2"), *tmp2 = mk_asprintf("%s.tmp", out2);
    CHECK_OK(mk_mkdir_p(tmp2));
    CHECK_ERR(mk_outdir_begin(&o, out2, false, false, false), MK_ERR_EXISTS, "not made by mergekit-c");
    CHECK(mk_is_dir(tmp2));
    /* ours (left by a killed run): cleared without resume, kept with resume */
    char *m2 = mk_path_join(tmp2, MK_OUTDIR_MARKER), *keep = mk_path_join(tmp2, "keep");
    CHECK_OK(mk_write_file_atomic(m2, "", 0));
    CHECK_OK(mk_write_file_atomic(keep, "k", 1));
    CHECK_OK(mk_outdir_begin(&o, out2, false, false, true));
    CHECK(o.resumed && mk_is_file(keep));
    mk_outdir_abort(&o);
    CHECK_OK(mk_mkdir_p(tmp2));
    CHECK_OK(mk_write_file_atomic(m2, "", 0));
    CHECK_OK(mk_write_file_atomic(keep, "k", 1));
    CHECK_OK(mk_outdir_begin(&o, out2, false, false, false));
    CHECK(!o.resumed && !mk_path_exists(keep));
    mk_outdir_abort(&o);
    free(out); free(f); free(fin); free(tmp); free(marker); free(out2); free(tmp2); free(m2); free(keep);
}

MK_TEST(path_helpers)
{
    char *a = mk_path_dirname("a/b/c/"), *b = mk_path_basename("a/b/c/"), *c = mk_path_dirname("x"), *d = mk_path_join("a//", "b");
    CHECK_STR(a, "a/b");
    CHECK_STR(b, "c");
    CHECK_STR(c, ".");
    CHECK_STR(d, "a/b");
    CHECK(mk_path_is_within("/x/y/z", "/x/y"));
    CHECK(mk_path_is_within("/x/y", "/x/y"));
    CHECK(!mk_path_is_within("/x/yz", "/x/y"));
    free(a); free(b); free(c); free(d);
}

/* ---- mk_parallel_chunks: the error of the lowest failing chunk, at any thread count ---- */

#define PC_N 200
typedef struct pc_ctx {
    uint8_t ran[PC_N];
} pc_ctx;

/* Chunks 37, 61 and 150 fail at once; the others take a little time (longer the lower
 * they are), so higher chunks fail while lower ones are still at work. */
static mk_status pc_task(void *ctx, uint64_t c, void *tls)
{
    pc_ctx *p = ctx;
    CHECK(tls == &p->ran[0]);
    p->ran[c] = 1;
    if (c == 37 || c == 61 || c == 150) return mk_error(MK_ERR_FORMAT, "chunk %llu failed", (unsigned long long)c);
    volatile uint64_t spin = 0;
    for (uint64_t i = 0; i < (PC_N - c) * 2000; i++) spin += i;
    return MK_OK;
}

static void *pc_tls_new(void *ctx) { return &((pc_ctx *)ctx)->ran[0]; }
static void *pc_tls_none(void *ctx)
{
    (void)ctx;
    mk_error(MK_ERR_NOMEM, "no state for this thread");
    return NULL;
}

MK_TEST(parallel_lowest_failure)
{
    int saved = mk_threads_get();
    static const int threads[] = {1, 2, 3, 8};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        mk_threads_set(threads[t]);
        for (int rep = 0; rep < 10; rep++) {
            pc_ctx p;
            memset(&p, 0, sizeof p);
            CHECK_ERR(mk_parallel_chunks(PC_N, pc_task, &p, pc_tls_new, NULL), MK_ERR_FORMAT, "chunk 37 failed");
            size_t missing = 0;
            for (size_t c = 0; c < 37; c++) missing += !p.ran[c];
            CHECK_MSG(missing == 0, "%d threads: %zu chunks below the failing one did not run", threads[t], missing);
        }
        pc_ctx p;
        memset(&p, 0, sizeof p);
        CHECK_ERR(mk_parallel_chunks(PC_N, pc_task, &p, pc_tls_none, NULL), MK_ERR_NOMEM, "no state for this thread");
        CHECK_OK(mk_parallel_chunks(30, pc_task, &p, pc_tls_new, NULL));
        CHECK_OK(mk_parallel_chunks(0, pc_task, &p, pc_tls_new, NULL));
    }
    mk_threads_set(saved);
}

/* ---- mk_parallel_chunks' pool: its threads are numbered below mk_threads_get(), the same
 * threads serve loop after loop, they sleep between loops (no CPU time while idle), a loop
 * inside a chunk runs on that chunk's thread, and a loop from another thread while the pool
 * is busy still runs every chunk once. ---- */

#define PP_N 48
typedef struct pp_ctx {
    int idx[PP_N];
    pthread_t who[PP_N];
    int nest_bad;                 /* nested chunks that ran elsewhere or missed */
} pp_ctx;

typedef struct pp_inner {
    pthread_t me;
    int k;
    uint64_t sum;
    int bad;
} pp_inner;

static mk_status pp_inner_task(void *ctx, uint64_t c, void *tls)
{
    (void)tls;
    pp_inner *x = ctx;
    if (!pthread_equal(pthread_self(), x->me) || mk_thread_index() != x->k) x->bad++;
    x->sum += c + 1;
    return MK_OK;
}

static mk_status pp_task(void *ctx, uint64_t c, void *tls)
{
    (void)tls;
    pp_ctx *p = ctx;
    p->idx[c] = mk_thread_index();
    p->who[c] = pthread_self();
    pp_inner x = {pthread_self(), mk_thread_index(), 0, 0};
    mk_status st = mk_parallel_chunks(10, pp_inner_task, &x, NULL, NULL);
    if (st != MK_OK || x.bad || x.sum != 55) __atomic_add_fetch(&p->nest_bad, 1, __ATOMIC_RELAXED);
    /* a chunk that sleeps, not spins: the caller leaves its core to the woken workers, so they
     * take chunks even on a machine whose cores are all busy (a spinning caller could finish
     * all 48 before a worker was scheduled, in every loop) */
    struct timespec ts = {0, 50 * 1000};
    nanosleep(&ts, NULL);
    return MK_OK;
}

static mk_status pp_count(void *ctx, uint64_t c, void *tls)
{
    (void)tls;
    __atomic_add_fetch((uint64_t *)ctx, c + 1, __ATOMIC_RELAXED);
    volatile uint64_t spin = 0;
    for (uint64_t i = 0; i < 20000; i++) spin += i;
    return MK_OK;
}

static void *pp_other(void *arg)
{
    for (int r = 0; r < 20; r++)
        if (mk_parallel_chunks(100, pp_count, arg, NULL, NULL) != MK_OK) return NULL;
    return arg;
}

static double pp_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

MK_TEST(parallel_pool)
{
    int saved = mk_threads_get();
    mk_threads_set(3);
    const int nt = mk_threads_get(); /* 1 in a build without OpenMP: every loop on this thread */
    pthread_t worker[3];
    bool known[3] = {false, false, false};
    int distinct_loops = 0;
    for (int rep = 0; rep < 40; rep++) {
        pp_ctx p;
        memset(&p, 0, sizeof p);
        CHECK_OK(mk_parallel_chunks(PP_N, pp_task, &p, NULL, NULL));
        CHECK_MSG(p.nest_bad == 0, "%d nested loops ran off their chunk's thread or missed chunks", p.nest_bad);
        bool several = false;
        for (int c = 0; c < PP_N; c++) {
            int k = p.idx[c];
            CHECK_MSG(k >= 0 && k < nt, "chunk %d ran on thread number %d of %d", c, k, nt);
            if (k < 0 || k >= nt) break;
            if (k == 0) CHECK_MSG(pthread_equal(p.who[c], pthread_self()), "chunk %d: number 0 is not the caller", c);
            else if (!known[k]) known[k] = true, worker[k] = p.who[c];
            else CHECK_MSG(pthread_equal(worker[k], p.who[c]), "worker %d is a new thread in loop %d", k, rep);
            several |= !pthread_equal(p.who[c], p.who[0]);
        }
        distinct_loops += several;
    }
    if (nt > 1) CHECK_MSG(distinct_loops > 0, "40 loops of %d chunks all ran on one thread", PP_N);
    /* idle: the pool's threads sleep (spinning ones would use about the time slept each) */
    double c0 = pp_cpu_s();
    struct timespec nap = {0, 200 * 1000 * 1000};
    nanosleep(&nap, NULL);
    double idle = pp_cpu_s() - c0;
    CHECK_MSG(idle < 0.03, "%.3f s of CPU in 0.2 s of idling between loops", idle);
    /* a loop from another thread while this one holds the pool */
    uint64_t other = 0, mine = 0;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, pp_other, &other) == 0);
    for (int r = 0; r < 20; r++) CHECK_OK(mk_parallel_chunks(100, pp_count, &mine, NULL, NULL));
    void *ret = NULL;
    pthread_join(th, &ret);
    CHECK(ret == &other);
    CHECK_MSG(other == 20 * 5050 && mine == 20 * 5050, "sums %llu and %llu, not %d", (unsigned long long)other,
              (unsigned long long)mine, 20 * 5050);
    mk_threads_set(saved);
}

/* ---- mk_axpy_fma: the vector path (AVX2/FMA where the CPU has it) against the plain
 * reference. Tolerance: none, the same bits (both round once, as IEEE fma does). ---- */

static uint64_t ax_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A finite float: mostly near 1, some zeros, subnormals and values large enough that
 * x * a + y overflows. */
static float ax_float(uint64_t *s)
{
    uint64_t u = ax_next(s);
    uint32_t sign = (uint32_t)(u >> 63) << 31, mant = (uint32_t)u & 0x7FFFFFu, e;
    switch ((u >> 32) % 16) {
    case 0: e = 0; break;                                    /* zero or subnormal */
    case 1: e = 1 + (uint32_t)((u >> 40) % 254); break;      /* any normal exponent */
    case 2: mant = 0; e = (u >> 40) & 1 ? 0 : 127; break;    /* +-0, +-1 */
    default: e = 107 + (uint32_t)((u >> 40) % 40); break;    /* 2^-20 .. 2^19 */
    }
    uint32_t b = sign | e << 23 | mant;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static uint32_t ax_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

/* Distance in units in the last place, on the integer line of float bit patterns. */
static uint64_t ax_ulps(float a, float b)
{
    int64_t x = ax_bits(a), y = ax_bits(b);
    if (x & 0x80000000) x = 0x80000000 - x;
    if (y & 0x80000000) y = 0x80000000 - y;
    return (uint64_t)(x > y ? x - y : y - x);
}

MK_TEST(axpy_fma_matches_reference)
{
    enum { MAXN = 4200, PAD = 24 }; /* (MAXN + PAD) * 4 bytes: a multiple of the alignment */
    float *x0 = aligned_alloc(64, (MAXN + PAD) * 4), *yf0 = aligned_alloc(64, (MAXN + PAD) * 4);
    float *yr0 = aligned_alloc(64, (MAXN + PAD) * 4), *y0 = malloc((MAXN + PAD) * 4);
    static const size_t big[] = {127, 128, 129, 255, 256, 257, 1000, 1023, 4096, 4099, 4103};
    uint64_t seed = 42, cases = 0, bad = 0, worst_ulps = 0;
    char worst[300] = "";
    for (size_t li = 0; li < 72 + sizeof big / sizeof big[0]; li++) {
        size_t n = li < 72 ? li : big[li - 72];
        for (size_t xo = 0; xo < 8; xo++)
            for (size_t yo = 0; yo < 8; yo += (n > 200 ? 3 : 1)) {
                for (size_t i = 0; i < MAXN + PAD; i++) {
                    x0[i] = ax_float(&seed);
                    y0[i] = ax_float(&seed);
                }
                float a = cases % 7 == 0 ? 1.0f : cases % 11 == 0 ? -0.0f : ax_float(&seed);
                memcpy(yf0, y0, (MAXN + PAD) * 4);
                memcpy(yr0, y0, (MAXN + PAD) * 4);
                mk_axpy_fma(yf0 + yo, x0 + xo, a, n);
                mk_axpy_fma_ref(yr0 + yo, x0 + xo, a, n);
                cases++;
                for (size_t i = 0; i < MAXN + PAD; i++) {
                    if (ax_bits(yf0[i]) == ax_bits(yr0[i])) continue;
                    bad++;
                    uint64_t d = ax_ulps(yf0[i], yr0[i]);
                    bool inside = i >= yo && i < yo + n;
                    if (d >= worst_ulps) {
                        worst_ulps = d;
                        snprintf(worst, sizeof worst,
                                 "n %zu, x at +%zu, y at +%zu, a %a: [%zu]%s got %a (0x%08x), want %a (0x%08x), %llu ulps",
                                 n, xo, yo, (double)a, i - (inside ? yo : 0), inside ? "" : " (outside the range!)",
                                 (double)yf0[i], ax_bits(yf0[i]), (double)yr0[i], ax_bits(yr0[i]), (unsigned long long)d);
                    }
                }
            }
    }
    CHECK_MSG(bad == 0, "mk_axpy_fma differs from mk_axpy_fma_ref in %llu elements over %llu cases (tolerance: exact); worst: %s",
              (unsigned long long)bad, (unsigned long long)cases, worst);
    CHECK(cases > 4000);
    free(x0);
    free(yf0);
    free(yr0);
    free(y0);
}
