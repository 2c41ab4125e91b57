/* test_cuda_emu.c - the CUDA kernels' per-thread bodies (nn/cuda/bodies.h) run over their grids
 * on the CPU (nn/cuda/emu.c) against the CPU kernels they must match (tests/cuda/cases.c):
 * the same comparisons `make test-cuda` runs on a device, here with the emulation's
 * tolerances; and the CUDA trainer (nn/cuda/train.c) on the emulated kernels against the CPU
 * trainer on tiny llama, mistral and gemma models. No GPU or nvcc is needed. */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#include "../../core/mk_thread.h"
#include "../../formats/model.h"
#include "../../nn/cuda/cu_train.h"
#include "../../nn/cuda/mk_cuda.h"
#include "../../train/mem.h"
#include "../cuda/cases.h"

/* The emulation runs the bodies with the CPU's compiler flags (no contraction into fused
 * multiply-adds), so elementwise kernels are the CPU's bytes; reductions are summed in a tree
 * in double instead of in order (1e-6 of the largest output); attention sums its scores in
 * double where the CPU's BLAS uses float (1e-5); products go through BLAS in another order. */
/* Through a 2-layer model the differences add up to 1e-6 of the largest gradient of a tensor
 * (1e-5 allowed); the loss after 10 AdamW steps (about 7) moves by up to 1.3e-6, a few f32
 * ulps, with the BLAS kernels OpenBLAS picks for the CPU (its AVX-512 ones on this machine),
 * so 4e-6 is allowed. bf16 (mk_cuda16.h): the rounded outputs absorb those
 * differences (measured: 0, the CPU's bytes, in every kernel and the whole bf16 trainer); a
 * sum on the other side of a rounding boundary (another BLAS's order) moves one element by a
 * bf16 ulp, allowed up to half the largest output's ulp (2^-8) in a kernel, and through the
 * model 4e-3 of a tensor's largest gradient and 1e-4 of the loss. A rounding point left out
 * of the attention backward moves the gradients by 1.4e-2 and the loss by 3e-4. */
static const mk_cu_tol EMU_TOL = {"emulated f32", 0.0, 1e-6, 1e-5, 1e-5, 1e-5, 4e-6, 0x1p-8, 4e-3, 1e-4};

static void report(bool ok, const char *what, const char *detail)
{
    if (!ok) mk_test_fail(__FILE__, __LINE__, "%s: %s", what, detail);
    if (getenv("MK_CU_VERBOSE")) printf("%s %s: %s\n", ok ? "ok" : "FAIL", what, detail);
}

MK_TEST(cuda_emulated_kernels_match_cpu)
{
    CHECK_EQ_INT(mk_cu_run_cases(&EMU_TOL, report), 0);
}

MK_TEST(cuda_emulated_trainer_matches_cpu_trainer)
{
    const char *bin = getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c";
    mk_threads_set(1); /* the CPU trainer's bytes do not depend on it; a tiny model runs fastest so */
    CHECK_EQ_INT(mk_cu_run_model(bin, mk_test_tmpdir(), &EMU_TOL, report), 0);
    mk_threads_set(0);
}

