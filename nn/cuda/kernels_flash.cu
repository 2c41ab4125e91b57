/* kernels_flash.cu - mk_cuda_flash.h on a CUDA device: the bodies of bodies_flash.h in
 * __global__ kernels, one block of MK_CU_NT threads per (head, tile of queries) or (key/value
 * head, tile of keys), a barrier between phases (emu_flash.c runs the same phases in the same
 * order), launched on the default stream; a launch's error is kept by mk_cu_launched for
 * mk_cu_sync. */
#include <cuda_runtime.h>

/* the C headers, read as C++ */
#define _Noreturn [[noreturn]]
extern "C" {
#include "mk_cuda_flash.h"
#include "mk_cuda_lora.h"
}
#undef _Noreturn

#include "bodies_flash.h"

#define TILES(n) (((n) + MK_CU_FA_B - 1) / MK_CU_FA_B)
#define SYNC(stmt) (stmt, __syncthreads())

__global__ static void k_fa_fwd(const float *q, const float *k, const float *v, mk_cu_fa_dims d, float *out, uint16_t *out16,
                                float *st)
{
    __shared__ mk_cu_fa_sh sh;
    float acc[MK_CU_FA_C];
    unsigned tid = threadIdx.x;
    size_t h = blockIdx.x / TILES(d.T), i0 = blockIdx.x % TILES(d.T) * MK_CU_FA_B, kvh = h / (d.nh / d.nkv);
    mk_cu_fa_fwd_init(tid, &sh, acc);
    SYNC(mk_cu_fa_load(tid, &sh, 0, q, i0, d.nh, h * d.hd, &d));
    for (int pass = mk_cu_fa_first_pass(&d); pass >= 0; pass = mk_cu_fa_next_pass(pass, &d)) {
        for (size_t j0 = mk_cu_fa_k_first(i0, d.window); j0 < d.T && j0 < i0 + MK_CU_FA_B; j0 += MK_CU_FA_B) {
            SYNC(mk_cu_fa_load(tid, &sh, 1, k, j0, d.nkv, kvh * d.hd, &d));
            SYNC(mk_cu_fa_fwd_score(tid, &sh, i0, j0, &d));
            SYNC(mk_cu_fa_fwd_stat(tid, &sh, pass));
            if (pass == MK_CU_FA_MAX || pass == MK_CU_FA_SUM) continue;
            SYNC(mk_cu_fa_load(tid, &sh, 2, v, j0, d.nkv, kvh * d.hd, &d));
            SYNC(mk_cu_fa_fwd_acc(tid, &sh, acc, &d));
        }
        if (pass == MK_CU_FA_SUM) SYNC(mk_cu_fa_fwd_inv(tid, &sh));
    }
    mk_cu_fa_fwd_out(tid, &sh, h, i0, acc, out, out16, st, &d);
}

__global__ static void k_fa_dq(const float *q, const float *k, const float *v, const float *st, const float *dout,
                               mk_cu_fa_dims d, float *dq, float *dsum)
{
    __shared__ mk_cu_fa_sh sh;
    float acc[MK_CU_FA_C];
    unsigned tid = threadIdx.x;
    size_t h = blockIdx.x / TILES(d.T), i0 = blockIdx.x % TILES(d.T) * MK_CU_FA_B, kvh = h / (d.nh / d.nkv);
    mk_cu_fa_dq_init(tid, &sh, h, i0, st, acc, &d);
    mk_cu_fa_load(tid, &sh, 0, q, i0, d.nh, h * d.hd, &d);
    SYNC(mk_cu_fa_load(tid, &sh, 3, dout, i0, d.nh, h * d.hd, &d));
    for (int pass = 0; pass < 2; pass++) {
        for (size_t j0 = mk_cu_fa_k_first(i0, d.window); j0 < d.T && j0 < i0 + MK_CU_FA_B; j0 += MK_CU_FA_B) {
            mk_cu_fa_load(tid, &sh, 1, k, j0, d.nkv, kvh * d.hd, &d);
            SYNC(mk_cu_fa_load(tid, &sh, 2, v, j0, d.nkv, kvh * d.hd, &d));
            SYNC(mk_cu_fa_dq_p(tid, &sh, pass, i0, j0, &d));
            if (pass) SYNC(mk_cu_fa_dq_acc(tid, &sh, acc, &d));
            else SYNC(mk_cu_fa_dq_dsum(tid, &sh));
        }
        if (!pass) SYNC(mk_cu_fa_dq_dfin(tid, &sh, h, i0, dsum, &d));
    }
    mk_cu_fa_dq_out(tid, h, i0, acc, dq, &d);
}

