/* test_cuda_flash.c - the CUDA trainer's choice of attention (nn/cuda/train_attn.h) in the CPU
 * emulation: the fused kernel by default, whose activation memory has no [heads, T, T] buffer
 * (mk_cu_train_bytes, estimate's GPU figure and what the trainer allocates all smaller by
 * exactly that), the simple kernel with MK_CUDA_ATTENTION=simple and past head_dim 128, both
 * training a tiny llama as the CPU trainer does. The fused kernels' own checks against the CPU:
 * tests/cuda/cases.c (run by test_cuda_emu.c and `make test-cuda`). */
#include "harness.h"

#include <stdlib.h>

#include "../../core/mk_thread.h"
#include "../../formats/model.h"
#include "../../nn/cuda/cu_train.h"
#include "../../nn/cuda/mem.h"
#include "../../nn/cuda/mk_cuda.h"
#include "../../train/mem.h"
#include "../cuda/cases.h"

/* test_cuda_emu.c's tolerances (the emulation against the CPU) */
static const mk_cu_tol EMU_TOL = {"emulated f32", 0.0, 1e-6, 1e-5, 1e-5, 1e-5, 4e-6, 0x1p-8, 4e-3, 1e-4};

static void report(bool ok, const char *what, const char *detail)
{
    if (!ok) mk_test_fail(__FILE__, __LINE__, "%s: %s", what, detail);
    if (getenv("MK_CU_VERBOSE")) printf("%s %s: %s\n", ok ? "ok" : "FAIL", what, detail);
}

/* the most the trainer holds at once over one pass (the emulation counts its allocations) */
static uint64_t peak_of(mk_nn_train *t, size_t nseq, size_t T, bool ck)
{
    int32_t tok[3 * 24];
    float w[3 * 24];
    for (size_t i = 0; i < nseq * T; i++) tok[i] = (int32_t)(i * 7 % 80), w[i] = 1;
    uint64_t peak = 0;
    double wnll = 0;
    mk_cu_emu_memory(0, NULL);
    mk_cu_train *g = NULL;
    CHECK_OK(mk_cu_train_open(t, nseq, T, ck, &g));
    if (g) CHECK_OK(mk_cu_train_pass(g, tok, w, nseq, T, 0.01f, true, &wnll));
    mk_cu_train_close(g);
    mk_cu_emu_memory(0, &peak);
    return peak;
}

/* The fused attention's memory: per layer's kept activations and in the backward's scratch,
 * [2, heads, T] per sequence where the simple one keeps [heads, T, T]; the trainer allocates
 * what mk_cu_train_bytes says on both paths, and estimate's GPU figure moves with it. */
MK_TEST(cuda_flash_drops_the_t_by_t_buffer)
{
    char dir[1024], err[1200] = "";
    snprintf(dir, sizeof dir, "%s/cuda-flash-mem", mk_test_tmpdir());
    mk_cu_tmodel m = {0};
    bool made = mk_cu_tmodel_synth(getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c", dir,
                                   "--hidden 48 --layers 3 --heads 6 --kv-heads 2 --intermediate 96 --vocab 80", err, sizeof err) &&
                mk_cu_tmodel_open(dir, &m) == MK_OK;
    CHECK_MSG(made, "%s", err[0] ? err : mk_errmsg());
    mk_threads_set(1);
    const size_t nseq = 3, T = 24, nh = 6, L = 3;
    CHECK(made && mk_cu_attn_flash(&m.cfg));
    for (int k = 0; made && k < 4; k++) { /* f32, bf16; each without and with checkpointing */
        bool ck = k & 1, bf = k >= 2;
        if (k == 2) CHECK_OK(mk_nn_train_set_bf16(m.t));
        uint64_t est[2], peak[2], gpu[2];
        for (int simple = 0; simple < 2; simple++) {
            if (simple) setenv("MK_CUDA_ATTENTION", "simple", 1);
            est[simple] = (bf ? mk_cu_train_bytes16 : mk_cu_train_bytes)(&m.cfg, mk_nn_train_numel(m.t), nseq, T, ck);
            peak[simple] = peak_of(m.t, nseq, T, ck);
            mk_train_mem_req rq = {0, 0, false, bf, ck, nseq, T, NULL, false};
            mk_train_mem tm;
            mk_train_mem_of(&m.cfg, mk_nn_train_numel(m.t), &rq, &tm);
            gpu[simple] = tm.gpu;
            unsetenv("MK_CUDA_ATTENTION");
            CHECK_MSG(peak[simple] == est[simple], "bf16 %d checkpointing %d simple %d: the trainer holds %llu bytes, the estimate is %llu",
                      bf, ck, simple, (unsigned long long)peak[simple], (unsigned long long)est[simple]);
        }
        /* the layers' kept buffers (one with checkpointing) and the backward's scratch */
        uint64_t per = nh * T * (T - 2) * sizeof(float), drop = ((ck ? 1 : L) * nseq + 1) * per;
        CHECK_MSG(est[1] - est[0] == drop, "bf16 %d checkpointing %d: fused %llu, simple %llu bytes: %llu less, want %llu", bf, ck,
                  (unsigned long long)est[0], (unsigned long long)est[1], (unsigned long long)(est[1] - est[0]),
                  (unsigned long long)drop);
        CHECK_MSG(gpu[1] - gpu[0] == drop, "bf16 %d checkpointing %d: estimate's GPU figure %llu fused, %llu simple", bf, ck,
                  (unsigned long long)gpu[0], (unsigned long long)gpu[1]);
    }
    /* anything else in MK_CUDA_ATTENTION is refused, naming the two */
    setenv("MK_CUDA_ATTENTION", "fast", 1);
    mk_cu_train *g = NULL;
    if (made) CHECK_ERR(mk_cu_train_open(m.t, nseq, T, false, &g), MK_ERR_USAGE, "MK_CUDA_ATTENTION is \"fast\": flash");
    setenv("MK_CUDA_ATTENTION", "flash", 1);
    CHECK(!made || mk_cu_attn_flash(&m.cfg));
    unsetenv("MK_CUDA_ATTENTION");
    mk_threads_set(0);
    mk_cu_tmodel_close(&m);
}

/* The simple attention still trains as the CPU does (tests/cuda/cases_attn.c) */
MK_TEST(cuda_simple_attention_trains_as_the_cpu)
{
    mk_threads_set(1);
    const char *bin = getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c";
    CHECK_EQ_INT(mk_cu_run_attn_paths(bin, mk_test_tmpdir(), &EMU_TOL, report), 0);
    mk_threads_set(0);
}
