/* test_safetensors.c - every reader rule with a crafted file, the index rules, writer round
 * trips and sharding at exact boundaries. */
#include "harness.h"

#include "../../core/mk_io.h"
#include "../../formats/safetensors.h"

#include <stdlib.h>
#include <unistd.h>

/* A file image: 8-byte length + header text + `data` bytes of zeros. */
static unsigned char *image(const char *header, size_t data, size_t *len)
{
    size_t n = strlen(header);
    *len = 8 + n + data;
    unsigned char *b = calloc(1, *len);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(b + 8, header, n);
    return b;
}

static mk_status parse(const char *header, size_t data)
{
    size_t len;
    unsigned char *b = image(header, data, &len);
    mk_st_header h;
    mk_status s = mk_st_parse(b, len, len, "t.safetensors", &h);
    if (s == MK_OK) mk_st_header_free(&h);
    free(b);
    return s;
}

MK_TEST(st_valid_minimal)
{
    CHECK_OK(parse("{}", 0));
    CHECK_OK(parse("{\"__metadata__\":{\"format\":\"pt\"}}", 0));
    CHECK_OK(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24));
    /* offsets need not be in JSON order; zero-size tensors may share an offset; scalars */
    CHECK_OK(parse("{\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]},"
                   "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                   "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[8,8]},"
                   "\"f\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[8,8]}}",
                   8));
    /* leading and trailing JSON whitespace (accepted since safetensors PR #686) */
    CHECK_OK(parse(" \n{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}   ", 1));
    /* unknown fields inside an entry are ignored, as the reference reader does */
    CHECK_OK(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", 1));
}

MK_TEST(st_parse_fields)
{
    size_t len;
    unsigned char *b = image("{\"w\":{\"dtype\":\"F16\",\"shape\":[3,4],\"data_offsets\":[0,24]},"
                             "\"__metadata__\":{\"format\":\"pt\",\"k\":\"v\"}}",
                             24, &len);
    mk_st_header h;
    CHECK_OK(mk_st_parse(b, len, len, "t", &h));
    CHECK_EQ_INT(h.n, 1);
    CHECK_STR(h.t[0].name, "w");
    CHECK_EQ_INT(h.t[0].dtype, MK_F16);
    CHECK_EQ_INT(h.t[0].ndim, 2);
    CHECK_EQ_INT(h.t[0].numel, 12);
    CHECK_EQ_INT(h.t[0].offset, h.data_start);
    CHECK_EQ_INT(h.n_meta, 2);
    CHECK_STR(h.meta_vals[1], "v");
    mk_st_header_free(&h);
    free(b);
}

