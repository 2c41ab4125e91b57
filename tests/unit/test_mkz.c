/* test_mkz.c - the .mkz container: byte-identical round trips for every dtype (empty,
 * scalar, 1-element, multi-block and not row-aligned tensors), sharded models, the sink
 * against the safetensors sink with scattered writes and spilling, determinism at any
 * thread count, every single-byte flip detected and named, forged indexes and frames
 * rejected, and random access that reads only the blocks it needs. */
#include "harness.h"

#include "../../core/mk_hash.h"
#include "../../core/mk_io.h"
#include "../../core/mk_thread.h"
#include "../../formats/mkz.h"
#include "../../formats/safetensors.h"

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>
#include <zstd.h>

#ifdef _OPENMP
#define T_OMP(x) _Pragma(x)
#else
#define T_OMP(x)
#endif

/* ---- fixtures ------------------------------------------------------------------------------ */

#define MAXT 40

typedef struct tmodel {
    size_t n;
    mk_tensor_info t[MAXT];
    uint8_t *data[MAXT];
} tmodel;

static uint64_t rng_state;
static uint64_t next_u64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Weight-like values: normal-ish (sum of 4 uniforms), std 0.02, about 1 in 500 an outlier,
 * some exact zeros; integer types get small integers. */
static void fill(const mk_tensor_info *t, uint8_t *p)
{
    const mk_dtype_traits *d = mk_dtype_info(t->dtype);
    if (!d->is_float) {
        for (uint64_t i = 0; i < t->nbytes; i++) p[i] = (uint8_t)(next_u64() % 7);
        if (t->dtype == MK_BOOL)
            for (uint64_t i = 0; i < t->nbytes; i++) p[i] &= 1;
        return;
    }
    float buf[4096];
    for (uint64_t e0 = 0; e0 < t->numel; e0 += 4096) {
        size_t n = t->numel - e0 < 4096 ? (size_t)(t->numel - e0) : 4096;
        for (size_t i = 0; i < n; i++) {
            double z = 0;
            for (int k = 0; k < 4; k++) z += (double)(next_u64() >> 11) * 0x1p-53 - 0.5;
            uint64_t r = next_u64() % 1000;
            buf[i] = r < 2 ? (float)(z * 0.4) : r < 5 ? 0.0f : (float)(z * 0.035);
        }
        d->from_f32(buf, p + e0 * d->size, n);
    }
}

static void add_t(tmodel *m, const char *name, mk_dtype dt, int ndim, int64_t d0, int64_t d1)
{
    mk_tensor_info *t = &m->t[m->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    mk_tensor_info_finish(t);
    m->data[m->n] = malloc(t->nbytes ? t->nbytes : 1);
    fill(t, m->data[m->n]);
    m->n++;
}

static void free_model(tmodel *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->t[i].name);
        free(m->data[i]);
    }
    m->n = 0;
}

static const char CONFIG[] = "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\"}\n";

/* Write every tensor of m (and config.json) through sink k. Chunks of `chunk` bytes,
 * written in reverse order within each tensor when `reverse`. */
static mk_status write_sink(mk_sink *k, const tmodel *m, uint64_t chunk, bool reverse)
{
    MK_TRY(k->ops->begin(k, m->t, m->n));
    for (size_t i = 0; i < m->n; i++) {
        uint64_t nb = m->t[i].nbytes, nch = (nb + chunk - 1) / chunk;
        mk_status first = MK_OK;
        T_OMP("omp parallel for schedule(dynamic, 1)")
        for (int64_t cc = 0; cc < (int64_t)nch; cc++) {
            uint64_t c = reverse ? nch - 1 - (uint64_t)cc : (uint64_t)cc;
            uint64_t off = c * chunk, len = nb - off < chunk ? nb - off : chunk;
            mk_status s = k->ops->write(k, i, off, m->data[i] + off, len);
            if (s != MK_OK) {
                T_OMP("omp critical")
                first = s;
            }
        }
        MK_TRY(first);
        MK_TRY(k->ops->tensor_done(k, i));
    }
    MK_TRY(k->ops->add_file(k, "config.json", CONFIG, sizeof CONFIG - 1));
    MK_TRY(k->ops->commit(k));
    return mk_sink_finish(k);
}

static char *tpath(const char *name)
{
    char *p = mk_path_join(mk_test_tmpdir(), name);
    return p;
}

/* A model folder written by the safetensors sink. */
static mk_status write_folder(const char *dir, const tmodel *m, uint64_t shard_size)
{
    mk_rm_rf(dir);
    MK_TRY(mk_mkdir_p(dir));
    mk_st_sink_opts so = {.shard_size = shard_size};
    mk_sink *k = NULL;
    MK_TRY(mk_safetensors_sink(dir, &so, &k));
    mk_status s = write_sink(k, m, 1u << 20, false);
    mk_sink_close(k);
    return s;
}

static mk_status pack(const char *in, const char *out)
{
    unlink(out);
    mk_mkz_pack_opts o = {.level = 1};
    mk_mkz_stats st;
    return mk_mkz_pack(in, out, &o, &st);
}

static mk_status unpack(const char *mkz, const char *dir)
{
    mk_rm_rf(dir);
    MK_TRY(mk_mkdir_p(dir));
    mk_source *s = NULL;
    MK_TRY(mk_mkz_open(mkz, &s));
    mk_status st = mk_mkz_unpack(s, dir, NULL, NULL);
    mk_source_close(s);
    return st;
}

