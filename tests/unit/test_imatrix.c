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

/* what mk_imatrix_write writes reads back (importance = sum / count) */
MK_TEST(imatrix_write_read)
{
    char path[256];
    snprintf(path, sizeof path, "%s/mk-imatrix-%d.gguf", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    double s0[3] = {4, 9, 0}, s1[300];
    for (int i = 0; i < 300; i++) s1[i] = i * 0.5;
    mk_imatrix_stat st[2] = {{"blk.0.attn_q.weight", 3, s0, 2}, {"blk.1.ffn_down.weight", 300, s1, 0}};
    const char *ds[1] = {"text.txt"};
    unlink(path);
    CHECK(mk_imatrix_write(path, st, 2, ds, 1, 5, 64, false) == MK_OK);
    CHECK(mk_imatrix_write(path, st, 2, ds, 1, 5, 64, false) != MK_OK); /* exists, no force */
    mk_imatrix m;
    CHECK(mk_imatrix_read(path, &m) == MK_OK);
    const mk_imatrix_entry *a = mk_imatrix_find(&m, "blk.0.attn_q.weight"), *b = mk_imatrix_find(&m, "blk.1.ffn_down.weight");
    CHECK(m.n == 2 && m.chunk_count == 5 && m.chunk_size == 64);
    CHECK(a && a->cols == 3 && a->nmat == 1 && a->imp[0] == 2 && a->imp[1] == 4.5f && a->imp[2] == 0);
    CHECK(b && b->cols == 300 && b->imp[0] == 1 && b->imp[299] == 1); /* count 0: importance 1 */
    mk_imatrix_free(&m);
    unlink(path);
}
