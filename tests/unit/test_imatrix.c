/* test_imatrix.c - formats/imatrix.c: llama-imatrix's GGUF layout read back (importance =
 * in_sum2 / round(count), 1 where the count is 0; experts as rows), and hostile files refused
 * with one error naming the file and the tensor: sums without counts and the reverse, other
 * tensors, non-F32, sums not a whole number of matrices, negative / NaN / huge counts, negative
 * or NaN sums, another general.type. */
#include "harness.h"

#include "../../formats/gguf_write.h"
#include "../../formats/imatrix.h"
#include "../../model/gguf_names.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
    const char *name;
    uint64_t ne0, ne1;
    const float *v; /* ne0 x ne1 values */
} tdef;

/* a GGUF image (malloc'd) with general.type gtype (NULL: none) and tensors t (F32; those
 * whose name ends in "!f16" declared F16 with the name cut) */
static unsigned char *image(const char *gtype, const tdef *t, size_t n, size_t *len)
{
    mk_gguf_w w;
    mk_gguf_w_init(&w);
    if (gtype) mk_gguf_w_str(&w, "general.type", gtype);
    mk_gguf_w_u32(&w, "imatrix.chunk_count", 7);
    mk_gguf_w_u32(&w, "imatrix.chunk_size", 512);
    for (size_t i = 0; i < n; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "%s", t[i].name);
        char *bang = strchr(nm, '!');
        if (bang) *bang = 0;
        uint64_t ne[4] = {t[i].ne0, t[i].ne1, 1, 1};
        mk_gguf_w_tensor(&w, nm, 2, ne, bang ? MK_GGML_F16 : MK_GGML_F32);
    }
    mk_buf b = {0};
    mk_gguf_w_header(&w, &b);
    for (size_t i = 0; i < n; i++) {
        static const char zero[32];
        if (b.len % 32) mk_buf_put(&b, zero, 32 - b.len % 32);
        size_t bytes = (size_t)(t[i].ne0 * t[i].ne1) * (strchr(t[i].name, '!') ? 2 : 4);
        mk_buf_put(&b, t[i].v, bytes);
    }
    mk_gguf_w_free(&w);
    *len = b.len;
    return (unsigned char *)b.data;
}

static mk_status parse(const char *gtype, const tdef *t, size_t n, mk_imatrix *m)
{
    size_t len = 0;
    unsigned char *img = image(gtype, t, n, &len);
    mk_status s = img ? mk_imatrix_parse(img, len, "im.gguf", m) : MK_ERR_NOMEM;
    free(img);
    return s;
}

MK_TEST(imatrix_read)
{
    float sums[8] = {4, 8, 0, 2, 1, 1, 1, 1}, c1[1] = {2}, c2[2] = {2.4f, 0}, s2[8] = {6, 3, 0, 9, 5, 5, 5, 5};
    tdef t[] = {{"blk.0.attn_q.weight.in_sum2", 4, 1, sums}, {"blk.0.attn_q.weight.counts", 1, 1, c1},
                {"blk.0.ffn_up_exps.weight.counts", 1, 2, c2}, {"blk.0.ffn_up_exps.weight.in_sum2", 4, 2, s2}};
    mk_imatrix m;
    CHECK(parse("imatrix", t, 4, &m) == MK_OK);
    CHECK(m.n == 2 && m.chunk_count == 7 && m.chunk_size == 512);
    const mk_imatrix_entry *q = mk_imatrix_find(&m, "blk.0.attn_q.weight"), *x = mk_imatrix_find(&m, "blk.0.ffn_up_exps.weight");
    CHECK(q && q->cols == 4 && q->nmat == 1 && q->imp[0] == 2 && q->imp[1] == 4 && q->imp[2] == 0 && q->imp[3] == 1);
    /* counts rounded (2.4 -> 2); a matrix with count 0 gets importance 1 */
    CHECK(x && x->cols == 4 && x->nmat == 2 && x->imp[0] == 3 && x->imp[3] == 4.5f && x->imp[4] == 1 && x->imp[7] == 1);
    CHECK(!mk_imatrix_find(&m, "blk.0.attn_q.weight.in_sum2"));
    mk_imatrix_free(&m);
    CHECK(parse(NULL, t, 2, &m) == MK_OK); /* general.type absent: accepted */
    mk_imatrix_free(&m);
}

