/* test_lora.c - LoRA arithmetic: the update kernel against a plain sum, the merged source
 * (normal, transposed, replaced and added tensors, reads that start and end mid-row), the
 * truncated SVD (Eckart-Young: energy kept, reconstruction), extract-then-apply at full
 * rank, and the PEFT combination kernels on hand-checked values. Then the adapter plans
 * without the CLI: which tensors extract makes pairs, saves whole or leaves out (and the
 * Conv1D orientation and GPT-2's module paths, run at full rank; biases of LoRA layers; the
 * progress it reports), and combine's union of modules, its sort, ranks, whole tensors (over
 * the base) and errors, with cat and linear run against the exact sum. */
#include "harness.h"

#include "../../core/mk_io.h"
#include "../../formats/safetensors.h"
#include "../../lora/combine.h"
#include "../../lora/extract.h"
#include "../../lora/lora.h"

#include <stdlib.h>

/* Deterministic values in [-1, 1). */
static void fill(float *x, size_t n, uint64_t seed)
{
    mk_rng k = mk_rng_key(seed, "test");
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * mk_rng_uniform(k, 0, i) - 1.0f;
}

/* Write tensors (f32 data, or bf16 when bf16[i]) to dir/name and open it. */
typedef struct tdef {
    const char *name;
    int64_t d0, d1; /* d1 = 0: a vector */
    const float *v;
    mk_dtype dt;
} tdef;

static mk_source *write_open(const char *file, const tdef *d, size_t n)
{
    char *dir = mk_path_join(mk_test_tmpdir(), file);
    mk_mkdir_p(dir);
    mk_tensor_info *t = calloc(n, sizeof *t);
    for (size_t i = 0; i < n; i++) {
        t[i].name = (char *)d[i].name;
        t[i].dtype = d[i].dt;
        t[i].ndim = d[i].d1 ? 2 : 1;
        t[i].shape[0] = d[i].d0;
        t[i].shape[1] = d[i].d1;
        mk_tensor_info_finish(&t[i]);
    }
    mk_sink *k = NULL;
    mk_st_sink_opts so = {.shard_size = 0};
    mk_source *s = NULL;
    if (mk_safetensors_sink(dir, &so, &k) == MK_OK && k->ops->begin(k, t, n) == MK_OK) {
        for (size_t i = 0; i < n; i++) {
            void *buf = malloc(t[i].nbytes);
            mk_dtype_info(t[i].dtype)->from_f32(d[i].v, buf, (size_t)t[i].numel);
            k->ops->write(k, i, 0, buf, t[i].nbytes);
            k->ops->tensor_done(k, i);
            free(buf);
        }
        if (k->ops->commit(k) == MK_OK) {
            char *p = mk_path_join(dir, "model.safetensors");
            if (mk_safetensors_open(p, &s) != MK_OK) s = NULL;
            free(p);
        }
    }
    mk_sink_close(k);
    free(t);
    free(dir);
    return s;
}

MK_TEST(lora_update_rows_is_fma_chain)
{
    enum { R = 3, N = 2, C = 5 };
    float Cm[N * R], V[R * C], out[N * C];
    fill(Cm, N * R, 1);
    fill(V, R * C, 2);
    mk_lora_update_rows(Cm, V, R, N, C, 0.75f, out);
    float want[N * C];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < C; j++) {
            float acc = 0;
            for (int k = 0; k < R; k++) acc = fmaf(Cm[i * R + k], V[k * C + j], acc);
            want[i * C + j] = acc * 0.75f;
        }
    /* tolerance: exact (the definition of the kernel) */
    CHECK_CLOSE("update", out, want, N * C, 0, 0);
}

MK_TEST(lora_merged_source)
{
    /* base: W [6, 4] (normal update), E [5, 3] (embedding: transposed update), b [6]
     * (lora_B.bias added), n [4] (replaced) */
    enum { O = 6, I = 4, R = 2, V = 5, D = 3 };
    float W[O * I], E[V * D], bvec[O], nvec[I];
    float A[R * I], B[O * R], EA[R * V], EB[D * R], bb[O], nrep[I];
    fill(W, O * I, 3);
    fill(E, V * D, 4);
    fill(bvec, O, 5);
    fill(nvec, I, 6);
    fill(A, R * I, 7);
    fill(B, O * R, 8);
    fill(EA, R * V, 9);
    fill(EB, D * R, 10);
    fill(bb, O, 11);
    fill(nrep, I, 12);
    tdef bd[] = {{"w.weight", O, I, W, MK_F32}, {"e.weight", V, D, E, MK_BF16}, {"w.bias", O, 0, bvec, MK_F32},
                 {"n.weight", I, 0, nvec, MK_F32}};
    tdef ad[] = {{"A", R, I, A, MK_F32}, {"B", O, R, B, MK_F32},  {"EA", R, V, EA, MK_F32},
                 {"EB", D, R, EB, MK_F32}, {"bb", O, 0, bb, MK_F32}, {"n", I, 0, nrep, MK_F32}};
    mk_source *base = write_open("ms_base", bd, 4), *adp = write_open("ms_ad", ad, 6);
    CHECK(base && adp);
    if (!base || !adp) return;
    long ia = mk_source_find(adp, "A"), ib = mk_source_find(adp, "B"), iea = mk_source_find(adp, "EA"),
         ieb = mk_source_find(adp, "EB"), ibb = mk_source_find(adp, "bb"), in = mk_source_find(adp, "n");
    long bw = mk_source_find(base, "w.weight"), be = mk_source_find(base, "e.weight"), bbias = mk_source_find(base, "w.bias"),
         bn = mk_source_find(base, "n.weight");
    mk_lora_target t[2] = {{(size_t)bw, (size_t)ia, (size_t)ib, false, R, 1.5, -1, false},
                           {(size_t)be, (size_t)iea, (size_t)ieb, true, R, 0.5, -1, true}};
    mk_lora_extra x[2] = {{(size_t)bbias, (size_t)ibb, true, 1.5}, {(size_t)bn, (size_t)in, false, 1}};
    mk_source *m = NULL;
    CHECK_OK(mk_lora_source_open(base, adp, t, 2, x, 2, "base+ad", &m));
    if (!m) return;
    CHECK_EQ_INT(m->n_tensors, 4);
    CHECK_EQ_INT(m->n_files, 2);
    /* W' = W + fl(sum B A) * 1.5, single rounding (f32 here) */
    float got[O * I], want[O * I];
    char scratch[256];
    CHECK_OK(mk_source_read_f32(m, (size_t)mk_source_find(m, "w.weight"), 0, O * I, got, scratch));
    for (int i = 0; i < O; i++)
        for (int j = 0; j < I; j++) {
            float acc = 0;
            for (int k = 0; k < R; k++) acc = fmaf(B[i * R + k], A[k * I + j], acc);
            want[i * I + j] = W[i * I + j] + acc * 1.5f;
        }
    CHECK_CLOSE("merged W", got, want, O * I, 0, 0);
    /* a read that starts and ends mid-row equals the same slice of a whole read */
    float part[9];
    CHECK_OK(mk_source_read_f32(m, (size_t)mk_source_find(m, "w.weight"), 5, 9, part, scratch));
    CHECK_CLOSE("mid-row read", part, want + 5, 9, 0, 0);
    /* embedding: E' = bf16(E + bf16(update)), update[v][d] = sum_k EB[d][k] EA[k][v] * 0.5 */
    float ge[V * D], we[V * D];
    CHECK_OK(mk_source_read_f32(m, (size_t)mk_source_find(m, "e.weight"), 0, V * D, ge, scratch));
    for (int v = 0; v < V; v++)
        for (int d = 0; d < D; d++) {
            float acc = 0;
            for (int k = 0; k < R; k++) acc = fmaf(EA[k * V + v], EB[d * R + k], acc);
            float u = mk_bf16_to_f32(mk_f32_to_bf16(acc * 0.5f));
            float e = mk_bf16_to_f32(mk_f32_to_bf16(E[v * D + d]));
            we[v * D + d] = mk_bf16_to_f32(mk_f32_to_bf16(e + u));
        }
    CHECK_CLOSE("merged embedding", ge, we, V * D, 0, 0);
    float gb[O], wb[O], gn[I];
    CHECK_OK(mk_source_read_f32(m, (size_t)mk_source_find(m, "w.bias"), 0, O, gb, scratch));
    for (int i = 0; i < O; i++) wb[i] = bvec[i] + bb[i] * 1.5f;
    CHECK_CLOSE("bias + s lora_B.bias", gb, wb, O, 0, 0);
    CHECK_OK(mk_source_read_f32(m, (size_t)mk_source_find(m, "n.weight"), 0, I, gn, scratch));
    CHECK_CLOSE("replaced", gn, nrep, I, 0, 0);
    mk_source_close(m);
}

