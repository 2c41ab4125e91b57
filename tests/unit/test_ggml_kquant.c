/* test_ggml_kquant.c - the k-quants against llama.cpp itself (tools/gen-golden-gguf-kquant.py,
 * llama-cpp-python's libggml-base and llama_model_quantize):
 *  - quant/ggml_kquant.c: every block of tests/golden/gguf/kquant.safetensors byte-identical
 *    to quantize_row_q*_K_ref's (tolerance: none; a failure prints the case, the type, the
 *    first differing block and byte);
 *  - round trip through quant/ggml.c's decoder: on the finite cases each value within
 *    rt_tol[type] x its row's largest magnitude + RT_ABS (f16 scales cannot step finer: rows
 *    of 1e-20 decode to zeros; a failure prints the worst element);
 *  - quant/ggml_mix.c: every tensor type of tests/golden/gguf/kquant-mix.txt (llama.cpp's own
 *    choices for each mix on two synthetic Llamas, one needing the 32-value fallbacks). */
#include "harness.h"

#include "../../formats/safetensors.h"
#include "../../model/gguf_names.h"
#include "../../quant/ggml.h"
#include "../../quant/ggml_mix.h"

#include <math.h>
#include <stdlib.h>

static const struct {
    const char *name;
    uint32_t type;
    double rt_tol; /* round trip: max |x - decoded| / max |x| of the row */
} KT[] = {
    {"q2_k", MK_GGML_Q2_K, 0.4}, {"q3_k", MK_GGML_Q3_K, 0.3}, {"q4_k", MK_GGML_Q4_K, 0.1},
    {"q5_k", MK_GGML_Q5_K, 0.075}, {"q6_k", MK_GGML_Q6_K, 0.025}, {"iq4_nl", MK_GGML_IQ4_NL, 0.15},
    /* measured worst: .33 .23 .07 .057 .016, iq4_nl .11 */
};

#define RT_ABS 1e-6

/* the stored bytes of tensor `name` (malloc'd; NULL when absent) */
static void *tensor_bytes(mk_source *s, const char *name, size_t *len)
{
    long i = mk_source_find(s, name);
    uint8_t *b = i < 0 ? NULL : malloc((*len = (size_t)s->tensors[i].nbytes) + 1);
    if (b && s->ops->read(s, (size_t)i, 0, *len, b) != MK_OK) free(b), b = NULL;
    return b;
}

/* tests/golden/gguf/NAME under MK_ROOT */
static const char *golden(const char *name, char *path, size_t cap)
{
    snprintf(path, cap, "%s/tests/golden/gguf/%s", getenv("MK_ROOT") ? getenv("MK_ROOT") : ".", name);
    return path;
}

