/* test_methods.c - the exact selection (select.h) against a full sort, exact top-k and
 * breadcrumbs counts with their tie rule, and chunk-order independence of every method.
 * (Agreement with mergekit's numbers is tests/e2e/methods_golden.sh.) */
#include "harness.h"
#include "methods_run.h"

#include "../../core/mk_rng.h"
#include "../../merge/methods/kernel.h"
#include "../../merge/methods/select.h"

#include <stdlib.h>

/* ---- select.h against qsort --------------------------------------------------------- */

typedef struct kv {
    uint32_t key;
    uint32_t idx;
} kv;

static int cmp_asc(const void *a, const void *b)
{
    const kv *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int cmp_desc(const void *a, const void *b)
{
    const kv *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx; /* ties: lower index first either way */
}

/* Run a query over keys with the given chunk size (chunks processed in reverse order),
 * return the membership flags; *passes = passes used. */
static void run_select(const uint32_t *keys, uint64_t n, uint64_t chunk, uint64_t pos, bool desc, uint8_t *before,
                       int *passes)
{
    uint64_t nch = (n + chunk - 1) / chunk;
    mk_select s;
    CHECK_OK(mk_sel_init(&s, n, nch, 1, 1));
    mk_sel_query_set(&s, 0, 0, pos, desc, false);
    *passes = 0;
    if (mk_sel_start(&s)) {
        do {
            for (uint64_t i = nch; i-- > 0;) {
                uint64_t e0 = i * chunk, m = n - e0 < chunk ? n - e0 : chunk;
                CHECK_OK(mk_sel_count(&s, 0, i, keys + e0, m));
            }
            (*passes)++;
        } while (mk_sel_next(&s));
    }
    for (uint64_t i = 0; i < nch; i++) {
        uint64_t seen = 0, e0 = i * chunk, m = n - e0 < chunk ? n - e0 : chunk;
        for (uint64_t j = 0; j < m; j++) before[e0 + j] = mk_sel_before(&s.q[0], i, keys[e0 + j], &seen);
    }
    mk_sel_free(&s);
}

/* Returns the passes the selection took. */
static int check_select(const char *what, const uint32_t *keys, uint64_t n, uint64_t chunk, uint64_t pos, bool desc)
{
    kv *v = malloc(n * sizeof *v);
    uint8_t *want = calloc(n, 1), *got = calloc(n, 1);
    for (uint64_t i = 0; i < n; i++) v[i] = (kv){keys[i], (uint32_t)i};
    qsort(v, n, sizeof *v, desc ? cmp_desc : cmp_asc);
    for (uint64_t i = 0; i < pos; i++) want[v[i].idx] = 1;
    int passes;
    run_select(keys, n, chunk, pos, desc, got, &passes);
    uint64_t bad = 0, first = 0;
    for (uint64_t i = 0; i < n; i++)
        if (got[i] != want[i] && !bad++) first = i;
    CHECK_MSG(bad == 0, "%s (n %llu, chunk %llu, pos %llu, %s): %llu elements misplaced, first [%llu] key %08x got %d want %d",
              what, (unsigned long long)n, (unsigned long long)chunk, (unsigned long long)pos, desc ? "desc" : "asc",
              (unsigned long long)bad, (unsigned long long)first, keys[first], got[first], want[first]);
    CHECK_MSG(passes <= 3, "%s: %d passes", what, passes);
    free(v);
    free(want);
    free(got);
    return passes;
}

MK_TEST(select_matches_sort_with_ties)
{
    const uint64_t n = 20011;
    uint32_t *k_f32 = malloc(n * 4), *k_bf16 = malloc(n * 4), *k_few = malloc(n * 4), *k_lo = malloc(n * 4);
    uint32_t *k_drift = malloc(n * 4);
    mk_rng key = mk_rng_key(7, "select");
    for (uint64_t i = 0; i < n; i++) {
        float x = (mk_rng_uniform(key, 0, i) - 0.5f) * 0.1f;
        k_f32[i] = mk_key_abs(x);
        k_bf16[i] = mk_key_abs(mk_dtype_round(MK_BF16, x)); /* many equal keys, low bits 0 */
        k_few[i] = mk_rng_u32(key, 1, i) % 5;               /* one top bin, huge ties */
        /* equal keys spread over one top bin with several low values: needs the TIE pass */
        k_lo[i] = 0x3c000000u | (mk_rng_u32(key, 2, i) % 3);
        /* bf16-like keys whose scale grows along the tensor: chunks' own cuts lie far
         * apart, so their windows miss the global cut and the TIE pass must count */
        k_drift[i] = mk_key_abs(mk_dtype_round(MK_BF16, x * (1.0f + (float)i / 200.0f)));
    }
    uint64_t poss[] = {0, 1, 2, 777, n / 2, n - 1, n};
    uint64_t chunks[] = {1000, 4096, n};
    int one_pass = 0, tie_pass = 0;
    for (size_t c = 0; c < 3; c++)
        for (size_t p = 0; p < sizeof poss / sizeof poss[0]; p++)
            for (int d = 0; d < 2; d++) {
                check_select("f32 magnitudes", k_f32, n, chunks[c], poss[p], d);
                one_pass += check_select("bf16 magnitudes", k_bf16, n, chunks[c], poss[p], d) == 1;
                check_select("five keys", k_few, n, chunks[c], poss[p], d);
                check_select("three low values", k_lo, n, chunks[c], poss[p], d);
                tie_pass += check_select("drifting bf16 magnitudes", k_drift, n, chunks[c], poss[p], d) == 2;
            }
    /* both ways of counting ties ran: chunk windows (one pass) and the TIE pass */
    CHECK_MSG(one_pass >= 20 && tie_pass >= 5, "one-pass bf16 selections %d, with a TIE pass %d", one_pass, tie_pass);
    free(k_f32);
    free(k_bf16);
    free(k_few);
    free(k_lo);
    free(k_drift);
}

MK_TEST(select_signed_keys_order)
{
    float v[] = {-INFINITY, -3.0f, -1e-30f, -0.0f, 0.0f, 1e-30f, 2.0f, INFINITY};
    for (size_t i = 0; i + 1 < sizeof v / sizeof v[0]; i++) {
        CHECK(mk_key_f32(v[i]) < mk_key_f32(v[i + 1]));
        CHECK(mk_key_f32_value(mk_key_f32(v[i])) == v[i]);
    }
    CHECK(mk_key_abs(-2.5f) == mk_key_abs(2.5f));
}

/* ---- exact counts of magnitude methods -------------------------------------------------- */

/* base = 0 and one model whose delta is x: every method's output is its kept delta. */
static float *delta_model(uint64_t n, bool bf16_ties, float **zero)
{
    float *x = malloc(n * sizeof *x);
    *zero = calloc(n, sizeof **zero);
    mk_rng key = mk_rng_key(3, "delta");
    for (uint64_t i = 0; i < n; i++) {
        float u = mk_rng_uniform(key, 0, i) - 0.5f;
        x[i] = bf16_ties ? mk_dtype_round(MK_BF16, u * 0.01f) : u * 0.01f + (u < 0 ? -1e-6f : 1e-6f);
    }
    return x;
}

MK_TEST(ties_keeps_exactly_k_lower_index_wins)
{
    const uint64_t rows = 37, cols = 29, n = rows * cols;
    float *zero, *x = delta_model(n, true, &zero);
    const float *in[2] = {zero, x};
    float *out = malloc(n * sizeof *out);
    double dens[] = {0.001, 0.1, 0.5, 0.97};
    for (size_t d = 0; d < 4; d++) {
        mt_run r = {.method = "ties", .rows = rows, .cols = cols, .n_in = 2, .base = 0, .in = in,
                    .m_names = {"weight", "density"}, .m_vals = {{0, 1}, {0, dens[d]}}, .dtype = MK_BF16,
                    .g_names = {"normalize"}, .g_vals = {0}};
        CHECK_OK(mt_run_method(&r, out));
        uint64_t k = (uint64_t)(dens[d] * (double)n);
        if (!k) k = 1;
        /* reference: stable descending order of |x| */
        kv *v = malloc(n * sizeof *v);
        for (uint64_t i = 0; i < n; i++) v[i] = (kv){mk_key_abs(x[i]), (uint32_t)i};
        qsort(v, n, sizeof *v, cmp_desc);
        uint8_t *want = calloc(n, 1);
        for (uint64_t i = 0; i < k; i++) want[v[i].idx] = 1;
        uint64_t kept = 0, wrong = 0;
        for (uint64_t i = 0; i < n; i++) {
            kept += out[i] != 0;
            wrong += (out[i] != 0) != want[i] || (want[i] && out[i] != x[i]);
        }
        CHECK_MSG(kept == k, "density %g: kept %llu, want k = int(density * numel) = %llu", dens[d],
                  (unsigned long long)kept, (unsigned long long)k);
        CHECK_MSG(wrong == 0, "density %g: %llu elements differ from the stable top-k", dens[d], (unsigned long long)wrong);
        free(v);
        free(want);
    }
    free(x);
    free(zero);
    free(out);
}

MK_TEST(breadcrumbs_band_counts)
{
    const uint64_t rows = 50, cols = 40, n = rows * cols;
    float *zero, *x = delta_model(n, false, &zero);
    const float *in[2] = {zero, x};
    float *out = malloc(n * sizeof *out);
    struct { double density, gamma; } cases[] = {{0.8, 0.05}, {0.5, 0.0}, {0.9, 0.2}, {0.3, 0.01}};
    for (size_t c = 0; c < 4; c++) {
        mt_run r = {.method = "breadcrumbs", .rows = rows, .cols = cols, .n_in = 2, .base = 0, .in = in,
                    .m_names = {"weight", "density", "gamma"},
                    .m_vals = {{0, 1}, {0, cases[c].density}, {0, cases[c].gamma}}};
        CHECK_OK(mt_run_method(&r, out));
        /* sparsify.py magnitude_outliers: ascending ranks [n_bot, n_bot + target) */
        int64_t target = (int64_t)(cases[c].density * (double)n), n_top = (int64_t)(cases[c].gamma * (double)n);
        int64_t n_bot = (int64_t)n - target - n_top;
        if (n_bot < 0) n_bot = 0;
        kv *v = malloc(n * sizeof *v);
        for (uint64_t i = 0; i < n; i++) v[i] = (kv){mk_key_abs(x[i]), (uint32_t)i};
        qsort(v, n, sizeof *v, cmp_asc);
        uint64_t wrong = 0, kept = 0;
        for (uint64_t i = 0; i < n; i++) {
            bool want = (int64_t)i >= n_bot && (int64_t)i < n_bot + target;
            bool got = out[v[i].idx] != 0;
            kept += got;
            wrong += want != got;
        }
        CHECK_MSG(wrong == 0 && kept == (uint64_t)target, "density %g gamma %g: kept %llu (want %lld), %llu misplaced",
                  cases[c].density, cases[c].gamma, (unsigned long long)kept, (long long)target,
                  (unsigned long long)wrong);
        free(v);
    }
    free(x);
    free(zero);
    free(out);
}

/* ---- every method: same bytes whatever order the chunks come in ------------------------ */

MK_TEST(methods_independent_of_chunk_order)
{
    const uint64_t rows = 61, cols = 23, n = rows * cols;
    float *x[4];
    mk_rng key = mk_rng_key(11, "order");
    for (int k = 0; k < 4; k++) {
        x[k] = malloc(n * sizeof(float));
        for (uint64_t i = 0; i < n; i++) {
            float b = (mk_rng_uniform(key, 0, i) - 0.5f) * 0.04f;
            x[k][i] = k == 0 ? b : b + (mk_rng_uniform(key, (uint64_t)k, i) - 0.5f) * 0.004f;
        }
    }
    const float *in[4] = {x[0], x[1], x[2], x[3]};
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    for (const mk_method *const *m = mk_methods; *m; m++) {
        const char *nm = (*m)->name;
        mt_run r = {.method = nm, .name = "model.layers.0.mlp.up_proj.weight", .rows = rows, .cols = cols, .n_in = 4,
                    .base = 0, .in = in, .seed = 5, .dtype = MK_BF16,
                    .m_names = {"weight", "density", "scale"},
                    .m_vals = {{1, 0.5, 0.3, 0.2}, {1, 0.6, 0.5, 0.4}, {1, 1, 1, 1}},
                    .g_names = {"t", "select_topk"}, .g_vals = {0.4, 0.5}};
        if ((*m)->max_inputs == 2 || (*m)->max_non_base == 2) r.n_in = (*m)->max_non_base == 2 ? 3 : 2;
        if ((*m)->max_inputs == 1) r.n_in = 1;
        if ((*m)->base == MK_BASE_IGNORED) r.base = -1;
        for (int order = 1; order <= 2; order++) {
            r.order = 0;
            r.chunk_rows = 5;
            mk_status s1 = mt_run_method(&r, a);
            r.order = order;
            mk_status s2 = mt_run_method(&r, b);
            CHECK_MSG(s1 == MK_OK && s2 == MK_OK, "%s failed: %s", nm, mk_errmsg());
            CHECK_MSG(memcmp(a, b, n * sizeof *a) == 0, "%s: chunk order %d changes the result", nm, order);
        }
    }
    for (int k = 0; k < 4; k++) free(x[k]);
    free(a);
    free(b);
}

MK_TEST(every_method_runs_and_is_finite)
{
    /* a tiny tensor with a 1-row shape (norm weights) and a 1-element one */
    uint64_t shapes[][2] = {{1, 9}, {1, 1}, {3, 4}};
    for (size_t sh = 0; sh < 3; sh++) {
        uint64_t rows = shapes[sh][0], cols = shapes[sh][1], n = rows * cols;
        float x[3][12];
        for (int k = 0; k < 3; k++)
            for (uint64_t i = 0; i < n; i++) x[k][i] = 1.0f + 0.01f * (float)((i * 7 + (uint64_t)k * 3) % 5) - 0.02f * (float)k;
        const float *in[3] = {x[0], x[1], x[2]};
        float out[12];
        for (const mk_method *const *m = mk_methods; *m; m++) {
            const char *nm = (*m)->name;
            bool della = strncmp(nm, "della", 5) == 0;
            mt_run r = {.method = nm, .rows = rows, .cols = cols, .n_in = 3, .base = 0, .in = in,
                        .m_names = {"weight", "density"}, .m_vals = {{1, 0.5, 0.5}, {1, della ? 1 : 0.5, della ? 1 : 0.5}},
                        .g_names = {"t"}, .g_vals = {0.5}};
            if ((*m)->max_inputs == 2) r.n_in = 2;
            if ((*m)->max_inputs == 1) r.n_in = 1;
            if ((*m)->base == MK_BASE_IGNORED) r.base = -1;
            mk_status s = mt_run_method(&r, out);
            CHECK_MSG(s == MK_OK, "%s on [%llu, %llu]: %s", nm, (unsigned long long)rows, (unsigned long long)cols,
                      mk_errmsg());
            for (uint64_t i = 0; i < n && s == MK_OK; i++)
                CHECK_MSG(isfinite(out[i]), "%s on [%llu, %llu]: out[%llu] = %g", nm, (unsigned long long)rows,
                          (unsigned long long)cols, (unsigned long long)i, out[i]);
        }
    }
}