/* max |B A - d| / max |d| */
static double recon_err(const float *d, const float *B, const float *A, int m, int n, long k)
{
    double worst = 0, mag = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (long q = 0; q < k; q++) s += (double)B[i * k + q] * A[q * n + j];
            double e = fabs(s - d[i * n + j]);
            if (e > worst) worst = e;
            if (fabs(d[i * n + j]) > mag) mag = fabs(d[i * n + j]);
        }
    return worst / mag;
}

MK_TEST(lora_svd_full_rank_reconstructs)
{
    enum { M = 9, N = 6 };
    float d[M * N], B[M * N], A[N * N], sv[N];
    fill(d, M * N, 20);
    long k = 0;
    double kept = 0;
    CHECK_OK(mk_lora_svd(d, M, N, 100, B, A, &k, &kept, sv, "d"));
    CHECK_EQ_INT(k, N);
    /* tolerance: f32 SVD, 1e-5 of the largest element */
    double e = recon_err(d, B, A, M, N, k);
    CHECK_MSG(e < 1e-5, "full-rank reconstruction error %g (tolerance 1e-5)", e);
    CHECK_MSG(fabs(kept - 1.0) < 1e-12, "energy kept %.17g, want 1", kept);
    for (int q = 1; q < N; q++) CHECK_MSG(sv[q] <= sv[q - 1], "singular values not descending at %d", q);
    /* sign rule: the largest |U[:, q]| is positive, so B's largest |entry| per column is too */
    for (long q = 0; q < k; q++) {
        float best = 0;
        for (int i = 0; i < M; i++)
            if (fabsf(B[i * k + q]) > fabsf(best)) best = B[i * k + q];
        CHECK_MSG(best > 0, "column %ld: largest entry %g is negative", q, (double)best);
    }
}

MK_TEST(lora_svd_truncation_is_best_rank_k)
{
    /* d = sum of three rank-1 terms with known singular values 4, 2, 1 along orthogonal
     * directions: rank 2 keeps (16 + 4) / 21 of the energy, and B A = the first two terms */
    enum { M = 4, N = 3 };
    const float u[3][M] = {{0.5f, 0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f, -0.5f}, {0.5f, 0.5f, -0.5f, -0.5f}};
    const float v[3][N] = {{1, 0, 0}, {0, 0.6f, 0.8f}, {0, 0.8f, -0.6f}};
    const float s[3] = {4, 2, 1};
    float d[M * N] = {0}, want[M * N] = {0};
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                d[i * N + j] += s[t] * u[t][i] * v[t][j];
                if (t < 2) want[i * N + j] += s[t] * u[t][i] * v[t][j];
            }
    float B[M * 2], A[2 * N], sv[3], got[M * N];
    long k = 0;
    double kept = 0;
    CHECK_OK(mk_lora_svd(d, M, N, 2, B, A, &k, &kept, sv, "d"));
    CHECK_EQ_INT(k, 2);
    /* tolerance: 1e-6 on values of order 1 (f32 SVD) */
    CHECK_MSG(fabs(kept - 20.0 / 21.0) < 1e-6, "energy kept %.9f, want %.9f", kept, 20.0 / 21.0);
    float wsv[3] = {4, 2, 1};
    CHECK_CLOSE("singular values", sv, wsv, 3, 1e-5, 0);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) got[i * N + j] = B[i * 2] * A[j] + B[i * 2 + 1] * A[N + j];
    CHECK_CLOSE("rank-2 approximation", got, want, M * N, 1e-5, 0);
    /* a zero difference keeps "all" of nothing */
    float z[M * N] = {0};
    CHECK_OK(mk_lora_svd(z, M, N, 2, B, A, &k, &kept, NULL, "z"));
    CHECK_MSG(kept == 1.0, "zero matrix: energy kept %g, want 1", kept);
}

MK_TEST(lora_extract_then_apply_full_rank_reproduces)
{
    /* base W, finetune F; delta = F - W factored at full rank; W + update == F */
    enum { M = 12, N = 7 };
    float W[M * N], F[M * N], d[M * N], B[M * N], A[N * N], C[M * N], got[M * N];
    fill(W, M * N, 30);
    fill(F, M * N, 31);
    for (int e = 0; e < M * N; e++) F[e] = W[e] + 0.05f * F[e];
    for (int e = 0; e < M * N; e++) d[e] = F[e] - W[e];
    long k = 0;
    double kept;
    CHECK_OK(mk_lora_svd(d, M, N, N, B, A, &k, &kept, NULL, "d"));
    /* the update kernel with C = B rows, V = A, scale 1 (alpha = r) */
    mk_lora_update_rows(B, A, (uint64_t)k, M, N, 1.0f, C);
    for (int e = 0; e < M * N; e++) got[e] = W[e] + C[e];
    /* tolerance: f32 SVD of a difference of size 0.05: 1e-6 absolute */
    CHECK_CLOSE("W + B A", got, F, M * N, 1e-6, 0);
}

MK_TEST(lora_prune_magnitude_keeps_top_k)
{
    float x[8] = {0.1f, -0.9f, 0.3f, -0.3f, 0.5f, 0.0f, 0.3f, -0.2f};
    /* k = int(0.5 * 8) = 4: |x| ranks 0.9, 0.5, then three 0.3s tie -> the first two by index */
    CHECK_OK(mk_lora_prune_magnitude(x, 8, 0.5));
    const float want[8] = {0, -0.9f, 0.3f, -0.3f, 0.5f, 0, 0, 0};
    CHECK_CLOSE("top-4", x, want, 8, 0, 0);
    float y[3] = {1, 2, 3};
    CHECK_OK(mk_lora_prune_magnitude(y, 3, 0.2)); /* k = int(0.6) = 0 */
    const float z[3] = {0, 0, 0};
    CHECK_CLOSE("k = 0", y, z, 3, 0, 0);
    float w[3] = {1, 2, 3};
    CHECK_OK(mk_lora_prune_magnitude(w, 3, 1.0));
    const float all[3] = {1, 2, 3};
    CHECK_CLOSE("density 1", w, all, 3, 0, 0);
}