MK_TEST(imatrix_hostile)
{
    static const float ok4[4] = {1, 2, 3, 4}, one[1] = {3}, neg[1] = {-1}, nan1[1] = {NAN}, huge[1] = {1e30f}, negs[4] = {1, -2, 3, 4},
                       nans[4] = {1, 2, NAN, 4}, two[2] = {1, 1};
    static const struct {
        const char *what, *gtype, *msg;
        tdef t[2];
        size_t n;
    } C[] = {
        {"sums without counts", "imatrix", "im.gguf: tensor a.in_sum2 has no a.counts", {{"a.in_sum2", 4, 1, ok4}}, 1},
        {"counts without sums", "imatrix", "im.gguf: tensor a.counts has no a.in_sum2", {{"a.counts", 1, 1, one}}, 1},
        {"another tensor", "imatrix", "im.gguf: tensor token_embd.weight is neither", {{"token_embd.weight", 4, 1, ok4}}, 1},
        {"F16 sums", "imatrix", "im.gguf: tensor a: .in_sum2 and .counts must be F32", {{"a.in_sum2!f16", 4, 1, ok4}, {"a.counts", 1, 1, one}}, 2},
        {"3 sums for 2 matrices", "imatrix", "im.gguf: tensor a: 3 sums are not 2 matrices", {{"a.in_sum2", 3, 1, ok4}, {"a.counts", 2, 1, two}}, 2},
        {"negative count", "imatrix", "im.gguf: tensor a.counts[0] = -1 is not a count", {{"a.in_sum2", 4, 1, ok4}, {"a.counts", 1, 1, neg}}, 2},
        {"NaN count", "imatrix", "im.gguf: tensor a.counts[0] = nan is not a count", {{"a.in_sum2", 4, 1, ok4}, {"a.counts", 1, 1, nan1}}, 2},
        {"huge count", "imatrix", "im.gguf: tensor a.counts[0] = 1e+30 is not a count", {{"a.in_sum2", 4, 1, ok4}, {"a.counts", 1, 1, huge}}, 2},
        {"negative sum", "imatrix", "im.gguf: tensor a.in_sum2[1] = -2 is not", {{"a.in_sum2", 4, 1, negs}, {"a.counts", 1, 1, one}}, 2},
        {"NaN sum", "imatrix", "im.gguf: tensor a.in_sum2[2] = nan is not", {{"a.in_sum2", 4, 1, nans}, {"a.counts", 1, 1, one}}, 2},
        {"a model", "model", "im.gguf: general.type is 'model', not 'imatrix'", {{"a.in_sum2", 4, 1, ok4}, {"a.counts", 1, 1, one}}, 2},
    };
    for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
        mk_imatrix m;
        mk_status s = parse(C[i].gtype, C[i].t, C[i].n, &m);
        CHECK_MSG(s == MK_ERR_FORMAT && m.n == 0 && !m.e, "%s: status %d", C[i].what, (int)s);
        CHECK_MSG(strstr(mk_errmsg(), C[i].msg) != NULL, "%s: error '%s' does not match '%s'", C[i].what, mk_errmsg(), C[i].msg);
    }
    /* a header with no tensors (built by hand: the writer wants at least one) */
    static const unsigned char empty[] = {'G', 'G', 'U', 'F', 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0,
                                          'g', 'e', 'n', 'e', 'r', 'a', 'l', '.', 't', 'y', 'p', 'e', 8, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0,
                                          'i', 'm', 'a', 't', 'r', 'i', 'x'};
    mk_imatrix e;
    CHECK(mk_imatrix_parse(empty, sizeof empty, "im.gguf", &e) == MK_ERR_FORMAT && strstr(mk_errmsg(), "im.gguf: no tensors"));
    /* truncated images: every prefix of a good one is refused, never read past */
    tdef good[] = {{"a.in_sum2", 4, 1, ok4}, {"a.counts", 1, 1, one}};
    size_t len = 0;
    unsigned char *img = image("imatrix", good, 2, &len);
    for (size_t k = 0; img && k < len; k += 7) {
        unsigned char *p = malloc(k + 1);
        memcpy(p, img, k);
        mk_imatrix m;
        CHECK_MSG(mk_imatrix_parse(p, k, "im.gguf", &m) != MK_OK, "prefix of %zu bytes of %zu accepted", k, len);
        free(p);
    }
    mk_imatrix m;
    CHECK(img && mk_imatrix_parse(img, len, "im.gguf", &m) == MK_OK && m.n == 1);
    mk_imatrix_free(&m);
    free(img);
}