MK_TEST(ggml_kquant_golden)
{
    char path[1024];
    mk_source *s = NULL;
    if (mk_safetensors_open(golden("kquant.safetensors", path, sizeof path), &s) != MK_OK) {
        mk_test_fail(__FILE__, __LINE__, "cannot open %s: %s", path, mk_errmsg());
        return;
    }
    size_t checked = 0, want_n = 0, blocks = 0;
    for (size_t c = 0; c < s->n_tensors; c++) want_n += strchr(s->tensors[c].name, '.') != NULL;
    for (size_t c = 0; c < s->n_tensors; c++) {
        const mk_tensor_info *ti = &s->tensors[c];
        if (strchr(ti->name, '.')) continue;
        size_t xlen = 0;
        float *x = tensor_bytes(s, ti->name, &xlen);
        CHECK(x != NULL && ti->ndim == 2);
        if (!x || ti->ndim != 2) {
            free(x);
            continue;
        }
        uint64_t n = xlen / 4, cols = (uint64_t)ti->shape[1], rows = n / cols;
        /* rows with f16 scales out of range decode to Inf/NaN (as llama.cpp's): no round trip */
        bool finite_rt = strcmp(ti->name, "range") != 0;
        for (size_t k = 0; k < sizeof KT / sizeof KT[0]; k++) {
            char name[128];
            snprintf(name, sizeof name, "%s.%s", ti->name, KT[k].name);
            const mk_ggml_type *t = mk_ggml_type_of(KT[k].type);
            size_t wlen = 0;
            uint8_t *want = tensor_bytes(s, name, &wlen);
            uint64_t nb = n / t->block;
            uint8_t *got = calloc(nb * t->bytes + 1, 1);
            float *dq = malloc(n * sizeof *dq);
            CHECK_MSG(want && wlen == nb * t->bytes, "%s: missing or %zu bytes", name, wlen);
            if (want && got && dq && wlen == nb * t->bytes) {
                CHECK(mk_ggml_encode(KT[k].type, x, nb, got));
                for (uint64_t b = 0; b < nb; b++, blocks++)
                    if (memcmp(got + b * t->bytes, want + b * t->bytes, t->bytes) != 0) {
                        const uint8_t *g = got + b * t->bytes, *w = want + b * t->bytes;
                        unsigned off = 0;
                        while (g[off] == w[off]) off++;
                        mk_test_fail(__FILE__, __LINE__,
                                     "%s: block %llu of %llu differs first at byte %u of %u: got %02x, want %02x (tolerance: none; "
                                     "bytes 0-3 got %02x%02x%02x%02x, want %02x%02x%02x%02x)",
                                     name, (unsigned long long)b, (unsigned long long)nb, off, t->bytes, g[off], w[off], g[0], g[1], g[2], g[3],
                                     w[0], w[1], w[2], w[3]);
                        break;
                    }
                /* row by row too: odd block counts (the encoders pair blocks, or take 16 at once) */
                uint64_t rb = cols / t->block;
                for (uint64_t r = 0; r < rows; r++) {
                    uint8_t one[2 * 210 * 16];
                    if (rb * t->bytes > sizeof one) break;
                    CHECK(mk_ggml_encode(KT[k].type, x + r * cols, rb, one));
                    CHECK_MSG(memcmp(one, want + r * rb * t->bytes, rb * t->bytes) == 0, "%s row %llu encoded alone differs", name,
                              (unsigned long long)r);
                }
                CHECK(mk_ggml_decode(KT[k].type, got, nb, dq));
                for (uint64_t r = 0; finite_rt && r < rows; r++) {
                    const float *xr = x + r * cols, *dr = dq + r * cols;
                    double amax = 0, worst = 0;
                    uint64_t at = 0;
                    for (uint64_t j = 0; j < cols; j++) amax = fmax(amax, fabs(xr[j]));
                    for (uint64_t j = 0; j < cols; j++)
                        if (fabs((double)xr[j] - dr[j]) > worst) worst = fabs((double)xr[j] - dr[j]), at = j;
                    CHECK_MSG(worst <= KT[k].rt_tol * amax + RT_ABS, "%s row %llu: round trip error %g at element %llu (%g decoded as %g) > %g x max |x| %g + %g",
                              name, (unsigned long long)r, worst, (unsigned long long)at, (double)xr[at], (double)dr[at], KT[k].rt_tol, amax, RT_ABS);
                }
                checked++;
            }
            free(want);
            free(got);
            free(dq);
        }
        free(x);
    }
    CHECK_MSG(checked == want_n && checked >= 25 && blocks >= 100, "checked %zu case/type pairs of %zu, %zu blocks", checked, want_n, blocks);
    mk_source_close(s);
}

/* all-zero and constant super-blocks decode to themselves exactly (zeros) or closely */
MK_TEST(ggml_kquant_zero_block)
{
    float x[256] = {0}, y[256];
    uint8_t b[512];
    for (size_t k = 0; k < sizeof KT / sizeof KT[0]; k++) {
        uint64_t nb = 256 / mk_ggml_type_of(KT[k].type)->block;
        memset(b, 0xaa, sizeof b);
        CHECK(mk_ggml_encode(KT[k].type, x, nb, b));
        CHECK(mk_ggml_decode(KT[k].type, b, nb, y));
        for (int j = 0; j < 256; j++) CHECK_MSG(y[j] == 0, "%s: zero block decodes to %g at %d", KT[k].name, (double)y[j], j);
    }
}

static uint32_t mix_ftype(const char *mix)
{
    static const struct {
        const char *name;
        uint32_t ftype;
    } m[] = {{"q2_k", MK_FTYPE_Q2_K},     {"q3_k_s", MK_FTYPE_Q3_K_S}, {"q3_k_m", MK_FTYPE_Q3_K_M},
             {"q3_k_l", MK_FTYPE_Q3_K_L}, {"q4_k_s", MK_FTYPE_Q4_K_S}, {"q4_k_m", MK_FTYPE_Q4_K_M},
             {"q5_k_s", MK_FTYPE_Q5_K_S}, {"q5_k_m", MK_FTYPE_Q5_K_M}, {"q6_k", MK_FTYPE_Q6_K},   {"iq4_nl", MK_FTYPE_IQ4_NL}};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (strcmp(m[i].name, mix) == 0) return m[i].ftype;
    return 0;
}