MK_TEST(lora_ties_and_sum_as_peft)
{
    /* two tasks, weights 0.5 and 2: element 0 both positive -> mean of weighted; element 1
     * signs differ, sum -1 -> majority negative -> only task 1; element 2 sum 0 -> majority
     * positive (>= 0) -> only task 0; element 3 zeros -> 0 */
    const float d0[4] = {1, 1, 2, 0}, d1[4] = {3, -2, -2, 0};
    const float *d[2] = {d0, d1};
    const float w[2] = {0.5f, 2.0f};
    float out[4];
    mk_lora_ties_merge(d, w, 2, 4, out);
    const float want[4] = {(0.5f + 6.0f) / 2, -4.0f, 1.0f, 0.0f};
    CHECK_CLOSE("ties", out, want, 4, 0, 0);
    mk_lora_weighted_sum(d, w, 2, 4, out);
    const float ws[4] = {6.5f, -3.5f, -3.0f, 0};
    CHECK_CLOSE("weighted sum", out, ws, 4, 0, 0);
}

MK_TEST(lora_prune_random_rescales_and_is_keyed)
{
    enum { N = 20000 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) x[i] = y[i] = 1.0f + (float)(i % 7);
    mk_rng k = mk_rng_key(5, "m");
    mk_lora_prune_random(x, N, 0.25, k, 1);
    mk_lora_prune_random(y, N, 0.25, k, 1);
    size_t kept = 0, bad = 0, same = 0;
    for (int i = 0; i < N; i++) {
        same += x[i] == y[i];
        if (x[i] != 0) {
            kept++;
            bad += x[i] != (1.0f + (float)(i % 7)) / 0.25f;
        }
    }
    CHECK_EQ_INT(same, N);   /* same key, same mask */
    CHECK_EQ_INT(bad, 0);    /* survivors divided by the density */
    /* kept share within 4 standard deviations of 0.25 (sd = sqrt(.25 .75 / N) = 0.003) */
    CHECK_MSG(fabs((double)kept / N - 0.25) < 0.012, "kept share %g, want 0.25 +- 0.012", (double)kept / N);
    free(x);
    free(y);
}

MK_TEST(lora_randomized_svd_close_to_exact)
{
    /* a [60, 40] matrix with singular values 0.7^q (a decaying spectrum, as finetune
     * differences have): rank 5 by randomized SVD keeps the same energy as the exact SVD and
     * gives the same approximation, to f32 precision */
    enum { M = 60, N = 40, K = 5 };
    static float d[M * N], g1[M * N], g2[N * N], B1[M * K], A1[K * N], B2[M * K], A2[K * N], sv[N];
    fill(g1, M * N, 50);
    fill(g2, N * N, 51);
    /* orthonormal-ish bases from exact SVDs of random matrices */
    static float U[M * N], Vt[N * N], tmpB[M * N], tmpA[N * N];
    long k;
    double kept;
    CHECK_OK(mk_lora_svd(g1, M, N, N, tmpB, tmpA, &k, &kept, sv, "g1"));
    for (int i = 0; i < M; i++)
        for (int q = 0; q < N; q++) U[i * N + q] = tmpB[i * N + q] / sqrtf(sv[q]);
    CHECK_OK(mk_lora_svd(g2, N, N, N, tmpB, tmpA, &k, &kept, sv, "g2"));
    for (int q = 0; q < N; q++)
        for (int j = 0; j < N; j++) Vt[q * N + j] = tmpA[q * N + j] / sqrtf(sv[q]);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0, s = 1;
            for (int q = 0; q < N; q++, s *= 0.7) acc += (double)U[i * N + q] * s * Vt[q * N + j];
            d[i * N + j] = (float)acc;
        }
    double k1, k2;
    CHECK_OK(mk_lora_svd(d, M, N, K, B1, A1, &k, &k1, NULL, "d"));
    CHECK_OK(mk_lora_rsvd(d, M, N, K, 2, 10, mk_rng_key(1, "d"), B2, A2, &k, &k2, "d"));
    CHECK_EQ_INT(k, K);
    /* tolerance: energy shares agree to 1e-5; approximations to 1e-4 of the largest element */
    CHECK_MSG(fabs(k1 - k2) < 1e-5, "energy kept: exact %.9f, randomized %.9f", k1, k2);
    static float r1[M * N], r2[M * N];
    float mag = 0;
    for (int e = 0; e < M * N; e++) mag = fmaxf(mag, fabsf(d[e]));
    mk_lora_update_rows(B1, A1, K, M, N, 1.0f, r1);
    mk_lora_update_rows(B2, A2, K, M, N, 1.0f, r2);
    CHECK_CLOSE("randomized vs exact rank-5 approximation", r2, r1, M * N, 1e-4 * mag, 0);
    /* a flat spectrum: never more than the optimum, and most of it */
    fill(d, M * N, 52);
    CHECK_OK(mk_lora_svd(d, M, N, K, B1, A1, &k, &k1, NULL, "flat"));
    CHECK_OK(mk_lora_rsvd(d, M, N, K, 2, 10, mk_rng_key(1, "flat"), B2, A2, &k, &k2, "flat"));
    CHECK_MSG(k2 <= k1 + 1e-6 && k2 >= 0.8 * k1, "flat spectrum: randomized keeps %.6f, exact %.6f", k2, k1);
}

/* ---- extract and combine plans (lora/extract.h, lora/combine.h) ---------------------------- */

static const mk_lora_names test_names = {"p.", "A", "B", "EA", "EB", "LB"};

/* The plan's output tensor `name` has shape [d0, d1] (d1 = 0: a vector). */
static bool has_out(const mk_lora_plan *p, const char *name, int64_t d0, int64_t d1)
{
    for (size_t i = 0; i < p->n_out; i++)
        if (strcmp(p->out[i].name, name) == 0) return p->out[i].shape[0] == d0 && (d1 == 0 || p->out[i].shape[1] == d1);
    return false;
}

static const mk_lora_module *find_mod(const mk_lora_plan *p, const char *module)
{
    for (size_t i = 0; i < p->n_modules; i++)
        if (strcmp(p->m[i].module, module) == 0) return &p->m[i];
    return NULL;
}

/* A Llama-like pair of models, H = 4, vocabulary 10: the finetune changes q_proj, down_proj,
 * the first norm, the embeddings and lm_head; k_proj and the final norm are identical. */
enum { XH = 4, XV = 10, XF = 6 };
static float xv_e[XV * XH], xv_q[XH * XH], xv_k[2 * XH], xv_d[XH * XF], xv_n[XH], xv_fn[XH], xv_h[XV * XH];
static float xf_e[XV * XH], xf_q[XH * XH], xf_d[XH * XF], xf_n[XH], xf_h[XV * XH];

