/* test_ggml_kquant_w.c - the k-quants with an importance matrix against llama.cpp itself
 * (tools/gen-golden-gguf-kquant-w.py: libggml-base's quantize_q4_0 ... q5_1, q2_K ... q6_K, iq4_nl with
 * quant_weights): every row of tests/golden/gguf/kquant-w.safetensors byte-identical
 * (tolerance: none; a failure prints the case, type, row, block and first differing byte),
 * and the weights must matter (the bytes differ from the unweighted encoding somewhere). */
#include "harness.h"

#include "../../formats/safetensors.h"
#include "../../model/gguf_names.h"
#include "../../quant/ggml.h"
#include "../../quant/ggml_kquant.h"

#include <stdlib.h>

static const struct {
    const char *name;
    uint32_t type;
} WT[] = {{"q4_0", MK_GGML_Q4_0}, {"q4_1", MK_GGML_Q4_1}, {"q5_0", MK_GGML_Q5_0}, {"q5_1", MK_GGML_Q5_1}, {"q2_k", MK_GGML_Q2_K}, {"q3_k", MK_GGML_Q3_K}, {"q4_k", MK_GGML_Q4_K}, {"q5_k", MK_GGML_Q5_K}, {"q6_k", MK_GGML_Q6_K}, {"iq4_nl", MK_GGML_IQ4_NL}};

static void *st_bytes(mk_source *s, const char *name, size_t *len)
{
    long i = mk_source_find(s, name);
    uint8_t *b = i < 0 ? NULL : malloc((*len = (size_t)s->tensors[i].nbytes) + 1);
    if (b && s->ops->read(s, (size_t)i, 0, *len, b) != MK_OK) free(b), b = NULL;
    return b;
}

MK_TEST(ggml_kquant_weighted_golden)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/golden/gguf/kquant-w.safetensors", getenv("MK_ROOT") ? getenv("MK_ROOT") : ".");
    mk_source *s = NULL;
    if (mk_safetensors_open(path, &s) != MK_OK) {
        mk_test_fail(__FILE__, __LINE__, "cannot open %s: %s", path, mk_errmsg());
        return;
    }
    size_t checked = 0, rows_checked = 0, differ_unweighted = 0;
    for (size_t c = 0; c < s->n_tensors; c++) {
        const mk_tensor_info *ti = &s->tensors[c];
        if (strchr(ti->name, '.') || ti->ndim != 2) continue;
        char name[128];
        size_t xlen = 0, wlen = 0;
        snprintf(name, sizeof name, "%s.w", ti->name);
        float *x = st_bytes(s, ti->name, &xlen), *w = st_bytes(s, name, &wlen);
        uint64_t cols = (uint64_t)ti->shape[1], rows = (uint64_t)ti->shape[0];
        CHECK_MSG(x && w && wlen == cols * 4 && xlen == rows * cols * 4, "%s: inputs missing or sized wrong", ti->name);
        for (size_t k = 0; x && w && wlen == cols * 4 && k < sizeof WT / sizeof WT[0]; k++) {
            const mk_ggml_type *t = mk_ggml_type_of(WT[k].type);
            snprintf(name, sizeof name, "%s.%s", ti->name, WT[k].name);
            size_t glen = 0;
            uint8_t *want = st_bytes(s, name, &glen);
            uint64_t nb = cols / t->block, rb = nb * t->bytes;
            uint8_t *got = calloc(rows * rb + 1, 1), *plain = calloc(rows * rb + 1, 1);
            CHECK_MSG(want && glen == rows * rb, "%s: missing or %zu bytes", name, glen);
            if (want && got && plain && glen == rows * rb) {
                CHECK(mk_ggml_kquant_encode_w(WT[k].type, x, rows, cols, w, got));
                CHECK(mk_ggml_kquant_encode_w(WT[k].type, x, rows, cols, NULL, plain));
                differ_unweighted += memcmp(got, plain, rows * rb) != 0;
                for (uint64_t r = 0; r < rows; r++, rows_checked++) {
                    const uint8_t *g = got + r * rb, *wt = want + r * rb;
                    if (memcmp(g, wt, rb) == 0) continue;
                    uint64_t off = 0;
                    while (g[off] == wt[off]) off++;
                    mk_test_fail(__FILE__, __LINE__, "%s row %llu: block %llu differs first at byte %llu of %u: got %02x, want %02x (tolerance: none)",
                                 name, (unsigned long long)r, (unsigned long long)(off / t->bytes), (unsigned long long)(off % t->bytes),
                                 t->bytes, g[off], wt[off]);
                }
                checked++;
            }
            free(want);
            free(got);
            free(plain);
        }
        free(x);
        free(w);
    }
    CHECK_MSG(checked == 50 && rows_checked >= 120, "checked %zu case/type pairs (want 50), %zu rows", checked, rows_checked);
    CHECK_MSG(differ_unweighted >= 40, "the weights changed the bytes of only %zu case/type pairs", differ_unweighted);
    CHECK(!mk_ggml_kquant_encode_w(MK_GGML_Q4_K, NULL, 1, 100, NULL, NULL));
    mk_source_close(s);
}