/* LoRA, QLoRA, qwen2's biases and qwen3's q/k norms (tests/cuda/cases_lora.c) */
MK_TEST(cuda_emulated_lora_qlora_qwen_match_cpu_trainer)
{
    mk_threads_set(1);
    CHECK_EQ_INT(mk_cu_run_lora(getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c", mk_test_tmpdir(), &EMU_TOL, report), 0);
    mk_threads_set(0);
}

/* The trainer's device memory: what mk_cu_train_bytes says (the figure a run is refused by)
 * against what it allocates (the emulation counts its "device" bytes), and the refusal when
 * the device has less free. */
/* The most "device" bytes the trainer holds over an open, one pass of nseq x T and a close. */
static uint64_t emu_peak(mk_nn_train *t, size_t nseq, size_t T, bool ck, const int32_t *tok, const float *w)
{
    uint64_t peak = 0;
    mk_cu_emu_memory(0, NULL);
    mk_cu_train *g = NULL;
    double wnll = 0;
    CHECK_OK(mk_cu_train_open(t, nseq, T, ck, &g));
    if (g) CHECK_OK(mk_cu_train_pass(g, tok, w, nseq, T, 0.01f, true, &wnll));
    mk_cu_train_close(g);
    mk_cu_emu_memory(0, &peak);
    return peak;
}

/* A synthetic model (synth args) in the tmpdir's folder `name`, opened for training; false
 * (closed, a failure reported) when it could not be. */
static bool emu_model(const char *name, const char *args, mk_cu_tmodel *m)
{
    const char *bin = getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c";
    char dir[1024], err[1200] = "";
    snprintf(dir, sizeof dir, "%s/%s", mk_test_tmpdir(), name);
    memset(m, 0, sizeof *m);
    CHECK_MSG(mk_cu_tmodel_synth(bin, dir, args, err, sizeof err), "%s", err);
    CHECK_OK(mk_cu_tmodel_open(dir, m));
    if (m->t) return true;
    mk_cu_tmodel_close(m);
    return false;
}

MK_TEST(cuda_emulated_trainer_memory_estimate)
{
    mk_cu_tmodel m;
    if (!emu_model("cuda-mem", "--hidden 48 --layers 3 --heads 6 --kv-heads 2 --intermediate 96 --vocab 80", &m)) return;
    mk_nn_train *t = m.t;
    mk_model_config cfg = m.cfg;
    mk_threads_set(1);
    int32_t tok[3 * 24];
    float w[3 * 24];
    for (size_t i = 0; i < 3 * 24; i++) tok[i] = (int32_t)(i * 7 % 80), w[i] = 1;
    for (int k = 0; k < 4; k++) { /* f32, then bf16 (mk_cu_train_bytes16); each without and with checkpointing */
        bool ck = k & 1, bf = k >= 2;
        if (k == 2) CHECK_OK(mk_nn_train_set_bf16(t));
        uint64_t est = (bf ? mk_cu_train_bytes16 : mk_cu_train_bytes)(&cfg, mk_nn_train_numel(t), 3, 24, ck);
        uint64_t peak = emu_peak(t, 3, 24, ck, tok, w);
        mk_cu_train *g = NULL;
        if (getenv("MK_CU_VERBOSE")) printf("bf16 %d checkpointing %d: peak %llu estimate %llu\n", bf, ck, (unsigned long long)peak, (unsigned long long)est);
        /* estimate's and finetune's figure (train/mem.h) is this plus the reserve */
        mk_train_mem_req rq = {0, 0, false, bf, ck, 3, 24, NULL, false};
        mk_train_mem tm;
        mk_train_mem_of(&cfg, mk_nn_train_numel(t), &rq, &tm);
        CHECK_MSG(tm.gpu == est + MK_CU_TRAIN_RESERVE, "bf16 %d checkpointing %d: mk_train_mem_of's GPU %llu, the trainer's %llu + the reserve",
                  bf, ck, (unsigned long long)tm.gpu, (unsigned long long)est);
        /* the estimate is what the trainer allocates */
        CHECK_MSG(peak == est,
                  "bf16 %d checkpointing %d: the trainer holds %llu bytes at most, the estimate is %llu", bf, ck, (unsigned long long)peak,
                  (unsigned long long)est);
        /* a device with one byte less free than that and the reserve is refused, naming both figures */
        mk_cu_emu_memory(est + MK_CU_TRAIN_RESERVE - 1, NULL);
        CHECK_ERR(mk_cu_train_open(t, 3, 24, ck, &g), MK_ERR_NOMEM, "of GPU memory, the device has");
        mk_cu_emu_memory(est + MK_CU_TRAIN_RESERVE, NULL);
        CHECK_OK(mk_cu_train_open(t, 3, 24, ck, &g));
        mk_cu_train_close(g);
        /* MK_CUDA_MEMORY: a smaller card (finetune --device cuda's refusal without one) */
        char cap[32];
        snprintf(cap, sizeof cap, "%llu", (unsigned long long)(est + MK_CU_TRAIN_RESERVE - 1));
        setenv("MK_CUDA_MEMORY", cap, 1);
        CHECK_ERR(mk_cu_train_open(t, 3, 24, ck, &g), MK_ERR_NOMEM, "free of 0.06 GiB (MK_CUDA_MEMORY)");
        snprintf(cap, sizeof cap, "%llu", (unsigned long long)(est + MK_CU_TRAIN_RESERVE));
        setenv("MK_CUDA_MEMORY", cap, 1);
        CHECK_OK(mk_cu_train_open(t, 3, 24, ck, &g));
        mk_cu_train_close(g);
        unsetenv("MK_CUDA_MEMORY");
        mk_cu_emu_memory(0, NULL);
    }
    mk_threads_set(0);
    mk_cu_tmodel_close(&m);
}

/* gemma on the device: the estimate counts the (1 + w) buffer (what the trainer allocates), and
 * bf16 is refused in one line naming the family (its bf16 path is llama's). */
MK_TEST(cuda_emulated_gemma_memory_and_bf16_refusal)
{
    mk_cu_tmodel m;
    if (!emu_model("cuda-gemma-mem", "--arch gemma --hidden 48 --layers 3 --heads 6 --kv-heads 2 --intermediate 96 --vocab 80", &m))
        return;
    mk_threads_set(1);
    int32_t tok[2 * 16];
    float w[2 * 16];
    for (size_t i = 0; i < 2 * 16; i++) tok[i] = (int32_t)(i * 7 % 80), w[i] = 1;
    uint64_t est = mk_cu_train_bytes(&m.cfg, mk_nn_train_numel(m.t), 2, 16, false), peak = emu_peak(m.t, 2, 16, false, tok, w);
    mk_cu_train *g = NULL;
    CHECK_MSG(peak == est, "gemma: the trainer holds %llu bytes at most, the estimate is %llu", (unsigned long long)peak,
              (unsigned long long)est);
    CHECK_OK(mk_nn_train_set_bf16(m.t));
    CHECK_ERR(mk_cu_train_open(m.t, 2, 16, false, &g), MK_ERR_UNSUPPORTED, "gemma (GeGLU, (1 + w) norms) runs in f32 on the device");
    mk_threads_set(0);
    mk_cu_tmodel_close(&m);
}