static void extract_models(mk_source **base, mk_source **ft, const char *tag)
{
    float *bv[] = {xv_e, xv_q, xv_k, xv_d, xv_n, xv_fn, xv_h}, *fv[] = {xf_e, xf_q, xv_k, xf_d, xf_n, xv_fn, xf_h};
    size_t nv[] = {XV * XH, XH * XH, 2 * XH, XH * XF, XH, XH, XV * XH};
    for (int i = 0; i < 7; i++) {
        fill(bv[i], nv[i], 60 + (uint64_t)i);
        if (fv[i] == bv[i]) continue;
        fill(fv[i], nv[i], 70 + (uint64_t)i);
        for (size_t e = 0; e < nv[i]; e++) fv[i][e] = bv[i][e] + 0.05f * fv[i][e];
    }
    const char *names[] = {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.0.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight",
                           "model.layers.0.input_layernorm.weight", "model.norm.weight", "lm_head.weight"};
    int64_t d0[] = {XV, XH, 2, XH, XH, XH, XV}, d1[] = {XH, XH, XH, XF, 0, 0, XH};
    tdef b[7], f[7];
    for (int i = 0; i < 7; i++) {
        b[i] = (tdef){names[i], d0[i], d1[i], bv[i], MK_F32};
        f[i] = (tdef){names[i], d0[i], d1[i], fv[i], MK_F32};
    }
    char bn[32], fn[32];
    snprintf(bn, sizeof bn, "xb_%s", tag);
    snprintf(fn, sizeof fn, "xf_%s", tag);
    *base = write_open(bn, b, 7);
    *ft = write_open(fn, f, 7);
}

/* Extract options as the CLI's defaults, rank r, messages naming the models b/ and f/. */
static mk_lora_extract_opts xopts(long r)
{
    return (mk_lora_extract_opts){.rank = r, .dtype = MK_DTYPE_NONE, .base_name = "b/", .ft_name = "f/"};
}

/* The architecture a config.json with this architectures[0] and model_type names. */
static mk_arch arch_of(const char *name, const char *type)
{
    char cfg[160];
    snprintf(cfg, sizeof cfg, "{\"architectures\": [\"%s\"], \"model_type\": \"%s\"}", name, type);
    mk_arch a;
    CHECK_OK(mk_arch_from_config(cfg, "config.json", &a));
    return a;
}

MK_TEST(lora_extract_plan_follows_mergekit_rules)
{
    mk_source *base, *ft;
    extract_models(&base, &ft, "rules");
    CHECK(base && ft);
    if (!base || !ft) return;
    mk_arch arch = arch_of("LlamaForCausalLM", "llama");
    mk_lora_extract_opts o = xopts(3);
    mk_lora_plan p;
    /* defaults: linear weights as pairs, embeddings / lm_head / the changed norm whole,
     * identical tensors (k_proj, model.norm) left out */
    CHECK_OK(mk_lora_extract_plan(base, ft, &arch, &o, &test_names, &p));
    CHECK_EQ_INT(p.n_modules, 2);
    CHECK_EQ_INT(p.n_whole, 3);
    CHECK_EQ_INT(p.n_out, 7);
    CHECK(!p.conv1d);
    const mk_lora_module *q = find_mod(&p, "model.layers.0.self_attn.q_proj"), *d = find_mod(&p, "model.layers.0.mlp.down_proj");
    CHECK(q && d && !find_mod(&p, "model.layers.0.self_attn.k_proj"));
    if (q && d) {
        CHECK(q->out == XH && q->in == XH && q->k == 3 && !q->transposed && !q->embedding);
        CHECK(d->out == XH && d->in == XF && d->k == 3);
        CHECK_EQ_INT(q->oa, 0);
        CHECK_EQ_INT(q->ob, 1);
    }
    CHECK(has_out(&p, "p.model.layers.0.mlp.down_proj.A", 3, XF) && has_out(&p, "p.model.layers.0.mlp.down_proj.B", XH, 3));
    CHECK(has_out(&p, "p.model.embed_tokens.weight", XV, XH) && has_out(&p, "p.lm_head.weight", XV, XH));
    CHECK(has_out(&p, "p.model.layers.0.input_layernorm.weight", XH, 0));
    CHECK(!has_out(&p, "p.model.norm.weight", XH, 0));
    CHECK_EQ_INT(p.n_save, 3);
    if (p.n_save == 3) {
        CHECK_STR(p.save[0], "embed_tokens");
        CHECK_STR(p.save[1], "input_layernorm");
        CHECK_STR(p.save[2], "lm_head");
    }
    CHECK_EQ_INT(p.out[p.whole[0].out].dtype, MK_F32);
    mk_lora_plan_free(&p);
    /* --modules q_proj --skip-undecomposable --dtype bf16, a rank above the matrix size */
    o.modules = "q_proj";
    o.skip_undecomposable = true;
    o.dtype = MK_BF16;
    o.rank = 100;
    CHECK_OK(mk_lora_extract_plan(base, ft, &arch, &o, &test_names, &p));
    CHECK_EQ_INT(p.n_modules, 1);
    CHECK_EQ_INT(p.n_whole, 2); /* embeddings and lm_head are still saved whole */
    if (p.n_modules == 1) CHECK_EQ_INT(p.m[0].k, XH);
    CHECK(p.n_out && p.out[0].dtype == MK_BF16);
    mk_lora_plan_free(&p);
    /* --embed-lora with lm_head excluded: the embedding is a transposed embedding pair */
    o = xopts(2);
    o.embed_lora = true;
    o.exclude = "lm_head";
    o.save = "q_proj";
    CHECK_OK(mk_lora_extract_plan(base, ft, &arch, &o, &test_names, &p));
    const mk_lora_module *e = find_mod(&p, "model.embed_tokens");
    CHECK(e && e->embedding && e->transposed && e->out == XH && e->in == XV);
    CHECK(has_out(&p, "p.model.embed_tokens.EA", 2, XV) && has_out(&p, "p.model.embed_tokens.EB", XH, 2));
    CHECK(!find_mod(&p, "lm_head") && !has_out(&p, "p.lm_head.weight", XV, XH));
    CHECK(!find_mod(&p, "model.layers.0.self_attn.q_proj") && has_out(&p, "p.model.layers.0.self_attn.q_proj.weight", XH, XH));
    mk_lora_plan_free(&p);
    /* errors name the models and the tensor */
    o = xopts(2);
    CHECK_ERR(mk_lora_extract_plan(base, base, &arch, &o, &test_names, &p), MK_ERR_USAGE, "b/ and f/ do not differ");
    tdef odd[] = {{"model.norm.weight", XH + 1, 0, xv_e, MK_F32}, {"extra.weight", 2, 2, xv_e, MK_F32}};
    mk_source *o1 = write_open("xodd1", odd, 1), *o2 = write_open("xodd2", odd + 1, 1);
    CHECK_ERR(mk_lora_extract_plan(base, o1, &arch, &o, &test_names, &p), MK_ERR_USAGE,
              "f/: tensor model.norm.weight is [5] but [4] in the base b/");
    CHECK_ERR(mk_lora_extract_plan(base, o2, &arch, &o, &test_names, &p), MK_ERR_USAGE,
              "f/: tensor extra.weight is not in the base model b/");
    mk_source_close(o1);
    mk_source_close(o2);
    mk_arch_free(&arch);
    mk_source_close(base);
    mk_source_close(ft);
}

/* Commit sink k (in dir) and open what it wrote. */
static mk_source *sink_reopen(mk_sink *k, const char *dir)
{
    mk_source *s = NULL;
    if (k->ops->commit(k) == MK_OK) {
        char *p = mk_path_join(dir, "model.safetensors");
        if (mk_safetensors_open(p, &s) != MK_OK) s = NULL;
        free(p);
    }
    mk_sink_close(k);
    return s;
}

