/* ops.c - see ops.h. Formulas follow transformers' modeling code (LlamaRMSNorm,
 * GemmaRMSNorm, apply_rotary_pos_emb / rotate_half, eager_attention_forward, ACT2FN). */
#include "ops.h"

#include "../core/mk_thread.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn_omp.h"

/* Below this many multiply-adds a product runs on one thread. */
#define PAR_FLOPS (1u << 22)

void mk_nn_blas_init(void)
{
    /* one BLAS thread: the kernels split work across OpenMP threads themselves, so the two
     * thread pools never wait on each other */
    openblas_set_num_threads(1);
}

/* Columns [o0, o1) of y = x W^T (+ b). */
static void linear_cols(const float *x, size_t T, size_t in, const float *w, size_t out, bool w_in_out, const float *bias,
                        float *y, size_t o0, size_t o1)
{
    size_t n = o1 - o0;
    if (bias)
        for (size_t t = 0; t < T; t++) memcpy(y + t * out + o0, bias + o0, n * sizeof *y);
    const float *wb = w_in_out ? w + o0 : w + o0 * in;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, w_in_out ? CblasNoTrans : CblasTrans, (int)T, (int)n, (int)in, 1.0f, x, (int)in,
                wb, w_in_out ? (int)out : (int)in, bias ? 1.0f : 0.0f, y + o0, (int)out);
}

void mk_nn_linear(const float *x, size_t T, size_t in, const float *w, size_t out, bool w_in_out, const float *bias,
                  float *y)
{
    int nt = mk_threads_get();
    if (nt <= 1 || (double)T * (double)in * (double)out < PAR_FLOPS) {
        linear_cols(x, T, in, w, out, w_in_out, bias, y, 0, out);
        return;
    }
    /* column blocks, a multiple of 16 wide, one or more per thread */
    size_t nb = (size_t)nt * 2, blk = ((out + nb - 1) / nb + 15) / 16 * 16;
    nb = (out + blk - 1) / blk;
    MK_OMP("omp parallel for schedule(dynamic, 1)")
    for (size_t b = 0; b < nb; b++) {
        size_t o0 = b * blk, o1 = o0 + blk < out ? o0 + blk : out;
        linear_cols(x, T, in, w, out, w_in_out, bias, y, o0, o1);
    }
}

void mk_nn_linear_into(const float *x, size_t T, size_t in, const float *w, size_t out, float *y, size_t ldy)
{
    int nt = mk_threads_get();
    size_t nb = nt > 1 ? (size_t)nt * 2 : 1, blk = ((out + nb - 1) / nb + 15) / 16 * 16;
    nb = (out + blk - 1) / blk;
    MK_OMP("omp parallel for schedule(dynamic, 1) if (nb > 1)")
    for (size_t b = 0; b < nb; b++) {
        size_t o0 = b * blk, n = o0 + blk < out ? blk : out - o0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)n, (int)in, 1.0f, x, (int)in, w + o0 * in, (int)in,
                    0.0f, y + o0, (int)ldy);
    }
}

void mk_nn_linear_ref(const float *x, size_t T, size_t in, const float *w, size_t out, bool w_in_out, const float *bias,
                      float *y)
{
    for (size_t t = 0; t < T; t++)
        for (size_t o = 0; o < out; o++) {
            double s = bias ? bias[o] : 0.0;
            for (size_t i = 0; i < in; i++) s += (double)x[t * in + i] * (double)(w_in_out ? w[i * out + o] : w[o * in + i]);
            y[t * out + o] = (float)s;
        }
}

void mk_nn_rmsnorm(float *out, const float *x, const float *w, size_t T, size_t d, float eps, bool one_plus)
{
    MK_OMP("omp parallel for schedule(static) if (T * d > 65536)")
    for (size_t t = 0; t < T; t++) {
        const float *r = x + t * d;
        double ss = 0;
        for (size_t i = 0; i < d; i++) ss += (double)r[i] * r[i];
        float inv = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
        float *o = out + t * d;
        if (one_plus)
            for (size_t i = 0; i < d; i++) o[i] = (r[i] * inv) * (1.0f + w[i]);
        else
            for (size_t i = 0; i < d; i++) o[i] = w[i] * (r[i] * inv);
    }
}

void mk_nn_layernorm(float *out, const float *x, const float *w, const float *b, size_t T, size_t d, float eps)
{
    MK_OMP("omp parallel for schedule(static) if (T * d > 65536)")
    for (size_t t = 0; t < T; t++) {
        const float *r = x + t * d;
        double m = 0, v = 0;
        for (size_t i = 0; i < d; i++) m += r[i];
        m /= (double)d;
        for (size_t i = 0; i < d; i++) v += ((double)r[i] - m) * ((double)r[i] - m);
        v /= (double)d;
        float inv = (float)(1.0 / sqrt(v + (double)eps)), mf = (float)m;
        float *o = out + t * d;
        for (size_t i = 0; i < d; i++) o[i] = (r[i] - mf) * inv * w[i] + (b ? b[i] : 0.0f);
    }
}

