/* test_ggml_encode.c - quant/ggml_quant.c against gguf-py's gguf.quants (llama.cpp's reference
 * quantizers): tests/golden/gguf/encode.safetensors, made by tools/gen-golden-gguf-write.py.
 * Tolerance: none, every block byte equal; a failure names the case, the type and the
 * first differing block with both byte strings. Then every encoded block decodes (quant/
 * ggml.c) to what gguf-py's blocks decode to: the two halves agree on layout.
 * One exception, where gguf-py and ggml-quants.c differ: a Q4_0 / Q5_0 block of zeros whose
 * first value is -0. ggml-quants.c starts its signed maximum at +0, so d = +0 / -8 = -0
 * (f16 0x8000) for every block of zeros; gguf-py takes the first value, -0, and gets +0.
 * We write what llama.cpp's C quantizer (llama-quantize) writes. */
#include "harness.h"

#include "../../formats/safetensors.h"
#include "../../model/gguf_names.h"
#include "../../quant/ggml.h"

#include <stdlib.h>

static void hex(const uint8_t *p, unsigned n, char *out)
{
    for (unsigned i = 0; i < n && i < 40; i++) sprintf(out + 2 * i, "%02x", p[i]);
}

static void *read_all(mk_source *s, const char *name, size_t *len)
{
    for (size_t i = 0; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i].name, name) == 0) {
            *len = (size_t)s->tensors[i].nbytes;
            void *b = malloc(*len ? *len : 1);
            if (b && s->ops->read(s, i, 0, *len, b) == MK_OK) return b;
            free(b);
        }
    return NULL;
}

static bool zero_block_sign(int id, const float *x, const uint8_t *got, const uint8_t *want)
{
    if (id != MK_GGML_Q4_0 && id != MK_GGML_Q5_0) return false;
    for (int j = 0; j < 32; j++)
        if (x[j] != 0) return false;
    const mk_ggml_type *t = mk_ggml_type_of((uint32_t)id);
    return got[0] == 0 && got[1] == 0x80 && want[0] == 0 && want[1] == 0 && memcmp(got + 2, want + 2, t->bytes - 2) == 0;
}

MK_TEST(ggml_encode_golden)
{
    mk_source *s = mk_test_golden("gguf/encode.safetensors");
    if (!s) return;
    static const char *const types[] = {"f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "tq1_0", "tq2_0"};
    size_t checked = 0, want_n = 0;
    for (size_t c = 0; c < s->n_tensors; c++) want_n += strchr(s->tensors[c].name, '.') != NULL;
    for (size_t c = 0; c < s->n_tensors; c++) {
        const mk_tensor_info *ti = &s->tensors[c];
        if (strchr(ti->name, '.')) continue;
        size_t xlen = 0;
        float *x = read_all(s, ti->name, &xlen);
        CHECK(x != NULL);
        if (!x) continue;
        uint64_t n = xlen / 4;
        for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
            char name[128];
            snprintf(name, sizeof name, "%s.%s", ti->name, types[k]);
            int id = mk_ggml_type_id(types[k]);
            const mk_ggml_type *t = mk_ggml_type_of((uint32_t)id);
            size_t wlen = 0;
            if (mk_source_find(s, name) < 0) continue; /* the 256-value types: wide cases only */
            uint8_t *want = read_all(s, name, &wlen);
            uint64_t nb = n / t->block;
            uint8_t *got = calloc(nb * t->bytes + 1, 1);
            float *dg = malloc(n * sizeof *dg), *dw = malloc(n * sizeof *dw);
            CHECK_MSG(want && wlen == nb * t->bytes, "%s: missing or %zu bytes", name, wlen);
            if (want && got && dg && dw && wlen == nb * t->bytes) {
                CHECK(mk_ggml_encode((uint32_t)id, x, t->block == 1 ? n : nb, got));
                for (uint64_t b = 0; b < nb; b++)
                    if (zero_block_sign(id, x + b * t->block, got + b * t->bytes, want + b * t->bytes)) {
                        got[b * t->bytes + 1] = 0; /* decode the same for the check below */
                    } else if (memcmp(got + b * t->bytes, want + b * t->bytes, t->bytes) != 0) {
                        char g[96] = "", w[96] = "";
                        hex(got + b * t->bytes, t->bytes, g);
                        hex(want + b * t->bytes, t->bytes, w);
                        mk_test_fail(__FILE__, __LINE__, "%s: block %llu of %llu differs (tolerance: none)\n  got  %s\n  want %s",
                                     name, (unsigned long long)b, (unsigned long long)nb, g, w);
                        break;
                    }
                if (t->block > 1) {
                    CHECK(mk_ggml_decode((uint32_t)id, got, nb, dg) && mk_ggml_decode((uint32_t)id, want, nb, dw));
                    CHECK_MSG(memcmp(dg, dw, n * sizeof *dg) == 0, "%s: decoded values differ", name);
                }
                checked++;
            }
            free(want);
            free(got);
            free(dg);
            free(dw);
        }
        free(x);
    }
    CHECK_MSG(checked == want_n && checked >= 38, "checked %zu case/type pairs of %zu", checked, want_n);
    mk_source_close(s);
}