MK_TEST(st_rejects)
{
    /* the size prefix */
    unsigned char tiny[4] = {0};
    mk_st_header h;
    CHECK_ERR(mk_st_parse(tiny, 4, 4, "t", &h), MK_ERR_FORMAT, "too short");
    unsigned char big[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    CHECK_ERR(mk_st_parse(big, 16, 16, "t", &h), MK_ERR_FORMAT, "limit");
    unsigned char past[16] = {200, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    CHECK_ERR(mk_st_parse(past, 16, 16, "t", &h), MK_ERR_FORMAT, "past the end");
    /* JSON shape */
    CHECK_ERR(parse("[1,2]", 0), MK_ERR_FORMAT, "expected an object");
    CHECK_ERR(parse("{\"a\":1} x", 0), MK_ERR_FORMAT, "trailing");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4), MK_ERR_FORMAT, "invalid JSON");
    CHECK_ERR(parse("{\"\xff\":1}", 0), MK_ERR_FORMAT, "UTF-8");
    CHECK_ERR(parse("{\"__metadata__\":[1]}", 0), MK_ERR_FORMAT, "__metadata__");
    CHECK_ERR(parse("{\"__metadata__\":{\"a\":1}}", 0), MK_ERR_FORMAT, "expected a string");
    CHECK_ERR(parse("{\"__metadata__\":{},\"__metadata__\":{}}", 0), MK_ERR_FORMAT, "twice");
    CHECK_ERR(parse("{\"a\":\"x\"}", 0), MK_ERR_FORMAT, "expected an object");
    /* duplicate names, identical or not (the reference reader keeps the last) */
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                    "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                    1),
              MK_ERR_FORMAT, "twice");
    /* dtype */
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), MK_ERR_FORMAT, "unknown dtype");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), MK_ERR_FORMAT, "unknown dtype");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1), MK_ERR_UNSUPPORTED, "does not support");
    /* fields */
    CHECK_ERR(parse("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4), MK_ERR_FORMAT, "missing 'dtype'");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4), MK_ERR_FORMAT, "missing 'shape'");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4), MK_ERR_FORMAT, "missing 'data_offsets'");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4), MK_ERR_FORMAT, "expected 2");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4), MK_ERR_FORMAT, "at most 2");
    /* integers: negative, fractional, exponent, beyond u64 */
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4), MK_ERR_FORMAT, "non-negative integer");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4), MK_ERR_FORMAT, "non-negative integer");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4e0]}}", 4), MK_ERR_FORMAT, "non-negative integer");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616],\"data_offsets\":[0,4]}}", 4), MK_ERR_FORMAT,
              "non-negative integer");
    /* shape product and byte-size overflow */
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,9223372036854775807],\"data_offsets\":[0,4]}}", 4), MK_ERR_FORMAT,
              "overflow");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,2],\"data_offsets\":[0,4]}}", 4), MK_ERR_FORMAT,
              "overflow");
    /* offsets: reversed, size mismatch, hole, overlap, aliasing, past the end, trailing bytes */
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4), MK_ERR_FORMAT, "before begin");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4), MK_ERR_FORMAT, "needs 8");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8), MK_ERR_FORMAT, "hole");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8),
              MK_ERR_FORMAT, "overlap");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                    4),
              MK_ERR_FORMAT, "overlap");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4), MK_ERR_FORMAT, "truncated");
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 5), MK_ERR_FORMAT, "trailing bytes");
    /* names */
    CHECK_ERR(parse("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), MK_ERR_FORMAT, "empty or contains NUL");
    CHECK_ERR(parse("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), MK_ERR_FORMAT,
              "empty or contains NUL");
    /* too many dimensions for us */
    CHECK_ERR(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1), MK_ERR_FORMAT,
              "at most 8");
    /* deep nesting is bounded, not recursed without limit */
    char deep[600];
    size_t k = 0;
    k += (size_t)snprintf(deep, sizeof deep, "{\"a\":");
    for (int i = 0; i < 200; i++) deep[k++] = '[';
    for (int i = 0; i < 200; i++) deep[k++] = ']';
    deep[k++] = '}';
    deep[k] = 0;
    CHECK_ERR(parse(deep, 0), MK_ERR_FORMAT, "too deep");
}

MK_TEST(st_index_rules)
{
    mk_st_index ix;
    const char *good = "{\"metadata\":{\"total_size\":12},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                       "\"b\":\"model-00002-of-00002.safetensors\",\"c\":\"model-00001-of-00002.safetensors\"}}";
    CHECK_OK(mk_st_index_parse(good, strlen(good), "idx", &ix));
    CHECK_EQ_INT(ix.n_shards, 2);
    CHECK_EQ_INT(ix.n, 3);
    CHECK_EQ_INT(ix.shard_of[2], 0);
    CHECK_EQ_INT(ix.total_size, 12);
    mk_st_index_free(&ix);
    static const char *const bad_names[] = {"../x.safetensors", "/abs.safetensors", "sub/x.safetensors",
                                            "x\\\\y.safetensors", "C:x.safetensors", "model.bin", "..safetensors", ""};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        char text[300];
        snprintf(text, sizeof text, "{\"weight_map\":{\"a\":\"%s\"}}", bad_names[i]);
        CHECK_ERR(mk_st_index_parse(text, strlen(text), "idx", &ix), MK_ERR_FORMAT, "not a .safetensors file name");
    }
    const char *dup = "{\"weight_map\":{\"a\":\"m.safetensors\",\"a\":\"n.safetensors\"}}";
    CHECK_ERR(mk_st_index_parse(dup, strlen(dup), "idx", &ix), MK_ERR_FORMAT, "twice");
    const char *nomap = "{\"metadata\":{}}";
    CHECK_ERR(mk_st_index_parse(nomap, strlen(nomap), "idx", &ix), MK_ERR_FORMAT, "weight_map");
}

/* ---- writer ------------------------------------------------------------------------------- */

static mk_tensor_info ti(const char *name, mk_dtype dt, int64_t rows, int64_t cols)
{
    mk_tensor_info t = {0};
    t.name = (char *)name;
    t.dtype = dt;
    t.ndim = cols ? 2 : 1;
    t.shape[0] = rows;
    t.shape[1] = cols;
    mk_tensor_info_finish(&t);
    return t;
}