static bool same_file(const char *a, const char *b)
{
    char *x = NULL, *y = NULL;
    size_t lx = 0, ly = 0;
    bool ok = mk_read_file(a, 1u << 30, &x, &lx) == MK_OK && mk_read_file(b, 1u << 30, &y, &ly) == MK_OK && lx == ly &&
              memcmp(x, y, lx) == 0;
    free(x);
    free(y);
    return ok;
}

static int cmp_s(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Same file names, same bytes. */
static void check_same_dir(const char *a, const char *b)
{
    char *na[64], *nb[64];
    size_t ca = 0, cb = 0;
    DIR *d = opendir(a);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.' && ca < 64) na[ca++] = strdup(e->d_name);
    if (d) closedir(d);
    d = opendir(b);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.' && cb < 64) nb[cb++] = strdup(e->d_name);
    if (d) closedir(d);
    qsort(na, ca, sizeof *na, cmp_s);
    qsort(nb, cb, sizeof *nb, cmp_s);
    CHECK_MSG(ca == cb && ca > 0, "%s has %zu files, %s has %zu", a, ca, b, cb);
    for (size_t i = 0; i < ca && i < cb; i++) {
        CHECK_STR(na[i], nb[i]);
        char *pa = mk_path_join(a, na[i]), *pb = mk_path_join(b, nb[i]);
        CHECK_MSG(same_file(pa, pb), "%s and %s differ", pa, pb);
        free(pa);
        free(pb);
    }
    for (size_t i = 0; i < ca; i++) free(na[i]);
    for (size_t i = 0; i < cb; i++) free(nb[i]);
}

/* Every tensor of the container reads back as the model's bytes: whole, and in odd
 * windows that straddle blocks. */
static void check_reads_base(const char *mkz, const tmodel *m, const char *base)
{
    mk_source *s = NULL, *b = NULL;
    CHECK_OK(mk_mkz_open(mkz, &s));
    if (!s) return;
    if (base) {
        CHECK_OK(mk_safetensors_open(base, &b));
        CHECK_OK(mk_mkz_attach_base(s, b, NULL));
    }
    CHECK_EQ_INT(s->n_tensors, m->n);
    for (size_t i = 0; i < m->n && i < s->n_tensors; i++) {
        long k = mk_source_find(s, m->t[i].name);
        CHECK_MSG(k >= 0, "tensor %s missing", m->t[i].name);
        if (k < 0) continue;
        const mk_tensor_info *t = &s->tensors[k];
        CHECK_EQ_INT(t->dtype, m->t[i].dtype);
        CHECK(mk_shape_eq(t, &m->t[i]));
        uint64_t nb = t->nbytes;
        uint8_t *buf = malloc(nb + 1);
        CHECK_OK(s->ops->read(s, (size_t)k, 0, nb, buf));
        CHECK_MSG(memcmp(buf, m->data[i], nb) == 0, "tensor %s: whole read differs", t->name);
        for (int r = 0; r < 6 && nb; r++) {
            uint64_t off = next_u64() % nb, len = 1 + next_u64() % (nb - off);
            memset(buf, 0xAB, len);
            CHECK_OK(s->ops->read(s, (size_t)k, off, len, buf));
            CHECK_MSG(memcmp(buf, m->data[i] + off, len) == 0, "tensor %s: read [%llu, +%llu) differs", t->name,
                      (unsigned long long)off, (unsigned long long)len);
        }
        free(buf);
    }
    char *cfg = NULL;
    size_t len = 0;
    CHECK_OK(s->ops->aux_read(s, "config.json", 1 << 20, &cfg, &len));
    CHECK_MSG(cfg && len == sizeof CONFIG - 1 && memcmp(cfg, CONFIG, len) == 0, "config.json differs");
    free(cfg);
    mk_source_close(s);
}

static void check_reads(const char *mkz, const tmodel *m) { check_reads_base(mkz, m, NULL); }

/* One tensor of every dtype, and the awkward shapes. */
static void every_dtype_model(tmodel *m)
{
    rng_state = 0x9e3779b97f4a7c15ull;
    char name[64];
    for (int d = 0; d < MK_DTYPE_COUNT; d++) {
        snprintf(name, sizeof name, "w.%s", mk_dtype_name((mk_dtype)d));
        add_t(m, name, (mk_dtype)d, 2, 37, 53);
    }
    add_t(m, "empty.1d", MK_BF16, 1, 0, 0);
    add_t(m, "empty.2d", MK_F32, 2, 4, 0);
    add_t(m, "scalar", MK_F32, 0, 0, 0);
    add_t(m, "one", MK_BF16, 1, 1, 0);
    add_t(m, "one.f8", MK_F8_E4M3, 2, 1, 1);
    add_t(m, "multiblock.bf16", MK_BF16, 2, 2100, 1000);  /* 1048 rows per block: 3 blocks */
    add_t(m, "long.f32", MK_F32, 1, (1 << 20) + 3, 0);     /* cols > 2^20: blocks not row-aligned */
    add_t(m, "wide.f16", MK_F16, 2, 3, 700001);            /* 1 row per block */
}

MK_TEST(mkz_roundtrip_every_dtype)
{
    tmodel m = {0};
    every_dtype_model(&m);
    char *dir = tpath("dt"), *z = tpath("dt.mkz"), *back = tpath("dt.back"), *z3 = tpath("dt3.mkz");
    CHECK_OK(write_folder(dir, &m, 0));
    int thr = mk_threads_get();
    mk_threads_set(1);
    CHECK_OK(pack(dir, z));
    mk_threads_set(3);
    CHECK_OK(pack(dir, z3));
    mk_threads_set(thr);
    CHECK_MSG(same_file(z, z3), "pack at 1 and 3 threads gives different bytes");
    CHECK_OK(unpack(z, back));
    check_same_dir(dir, back);
    check_reads(z, &m);
    mk_source *s = NULL;
    CHECK_OK(mk_mkz_open(z, &s));
    if (s) {
        CHECK_OK(mk_mkz_verify(s, NULL, NULL));
        const mk_mkz_index *ix = mk_mkz_source_index(s);
        /* bf16 weights gain from the exponent plane (rANS); sign and mantissa bits are stored */
        long k = mk_source_find(s, "multiblock.bf16");
        const mk_mkz_stream *S = &ix->streams[ix->model[k]];
        CHECK_EQ_INT(ix->version, MK_MKZ_VERSION_RANS);
        CHECK_EQ_INT(S->n_planes, 2);
        CHECK_EQ_INT(S->layout, 1);
        CHECK_EQ_INT(S->n_blocks, 3);
        CHECK_MSG((double)S->raw_size / S->stored > 1.3, "bf16 ratio %.3f", (double)S->raw_size / S->stored);
        CHECK_EQ_INT(ix->blocks[S->first_block].method[0], 0);
        CHECK_EQ_INT(ix->blocks[S->first_block].method[1], 2);
        mk_source_close(s);
    }
    free_model(&m);
    free(dir);
    free(z);
    free(z3);
    free(back);
}

MK_TEST(mkz_sharded_and_single_file)
{
    tmodel m = {0};
    rng_state = 42;
    char name[64];
    for (int l = 0; l < 6; l++) {
        snprintf(name, sizeof name, "model.layers.%d.mlp.weight", l);
        add_t(&m, name, MK_BF16, 2, 96, 64);
        snprintf(name, sizeof name, "model.layers.%d.norm.weight", l);
        add_t(&m, name, MK_F32, 1, 64, 0);
    }
    char *dir = tpath("sh"), *z = tpath("sh.mkz"), *back = tpath("sh.back");
    CHECK_OK(write_folder(dir, &m, 30000)); /* several shards and an index */
    char *ixp = mk_path_join(dir, "model.safetensors.index.json");
    CHECK(mk_is_file(ixp));
    CHECK_OK(pack(dir, z));
    CHECK_OK(unpack(z, back));
    check_same_dir(dir, back);
    check_reads(z, &m);
    /* the container lists tensors in the order the folder reader does */
    mk_source *a = NULL, *b = NULL;
    CHECK_OK(mk_safetensors_open(dir, &a));
    CHECK_OK(mk_mkz_open(z, &b));
    if (a && b) {
        CHECK_EQ_INT(a->n_tensors, b->n_tensors);
        for (size_t i = 0; i < a->n_tensors && i < b->n_tensors; i++) CHECK_STR(a->tensors[i].name, b->tensors[i].name);
    }
    mk_source_close(a);
    mk_source_close(b);
    /* one .safetensors file packs alone */
    char *one = mk_path_join(dir, "model-00001-of-00003.safetensors"), *z1 = tpath("one.mkz"), *b1 = tpath("one.back");
    CHECK_OK(pack(one, z1));
    CHECK_OK(unpack(z1, b1));
    char *r1 = mk_path_join(b1, "model-00001-of-00003.safetensors");
    CHECK(same_file(one, r1));
    free(r1);
    free(one);
    free(z1);
    free(b1);
    free(ixp);
    free_model(&m);
    free(dir);
    free(z);
    free(back);
}

/* The sink writes the same shards as the safetensors sink, whatever the write order and
 * thread count, spilling blocks that arrive far ahead; the container bytes do not depend
 * on either. */
MK_TEST(mkz_sink_matches_safetensors_sink)
{
    tmodel m = {0};
    rng_state = 7;
    add_t(&m, "embed", MK_BF16, 2, 3000, 700); /* 3 blocks */
    add_t(&m, "norm", MK_F32, 1, 700, 0);
    add_t(&m, "empty", MK_F16, 2, 0, 5);
    add_t(&m, "proj", MK_F16, 2, 1500, 800);
    add_t(&m, "f8", MK_F8_E5M2, 2, 100, 100);
    char *dir = tpath("sk.st"), *z1 = tpath("sk1.mkz"), *z2 = tpath("sk2.mkz"), *back = tpath("sk.back");
    CHECK_OK(write_folder(dir, &m, 2500000)); /* two shards */
    mk_st_sink_opts so = {.shard_size = 2500000};
    mk_sink *st = NULL;
    char *dir2 = tpath("sk.st2");
    mk_rm_rf(dir2);
    mk_mkdir_p(dir2);
    CHECK_OK(mk_safetensors_sink(dir2, &so, &st));
    CHECK_OK(write_sink(st, &m, 1u << 20, false));

    int thr = mk_threads_get();
    unlink(z1);
    unlink(z2);
    mk_mkz_sink_opts zo = {1, 2500000, 1}; /* pending_max 1 byte: every early block spills */
    mk_sink *k1 = NULL, *k2 = NULL;
    mk_threads_set(3);
    CHECK_OK(mk_mkz_sink(z1, &zo, &k1));
    CHECK_OK(write_sink(k1, &m, 333333, true));
    mk_threads_set(1);
    zo.pending_max = 0;
    CHECK_OK(mk_mkz_sink(z2, &zo, &k2));
    CHECK_OK(write_sink(k2, &m, 1u << 20, false));
    mk_threads_set(thr);
    CHECK_MSG(same_file(z1, z2), "container bytes depend on write order or thread count");
    /* the files the sinks report are the same files with the same hashes */
    if (st && k1) {
        CHECK_EQ_INT(k1->n_out_files, st->n_out_files);
        for (size_t i = 0; i < st->n_out_files && i < k1->n_out_files; i++) {
            CHECK_STR(k1->out_files[i].name, st->out_files[i].name);
            CHECK_STR(k1->out_files[i].hash, st->out_files[i].hash);
            CHECK_EQ_INT(k1->out_files[i].size, st->out_files[i].size);
        }
    }
    mk_sink_close(st);
    mk_sink_close(k1);
    mk_sink_close(k2);
    CHECK_OK(unpack(z1, back));
    check_same_dir(dir, back);
    check_reads(z1, &m);
    free_model(&m);
    free(dir);
    free(dir2);
    free(z1);
    free(z2);
    free(back);
}

MK_TEST(mkz_sink_refuses_incomplete_tensors)
{
    tmodel m = {0};
    rng_state = 9;
    add_t(&m, "a", MK_BF16, 2, 10, 10);
    char *z = tpath("inc.mkz");
    unlink(z);
    mk_mkz_sink_opts zo = {1, 0, 0};
    mk_sink *k = NULL;
    CHECK_OK(mk_mkz_sink(z, &zo, &k));
    if (k) {
        CHECK_OK(k->ops->begin(k, m.t, 1));
        CHECK_OK(k->ops->write(k, 0, 0, m.data[0], 100));
        CHECK_ERR(k->ops->tensor_done(k, 0), MK_ERR_IO, "100 of 200 bytes");
        CHECK_OK(k->ops->write(k, 0, 100, m.data[0] + 100, 100));
        CHECK_OK(k->ops->tensor_done(k, 0));
        CHECK_ERR(k->ops->write(k, 0, 0, m.data[0], 2), MK_ERR_IO, "after their block was complete");
        mk_sink_close(k);
    }
    free_model(&m);
    free(z);
}

/* ---- damage and forgery ------------------------------------------------------------------- */

static unsigned char *small_container(size_t *len)
{
    tmodel m = {0};
    rng_state = 3;
    add_t(&m, "a.weight", MK_BF16, 2, 24, 16);
    add_t(&m, "b.weight", MK_F32, 2, 8, 8);
    add_t(&m, "c.norm", MK_BF16, 1, 16, 0);
    add_t(&m, "d.empty", MK_F16, 1, 0, 0);
    add_t(&m, "e.i8", MK_I8, 1, 40, 0);
    char *dir = tpath("small"), *z = tpath("small.mkz");
    CHECK_OK(write_folder(dir, &m, 0));
    CHECK_OK(pack(dir, z));
    char *img = NULL;
    CHECK_OK(mk_read_file(z, 1 << 20, &img, len));
    free_model(&m);
    free(dir);
    free(z);
    return (unsigned char *)img;
}

MK_TEST(mkz_every_byte_flip_is_detected_and_named)
{
    size_t len = 0;
    unsigned char *img = small_container(&len);
    if (!img) return;
    CHECK_OK(mk_mkz_verify_buffer(img, len, NULL, "small.mkz"));
    mk_mkz_index ix;
    CHECK_OK(mk_mkz_parse(img, len, NULL, "small.mkz", &ix));
    uint64_t data_end = ix.index_offset, index_end = ix.index_offset + ix.index_size;
    mk_mkz_index_free(&ix);
    int thr = mk_threads_get();
    mk_threads_set(1); /* thousands of tiny verifies: no thread wake-ups */
    size_t missed = 0, misnamed = 0, first_missed = 0, first_misnamed = 0;
    char bad_msg[600] = "";
    for (size_t i = 0; i < len; i++) {
        static const unsigned char pats[] = {0x01, 0x80, 0xff};
        for (size_t q = 0; q < sizeof pats; q++) {
            img[i] ^= pats[q];
            mk_status s = mk_mkz_verify_buffer(img, len, NULL, "small.mkz");
            const char *msg = mk_errmsg();
            bool named = i < 16                ? strstr(msg, "header") != NULL
                         : i < data_end        ? strstr(msg, ": block ") != NULL
                         : i < index_end       ? strstr(msg, "index damaged") != NULL
                                               : strstr(msg, "footer") || strstr(msg, "index damaged");
            if (s != MK_ERR_FORMAT && !missed++) first_missed = i;
            else if (s == MK_ERR_FORMAT && !named && !misnamed++) {
                first_misnamed = i;
                snprintf(bad_msg, sizeof bad_msg, "%s", msg);
            }
            img[i] ^= pats[q];
        }
    }
    mk_threads_set(thr);
    CHECK_MSG(missed == 0, "%zu of %zu flips not detected (first at byte %zu)", missed, 3 * len, first_missed);
    CHECK_MSG(misnamed == 0, "%zu flips reported without naming the structure (first at byte %zu: %s)", misnamed,
              first_misnamed, bad_msg);
    /* truncation and trailing bytes */
    CHECK_ERR(mk_mkz_verify_buffer(img, len - 1, NULL, "t"), MK_ERR_FORMAT, "footer");
    unsigned char *longer = calloc(1, len + 3);
    memcpy(longer, img, len);
    CHECK_ERR(mk_mkz_verify_buffer(longer, len + 3, NULL, "t"), MK_ERR_FORMAT, "footer");
    free(longer);
    free(img);
}

/* Layout constants of docs/mkz-format.md, for forging. */
#define F_INDEX_OFF(len) ((len) - 48)
#define INDEX_HEAD 64
#define STREAM_REC 128
#define BLOCK_REC 64

static uint64_t rd64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static void wr64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Recompute the index checksum in the footer, as a forger would. */
static void reseal(unsigned char *img, size_t len)
{
    uint64_t off = rd64(img + len - 48), size = rd64(img + len - 40);
    mk_hash128 h = mk_hash128_bytes(img + off, (size_t)size);
    wr64(img + len - 32, h.lo);
    wr64(img + len - 24, h.hi);
}

MK_TEST(mkz_forged_index_rejected_before_allocating)
{
    size_t len = 0;
    unsigned char *img = small_container(&len);
    if (!img) return;
    unsigned char *w = malloc(len);
    uint64_t io = rd64(img + len - 48);
    /* files in name order: stream 0 is config.json, 1 the safetensors header, 2 the first
     * tensor in file order (b.weight, F32: the writer puts 4-byte types first) */
    unsigned char *st0 = img + io + INDEX_HEAD;
    uint32_t n_streams = (uint32_t)rd64(img + io + 8) & 0xffffffffu;
    unsigned char *blk0 = img + io + INDEX_HEAD + (size_t)n_streams * STREAM_REC;
    /* a block record with a zstd plane */
    size_t zrec = 0, zplane = 0;
    mk_mkz_index ix;
    CHECK_OK(mk_mkz_parse(img, len, NULL, "f.mkz", &ix));
    for (size_t g = 0; g < ix.n_blocks && !zrec; g++)
        for (size_t p = 0; p < 8 && !zrec; p++)
            if (ix.blocks[g].method[p] == 1) {
                zrec = (size_t)(blk0 - img) + g * BLOCK_REC;
                zplane = p;
            }
    mk_mkz_index_free(&ix);
    CHECK(zrec != 0);
    struct {
        const char *what, *want;
        size_t at;        /* offset into the image */
        int width;        /* bytes written */
        uint64_t value;
    } cases[] = {
        {"huge block", "block of", (size_t)(st0 - img) + 88, 4, 0xffffffffu},
        {"block count", "blocks [", (size_t)(st0 - img) + 96, 4, 7},
        {"huge raw size", "blocks [", (size_t)(st0 - img) + 80, 8, 1ull << 60},
        {"planes", "3 byte planes for 4-byte", (size_t)(st0 + 2 * STREAM_REC - img) + 14, 1, 3},
        {"dtype code", "dtype code", (size_t)(st0 + 2 * STREAM_REC - img) + 12, 1, 99},
        {"block offset", "at offset", (size_t)(blk0 - img), 8, 17},
        {"plane beyond bound", "method 1 with", zrec + 24 + 4 * zplane, 4, 0x7fffffff},
        {"stored plane size", "method 0 with", zrec + 12 + zplane, 1, 0},
        {"unknown method", "method 7 with", zrec + 12 + zplane, 1, 7},
        {"counts", "do not add up", (size_t)io + 12, 4, 0x7fffffff},
        {"reserved", "reserved", (size_t)io + 40, 1, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memcpy(w, img, len);
        if (cases[c].width == 8) wr64(w + cases[c].at, cases[c].value);
        else if (cases[c].width == 4) wr32(w + cases[c].at, (uint32_t)cases[c].value);
        else w[cases[c].at] = (unsigned char)cases[c].value;
        reseal(w, len);
        mk_status s = mk_mkz_verify_buffer(w, len, NULL, "f.mkz");
        CHECK_MSG(s == MK_ERR_FORMAT && strstr(mk_errmsg(), cases[c].want), "%s: got %d '%s', want '%s'", cases[c].what,
                  (int)s, s ? mk_errmsg() : "", cases[c].want);
    }
    /* an index larger than the limit, or than the file */
    memcpy(w, img, len);
    wr64(w + len - 40, 1ull << 40);
    CHECK_ERR(mk_mkz_verify_buffer(w, len, NULL, "f.mkz"), MK_ERR_FORMAT, "footer damaged");
    mk_mkz_limits lim = MK_MKZ_LIMITS_DEFAULT;
    lim.max_index = 100;
    CHECK_ERR(mk_mkz_verify_buffer(img, len, &lim, "f.mkz"), MK_ERR_FORMAT, "limit 100");
    /* a file name that leaves the output folder */
    memcpy(w, img, len);
    unsigned char *nm = memmem(w + io, len - io, "config.json", 11);
    CHECK(nm != NULL);
    if (nm) {
        memcpy(nm, "../onfig.js", 11);
        reseal(w, len);
        CHECK_ERR(mk_mkz_verify_buffer(w, len, NULL, "f.mkz"), MK_ERR_FORMAT, "not a plain file name");
    }
    /* two model tensors with one name */
    memcpy(w, img, len);
    nm = memmem(w + io, len - io, "b.weight", 8);
    CHECK(nm != NULL);
    if (nm) {
        nm[0] = 'a';
        reseal(w, len);
        CHECK_ERR(mk_mkz_verify_buffer(w, len, NULL, "f.mkz"), MK_ERR_FORMAT, "lists tensor a.weight twice");
    }
    free(w);
    free(img);
}

/* A zstd frame that claims more bytes than its plane holds is refused before decoding
 * (the block checksum resealed too, as a forger would). */
/* Model m written as folder NAME and packed into NAME.mkz: the container's bytes (*len)
 * and its parsed index (*ix, to be freed). */
static char *packed_image(tmodel *m, const char *name, size_t *len, mk_mkz_index *ix)
{
    char file[64];
    snprintf(file, sizeof file, "%s.mkz", name);
    char *dir = tpath(name), *z = tpath(file), *img = NULL;
    memset(ix, 0, sizeof *ix);
    CHECK_OK(write_folder(dir, m, 0));
    CHECK_OK(pack(dir, z));
    CHECK_OK(mk_read_file(z, 1 << 24, &img, len));
    if (img) CHECK_OK(mk_mkz_parse((unsigned char *)img, *len, NULL, file, ix));
    free(dir);
    free(z);
    return img;
}

MK_TEST(mkz_forged_frame_size_rejected)
{
    tmodel m = {0};
    rng_state = 11;
    add_t(&m, "w", MK_BF16, 2, 512, 512); /* plane of 256 KiB: a 4-byte content-size field */
    for (size_t i = 0; i < 512 * 512; i++) { /* all 1.0: runs, which zstd codes better than rANS */
        m.data[0][2 * i] = 0x80;
        m.data[0][2 * i + 1] = 0x3f;
    }
    size_t len = 0;
    mk_mkz_index ix;
    char *img = packed_image(&m, "fr", &len, &ix);
    if (img && ix.n_model == 1) {
        const mk_mkz_stream *S = &ix.streams[ix.model[0]];
        uint32_t g = S->first_block;
        const mk_mkz_block *B = &ix.blocks[g];
        CHECK_EQ_INT(B->method[1], 1);
        unsigned char *fr = (unsigned char *)img + B->offset + B->plane_csize[0]; /* plane 1, zstd */
        CHECK(fr[0] == 0x28 && fr[1] == 0xb5 && fr[2] == 0x2f && fr[3] == 0xfd);
        unsigned fhd = fr[4], fcs_flag = fhd >> 6, single = (fhd >> 5) & 1, did = fhd & 3;
        CHECK_EQ_INT(fcs_flag, 2);
        size_t at = 5 + (single ? 0 : 1) + (did == 0 ? 0 : did == 1 ? 1 : did == 2 ? 2 : 4);
        wr32(fr + at, 0xfffffff0u); /* about 4 GiB */
        /* reseal the block hash in the index, then the index */
        uint64_t h = mk_hash64(img + B->offset, B->csize);
        unsigned char *rec = (unsigned char *)img + ix.index_offset + INDEX_HEAD + ix.n_streams * STREAM_REC + g * BLOCK_REC;
        wr64(rec + 56, h);
        reseal((unsigned char *)img, len);
        CHECK_ERR(mk_mkz_verify_buffer((unsigned char *)img, len, NULL, "fr.mkz"), MK_ERR_FORMAT, "declares 4294967280");
    }
    mk_mkz_index_free(&ix);
    free(img);
    free_model(&m);
}

/* A damaged rANS plane whose block checksum was resealed (so only the decoder, or the tensor's
 * hash after it, can see it) is refused naming the tensor and the block, and the plane when
 * the decoder sees it. */
MK_TEST(mkz_damaged_rans_plane_named)
{
    tmodel m = {0};
    rng_state = 12;
    add_t(&m, "emb", MK_BF16, 2, 512, 512);
    size_t len = 0;
    mk_mkz_index ix;
    char *img = packed_image(&m, "dr", &len, &ix);
    if (img && ix.n_model == 1) {
        const mk_mkz_stream *S = &ix.streams[ix.model[0]];
        uint32_t g = S->first_block;
        const mk_mkz_block *B = &ix.blocks[g];
        CHECK_EQ_INT(B->method[1], 2);
        unsigned char *pl = (unsigned char *)img + B->offset + B->plane_csize[0]; /* plane 1, rANS */
        unsigned char *rec = (unsigned char *)img + ix.index_offset + INDEX_HEAD + ix.n_streams * STREAM_REC + g * BLOCK_REC;
        size_t failed = 0, named = 0;
        char first[600] = "";
        for (size_t at = 0; at < B->plane_csize[1]; at += 97) {
            pl[at] ^= 0x5a;
            wr64(rec + 56, mk_hash64(img + B->offset, B->csize));
            reseal((unsigned char *)img, len);
            mk_status st = mk_mkz_verify_buffer((unsigned char *)img, len, NULL, "dr.mkz");
            failed += st == MK_ERR_FORMAT;
            if (st == MK_ERR_FORMAT && strstr(mk_errmsg(), "tensor emb") && strstr(mk_errmsg(), "block 0")) named++;
            else if (!first[0]) snprintf(first, sizeof first, "at %zu: %s", at, st == MK_OK ? "accepted" : mk_errmsg());
            pl[at] ^= 0x5a;
        }
        size_t tries = (B->plane_csize[1] + 96) / 97;
        CHECK_MSG(failed == tries && named == tries, "%zu of %zu damaged planes refused, %zu named (%s)", failed, tries, named,
                  first);
        pl[200] ^= 0x5a;
        wr64(rec + 56, mk_hash64(img + B->offset, B->csize));
        reseal((unsigned char *)img, len);
        CHECK_ERR(mk_mkz_verify_buffer((unsigned char *)img, len, NULL, "dr.mkz"), MK_ERR_FORMAT,
                  "dr.mkz: tensor emb: block 0 plane 1: the rANS plane is damaged");
    }
    mk_mkz_index_free(&ix);
    free(img);
    free_model(&m);
}

/* The bytes on disk are what docs/mkz-format.md says, read here with plain zstd (or the
 * rANS decoder alone) and no container code: plane p of a block is byte p of each element,
 * in element order, except the top two bytes of bf16 and f32 (layout 1): sign << 7 |
 * mantissa bits, then the exponent. */
MK_TEST(mkz_planes_on_disk_follow_the_spec)
{
    tmodel m = {0};
    rng_state = 13;
    add_t(&m, "h", MK_BF16, 2, 300, 333); /* 99900 elements: SIMD body and scalar tail */
    add_t(&m, "s", MK_F32, 2, 77, 1001);
    char *dir = tpath("spec"), *z = tpath("spec.mkz");
    CHECK_OK(write_folder(dir, &m, 0));
    CHECK_OK(pack(dir, z));
    size_t len = 0;
    char *img = NULL;
    CHECK_OK(mk_read_file(z, 1 << 26, &img, &len));
    mk_mkz_index ix;
    CHECK_OK(mk_mkz_parse((unsigned char *)img, len, NULL, "spec.mkz", &ix));
    for (size_t i = 0; i < ix.n_model; i++) {
        const mk_mkz_stream *S = &ix.streams[ix.model[i]];
        size_t ti = strcmp(S->name, "h") == 0 ? 0 : 1;
        CHECK_EQ_INT(S->n_blocks, 1);
        const mk_mkz_block *B = &ix.blocks[S->first_block];
        size_t n = (size_t)S->n_elems, at = (size_t)B->offset;
        unsigned char *plane = malloc(n);
        for (unsigned p = 0; p < S->n_planes; p++) {
            if (B->method[p] == 1) {
                size_t r = ZSTD_decompress(plane, n, img + at, B->plane_csize[p]);
                CHECK_MSG(r == n, "tensor %s plane %u: zstd gives %zu bytes, want %zu", S->name, p, r, n);
            } else if (B->method[p] == 2) {
                CHECK_OK(mk_mkz_rans_decode((unsigned char *)img + at, B->plane_csize[p], plane, n));
            } else {
                memcpy(plane, img + at, n);
            }
            CHECK_EQ_INT(S->layout, 1); /* bf16 and f32: the top two bytes as sign + mantissa, exponent */
            size_t bad = 0;
            for (size_t e = 0; e < n; e++) {
                const uint8_t *el = m.data[ti] + e * S->es, lo = el[S->es - 2], hi = el[S->es - 1];
                unsigned want = p < S->es - 2 ? el[p] : p == S->es - 2 ? (hi & 0x80) | (lo & 0x7f) : (hi << 1 & 0xff) | lo >> 7;
                bad += plane[e] != want;
            }
            CHECK_MSG(bad == 0, "tensor %s plane %u: %zu bytes differ from byte %u of the elements", S->name, p, bad, p);
            at += B->plane_csize[p];
        }
        free(plane);
    }
    mk_mkz_index_free(&ix);
    free(img);
    free_model(&m);
    free(dir);
    free(z);
}

/* ---- random access ------------------------------------------------------------------------ */

MK_TEST(mkz_random_access_reads_only_its_blocks)
{
    tmodel m = {0};
    rng_state = 5;
    char name[32];
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "t%d", i);
        add_t(&m, name, MK_BF16, 2, 1024, 2048); /* 512 rows per block: 2 blocks */
    }
    char *dir = tpath("ra"), *z = tpath("ra.mkz");
    CHECK_OK(write_folder(dir, &m, 0));
    CHECK_OK(pack(dir, z));
    mk_source *s = NULL;
    CHECK_OK(mk_mkz_open(z, &s));
    if (s) {
        const mk_mkz_index *ix = mk_mkz_source_index(s);
        uint64_t b0 = mk_mkz_source_bytes_read(s);
        CHECK_EQ_INT(b0, 16 + 48 + ix->index_size); /* opening reads the header, footer and index */
        const mk_mkz_stream *S3 = &ix->streams[ix->model[3]];
        uint8_t *buf = malloc(S3->raw_size);
        CHECK_OK(s->ops->read(s, 3, 0, S3->raw_size, buf));
        CHECK(memcmp(buf, m.data[3], S3->raw_size) == 0);
        uint64_t b1 = mk_mkz_source_bytes_read(s);
        CHECK_EQ_INT(b1 - b0, S3->stored); /* exactly its own blocks */
        /* rows 600..609 of t4 lie in its second block only */
        float *rows = malloc(10 * 2048 * sizeof(float));
        CHECK_OK(mk_source_read_f32(s, 4, 600 * 2048, 10 * 2048, rows, buf));
        const mk_mkz_stream *S4 = &ix->streams[ix->model[4]];
        uint64_t b2 = mk_mkz_source_bytes_read(s);
        CHECK_EQ_INT(b2 - b1, ix->blocks[S4->first_block + 1].csize);
        float want[4];
        mk_dtype_info(MK_BF16)->to_f32(m.data[4] + 600 * 2048 * 2, want, 4);
        CHECK_CLOSE("t4 rows", rows, want, 4, 0, 0);
        /* a window read row by row (narrower than the tensor) decodes each block once */
        float *win = malloc(1024 * 100 * sizeof(float));
        CHECK_OK(mk_source_read_f32_window(s, 5, 2048, 0, 1024, 100, win, buf));
        uint64_t b3 = mk_mkz_source_bytes_read(s);
        const mk_mkz_stream *S5 = &ix->streams[ix->model[5]];
        CHECK_EQ_INT(b3 - b2, S5->stored);
        free(win);
        free(rows);
        free(buf);
        mk_source_close(s);
    }
    free_model(&m);
    free(dir);
    free(z);
}