static mk_sink *plan_sink(const char *dir, const mk_lora_plan *p)
{
    mk_mkdir_p(dir);
    mk_sink *k = NULL;
    mk_st_sink_opts so = {.shard_size = 0};
    if (mk_safetensors_sink(dir, &so, &k) != MK_OK) return NULL;
    if (k->ops->begin(k, p->out, p->n_out) != MK_OK) {
        mk_sink_close(k);
        return NULL;
    }
    return k;
}

/* Run combine's plan into tmpdir/name and open what it wrote (NULL on failure). */
static mk_source *combine_out(mk_lora_plan *p, const mk_lora_input *in, size_t n, const mk_lora_combine_opts *o,
                              const char *name)
{
    char *dir = mk_path_join(mk_test_tmpdir(), name);
    mk_sink *k = plan_sink(dir, p);
    mk_source *out = NULL;
    if (k) {
        CHECK_OK(mk_lora_combine_run(p, in, n, o, k));
        out = sink_reopen(k, dir);
    }
    free(dir);
    CHECK(out != NULL);
    return out;
}

MK_TEST(lora_extract_run_gpt2_conv1d_full_rank)
{
    /* GPT-2 stores c_attn as Conv1D [in 4, out 12]: the pair is A [k, 4], B [12, k] and
     * (B A)^T reproduces the stored difference; wte is saved whole */
    enum { I = 4, O = 12, V = 6 };
    float bw[I * O], fw[I * O], be[V * I], fe[V * I];
    fill(bw, I * O, 80);
    fill(fw, I * O, 81);
    fill(be, V * I, 82);
    fill(fe, V * I, 83);
    tdef b[] = {{"wte.weight", V, I, be, MK_F32}, {"h.0.attn.c_attn.weight", I, O, bw, MK_F32}};
    tdef f[] = {{"wte.weight", V, I, fe, MK_F32}, {"h.0.attn.c_attn.weight", I, O, fw, MK_F32}};
    mk_source *base = write_open("g2b", b, 2), *ft = write_open("g2f", f, 2);
    CHECK(base && ft);
    if (!base || !ft) return;
    mk_arch arch = arch_of("GPT2LMHeadModel", "gpt2");
    mk_lora_extract_opts o = xopts(8);
    mk_lora_plan p;
    CHECK_OK(mk_lora_extract_plan(base, ft, &arch, &o, &test_names, &p));
    CHECK(p.conv1d);
    CHECK_EQ_INT(p.n_modules, 1);
    CHECK_EQ_INT(p.n_whole, 1);
    if (p.n_modules != 1) return;
    const mk_lora_module *m = &p.m[0];
    CHECK(m->transposed && !m->embedding && m->out == O && m->in == I && m->k == I);
    char *dir = mk_path_join(mk_test_tmpdir(), "g2out");
    mk_sink *k = plan_sink(dir, &p);
    CHECK(k != NULL);
    mk_lora_svd_opts svd = {false, 0};
    mk_source *out = NULL;
    if (k) {
        CHECK_OK(mk_lora_extract_run(&p, base, ft, &svd, k, NULL, NULL));
        out = sink_reopen(k, dir);
    }
    /* named as PEFT names the modules: with GPT-2's "transformer." prefix */
    CHECK_STR(m->module, "transformer.h.0.attn.c_attn");
    bool shaped = has_out(&p, "p.transformer.h.0.attn.c_attn.A", I, I) && has_out(&p, "p.transformer.h.0.attn.c_attn.B", O, I);
    CHECK(out != NULL && shaped);
    if (out && shaped) {
        /* stored[i][o] = (B A)^T[i][o] = sum_q B[o][q] A[q][i]; tolerance: f32 SVD rounding,
         * 1e-5 of the largest |difference| */
        float A[I * I], B[O * I], got[I * O], want[I * O], mag = 0, ge[V * I];
        char scratch[sizeof(float) * I * O]; /* raw bytes of the largest tensor read */
        CHECK_OK(mk_source_read_f32(out, (size_t)mk_source_find(out, "p.transformer.h.0.attn.c_attn.A"), 0, I * I, A, scratch));
        CHECK_OK(mk_source_read_f32(out, (size_t)mk_source_find(out, "p.transformer.h.0.attn.c_attn.B"), 0, O * I, B, scratch));
        for (int i = 0; i < I; i++)
            for (int j = 0; j < O; j++) {
                double acc = 0;
                for (int q = 0; q < I; q++) acc += (double)B[j * I + q] * A[q * I + i];
                got[i * O + j] = (float)acc;
                want[i * O + j] = fw[i * O + j] - bw[i * O + j];
                mag = fmaxf(mag, fabsf(want[i * O + j]));
            }
        CHECK_CLOSE("(B A)^T vs the Conv1D difference", got, want, I * O, 1e-5 * mag, 0);
        CHECK(m->kept > 0.999999);
        CHECK_OK(mk_source_read_f32(out, (size_t)mk_source_find(out, "p.transformer.wte.weight"), 0, V * I, ge, scratch));
        CHECK_CLOSE("wte copied whole", ge, fe, V * I, 0, 0);
        mk_source_close(out);
    }
    free(dir);
    mk_lora_plan_free(&p);
    mk_arch_free(&arch);
    mk_source_close(base);
    mk_source_close(ft);
}

/* Two adapters: one has modules m.b (update [3, 4], r 2) and m.a ([6, 5], r 2) and saves x
 * whole; the other has m.c ([2, 7], r 3) and m.a (r 3) and saves y. */
enum { CR = 3 };
static float cv[8][64];

static void combine_inputs(mk_source **s1, mk_source **s2, mk_lora_input in[2], mk_lora_in_module m[4],
                           mk_lora_in_whole w[2], int64_t a_rows)
{
    for (int i = 0; i < 8; i++) fill(cv[i], 64, 90 + (uint64_t)i);
    tdef d1[] = {{"bA", 2, 4, cv[0], MK_F32}, {"bB", 3, 2, cv[1], MK_F32}, {"aA", 2, 5, cv[2], MK_F32},
                 {"aB", 6, 2, cv[3], MK_F32}, {"x", 4, 0, cv[4], MK_F32}};
    tdef d2[] = {{"cA", CR, 7, cv[5], MK_F32}, {"cB", 2, CR, cv[6], MK_F32}, {"aA", CR, 5, cv[7], MK_F32},
                 {"aB", a_rows, CR, cv[0], MK_F32}, {"y", 3, 0, cv[1], MK_F32}};
    *s1 = write_open("cb1", d1, 5);
    *s2 = write_open("cb2", d2, 5);
    if (!*s1 || !*s2) return;
#define IX(s, n) ((size_t)mk_source_find(s, n))
    m[0] = (mk_lora_in_module){"m.b", IX(*s1, "bA"), IX(*s1, "bB"), false, 2, 0.5};
    m[1] = (mk_lora_in_module){"m.a", IX(*s1, "aA"), IX(*s1, "aB"), false, 2, 2.0};
    m[2] = (mk_lora_in_module){"m.c", IX(*s2, "cA"), IX(*s2, "cB"), false, CR, 1.0};
    m[3] = (mk_lora_in_module){"m.a", IX(*s2, "aA"), IX(*s2, "aB"), false, CR, 0.25};
    w[0] = (mk_lora_in_whole){"x.weight", IX(*s1, "x"), -1};
    w[1] = (mk_lora_in_whole){"y.weight", IX(*s2, "y"), -1};
#undef IX
    static const char *const save1[] = {"x"}, *const save2[] = {"x", "y"};
    in[0] = (mk_lora_input){"ad1", *s1, m, 2, w, 1, save1, 1, 2, 1.5};
    in[1] = (mk_lora_input){"ad2", *s2, m + 2, 2, w + 1, 1, save2, 2, CR, -0.5};
}