/* Write tensors with values v[e] = base + e (as the dtype allows) through a sink. */
static mk_status write_model(const char *dir, const mk_tensor_info *t, size_t n, uint64_t shard_size)
{
    mk_sink *k;
    mk_st_sink_opts o = {.shard_size = shard_size};
    MK_TRY(mk_mkdir_p(dir));
    MK_TRY(mk_safetensors_sink(dir, &o, &k));
    mk_consumer c;
    mk_status s = mk_consumer_plain(&c, k, t, n, false);
    if (s == MK_OK) s = k->ops->begin(k, t, n);
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        float *v = malloc((size_t)t[i].numel * sizeof(float) + 1);
        for (uint64_t e = 0; e < t[i].numel; e++) v[e] = (float)(i * 1000 + e % 100);
        /* write in two pieces, second first: order must not matter */
        uint64_t half = t[i].numel / 2;
        s = c.ops->rows(&c, i, half, v + half, t[i].numel - half);
        if (s == MK_OK) s = c.ops->rows(&c, i, 0, v, half);
        if (s == MK_OK) s = c.ops->end(&c, i);
        free(v);
    }
    if (s == MK_OK) s = k->ops->commit(k);
    c.ops->close(&c);
    mk_sink_close(k);
    return s;
}

MK_TEST(st_writer_round_trip)
{
    char *dir = mk_path_join(mk_test_tmpdir(), "rt");
    mk_tensor_info t[] = {ti("z.u8", MK_U8, 3, 0), ti("a.f32", MK_F32, 5, 7), ti("b.bf16", MK_BF16, 9, 0),
                          ti("c.f16", MK_F16, 2, 3), ti("d.i64", MK_I64, 4, 0), ti("e.empty", MK_F32, 0, 4)};
    size_t n = sizeof t / sizeof *t;
    CHECK_OK(write_model(dir, t, n, 0));
    mk_source *s = NULL;
    CHECK_OK(mk_safetensors_open(dir, &s));
    if (!s) return;
    CHECK_EQ_INT(s->n_tensors, n);
    for (size_t i = 0; i < n; i++) {
        long j = mk_source_find(s, t[i].name);
        CHECK_MSG(j >= 0, "tensor %s missing", t[i].name);
        if (j < 0) continue;
        CHECK_EQ_INT(s->tensors[j].dtype, t[i].dtype);
        CHECK(mk_shape_eq(&s->tensors[j], &t[i]));
        /* natural alignment: each tensor's file offset is a multiple of its element size */
        CHECK_MSG(s->tensors[j].offset % mk_dtype_size(t[i].dtype) == 0, "%s misaligned", t[i].name);
        float *got = malloc((size_t)t[i].numel * 4 + 4), *want = malloc((size_t)t[i].numel * 4 + 4);
        void *scr = malloc((size_t)t[i].nbytes + 8);
        CHECK_OK(mk_source_read_f32(s, (size_t)j, 0, t[i].numel, got, scr));
        for (uint64_t e = 0; e < t[i].numel; e++) want[e] = (float)(i * 1000 + e % 100);
        if (t[i].dtype == MK_U8)
            for (uint64_t e = 0; e < t[i].numel; e++) want[e] = want[e] > 255 ? 255 : want[e];
        if (t[i].dtype == MK_BF16 || t[i].dtype == MK_F16)
            for (uint64_t e = 0; e < t[i].numel; e++) {
                unsigned char b[2];
                mk_dtype_info(t[i].dtype)->from_f32(&want[e], b, 1);
                mk_dtype_info(t[i].dtype)->to_f32(b, &want[e], 1);
            }
        CHECK_CLOSE(t[i].name, got, want, (size_t)t[i].numel, 0, 0);
        free(got);
        free(want);
        free(scr);
    }
    /* the file itself: header starts with '{', length a multiple of 8, __metadata__ first */
    char *path = mk_path_join(dir, "model.safetensors");
    char *data = NULL;
    size_t len = 0;
    CHECK_OK(mk_read_file(path, 1 << 20, &data, &len));
    if (data) {
        uint64_t hl = 0;
        for (int b = 7; b >= 0; b--) hl = hl << 8 | (unsigned char)data[b];
        CHECK(hl % 8 == 0);
        CHECK(strncmp(data + 8, "{\"__metadata__\":{\"format\":\"pt\"}", 31) == 0);
    }
    free(data);
    free(path);
    mk_source_close(s);
    free(dir);
}