/* ---- delta containers ------------------------------------------------------------------------ */

static mk_status pack_base(const char *in, const char *base, const char *out, mk_mkz_stats *st)
{
    unlink(out);
    mk_source *b = NULL;
    MK_TRY(mk_safetensors_open(base, &b));
    mk_mkz_pack_opts o = {.level = 1, .base = b, .base_hint = "dbase"};
    mk_status s = mk_mkz_pack(in, out, &o, st);
    mk_source_close(b);
    return s;
}

/* A "finetune" of m: a fifth of the elements changed in their low bits (even tensors: bits
 * flipped; odd ones: a small integer added to the bit pattern, carries and all), one in a
 * hundred anywhere (sign and exponent too), so that blocks differ from the base in every way. */
static void perturb(tmodel *m)
{
    for (size_t i = 0; i < m->n; i++) {
        size_t es = mk_dtype_size(m->t[i].dtype);
        for (uint64_t e = 0; e < m->t[i].numel; e++) {
            uint8_t *x = m->data[i] + e * es;
            uint64_t r = next_u64() % 100;
            if (r < 20 && i % 2 == 0) x[0] ^= (uint8_t)(1 + next_u64() % 3);
            else if (r < 20) {
                unsigned carry = 1 + (unsigned)(next_u64() % 3);
                for (size_t q = 0; q < es && carry; q++) {
                    carry += x[q];
                    x[q] = (uint8_t)carry;
                    carry >>= 8;
                }
            } else if (r < 21) x[es - 1] ^= (uint8_t)next_u64();
        }
    }
}