/* what mk_imatrix_write writes reads back (importance = sum / count), entries in name order */
MK_TEST(imatrix_write_read)
{
    char path[256];
    snprintf(path, sizeof path, "%s/mk-imatrix-%d.gguf", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    double s0[3] = {4, 9, 0}, s1[300], c0 = 2, c1 = 0, s2[6] = {1, 2, 3, 8, 8, 8}, c2[2] = {1, 4};
    for (int i = 0; i < 300; i++) s1[i] = i * 0.5;
    mk_imatrix_stat st[3] = {{"blk.1.ffn_down.weight", 300, 1, s1, &c1}, {"blk.0.attn_q.weight", 3, 1, s0, &c0},
                             {"blk.0.ffn_up_exps.weight", 3, 2, s2, c2}};
    const char *ds[1] = {"text.txt"};
    mk_imatrix_meta meta = {ds, 1, 5, 64};
    unlink(path);
    CHECK(mk_imatrix_write(path, st, 3, &meta, false, false) == MK_OK);
    CHECK(mk_imatrix_write(path, st, 3, &meta, false, false) != MK_OK); /* exists, no force */
    mk_imatrix m;
    CHECK(mk_imatrix_read(path, &m) == MK_OK);
    const mk_imatrix_entry *a = mk_imatrix_find(&m, "blk.0.attn_q.weight"), *b = mk_imatrix_find(&m, "blk.1.ffn_down.weight"),
                           *x = mk_imatrix_find(&m, "blk.0.ffn_up_exps.weight");
    CHECK(m.n == 3 && m.chunk_count == 5 && m.chunk_size == 64 && !m.legacy && m.n_datasets == 1 && !strcmp(m.datasets[0], "text.txt"));
    CHECK(m.e[0].name == a->name && m.e[1].name == x->name && m.e[2].name == b->name); /* sorted by name */
    CHECK(a && a->cols == 3 && a->nmat == 1 && a->imp[0] == 2 && a->imp[1] == 4.5f && a->imp[2] == 0);
    CHECK(b && b->cols == 300 && b->imp[0] == 1 && b->imp[299] == 1); /* count 0: importance 1 */
    CHECK(x && x->cols == 3 && x->nmat == 2 && x->imp[0] == 1 && x->imp[2] == 3 && x->imp[3] == 2 && x->count[1] == 4);
    mk_imatrix_free(&m);
    unlink(path);
}

/* a legacy image by hand: entries {name, ncall, nval values}, then trailer words (n_trail of
 * them, the last as the dataset length followed by ds) */
static size_t legacy(unsigned char *buf, int32_t n, const char *const *names, const int32_t *ncall, const int32_t *nval, const float *vals,
                     int n_trail, int32_t chunks, const char *ds)
{
    size_t at = 0;
#define PUT(p, k) (memcpy(buf + at, (p), (k)), at += (k))
    PUT(&n, 4);
    for (int32_t i = 0, v = 0; i < n; i++) {
        int32_t len = (int32_t)strlen(names[i]);
        PUT(&len, 4);
        PUT(names[i], (size_t)len);
        PUT(&ncall[i], 4);
        PUT(&nval[i], 4);
        PUT(vals + v, 4 * (size_t)nval[i]);
        v += nval[i];
    }
    if (n_trail >= 1) PUT(&chunks, 4);
    if (n_trail >= 2) {
        int32_t dl = (int32_t)strlen(ds);
        PUT(&dl, 4);
        PUT(ds, (size_t)dl);
    }
#undef PUT
    return at;
}

MK_TEST(imatrix_legacy_read)
{
    unsigned char buf[512];
    const char *names[2] = {"blk.0.attn_k.weight", "blk.0.ffn_down_exps.weight"};
    int32_t ncall[2] = {4, 0}, nval[2] = {3, 4};
    float v[7] = {8, 2, 0, 1, 2, 3, 4};
    mk_imatrix m;
    size_t len = legacy(buf, 2, names, ncall, nval, v, 2, 9, "wiki.txt");
    CHECK(mk_imatrix_parse(buf, len, "im.dat", &m) == MK_OK);
    CHECK(m.legacy && m.n == 2 && m.chunk_count == 9 && m.chunk_size == 0 && m.n_datasets == 1 && !strcmp(m.datasets[0], "wiki.txt"));
    const mk_imatrix_entry *k = mk_imatrix_find(&m, names[0]), *d = mk_imatrix_find(&m, names[1]);
    /* importance = value / ncall; ncall 0: the value itself (llama-quantize's rules) */
    CHECK(k && k->cols == 3 && k->nmat == 1 && k->imp[0] == 2 && k->imp[1] == 0.5f && k->imp[2] == 0 && k->count[0] == 4);
    CHECK(d && d->cols == 4 && d->nmat == 1 && d->imp[3] == 4 && d->sum[3] == 4);
    mk_imatrix_free(&m);
    /* the trailer is optional, and so is its dataset name */
    CHECK(mk_imatrix_parse(buf, legacy(buf, 2, names, ncall, nval, v, 0, 0, ""), "im.dat", &m) == MK_OK && m.n == 2 && !m.n_datasets);
    mk_imatrix_free(&m);
    CHECK(mk_imatrix_parse(buf, legacy(buf, 2, names, ncall, nval, v, 1, 3, ""), "im.dat", &m) == MK_OK && m.chunk_count == 3);
    mk_imatrix_free(&m);
    CHECK(mk_imatrix_parse(buf, legacy(buf, 2, names, ncall, nval, v, 2, 3, ""), "im.dat", &m) == MK_OK && !m.n_datasets);
    mk_imatrix_free(&m);
}

MK_TEST(imatrix_legacy_hostile)
{
    unsigned char buf[512];
    const char *one[1] = {"a"}, *two[2] = {"a", "a"};
    int32_t nc[2] = {1, 1}, nv[2] = {2, 2}, neg[1] = {-1};
    float v[4] = {1, 2, 3, 4}, nan2[2] = {1, NAN}, negv[2] = {-1, 0};
    mk_imatrix m;
    size_t len = legacy(buf, 1, one, nc, nv, v, 2, 1, "d");
#define BAD(what_, len_, msg_)                                                                                                   \
    do {                                                                                                                           \
        mk_status s_ = mk_imatrix_parse(buf, (len_), "im.dat", &m);                                                                \
        CHECK_MSG(s_ == MK_ERR_FORMAT && m.n == 0 && !m.e, "%s: status %d", what_, (int)s_);                                       \
        CHECK_MSG(strstr(mk_errmsg(), msg_) != NULL, "%s: error '%s' does not match '%s'", what_, mk_errmsg(), msg_);              \
    } while (0)
    BAD("empty", 0, "im.dat: not a GGUF file nor a legacy imatrix (.dat): 0 bytes");
    int32_t w = 0;
    memcpy(buf, &w, 4);
    BAD("no entries", len, "im.dat: not a GGUF file nor a legacy imatrix (.dat): 0 entries in");
    w = 1 << 30;
    memcpy(buf, &w, 4);
    BAD("a billion entries", len, "legacy imatrix (.dat): 1073741824 entries in");
    len = legacy(buf, 1, one, nc, nv, v, 2, 1, "d");
    w = -5;
    memcpy(buf + 4, &w, 4);
    BAD("a negative name length", len, "im.dat: legacy imatrix entry 0: name length -5");
    w = 100000;
    memcpy(buf + 4, &w, 4);
    BAD("a huge name length", len, "im.dat: legacy imatrix entry 0: name length 100000");
    len = legacy(buf, 1, one, nc, nv, v, 2, 1, "d");
    w = 1 << 28;
    memcpy(buf + 13, &w, 4);
    BAD("more values than bytes", len, "im.dat: legacy imatrix entry a: 268435456 values, 17 bytes left");
    w = 0;
    memcpy(buf + 13, &w, 4);
    BAD("no values", len, "im.dat: legacy imatrix entry a: 0 values");
    BAD("a negative ncall", legacy(buf, 1, one, neg, nv, v, 0, 0, ""), "legacy imatrix entry a: ncall -1 is negative");
    BAD("a NaN value", legacy(buf, 1, one, nc, nv, nan2, 0, 0, ""), "im.dat: legacy imatrix entry a[1] = nan is not a finite sum");
    BAD("a negative value", legacy(buf, 1, one, nc, nv, negv, 0, 0, ""), "im.dat: legacy imatrix entry a[0] = -1 is not");
    BAD("a name twice", legacy(buf, 2, two, nc, nv, v, 0, 0, ""), "im.dat: legacy imatrix: entry a appears twice");
    len = legacy(buf, 1, one, nc, nv, v, 0, 0, "");
    memcpy(buf + 8, "\0", 1); /* the name "a" becomes a NUL */
    BAD("a NUL in a name", len, "im.dat: legacy imatrix entry 0: a NUL byte in its name");
    len = legacy(buf, 1, one, nc, nv, v, 2, 1, "data");
    BAD("a dataset name cut short", len - 1, "im.dat: legacy imatrix: a dataset name of 4 bytes where 3 are left");
    BAD("half a trailer word", legacy(buf, 1, one, nc, nv, v, 0, 0, "") + 2, "im.dat: truncated legacy imatrix: chunk count missing");
    len = legacy(buf, 1, one, nc, nv, v, 2, -3, "");
    BAD("a negative chunk count", len, "im.dat: legacy imatrix: chunk count -3 is negative");
    /* every prefix of a good file is refused (or, ending at an entry boundary, is a good file) */
    len = legacy(buf, 1, one, nc, nv, v, 2, 1, "ds");
    size_t ends[] = {25, 29}; /* the entry's end, the chunk count's: files without the rest */
    for (size_t k = 0; k < len; k++) {
        bool whole = k == ends[0] || k == ends[1];
        mk_status s = mk_imatrix_parse(buf, k, "im.dat", &m);
        CHECK_MSG(whole ? s == MK_OK : s != MK_OK, "prefix of %zu bytes of %zu: status %d", k, len, (int)s);
        mk_imatrix_free(&m);
    }
#undef BAD
}

/* GGUF -> .dat -> GGUF and .dat -> GGUF -> .dat through the writer and reader: the importances
 * equal (a power-of-two chunk size: exact), and so are a dense matrix's sums and counts */
MK_TEST(imatrix_legacy_round_trip)
{
    char g1[256], d1[256], g2[256], d2[256];
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g1, sizeof g1, "%s/mk-imrt-%d-1.gguf", tmp, (int)getpid());
    snprintf(d1, sizeof d1, "%s/mk-imrt-%d-1.dat", tmp, (int)getpid());
    snprintf(g2, sizeof g2, "%s/mk-imrt-%d-2.gguf", tmp, (int)getpid());
    snprintf(d2, sizeof d2, "%s/mk-imrt-%d-2.dat", tmp, (int)getpid());
    double s0[5], c0 = 3 * 128, s1[8], c1[2] = {5, 0}, s2[2] = {1, 1}, c2 = 0;
    for (int i = 0; i < 5; i++) s0[i] = 1.0 / (i + 3) * 1000;
    for (int i = 0; i < 8; i++) s1[i] = i * 0.37;
    mk_imatrix_stat st[3] = {{"blk.0.attn_q.weight", 5, 1, s0, &c0}, {"blk.0.ffn_up_exps.weight", 4, 2, s1, c1}, {"blk.0.never.weight", 2, 1, s2, &c2}};
    const char *ds[1] = {"t.txt"};
    mk_imatrix_meta meta = {ds, 1, 3, 128};
    mk_imatrix a, b, c, d;
    mk_imatrix_stat *x = NULL, *y = NULL, *z = NULL;
    CHECK(mk_imatrix_write(g1, st, 3, &meta, false, false) == MK_OK && mk_imatrix_read(g1, &a) == MK_OK);
    CHECK(mk_imatrix_stats(&a, a.chunk_size, &x) == MK_OK);
    CHECK(mk_imatrix_write(d1, x, a.n, &meta, true, false) == MK_OK && mk_imatrix_read(d1, &b) == MK_OK);
    CHECK(b.legacy && b.n == 2 && b.chunk_count == 3 && b.n_datasets == 1 && !strcmp(b.datasets[0], "t.txt")); /* no-token entry left out */
    CHECK(mk_imatrix_stats(&b, 128, &y) == MK_OK);
    CHECK(mk_imatrix_write(g2, y, b.n, &meta, false, false) == MK_OK && mk_imatrix_read(g2, &c) == MK_OK);
    CHECK(mk_imatrix_stats(&c, 128, &z) == MK_OK);
    CHECK(mk_imatrix_write(d2, z, c.n, &meta, true, false) == MK_OK && mk_imatrix_read(d2, &d) == MK_OK);
    const mk_imatrix_entry *q[4] = {mk_imatrix_find(&a, "blk.0.attn_q.weight"), mk_imatrix_find(&b, "blk.0.attn_q.weight"),
                                    mk_imatrix_find(&c, "blk.0.attn_q.weight"), mk_imatrix_find(&d, "blk.0.attn_q.weight")};
    CHECK(q[0] && q[1] && q[2] && q[3] && q[1]->count[0] == 3 && q[2]->count[0] == 3 * 128 && q[3]->count[0] == 3);
    for (int i = 0; q[3] && i < 5; i++) {
        CHECK_MSG(q[1]->imp[i] == q[0]->imp[i] && q[2]->imp[i] == q[0]->imp[i] && q[3]->imp[i] == q[0]->imp[i], "column %d: %.9g %.9g %.9g %.9g", i,
                  (double)q[0]->imp[i], (double)q[1]->imp[i], (double)q[2]->imp[i], (double)q[3]->imp[i]);
        CHECK(q[2]->sum[i] == q[0]->sum[i] && q[3]->sum[i] == q[1]->sum[i]); /* GGUF -> dat -> GGUF and dat -> GGUF -> dat */
    }
    /* the experts: one row in the legacy layout, a partial expert's values 1 x ncall (importance 1) */
    const mk_imatrix_entry *e = mk_imatrix_find(&b, "blk.0.ffn_up_exps.weight"), *e0 = mk_imatrix_find(&a, "blk.0.ffn_up_exps.weight");
    CHECK(e && e0 && e->nmat == 1 && e->cols == 8 && e->count[0] == 1 && e0->nmat == 2);
    for (int i = 0; e && e0 && i < 8; i++) CHECK_MSG(e->imp[i] == e0->imp[i], "expert value %d: %.9g for %.9g", i, (double)e->imp[i], (double)e0->imp[i]);
    mk_imatrix_stats_free(x, a.n);
    mk_imatrix_stats_free(y, b.n);
    mk_imatrix_stats_free(z, c.n);
    mk_imatrix_free(&a), mk_imatrix_free(&b), mk_imatrix_free(&c), mk_imatrix_free(&d);
    unlink(g1), unlink(d1), unlink(g2), unlink(d2);
}