MK_TEST(st_sharding_exact_boundaries)
{
    /* three 400-byte tensors (100 F32): a 800-byte budget holds exactly two */
    mk_tensor_info t[] = {ti("t0", MK_F32, 100, 0), ti("t1", MK_F32, 100, 0), ti("t2", MK_F32, 100, 0)};
    uint32_t sh[3];
    CHECK_EQ_INT(mk_st_assign_shards(t, 3, 800, sh), 2);
    CHECK(sh[0] == 0 && sh[1] == 0 && sh[2] == 1);
    CHECK_EQ_INT(mk_st_assign_shards(t, 3, 799, sh), 3);
    CHECK_EQ_INT(mk_st_assign_shards(t, 3, 1200, sh), 1);
    CHECK_EQ_INT(mk_st_assign_shards(t, 3, 0, sh), 1);
    /* a tensor larger than the budget gets its own shard */
    CHECK_EQ_INT(mk_st_assign_shards(t, 3, 10, sh), 3);
    char *n = mk_st_shard_name(1, 3);
    CHECK_STR(n, "model-00002-of-00003.safetensors");
    free(n);

    char *dir = mk_path_join(mk_test_tmpdir(), "sharded");
    CHECK_OK(write_model(dir, t, 3, 800));
    char *idx = mk_path_join(dir, "model.safetensors.index.json");
    char *text = NULL;
    size_t len;
    CHECK_OK(mk_read_file(idx, 1 << 20, &text, &len));
    CHECK(text && strstr(text, "\"total_size\": 1200"));
    CHECK(text && strstr(text, "\"t2\": \"model-00002-of-00002.safetensors\""));
    free(text);
    mk_source *s = NULL;
    CHECK_OK(mk_safetensors_open(dir, &s));
    if (s) {
        CHECK_EQ_INT(s->n_files, 2);
        CHECK_EQ_INT(s->n_tensors, 3);
        mk_source_close(s);
    }
    free(idx);
    free(dir);
}

MK_TEST(st_folder_damage)
{
    mk_tensor_info t[] = {ti("t0", MK_F32, 100, 0), ti("t1", MK_F32, 100, 0), ti("t2", MK_F32, 100, 0)};
    char *dir = mk_path_join(mk_test_tmpdir(), "damage");
    CHECK_OK(write_model(dir, t, 3, 800));
    mk_source *s = NULL;
    /* missing shard */
    char *s2 = mk_path_join(dir, "model-00002-of-00002.safetensors"), *moved = mk_path_join(dir, "gone");
    CHECK(rename(s2, moved) == 0);
    CHECK_ERR(mk_safetensors_open(dir, &s), MK_ERR_IO, "model-00002-of-00002.safetensors");
    CHECK(rename(moved, s2) == 0);
    /* index pointing a tensor at the wrong shard */
    char *idx = mk_path_join(dir, "model.safetensors.index.json");
    const char *bad = "{\"weight_map\":{\"t0\":\"model-00002-of-00002.safetensors\"}}";
    CHECK_OK(mk_write_file_atomic(idx, bad, strlen(bad)));
    CHECK_ERR(mk_safetensors_open(dir, &s), MK_ERR_FORMAT, "does not contain it");
    /* a tensor listed in the index but missing from its shard, or unlisted (ignored) */
    const char *part = "{\"weight_map\":{\"t0\":\"model-00001-of-00002.safetensors\","
                       "\"t2\":\"model-00002-of-00002.safetensors\"}}";
    CHECK_OK(mk_write_file_atomic(idx, part, strlen(part)));
    CHECK_OK(mk_safetensors_open(dir, &s)); /* t1 unlisted: ignored with a warning */
    if (s) CHECK_EQ_INT(s->n_tensors, 2);
    mk_source_close(s);
    s = NULL;
    /* a tensor in two shards: shard 2 rebuilt to hold t0 as well */
    char *other = mk_path_join(mk_test_tmpdir(), "other");
    mk_tensor_info t2[] = {ti("t0", MK_F32, 100, 0), ti("t2", MK_F32, 100, 0)};
    CHECK_OK(write_model(other, t2, 2, 0));
    char *osingle = mk_path_join(other, "model.safetensors");
    CHECK(rename(osingle, s2) == 0);
    const char *full = "{\"weight_map\":{\"t0\":\"model-00001-of-00002.safetensors\","
                       "\"t1\":\"model-00001-of-00002.safetensors\",\"t2\":\"model-00002-of-00002.safetensors\"}}";
    CHECK_OK(mk_write_file_atomic(idx, full, strlen(full)));
    CHECK_ERR(mk_safetensors_open(dir, &s), MK_ERR_FORMAT, "in two shards");
    free(other);
    free(osingle);
    /* truncated shard */
    CHECK(truncate(s2, 100) == 0);
    CHECK_ERR(mk_safetensors_open(dir, &s), MK_ERR_FORMAT, "model-00002-of-00002.safetensors");
    /* empty folder */
    char *empty = mk_path_join(mk_test_tmpdir(), "emptydir");
    CHECK_OK(mk_mkdir_p(empty));
    CHECK_ERR(mk_safetensors_open(empty, &s), MK_ERR_FORMAT, "no model.safetensors");
    free(empty);
    free(idx);
    free(s2);
    free(moved);
    free(dir);
}
