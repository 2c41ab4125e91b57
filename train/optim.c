/* optim.c - see optim.h. AdamW follows torch/optim/adamw.py's single-tensor path (the one
 * torch takes on the CPU): p *= 1 - lr wd; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
 * p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), elementwise in f32 with the
 * scalars computed in double as Python does. */
#include "optim.h"

#include <math.h>
#include <string.h>

#ifdef _OPENMP
#define MK_OMP(x) _Pragma(x)
#else
#define MK_OMP(x)
#endif

#define NORM_BLOCK 65536

static const char *const sched_names[MK_SCHED_COUNT] = {"constant", "linear", "cosine"};

mk_sched mk_sched_parse(const char *name)
{
    for (int i = 0; i < MK_SCHED_COUNT; i++)
        if (strcmp(name, sched_names[i]) == 0) return (mk_sched)i;
    return MK_SCHED_COUNT;
}

const char *mk_sched_name(mk_sched s) { return s < MK_SCHED_COUNT ? sched_names[s] : "?"; }

double mk_sched_lr(mk_sched s, double lr, long step, long warmup, long total)
{
    if (step < warmup) return lr * (double)step / (double)(warmup > 1 ? warmup : 1);
    double rest = (double)(total - warmup > 1 ? total - warmup : 1);
    switch (s) {
    case MK_SCHED_LINEAR: {
        double f = (double)(total - step) / rest;
        return lr * (f > 0 ? f : 0);
    }
    case MK_SCHED_COSINE: {
        double f = 0.5 * (1.0 + cos(M_PI * (double)(step - warmup) / rest));
        return lr * (f > 0 ? f : 0);
    }
    default: return lr;
    }
}

void mk_adamw_step(const mk_adamw *o, double lr, long step, bool decay, float *w, const float *g, float *m, float *v,
                   uint64_t n)
{
    float keep = (float)(1.0 - lr * (decay ? o->weight_decay : 0.0));
    float a1 = (float)(1.0 - o->beta1), b2 = (float)o->beta2, a2 = (float)(1.0 - o->beta2);
    double bc1 = 1.0 - pow(o->beta1, (double)step), bc2 = 1.0 - pow(o->beta2, (double)step);
    float step_size = (float)(lr / bc1), bc2s = (float)sqrt(bc2), eps = (float)o->eps;
    MK_OMP("omp parallel for schedule(static) if (n > 65536)")
    for (uint64_t i = 0; i < n; i++) {
        float wi = decay ? w[i] * keep : w[i];
        float mi = m[i] + a1 * (g[i] - m[i]);
        float vi = v[i] * b2 + a2 * (g[i] * g[i]);
        m[i] = mi, v[i] = vi;
        w[i] = wi - step_size * (mi / (sqrtf(vi) / bc2s + eps));
    }
}

double mk_grad_norm(const float *g, uint64_t n)
{
    uint64_t nb = (n + NORM_BLOCK - 1) / NORM_BLOCK;
    double tot = 0;
    /* per block sums in parallel, added in block order */
    double part[64];
    for (uint64_t b0 = 0; b0 < nb; b0 += 64) {
        uint64_t k = nb - b0 < 64 ? nb - b0 : 64;
        MK_OMP("omp parallel for schedule(static)")
        for (uint64_t b = 0; b < k; b++) {
            uint64_t i0 = (b0 + b) * NORM_BLOCK, i1 = i0 + NORM_BLOCK < n ? i0 + NORM_BLOCK : n;
            double s = 0;
            for (uint64_t i = i0; i < i1; i++) s += (double)g[i] * g[i];
            part[b] = s;
        }
        for (uint64_t b = 0; b < k; b++) tot += part[b];
    }
    return sqrt(tot);
}

float mk_grad_clip(float *g, uint64_t n, double norm, double max_norm)
{
    if (max_norm <= 0) return 1.0f;
    float c = (float)(max_norm / (norm + 1e-6));
    if (c >= 1.0f) return 1.0f;
    MK_OMP("omp parallel for schedule(static) if (n > 65536)")
    for (uint64_t i = 0; i < n; i++) g[i] *= c;
    return c;
}
