/* rope.c - rotary tables with the scaling variants of transformers' modeling_rope_utils.py
 * (default, linear, dynamic NTK, yarn, llama3, longrope): the inverse frequencies in f32 as
 * torch computes them, cos and sin of position x frequency, times the variant's attention
 * factor. Part of ops.h. */
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* 1 / base^(2i / dim) in f32, as torch: arange(0, dim, 2).float() / dim, then base ** that. */
static float inv_freq_at(double base, size_t i, size_t dim)
{
    float e = (float)(2 * i) / (float)dim;
    float p = (float)pow(base, (double)e);
    return 1.0f / p;
}

static double yarn_mscale(double scale, double mscale)
{
    return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

/* yarn: interpolate the low frequencies, keep the high ones, ramp between (YaRN, Peng et al.
 * 2023). */
static double yarn(const mk_rope *r, size_t dim, long max_pos, float *inv)
{
    long orig = r->original_max_pos ? r->original_max_pos : max_pos;
    double factor = r->factor_set ? r->factor : (double)max_pos / (double)orig;
    double af = r->attention_factor;
    if (af <= 0) af = r->mscale > 0 && r->mscale_all_dim > 0 ? yarn_mscale(factor, r->mscale) / yarn_mscale(factor, r->mscale_all_dim)
                                                              : yarn_mscale(factor, 1.0);
    double base = r->theta;
    /* the dimension that rotates `rot` times over the original context */
    double lo = floor((double)dim * log((double)orig / (r->beta_fast * 2 * M_PI)) / (2 * log(base)));
    double hi = ceil((double)dim * log((double)orig / (r->beta_slow * 2 * M_PI)) / (2 * log(base)));
    if (lo < 0) lo = 0;
    if (hi > (double)dim - 1) hi = (double)dim - 1;
    if (lo == hi) hi += 0.001;
    for (size_t i = 0; i < dim / 2; i++) {
        float pf = (float)pow(base, (double)((float)(2 * i) / (float)dim));
        float extra = 1.0f / pf, inter = 1.0f / ((float)factor * pf);
        float ramp = (float)(((double)(float)i - lo) / (hi - lo));
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float ef = 1.0f - ramp;
        inv[i] = inter * (1.0f - ef) + extra * ef;
    }
    return af;
}

/* llama3: low frequencies divided by factor, high ones kept, a smooth blend between. */
static void llama3(const mk_rope *r, size_t dim, long max_pos, float *inv)
{
    double old = (double)(r->original_max_pos ? r->original_max_pos : max_pos);
    double lo_wave = old / r->low_freq_factor, hi_wave = old / r->high_freq_factor;
    float factor = (float)r->factor;
    for (size_t i = 0; i < dim / 2; i++) {
        float f = inv_freq_at(r->theta, i, dim);
        double wave = 2 * M_PI / (double)f;
        float v = wave > lo_wave ? f / factor : f;
        if (!(wave < hi_wave) && !(wave > lo_wave)) {
            float smooth = (float)((old / wave - r->low_freq_factor) / (r->high_freq_factor - r->low_freq_factor));
            v = (1.0f - smooth) * v / factor + smooth * v;
        }
        inv[i] = v;
    }
}

mk_status mk_nn_rope_init(mk_nn_rope_tab *t, const mk_rope *r, size_t head_dim, long max_pos, size_t T)
{
    memset(t, 0, sizeof *t);
    size_t dim = (size_t)((double)head_dim * r->partial_rotary);
    if (dim < 2 || dim > head_dim) return mk_error(MK_ERR_FORMAT, "rotary dimension %zu of a %zu-wide head", dim, head_dim);
    size_t half = dim / 2;
    float *inv = mk_calloc(half, sizeof *inv);
    if (!inv) return MK_ERR_NOMEM;
    double af = 1.0, base = r->theta;
    switch (r->type) {
    case MK_ROPE_DEFAULT:
    case MK_ROPE_LINEAR:
    case MK_ROPE_DYNAMIC:
        if (r->type == MK_ROPE_DYNAMIC && max_pos > 0 && (long)T > max_pos) /* NTK: the base grows past max_pos */
            base = base * pow(r->factor * (double)T / (double)max_pos - (r->factor - 1), (double)dim / (double)(dim - 2));
        for (size_t i = 0; i < half; i++) inv[i] = inv_freq_at(base, i, dim);
        if (r->type == MK_ROPE_LINEAR)
            for (size_t i = 0; i < half; i++) inv[i] /= (float)r->factor;
        break;
    case MK_ROPE_LLAMA3: llama3(r, dim, max_pos, inv); break;
    case MK_ROPE_YARN: af = yarn(r, dim, max_pos, inv); break;
    case MK_ROPE_LONGROPE: {
        long orig = r->original_max_pos ? r->original_max_pos : max_pos;
        double factor = r->factor_set ? r->factor : (double)max_pos / (double)orig;
        af = r->attention_factor > 0 ? r->attention_factor
             : factor <= 1.0        ? 1.0
                                    : sqrt(1 + log(factor) / log((double)orig));
        bool use_long = (long)T > orig;
        const double *ext = use_long ? r->long_factor : r->short_factor;
        size_t n_ext = use_long ? r->n_long : r->n_short;
        if (n_ext != half) {
            free(inv);
            return mk_error(MK_ERR_FORMAT, "rope_scaling.%s_factor has %zu entries, the rotary half is %zu",
                            use_long ? "long" : "short", n_ext, half);
        }
        for (size_t i = 0; i < half; i++) {
            float p = (float)pow(base, (double)((float)(2 * i) / (float)dim));
            inv[i] = 1.0f / ((float)ext[i] * p);
        }
        break;
    }
    default: free(inv); return mk_error(MK_ERR_UNSUPPORTED, "this RoPE scaling variant is not supported");
    }
    t->T = T;
    t->half = half;
    t->cos = mk_malloc(T * half * sizeof(float) + 1);
    t->sin = mk_malloc(T * half * sizeof(float) + 1);
    if (!t->cos || !t->sin) {
        free(inv);
        mk_nn_rope_free(t);
        return MK_ERR_NOMEM;
    }
    float a = (float)af;
    for (size_t p = 0; p < T; p++)
        for (size_t i = 0; i < half; i++) {
            float ang = (float)p * inv[i];
            t->cos[p * half + i] = (float)cos((double)ang) * a;
            t->sin[p * half + i] = (float)sin((double)ang) * a;
        }
    free(inv);
    return MK_OK;
}

void mk_nn_rope_free(mk_nn_rope_tab *t)
{
    if (!t) return;
    free(t->cos);
    free(t->sin);
    memset(t, 0, sizeof *t);
}