MK_TEST(mkz_delta_roundtrip_every_dtype)
{
    tmodel base = {0}, ft = {0};
    every_dtype_model(&base);
    every_dtype_model(&ft);
    perturb(&ft);
    char *bdir = tpath("dbase"), *dir = tpath("dft"), *z = tpath("dft.mkz"), *z3 = tpath("dft3.mkz"),
         *back = tpath("dft.back");
    CHECK_OK(write_folder(bdir, &base, 0));
    CHECK_OK(write_folder(dir, &ft, 0));
    mk_mkz_stats st, st3;
    int thr = mk_threads_get();
    mk_threads_set(1);
    CHECK_OK(pack_base(dir, bdir, z, &st));
    mk_threads_set(3);
    CHECK_OK(pack_base(dir, bdir, z3, &st3));
    mk_threads_set(thr);
    CHECK_MSG(same_file(z, z3), "delta pack at 1 and 3 threads gives different bytes");
    CHECK_EQ_INT(st.deltas, ft.n);
    check_reads_base(z, &ft, bdir);
    /* every transform is used somewhere, and each is undone exactly (the reads above) */
    mk_source *s = NULL, *b = NULL;
    CHECK_OK(mk_mkz_open(z, &s));
    if (s) {
        const mk_mkz_index *ix = mk_mkz_source_index(s);
        size_t used[3] = {0};
        for (size_t g = 0; g < ix->n_blocks; g++) used[ix->blocks[g].transform < 3 ? ix->blocks[g].transform : 0]++;
        CHECK_MSG(used[1] && used[2], "blocks by transform: %zu plain, %zu xor, %zu difference", used[0], used[1], used[2]);
        CHECK_EQ_INT(ix->version, MK_MKZ_VERSION_RANS);
        CHECK_STR(ix->base_hint, "dbase");
        /* without a base: plain streams read, a delta tensor names the base it needs */
        long k = mk_source_find(s, "multiblock.bf16");
        uint8_t one[2];
        CHECK(s->ops->read(s, (size_t)k, 0, 2, one) != MK_OK);
        CHECK_MSG(strstr(mk_errmsg(), "multiblock.bf16 is stored as a delta against base dbase"), "%s", mk_errmsg());
        CHECK_OK(mk_safetensors_open(bdir, &b));
        CHECK_OK(mk_mkz_attach_base(s, b, NULL));
        CHECK_OK(mk_mkz_verify(s, NULL, NULL));
        mk_rm_rf(back);
        CHECK_OK(mk_mkdir_p(back));
        CHECK_OK(mk_mkz_unpack(s, back, NULL, NULL));
        check_same_dir(dir, back);
        mk_source_close(s);
    }
    /* a base with one element changed is refused by hash, naming the tensor */
    base.data[0][5] ^= 1;
    CHECK_OK(write_folder(bdir, &base, 0));
    s = NULL;
    CHECK_OK(mk_mkz_open(z, &s));
    if (s) {
        CHECK_OK(mk_safetensors_open(bdir, &b));
        CHECK_OK(mk_mkz_attach_base(s, b, NULL));
        CHECK(mk_mkz_verify(s, NULL, NULL) == MK_ERR_FORMAT);
        CHECK_MSG(strstr(mk_errmsg(), "tensor w.F64: the base's XXH3-128 is ") && strstr(mk_errmsg(), "wrong base"), "%s",
                  mk_errmsg());
        mk_source_close(s);
    }
    free_model(&base);
    free_model(&ft);
    free(bdir);
    free(dir);
    free(z);
    free(z3);
    free(back);
}