MK_TEST(lora_combine_plan_unions_and_sorts)
{
    mk_source *s1, *s2;
    mk_lora_input in[2];
    mk_lora_in_module m[4];
    mk_lora_in_whole w[2];
    combine_inputs(&s1, &s2, in, m, w, 6);
    CHECK(s1 && s2);
    if (!s1 || !s2) return;
    mk_lora_combine_opts o = {.method = MK_LORA_CAT, .dtype = MK_F16};
    mk_lora_plan p;
    CHECK_OK(mk_lora_combine_plan(in, 2, &o, &test_names, &p));
    CHECK_EQ_INT(p.n_modules, 3);
    if (p.n_modules == 3) {
        /* sorted by name; from[] = each input's module index or -1; cat ranks add up */
        CHECK_STR(p.m[0].module, "m.a");
        CHECK_STR(p.m[1].module, "m.b");
        CHECK_STR(p.m[2].module, "m.c");
        CHECK(p.m[0].from[0] == 1 && p.m[0].from[1] == 1 && p.m[0].k == 2 + CR);
        CHECK(p.m[1].from[0] == 0 && p.m[1].from[1] == -1 && p.m[1].k == 2);
        CHECK(p.m[2].from[0] == -1 && p.m[2].from[1] == 0 && p.m[2].k == CR);
        CHECK(p.m[0].out == 6 && p.m[0].in == 5);
        CHECK(p.m[0].oa == 0 && p.m[0].ob == 1 && p.m[2].ob == 5);
    }
    CHECK(has_out(&p, "p.m.a.A", 5, 5) && has_out(&p, "p.m.a.B", 6, 5) && has_out(&p, "p.m.c.B", 2, CR));
    CHECK(p.n_out == 8 && p.out[0].dtype == MK_F16);
    /* whole tensors after the pairs, under their own names; modules_to_save united */
    CHECK(p.n_whole == 2 && p.whole[0].input == 0 && p.whole[1].input == 1 && p.whole[1].out == 7);
    CHECK(has_out(&p, "x", 4, 0) && has_out(&p, "y", 3, 0));
    CHECK(p.n_save == 2 && strcmp(p.save[0], "x") == 0 && strcmp(p.save[1], "y") == 0);
    mk_lora_plan_free(&p);
    /* ranks: linear the sum of the largest ranks (2 + 3), svd the largest, --rank; never above
     * min(out, in) */
    long want[3][3] = {{5, 3, 2}, {3, 3, 2}, {2, 2, 2}}; /* per case: m.a, m.b, m.c */
    mk_lora_combine_opts cases[3] = {{.method = MK_LORA_LINEAR}, {.method = MK_LORA_SVD}, {.method = MK_LORA_TIES, .rank = 2}};
    for (int c = 0; c < 3; c++) {
        CHECK_OK(mk_lora_combine_plan(in, 2, &cases[c], &test_names, &p));
        for (size_t q = 0; q < p.n_modules && q < 3; q++)
            CHECK_MSG(p.m[q].k == want[c][q], "case %d, %s: rank %ld, want %ld", c, p.m[q].module, p.m[q].k, want[c][q]);
        mk_lora_plan_free(&p);
    }
    /* the same whole tensor twice; no modules at all */
    mk_lora_input twice[2] = {in[0], in[0]};
    twice[1].name = "ad3";
    CHECK_ERR(mk_lora_combine_plan(twice, 2, &o, &test_names, &p), MK_ERR_USAGE,
              "ad1 and ad3 both save x.weight whole; combining them needs the base model");
    mk_lora_input none[2] = {{"e1", s1, NULL, 0, NULL, 0, NULL, 0, 1, 1}, {"e2", s2, NULL, 0, NULL, 0, NULL, 0, 1, 1}};
    CHECK_ERR(mk_lora_combine_plan(none, 2, &o, &test_names, &p), MK_ERR_USAGE, "no modules to combine");
    mk_source_close(s1);
    mk_source_close(s2);
    /* an update shape that differs between the adapters */
    combine_inputs(&s1, &s2, in, m, w, 4);
    if (s1 && s2)
        CHECK_ERR(mk_lora_combine_plan(in, 2, &o, &test_names, &p), MK_ERR_USAGE,
                  "ad2: module m.a has a [4, 5] update, but ad1's is [6, 5]; adapters of different bases?");
    mk_source_close(s1);
    mk_source_close(s2);
}

MK_TEST(lora_combine_run_cat_and_linear_are_exact)
{
    /* cat is exact: B A = sum_i w_i s_i B_i A_i; linear at full rank reproduces the same sum
     * (tolerance: f32 rounding, 1e-5 of the largest |element|) */
    mk_source *s1, *s2;
    mk_lora_input in[2];
    mk_lora_in_module m[4];
    mk_lora_in_whole w[2];
    combine_inputs(&s1, &s2, in, m, w, 6);
    CHECK(s1 && s2);
    if (!s1 || !s2) return;
    enum { O = 6, I = 5 };
    float want[O * I] = {0}, mag = 0;
    for (int a = 0; a < 2; a++) {
        float u[O * I];
        const mk_lora_in_module *pm = &m[a == 0 ? 1 : 3];
        CHECK_OK(mk_lora_update_read(in[a].src, pm->a, pm->b, false, pm->scale, O, I, 0, O, u));
        for (int e = 0; e < O * I; e++) want[e] += (float)in[a].weight * u[e];
    }
    for (int e = 0; e < O * I; e++) mag = fmaxf(mag, fabsf(want[e]));
    mk_lora_combine_method meths[2] = {MK_LORA_CAT, MK_LORA_LINEAR};
    for (int c = 0; c < 2; c++) {
        mk_lora_combine_opts o = {.method = meths[c], .dtype = MK_F32};
        mk_lora_plan p;
        CHECK_OK(mk_lora_combine_plan(in, 2, &o, &test_names, &p));
        mk_source *out = combine_out(&p, in, 2, &o, c ? "cbrun_linear" : "cbrun_cat");
        if (out) {
            long ia = mk_source_find(out, "p.m.a.A"), ib = mk_source_find(out, "p.m.a.B");
            float got[O * I];
            CHECK(ia >= 0 && ib >= 0);
            if (ia >= 0 && ib >= 0)
                CHECK_OK(mk_lora_update_read(out, (size_t)ia, (size_t)ib, false, 1.0, O, I, 0, O, got));
            CHECK_CLOSE(c ? "linear m.a" : "cat m.a", got, want, O * I, 1e-5 * mag, 0);
            float gx[4];
            char scratch[sizeof gx];
            CHECK_OK(mk_source_read_f32(out, (size_t)mk_source_find(out, "x"), 0, 4, gx, scratch));
            CHECK_CLOSE("x copied whole", gx, cv[4], 4, 0, 0);
            mk_source_close(out);
        }
        CHECK(p.n_modules == 3 && p.m[0].kept > 0.999999);
        mk_lora_plan_free(&p);
    }
    mk_source_close(s1);
    mk_source_close(s2);
}