/* model/gguf_names.c's reverse direction: the permutation convert writes is the inverse of
 * the one the reader undoes, and names map back to themselves. */
MK_TEST(gguf_names_reverse)
{
    static const uint64_t shapes[][2] = {{64, 4}, {32, 2}, {8, 1}, {576, 9}, {12, 3}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (uint64_t g = 0; g < shapes[k][0]; g++) {
            uint64_t r = mk_gguf_permute_src_row(g, shapes[k][0], shapes[k][1]);
            CHECK_MSG(r < shapes[k][0] && mk_gguf_unpermute_row(r, shapes[k][0], shapes[k][1]) == g,
                      "rows %llu heads %llu: GGUF row %llu <- HF row %llu, which the reader puts at %llu", (unsigned long long)shapes[k][0],
                      (unsigned long long)shapes[k][1], (unsigned long long)g, (unsigned long long)r,
                      (unsigned long long)mk_gguf_unpermute_row(r, shapes[k][0], shapes[k][1]));
        }
    /* llama.cpp's permute of one head of 4 rows: [0 1 2 3] -> [0 2 1 3] */
    CHECK(mk_gguf_permute_src_row(1, 4, 1) == 2 && mk_gguf_permute_src_row(2, 4, 1) == 1);
    static const char *const names[] = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                                        "model.layers.0.self_attn.q_proj.weight", "model.layers.12.self_attn.k_proj.bias",
                                        "model.layers.3.mlp.down_proj.weight", "model.layers.1.self_attn.q_norm.weight"};
    const mk_gguf_arch *q3 = mk_gguf_arch_for_model_type("qwen3"), *ll = mk_gguf_arch_for_model_type("mistral");
    CHECK(q3 && ll && strcmp(ll->name, "llama") == 0 && !mk_gguf_arch_for_model_type("gemma"));
    for (size_t i = 0; q3 && i < sizeof names / sizeof names[0]; i++) {
        char g[64], back[128], qk, qk2;
        CHECK_MSG(mk_gguf_name(q3, names[i], g, sizeof g, &qk) && mk_gguf_hf_name(q3, g, back, sizeof back, &qk2) && strcmp(back, names[i]) == 0,
                  "%s does not map back (via %s)", names[i], g);
    }
    char g[64], qk;
    CHECK(ll && mk_gguf_name(ll, "model.layers.2.self_attn.k_proj.weight", g, sizeof g, &qk) && strcmp(g, "blk.2.attn_k.weight") == 0 && qk == 'k');
    CHECK(ll && !mk_gguf_name(ll, "model.layers.1.self_attn.q_norm.weight", g, sizeof g, &qk)); /* llama has no q/k norms */
    CHECK(ll && !mk_gguf_name(ll, "model.layers.01.mlp.up_proj.weight", g, sizeof g, &qk));
    CHECK(ll && !mk_gguf_name(ll, "model.layers.x.mlp.up_proj.weight", g, sizeof g, &qk));
}