MK_TEST(ggml_mix_golden)
{
    char path[1024], line[256];
    FILE *f = fopen(golden("kquant-mix.txt", path, sizeof path), "r");
    if (!f) {
        mk_test_fail(__FILE__, __LINE__, "cannot open %s", path);
        return;
    }
    struct {
        char name[16];
        mk_ggml_mix_model m;
    } models[4];
    int nm = 0;
    size_t lines = 0, bad = 0, promoted = 0, fallback = 0;
    while (fgets(line, sizeof line, f)) {
        char a[16], mix[16], tname[96], type[16];
        int layers, gqa, tied;
        unsigned long long cols;
        if (line[0] == '#') continue;
        if (sscanf(line, "model %15s layers %d gqa %d tied %d", a, &layers, &gqa, &tied) == 4 && nm < 4) {
            snprintf(models[nm].name, sizeof models[nm].name, "%s", a);
            models[nm++].m = (mk_ggml_mix_model){layers, gqa, tied != 0, false, 0, false};
            continue;
        }
        if (sscanf(line, "%15s %15s %95s %llu %15s", a, mix, tname, &cols, type) != 5) {
            CHECK_MSG(0, "unparsed line: %s", line);
            continue;
        }
        int mi = 0;
        while (mi < nm && strcmp(models[mi].name, a) != 0) mi++;
        uint32_t ft = mix_ftype(mix), base = 0;
        int want = mk_ggml_type_id(type);
        CHECK_MSG(mi < nm && ft && want >= 0 && mk_ggml_mix_base(ft, &base), "bad line: %s", line);
        if (mi == nm || !ft || want < 0) continue;
        uint32_t got = mk_ggml_mix_type(ft, &models[mi].m, tname, cols);
        lines++;
        promoted += (uint32_t)want != base && mk_ggml_type_of((uint32_t)want)->block == 256;
        fallback += mk_ggml_type_of((uint32_t)want)->block == 32;
        if (got != (uint32_t)want && bad++ < 5)
            mk_test_fail(__FILE__, __LINE__, "%s %s %s (%llu columns): ours %s, llama.cpp %s", a, mix, tname, cols,
                         mk_ggml_type_of(got) ? mk_ggml_type_of(got)->name : "?", type);
    }
    fclose(f);
    /* the golden exercises the rules: promotions and fallbacks, and both models */
    CHECK_MSG(nm == 2 && lines > 1500 && promoted > 100 && fallback > 300, "models %d, lines %zu, promoted %zu, fallback %zu", nm, lines,
              promoted, fallback);
    CHECK_MSG(bad == 0, "%zu tensor types differ from llama.cpp's", bad);
}

/* Any f32 bit patterns (NaN, Inf, subnormals, huge): every encoder finishes (under the
 * sanitizers: no undefined behaviour) and a block's bytes do not depend on its neighbours
 * (the lanes, pairs and groups of 16 blocks are independent): all at once = one by one. */
MK_TEST(ggml_kquant_any_bits)
{
    enum { NB = 19 };
    static float x[NB * 256];
    static uint8_t all[NB * 256], one[NB * 256];
    uint32_t r = 17;
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) {
        r = r * 1664525u + 1013904223u;
        uint32_t u = r;
        if (i % 256 < 128) u = (u & 0x807fffffu) | ((uint32_t)(100 + (r >> 25)) << 23); /* ordinary magnitudes */
        memcpy(&x[i], &u, sizeof u);
    }
    for (size_t k = 0; k < sizeof KT / sizeof KT[0]; k++) {
        const mk_ggml_type *t = mk_ggml_type_of(KT[k].type);
        uint64_t nb = NB * 256 / t->block;
        CHECK(mk_ggml_encode(KT[k].type, x, nb, all));
        for (uint64_t b = 0; b < nb; b++) CHECK(mk_ggml_encode(KT[k].type, x + b * t->block, 1, one + b * t->bytes));
        CHECK_MSG(memcmp(all, one, nb * t->bytes) == 0, "%s: blocks encoded together differ from one by one", KT[k].name);
    }
}