/* mk_imatrix_lookup: a GGUF entry fits a tensor of exactly its matrices and columns (expert e's
 * row at e * cols); a legacy entry (no split) one of nmat * cols values; otherwise one error
 * naming the file, the entry and both shapes; an absent entry is NULL without error. */
MK_TEST(imatrix_lookup)
{
    float s2[8] = {6, 3, 0, 9, 5, 5, 5, 5}, c2[2] = {3, 0}, s1[4] = {1, 2, 3, 4}, c1[1] = {1};
    tdef t[] = {{"blk.0.ffn_up_exps.weight.in_sum2", 4, 2, s2}, {"blk.0.ffn_up_exps.weight.counts", 1, 2, c2},
                {"blk.0.attn_q.weight.in_sum2", 4, 1, s1}, {"blk.0.attn_q.weight.counts", 1, 1, c1}};
    mk_imatrix m;
    const float *imp = (const float *)1;
    CHECK(parse("imatrix", t, 4, &m) == MK_OK);
    CHECK(mk_imatrix_lookup(&m, "im.gguf", "blk.0.ffn_up_exps.weight", 2, 4, &imp) == MK_OK && imp);
    CHECK(imp[0] == 2 && imp[3] == 3 && imp[4] == 1 && imp[7] == 1); /* expert 1 saw no token: 1 */
    CHECK(mk_imatrix_lookup(&m, "im.gguf", "blk.0.attn_q.weight", 1, 4, &imp) == MK_OK && imp && imp[3] == 4);
    CHECK(mk_imatrix_lookup(&m, "im.gguf", "blk.1.attn_q.weight", 1, 4, &imp) == MK_OK && !imp);
    CHECK(mk_imatrix_lookup(&m, "im.gguf", "blk.0.ffn_up_exps.weight", 4, 2, &imp) == MK_ERR_FORMAT &&
          strstr(mk_errmsg(), "im.gguf: tensor blk.0.ffn_up_exps.weight: 2 x 4 importances for 4 experts of 2 columns"));
    CHECK(mk_imatrix_lookup(&m, "im.gguf", "blk.0.ffn_up_exps.weight", 1, 8, &imp) == MK_ERR_FORMAT &&
          strstr(mk_errmsg(), "2 x 4 importances for a matrix of 8 columns"));
    CHECK(mk_imatrix_lookup(&m, "im.gguf", "blk.0.attn_q.weight", 2, 2, &imp) == MK_ERR_FORMAT);
    mk_imatrix_free(&m);

    unsigned char buf[256];
    const char *names[1] = {"blk.0.ffn_down_exps.weight"};
    int32_t ncall[1] = {2}, nval[1] = {6};
    float v[6] = {2, 4, 6, 8, 10, 12};
    CHECK(mk_imatrix_parse(buf, legacy(buf, 1, names, ncall, nval, v, 0, 0, ""), "im.dat", &m) == MK_OK);
    CHECK(mk_imatrix_lookup(&m, "im.dat", names[0], 3, 2, &imp) == MK_OK && imp && imp[0] == 1 && imp[5] == 6); /* 3 experts of 2 */
    CHECK(mk_imatrix_lookup(&m, "im.dat", names[0], 1, 6, &imp) == MK_OK && imp);
    CHECK(mk_imatrix_lookup(&m, "im.dat", names[0], 4, 2, &imp) == MK_ERR_FORMAT &&
          strstr(mk_errmsg(), "im.dat: tensor blk.0.ffn_down_exps.weight: 1 x 6 importances (a legacy entry: one row) for 4 experts of 2 columns"));
    CHECK(mk_imatrix_lookup(&m, "im.dat", names[0], 0, 2, &imp) == MK_ERR_FORMAT);
    mk_imatrix_free(&m);
}