/* A Qwen2-like pair of models (q/k projections with biases): layer 0's q_proj and k_proj
 * change in weight and bias, o_proj (no bias) in weight; layer 1's q_proj keeps its weight
 * but changes its bias; the norm changes its weight and bias (as GPT-2's LayerNorm would). */
enum { QH = 4 };
static float qb[9][QH * QH], qf[9][QH * QH];

static void bias_models(mk_source **base, mk_source **ft)
{
    const char *names[9] = {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.bias",
                            "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.k_proj.bias",
                            "model.layers.0.self_attn.o_proj.weight", "model.layers.1.self_attn.q_proj.weight",
                            "model.layers.1.self_attn.q_proj.bias",   "model.layers.0.input_layernorm.weight",
                            "model.layers.0.input_layernorm.bias"};
    bool vec[9] = {false, true, false, true, false, false, true, true, true};
    bool same[9] = {false, false, false, false, false, true, false, false, false};
    tdef b[9], f[9];
    for (int i = 0; i < 9; i++) {
        fill(qb[i], QH * QH, 200 + (uint64_t)i);
        fill(qf[i], QH * QH, 220 + (uint64_t)i);
        for (int e = 0; e < QH * QH; e++) qf[i][e] = same[i] ? qb[i][e] : qb[i][e] + 0.05f * qf[i][e];
        b[i] = (tdef){names[i], QH, vec[i] ? 0 : QH, qb[i], MK_F32};
        f[i] = (tdef){names[i], QH, vec[i] ? 0 : QH, qf[i], MK_F32};
    }
    *base = write_open("qbias_b", b, 9);
    *ft = write_open("qbias_f", f, 9);
}

/* The models above with Qwen2's architecture, planned with the CLI's defaults at rank 2. */
static bool bias_plan(mk_source **base, mk_source **ft, mk_arch *arch, mk_lora_plan *p)
{
    bias_models(base, ft);
    CHECK(*base && *ft);
    if (!*base || !*ft) return false;
    *arch = arch_of("Qwen2ForCausalLM", "qwen2");
    mk_lora_extract_opts o = xopts(2);
    CHECK_OK(mk_lora_extract_plan(*base, *ft, arch, &o, &test_names, p));
    return true;
}

MK_TEST(lora_extract_plan_biases_of_lora_layers)
{
    /* The bias of a layer PEFT wraps in LoRA cannot be in modules_to_save (PEFT would then
     * not wrap the layer): it is saved whole as the wrapped layer's bias (names.layer_bias),
     * exact; a bias whose module is saved whole goes with it; --skip-undecomposable leaves
     * biases out. */
    mk_source *base, *ft;
    mk_arch arch;
    mk_lora_plan p;
    if (!bias_plan(&base, &ft, &arch, &p)) return;
    mk_lora_extract_opts o = xopts(2);
    CHECK_EQ_INT(p.n_modules, 3); /* q_proj and k_proj of layer 0, o_proj; layer 1's q_proj weight is unchanged */
    CHECK_EQ_INT(p.n_whole, 5);
    CHECK(has_out(&p, "p.model.layers.0.self_attn.q_proj.LB", QH, 0));
    CHECK(has_out(&p, "p.model.layers.0.self_attn.k_proj.LB", QH, 0));
    /* layer 1's q_proj has no pair, but PEFT wraps it all the same (target_modules lists q_proj) */
    CHECK(has_out(&p, "p.model.layers.1.self_attn.q_proj.LB", QH, 0));
    CHECK(!has_out(&p, "p.model.layers.0.self_attn.q_proj.bias", QH, 0));
    CHECK(has_out(&p, "p.model.layers.0.input_layernorm.weight", QH, 0) &&
          has_out(&p, "p.model.layers.0.input_layernorm.bias", QH, 0));
    CHECK_EQ_INT(p.n_save, 1);
    if (p.n_save == 1) CHECK_STR(p.save[0], "input_layernorm");
    mk_lora_plan_free(&p);
    /* --modules o_proj: the q/k biases are left out with their modules (and the norm) */
    o.modules = "o_proj";
    CHECK_OK(mk_lora_extract_plan(base, ft, &arch, &o, &test_names, &p));
    CHECK_EQ_INT(p.n_modules, 1);
    CHECK_EQ_INT(p.n_whole, 0);
    mk_lora_plan_free(&p);
    /* --modules o_proj,q_proj --save-module k_proj: k_proj's bias goes whole with its weight */
    o.modules = "o_proj,q_proj";
    o.save = "k_proj";
    CHECK_OK(mk_lora_extract_plan(base, ft, &arch, &o, &test_names, &p));
    CHECK_EQ_INT(p.n_modules, 2);
    CHECK(has_out(&p, "p.model.layers.0.self_attn.q_proj.LB", QH, 0) && has_out(&p, "p.model.layers.1.self_attn.q_proj.LB", QH, 0));
    CHECK(has_out(&p, "p.model.layers.0.self_attn.k_proj.weight", QH, QH) &&
          has_out(&p, "p.model.layers.0.self_attn.k_proj.bias", QH, 0));
    CHECK(p.n_save == 1 && strcmp(p.save[0], "k_proj") == 0);
    mk_lora_plan_free(&p);
    /* q_proj saved whole: its weights and biases go to modules_to_save together */
    o = xopts(2);
    o.save = "q_proj";
    CHECK_OK(mk_lora_extract_plan(base, ft, &arch, &o, &test_names, &p));
    CHECK(has_out(&p, "p.model.layers.0.self_attn.q_proj.weight", QH, QH) &&
          has_out(&p, "p.model.layers.0.self_attn.q_proj.bias", QH, 0) &&
          has_out(&p, "p.model.layers.1.self_attn.q_proj.bias", QH, 0));
    CHECK(has_out(&p, "p.model.layers.0.self_attn.k_proj.LB", QH, 0));
    CHECK(p.n_save == 2 && strcmp(p.save[0], "q_proj") == 0 && strcmp(p.save[1], "input_layernorm") == 0);
    mk_lora_plan_free(&p);
    /* --skip-undecomposable: vectors (norms and biases) left out */
    o = xopts(2);
    o.skip_undecomposable = true;
    CHECK_OK(mk_lora_extract_plan(base, ft, &arch, &o, &test_names, &p));
    CHECK_EQ_INT(p.n_modules, 3);
    CHECK_EQ_INT(p.n_whole, 0);
    mk_lora_plan_free(&p);
    mk_arch_free(&arch);
    mk_source_close(base);
    mk_source_close(ft);
}

typedef struct progress_log {
    size_t calls, done, total;
    uint64_t bytes_done, bytes_total;
    bool monotonic;
} progress_log;

static void log_progress(void *ctx, size_t done, size_t total, uint64_t bytes_done, uint64_t bytes_total, const char *name)
{
    progress_log *l = ctx;
    (void)name;
    if (l->calls && (done <= l->done || bytes_done < l->bytes_done)) l->monotonic = false;
    l->calls++;
    l->done = done;
    l->total = total;
    l->bytes_done = bytes_done;
    l->bytes_total = bytes_total;
}