__global__ static void k_fa_dkv(const float *q, const float *k, const float *v, const float *st, const float *dout,
                                const float *dsum, mk_cu_fa_dims d, float *dk, float *dv)
{
    __shared__ mk_cu_fa_sh sh;
    float acc[4][MK_CU_FA_C];
    unsigned tid = threadIdx.x;
    size_t kvh = blockIdx.x / TILES(d.T), j0 = blockIdx.x % TILES(d.T) * MK_CU_FA_B, group = d.nh / d.nkv;
    mk_cu_fa_dkv_init(tid, kvh, j0, dk, dv, acc, &d);
    mk_cu_fa_load(tid, &sh, 1, k, j0, d.nkv, kvh * d.hd, &d);
    SYNC(mk_cu_fa_load(tid, &sh, 2, v, j0, d.nkv, kvh * d.hd, &d));
    for (size_t h = kvh * group; h < (kvh + 1) * group; h++) {
        for (size_t i0 = j0; i0 < mk_cu_fa_q_end(j0, &d); i0 += MK_CU_FA_B) {
            mk_cu_fa_load(tid, &sh, 0, q, i0, d.nh, h * d.hd, &d);
            mk_cu_fa_load(tid, &sh, 3, dout, i0, d.nh, h * d.hd, &d);
            SYNC(mk_cu_fa_dkv_rows(tid, &sh, h, i0, st, dsum, &d));
            SYNC(mk_cu_fa_dkv_p(tid, &sh, i0, j0, &d));
            SYNC(mk_cu_fa_dkv_acc(tid, &sh, acc, &d));
        }
        mk_cu_fa_dkv_head(acc, &d);
    }
    mk_cu_fa_dkv_out(tid, kvh, j0, acc, dk, dv, &d);
}

static void fwd(const float *q, const float *k, const float *v, mk_cu_fa_dims d, float *out, uint16_t *out16, float *st)
{
    k_fa_fwd<<<(unsigned)(d.nh * TILES(d.T)), MK_CU_NT>>>(q, k, v, d, out, out16, st);
    mk_cu_launched("fused attention");
}
static void bwd(const float *q, const float *k, const float *v, const float *st, const float *dout, mk_cu_fa_dims d, float *dq,
                float *dk, float *dv, float *dsum)
{
    k_fa_dq<<<(unsigned)(d.nh * TILES(d.T)), MK_CU_NT>>>(q, k, v, st, dout, d, dq, dsum);
    mk_cu_launched("fused attention backward dq");
    k_fa_dkv<<<(unsigned)(d.nkv * TILES(d.T)), MK_CU_NT>>>(q, k, v, st, dout, dsum, d, dk, dv);
    mk_cu_launched("fused attention backward dk dv");
}

extern "C" void mk_cu_flash_attention(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv, size_t hd,
                                      float scale, long window, float *out, float *st)
{
    fwd(q, k, v, mk_cu_fa_dims{T, nh, nkv, hd, scale, window, 0}, out, NULL, st);
}
extern "C" void mk_cu_flash_attention16(const float *q, const float *k, const float *v, size_t T, size_t nh, size_t nkv,
                                        size_t hd, float scale, long window, uint16_t *out, float *st)
{
    fwd(q, k, v, mk_cu_fa_dims{T, nh, nkv, hd, scale, window, 1}, NULL, out, st);
}
extern "C" void mk_cu_flash_attention_bwd(const float *q, const float *k, const float *v, const float *st, const float *dout,
                                          size_t T, size_t nh, size_t nkv, size_t hd, float scale, long window, float *dq,
                                          float *dk, float *dv, float *dsum)
{
    bwd(q, k, v, st, dout, mk_cu_fa_dims{T, nh, nkv, hd, scale, window, 0}, dq, dk, dv, dsum);
}
extern "C" void mk_cu_flash_attention16_bwd(const float *q, const float *k, const float *v, const float *st, const float *dout,
                                            size_t T, size_t nh, size_t nkv, size_t hd, float scale, long window, float *dq,
                                            float *dk, float *dv, float *dsum)
{
    bwd(q, k, v, st, dout, mk_cu_fa_dims{T, nh, nkv, hd, scale, window, 1}, dq, dk, dv, dsum);
}