void mk_nn_rope_rotate(float *x, size_t T, size_t n_heads, size_t head_dim, const mk_nn_rope_tab *r, bool inverse)
{
    size_t h2 = r->half;
    /* the inverse rotation is the same one by -angle; negating sin is exact, so each form
     * computes a c - b s, b c + a s (or a c + b s, b c - a s) bit for bit */
    const float sg = inverse ? -1.0f : 1.0f;
    MK_OMP("omp parallel for schedule(static) if (T * n_heads * head_dim > 65536)")
    for (size_t t = 0; t < T; t++) {
        const float *c = r->cos + t * h2, *s = r->sin + t * h2;
        for (size_t h = 0; h < n_heads; h++) {
            float *v = x + t * n_heads * head_dim + h * head_dim;
            for (size_t i = 0; i < h2; i++) {
                float a = v[i], b = v[i + h2], si = sg * s[i];
                v[i] = a * c[i] - b * si;
                v[i + h2] = b * c[i] + a * si;
            }
        }
    }
}

void mk_nn_rope_apply(float *x, size_t T, size_t n_heads, size_t head_dim, const mk_nn_rope_tab *r)
{
    mk_nn_rope_rotate(x, T, n_heads, head_dim, r, false);
}

/* Query rows per block of the BLAS attention: the scores of a block are ATT_BLOCK x T floats. */
#define ATT_BLOCK 256

void mk_nn_softmax_rows(float *s, size_t ld, size_t i0, size_t i1, float scale, float softcap, long window)
{
    for (size_t i = i0; i < i1; i++) {
        float *p = s + (i - i0) * ld;
        size_t j0 = window > 0 && i + 1 > (size_t)window ? i + 1 - (size_t)window : 0;
        float mx = -INFINITY;
        for (size_t j = j0; j <= i; j++) {
            float v = p[j] * scale;
            if (softcap > 0) v = softcap * tanhf(v / softcap);
            p[j] = v;
            if (v > mx) mx = v;
        }
        double sum = 0;
        for (size_t j = j0; j <= i; j++) {
            p[j] = expf(p[j] - mx);
            sum += p[j];
        }
        float inv = (float)(1.0 / sum);
        for (size_t j = 0; j < j0; j++) p[j] = 0;
        for (size_t j = j0; j <= i; j++) p[j] *= inv;
        for (size_t j = i + 1; j < i1; j++) p[j] = 0;
    }
}

size_t mk_nn_attention_scratch(size_t T) { return (size_t)mk_threads_get() * (T < ATT_BLOCK ? T : ATT_BLOCK) * T; }

void mk_nn_attention(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                     float scale, float softcap, long window, float *out, float *scratch)
{
    size_t group = nh / nkv, qs = nh * hd, ks = nkv * hd, blk = T < ATT_BLOCK ? T : ATT_BLOCK;
    size_t nblk = (T + blk - 1) / blk;
    /* one (head, block of query rows) per work item, each thread with its own scores */
    MK_OMP("omp parallel for schedule(dynamic, 1)")
    for (size_t w = 0; w < nh * nblk; w++) {
        size_t h = w / nblk, i0 = (w % nblk) * blk, kvh = h / group;
        size_t i1 = T - i0 < blk ? T : i0 + blk, nb = i1 - i0;
        float *sc = scratch + (size_t)mk_nn_thread_id() * blk * T;
        /* S [nb, i1] = Q[i0:i1, h] K[0:i1, kvh]^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)i1, (int)hd, 1.0f, q + i0 * qs + h * hd, (int)qs,
                    k + kvh * hd, (int)ks, 0.0f, sc, (int)i1);
        mk_nn_softmax_rows(sc, i1, i0, i1, scale, softcap, window);
        /* O[i0:i1, h] = P [nb, i1] V[0:i1, kvh] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, (int)hd, (int)i1, 1.0f, sc, (int)i1, v + kvh * hd,
                    (int)ks, 0.0f, out + i0 * qs + h * hd, (int)qs);
    }
}

void mk_nn_attention_ref(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                         float scale, float softcap, long window, float *out, float *scratch)
{
    size_t group = nh / nkv, qs = nh * hd, ks = nkv * hd;
    for (size_t h = 0; h < nh; h++) {
        for (size_t i = 0; i < T; i++) {
            float *p = scratch;
            const float *qi = q + i * qs + h * hd;
            size_t kvh = h / group;
            for (size_t j = 0; j <= i; j++) { /* one query, key by key, summed in double */
                double d = 0;
                for (size_t e = 0; e < hd; e++) d += (double)qi[e] * (double)k[j * ks + kvh * hd + e];
                p[j] = (float)d;
            }
            mk_nn_softmax_rows(p, T, i, i + 1, scale, softcap, window);
            for (size_t e = 0; e < hd; e++) {
                double o = 0;
                for (size_t j = 0; j <= i; j++) o += (double)p[j] * (double)v[j * ks + kvh * hd + e];
                out[i * qs + h * hd + e] = (float)o;
            }
        }
    }
}

/* gelu tanh approximation: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) */
static float gelu_tanh(float x) { return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))); }

static float act1(mk_act a, float x)
{
    switch (a) {
    case MK_ACT_SILU: return x / (1.0f + expf(-x));
    case MK_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case MK_ACT_GELU_TANH: return gelu_tanh(x);
    case MK_ACT_RELU: return x > 0 ? x : 0;
    default: return x;
    }
}

void mk_nn_act(mk_act a, float *x, size_t n)
{
    MK_OMP("omp parallel for schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) x[i] = act1(a, x[i]);
}

void mk_nn_act_gated(mk_act a, const float *gate, const float *up, float *out, size_t n)
{
    MK_OMP("omp parallel for schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) out[i] = act1(a, gate[i]) * up[i];
}

void mk_nn_add(float *y, const float *x, size_t n)
{
    MK_OMP("omp parallel for schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}
