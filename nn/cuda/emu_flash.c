/* emu_flash.c - mk_cuda_flash.h on the CPU, as emu.c does mk_cuda.h: each block of the fused
 * attention's kernels (bodies_flash.h) runs its phases one after the other for all MK_CU_NT
 * threads (what the barriers of kernels_flash.cu guarantee), with one shared-memory struct and
 * each thread's accumulators in its own row of a static array. */
#include "mk_cuda_flash.h"

#include "bodies_flash.h"

static mk_cu_fa_sh fsh;
static float facc[MK_CU_NT][4][MK_CU_FA_C];

#define THREADS(stmt) for (unsigned tid = 0; tid < MK_CU_NT; tid++) stmt
#define TILES(n) (((n) + MK_CU_FA_B - 1) / MK_CU_FA_B)

static void fwd(const float *q, const float *k, const float *v, const mk_cu_fa_dims *d, float *out, uint16_t *out16, float *st)
{
    mk_cu_fa_sh *sh = &fsh;
    size_t group = d->nh / d->nkv;
    for (size_t b = 0; b < d->nh * TILES(d->T); b++) {
        size_t h = b / TILES(d->T), i0 = b % TILES(d->T) * MK_CU_FA_B, kvh = h / group;
        THREADS(mk_cu_fa_fwd_init(tid, sh, facc[tid][0]));
        THREADS(mk_cu_fa_load(tid, sh, 0, q, i0, d->nh, h * d->hd, d));
        for (int pass = mk_cu_fa_first_pass(d); pass >= 0; pass = mk_cu_fa_next_pass(pass, d)) {
            for (size_t j0 = mk_cu_fa_k_first(i0, d->window); j0 < d->T && j0 < i0 + MK_CU_FA_B; j0 += MK_CU_FA_B) {
                THREADS(mk_cu_fa_load(tid, sh, 1, k, j0, d->nkv, kvh * d->hd, d));
                THREADS(mk_cu_fa_fwd_score(tid, sh, i0, j0, d));
                THREADS(mk_cu_fa_fwd_stat(tid, sh, pass));
                if (pass == MK_CU_FA_MAX || pass == MK_CU_FA_SUM) continue;
                THREADS(mk_cu_fa_load(tid, sh, 2, v, j0, d->nkv, kvh * d->hd, d));
                THREADS(mk_cu_fa_fwd_acc(tid, sh, facc[tid][0], d));
            }
            if (pass == MK_CU_FA_SUM) THREADS(mk_cu_fa_fwd_inv(tid, sh));
        }
        THREADS(mk_cu_fa_fwd_out(tid, sh, h, i0, facc[tid][0], out, out16, st, d));
    }
}

static void bwd(const float *q, const float *k, const float *v, const float *st, const float *dout, const mk_cu_fa_dims *d,
                float *dq, float *dk, float *dv, float *dsum)
{
    mk_cu_fa_sh *sh = &fsh;
    size_t group = d->nh / d->nkv;
    for (size_t b = 0; b < d->nh * TILES(d->T); b++) { /* dq (and D) per (head, query tile) */
        size_t h = b / TILES(d->T), i0 = b % TILES(d->T) * MK_CU_FA_B, kvh = h / group;
        THREADS(mk_cu_fa_dq_init(tid, sh, h, i0, st, facc[tid][0], d));
        THREADS(mk_cu_fa_load(tid, sh, 0, q, i0, d->nh, h * d->hd, d));
        THREADS(mk_cu_fa_load(tid, sh, 3, dout, i0, d->nh, h * d->hd, d));
        for (int pass = 0; pass < 2; pass++) {
            for (size_t j0 = mk_cu_fa_k_first(i0, d->window); j0 < d->T && j0 < i0 + MK_CU_FA_B; j0 += MK_CU_FA_B) {
                THREADS(mk_cu_fa_load(tid, sh, 1, k, j0, d->nkv, kvh * d->hd, d));
                THREADS(mk_cu_fa_load(tid, sh, 2, v, j0, d->nkv, kvh * d->hd, d));
                THREADS(mk_cu_fa_dq_p(tid, sh, pass, i0, j0, d));
                if (pass) THREADS(mk_cu_fa_dq_acc(tid, sh, facc[tid][0], d));
                else THREADS(mk_cu_fa_dq_dsum(tid, sh));
            }
            if (!pass) THREADS(mk_cu_fa_dq_dfin(tid, sh, h, i0, dsum, d));
        }
        THREADS(mk_cu_fa_dq_out(tid, h, i0, facc[tid][0], dq, d));
    }
    for (size_t b = 0; b < d->nkv * TILES(d->T); b++) { /* dk, dv per (key/value head, key tile) */
        size_t kvh = b / TILES(d->T), j0 = b % TILES(d->T) * MK_CU_FA_B;
        THREADS(mk_cu_fa_dkv_init(tid, kvh, j0, dk, dv, facc[tid], d));
        THREADS(mk_cu_fa_load(tid, sh, 1, k, j0, d->nkv, kvh * d->hd, d));
        THREADS(mk_cu_fa_load(tid, sh, 2, v, j0, d->nkv, kvh * d->hd, d));
        for (size_t h = kvh * group; h < (kvh + 1) * group; h++) {
            for (size_t i0 = j0; i0 < mk_cu_fa_q_end(j0, d); i0 += MK_CU_FA_B) {
                THREADS(mk_cu_fa_load(tid, sh, 0, q, i0, d->nh, h * d->hd, d));
                THREADS(mk_cu_fa_load(tid, sh, 3, dout, i0, d->nh, h * d->hd, d));
                THREADS(mk_cu_fa_dkv_rows(tid, sh, h, i0, st, dsum, d));
                THREADS(mk_cu_fa_dkv_p(tid, sh, i0, j0, d));
                THREADS(mk_cu_fa_dkv_acc(tid, sh, facc[tid], d));
            }
            THREADS(mk_cu_fa_dkv_head(facc[tid], d));
        }
        THREADS(mk_cu_fa_dkv_out(tid, kvh, j0, facc[tid], dk, dv, d));
    }
}

void mk_cu_flash_attention(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                           float scale, long window, float *out, float *st)
{
    mk_cu_fa_dims d = {T, nh, nkv, hd, scale, window, 0};
    fwd(q, k, v, &d, out, NULL, st);
}
void mk_cu_flash_attention16(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                             float scale, long window, uint16_t *out, float *st)
{
    mk_cu_fa_dims d = {T, nh, nkv, hd, scale, window, 1};
    fwd(q, k, v, &d, NULL, out, st);
}
void mk_cu_flash_attention_bwd(const float *q, const float *k, const float *v, const float *st, const float *dout, size_t T,
                               size_t nh, size_t nkv, size_t hd, float scale, long window, float *dq, float *dk, float *dv,
                               float *dsum)
{
    mk_cu_fa_dims d = {T, nh, nkv, hd, scale, window, 0};
    bwd(q, k, v, st, dout, &d, dq, dk, dv, dsum);
}
void mk_cu_flash_attention16_bwd(const float *q, const float *k, const float *v, const float *st, const float *dout, size_t T,
                                 size_t nh, size_t nkv, size_t hd, float scale, long window, float *dq, float *dk, float *dv,
                                 float *dsum)
{
    mk_cu_fa_dims d = {T, nh, nkv, hd, scale, window, 1};
    bwd(q, k, v, st, dout, &d, dq, dk, dv, dsum);
}