MK_TEST(lora_extract_run_reports_items_and_bytes)
{
    /* progress counts modules and whole tensors as items, and their bytes in the finetuned
     * model as bytes, up to the total */
    mk_source *base, *ft;
    mk_arch arch;
    mk_lora_plan p;
    if (!bias_plan(&base, &ft, &arch, &p)) return;
    uint64_t bytes = 0;
    for (size_t q = 0; q < p.n_modules; q++) bytes += ft->tensors[p.m[q].ft].nbytes;
    for (size_t q = 0; q < p.n_whole; q++) bytes += ft->tensors[p.whole[q].src].nbytes;
    char *dir = mk_path_join(mk_test_tmpdir(), "qbias_out");
    mk_sink *k = plan_sink(dir, &p);
    CHECK(k != NULL);
    progress_log l = {.monotonic = true};
    mk_lora_svd_opts svd = {false, 0};
    mk_source *out = NULL;
    if (k) {
        CHECK_OK(mk_lora_extract_run(&p, base, ft, &svd, k, log_progress, &l));
        out = sink_reopen(k, dir);
    }
    CHECK_EQ_INT(l.calls, p.n_modules + p.n_whole);
    CHECK_EQ_INT(l.done, l.total);
    CHECK_EQ_INT(l.total, p.n_modules + p.n_whole);
    CHECK_EQ_INT(l.bytes_total, bytes);
    CHECK_EQ_INT(l.bytes_done, bytes);
    CHECK(l.monotonic);
    /* the layer bias is the finetune's, bit for bit */
    if (out) {
        float got[QH];
        char scratch[sizeof got];
        long i = mk_source_find(out, "p.model.layers.0.self_attn.q_proj.LB");
        CHECK(i >= 0);
        if (i >= 0) CHECK_OK(mk_source_read_f32(out, (size_t)i, 0, QH, got, scratch));
        if (i >= 0) CHECK_CLOSE("q_proj bias copied", got, qf[1], QH, 0, 0);
        mk_source_close(out);
    }
    free(dir);
    mk_lora_plan_free(&p);
    mk_arch_free(&arch);
    mk_source_close(base);
    mk_source_close(ft);
}

MK_TEST(lora_combine_whole_tensors_over_the_base)
{
    /* x is saved by ad1 (weight 1.5) and ad3 (0.25), y by ad2 (-0.5): with the base, each
     * becomes base + sum_i w_i (W_i - base); tolerance: f32 rounding of that sum, 1e-6 of
     * the largest |element| */
    mk_source *s1, *s2;
    mk_lora_input in[3];
    mk_lora_in_module m[4];
    mk_lora_in_whole w[3];
    combine_inputs(&s1, &s2, in, m, w, 6);
    float bx[4], by[3];
    fill(bx, 4, 300);
    fill(by, 3, 301);
    tdef bd[] = {{"y.weight", 3, 0, by, MK_F32}, {"x.weight", 4, 0, bx, MK_F32}};
    tdef x3[] = {{"x3", 4, 0, cv[5], MK_F32}};
    mk_source *base = write_open("cbbase", bd, 2), *s3 = write_open("cbx3", x3, 1);
    CHECK(s1 && s2 && base && s3);
    if (!s1 || !s2 || !base || !s3) return;
    w[0].base = 1;
    w[1].base = 0;
    w[2] = (mk_lora_in_whole){"x.weight", 0, 1};
    in[2] = (mk_lora_input){"ad3", s3, NULL, 0, w + 2, 1, NULL, 0, 1, 0.25};
    mk_lora_combine_opts o = {.method = MK_LORA_CAT, .dtype = MK_F32, .base = base};
    mk_lora_plan p;
    CHECK_OK(mk_lora_combine_plan(in, 3, &o, &test_names, &p));
    CHECK_EQ_INT(p.n_whole, 3);
    CHECK(p.n_whole == 3 && p.whole[2].out == p.whole[0].out); /* ad3's x is written with ad1's */
    mk_source *out = combine_out(&p, in, 3, &o, "cbwhole");
    if (out) {
        float gx[4], gy[3], wx[4], wy[3], mx = 0, my = 0;
        char scratch[sizeof gx];
        for (int e = 0; e < 4; e++) {
            wx[e] = bx[e] + ((cv[4][e] - bx[e]) * 1.5f + (cv[5][e] - bx[e]) * 0.25f);
            mx = fmaxf(mx, fabsf(wx[e]));
        }
        for (int e = 0; e < 3; e++) {
            wy[e] = by[e] + (cv[1][e] - by[e]) * -0.5f;
            my = fmaxf(my, fabsf(wy[e]));
        }
        CHECK_OK(mk_source_read_f32(out, (size_t)mk_source_find(out, "x"), 0, 4, gx, scratch));
        CHECK_OK(mk_source_read_f32(out, (size_t)mk_source_find(out, "y"), 0, 3, gy, scratch));
        CHECK_CLOSE("x = base + 1.5 (x1 - base) + 0.25 (x3 - base)", gx, wx, 4, 1e-6 * mx, 0);
        CHECK_CLOSE("y = base - 0.5 (y2 - base)", gy, wy, 3, 1e-6 * my, 0);
        mk_source_close(out);
    }
    mk_lora_plan_free(&p);
    /* a tensor saved by one adapter of weight 1 is copied, bit for bit */
    in[1].weight = 1;
    CHECK_OK(mk_lora_combine_plan(in, 3, &o, &test_names, &p));
    CHECK(p.n_whole == 3 && p.whole[1].input == 1 && p.whole[1].base == -1 && p.whole[0].base == 1);
    mk_lora_plan_free(&p);
    /* without the base: the shared x is an error; against it, a tensor of another shape or
     * one the base lacks */
    o.base = NULL;
    CHECK_ERR(mk_lora_combine_plan(in, 3, &o, &test_names, &p), MK_ERR_USAGE,
              "ad1 and ad3 both save x.weight whole; combining them needs the base model");
    o.base = base;
    w[2].base = 0;
    CHECK_ERR(mk_lora_combine_plan(in, 3, &o, &test_names, &p), MK_ERR_USAGE, "ad3: tensor x3 is F32 [4] but the base's y.weight is [3]");
    w[2].base = -1;
    CHECK_ERR(mk_lora_combine_plan(in, 3, &o, &test_names, &p), MK_ERR_USAGE, "ad3: tensor x3 replaces x.weight, which the base model");
    mk_source_close(s3);
    mk_source_close(base);
    mk_source_close(s1);
    mk_source_close(s2);
}

MK_TEST(lora_combine_refuses_a_module_saved_and_adapted)
{
    /* PEFT never wraps a module that matches a modules_to_save entry in LoRA: an adapter that
     * saves c whole and one that adapts m.c cannot become one adapter */
    mk_source *s1, *s2;
    mk_lora_input in[2];
    mk_lora_in_module m[4];
    mk_lora_in_whole w[2];
    combine_inputs(&s1, &s2, in, m, w, 6);
    CHECK(s1 && s2);
    if (!s1 || !s2) return;
    static const char *const save_c[] = {"x", "c"};
    in[0].save = save_c;
    in[0].n_save = 2;
    mk_lora_combine_opts o = {.method = MK_LORA_CAT, .dtype = MK_F32};
    mk_lora_plan p;
    CHECK_ERR(mk_lora_combine_plan(in, 2, &o, &test_names, &p), MK_ERR_USAGE,
              "ad1 saves c whole (modules_to_save) but ad2 adapts module m.c with LoRA");
    mk_source_close(s1);
    mk_source_close(s2);
}
