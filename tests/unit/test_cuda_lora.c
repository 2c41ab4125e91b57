/* test_cuda_lora.c - the device memory the CUDA trainer holds with LoRA, QLoRA and qwen3's
 * q/k norms (nn/cuda/train_lora.c) in the CPU emulation, against mk_cu_train_need. Their
 * numerical checks: tests/cuda/cases_lora.c, run by test_cuda_emu.c and `make test-cuda`. */
#include "harness.h"

#include <stdlib.h>

#include "../../core/mk_thread.h"
#include "../../formats/model.h"
#include "../../nn/cuda/cu_train.h"
#include "../../nn/cuda/mk_cuda.h"
#include "../../quant/nf4hold.h"
#include "../../train/mem.h"
#include "../cuda/cases.h"

/* The most the trainer holds at once is mk_cu_train_need (the figure a run is refused by), for
 * LoRA (the frozen base, adapters with gradients and moments), QLoRA (NF4 codes, one layer
 * decoded) and qwen3's norms, in f32 and in bf16 (the base in bf16, x A^T and the decoded layer
 * bf16); `estimate`'s figure from the config alone (mk_cu_train_bytes_of) is the same; a device
 * with one byte less free is refused. */
MK_TEST(cuda_emulated_lora_memory_estimate)
{
    const char *bin = getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c";
    char dir[1024], err[1200] = "";
    snprintf(dir, sizeof dir, "%s/cuda-lora-mem", mk_test_tmpdir());
    CHECK_MSG(mk_cu_tmodel_synth(bin, dir,
                                 "--arch qwen3 --hidden 48 --layers 3 --heads 6 --kv-heads 2 --intermediate 96 "
                                 "--vocab 80",
                                 err, sizeof err),
              "%s", err);
    mk_threads_set(1);
    int32_t tok[3 * 24];
    float w[3 * 24];
    for (size_t i = 0; i < 3 * 24; i++) tok[i] = (int32_t)(i * 7 % 80), w[i] = 1;
    for (int bf16 = 0; bf16 < 2; bf16++) {
    uint64_t prev = 0;                     /* the estimate of the mode before */
    for (int mode = 0; mode < 3; mode++) { /* full finetuning, LoRA, QLoRA */
        mk_cu_tmodel m = {0};
        mk_status s = mk_model_open(dir, &m.src);
        if (s == MK_OK) s = mk_model_config_of_source(m.src, &m.cfg), m.has_cfg = s == MK_OK;
        mk_qlora *q = NULL;
        if (s == MK_OK && mode == 2) {
            s = mk_qlora_new(m.src, &q);
            mk_nn_held held = {q, mk_nf4_hold_fill, mk_nf4_hold_codes};
            if (s == MK_OK) s = mk_nn_train_open_held(m.src, &m.cfg, &held, &m.t);
        } else if (s == MK_OK) {
            s = mk_nn_train_open(m.src, &m.cfg, &m.t);
        }
        mk_nn_lora lo = {4, 8.0, false, (1u << MK_ROLE_Q) | (1u << MK_ROLE_V) | (1u << MK_ROLE_DOWN), 3};
        if (s == MK_OK && mode) s = mk_nn_train_lora(m.t, &lo);
        if (s == MK_OK && bf16) s = mk_nn_train_set_bf16(m.t);
        CHECK_OK(s);
        for (int ck = 0; s == MK_OK && ck < 2; ck++) {
            uint64_t est = mk_cu_train_need(m.t, 3, 24, ck), peak = 0;
            mk_cu_emu_memory(0, NULL);
            mk_cu_train *g = NULL;
            double wnll = 0;
            CHECK_OK(mk_cu_train_open(m.t, 3, 24, ck, &g));
            if (g) CHECK_OK(mk_cu_train_pass(g, tok, w, 3, 24, 0.01f, true, &wnll));
            mk_cu_train_close(g);
            mk_cu_emu_memory(0, &peak);
            if (getenv("MK_CU_VERBOSE"))
                printf("bf16 %d mode %d checkpointing %d: peak %llu estimate %llu\n", bf16, mode, ck, (unsigned long long)peak,
                       (unsigned long long)est);
            CHECK_MSG(peak == est, "bf16 %d mode %d checkpointing %d: the trainer holds %llu bytes at most, the estimate is %llu",
                      bf16, mode, ck, (unsigned long long)peak, (unsigned long long)est);
            /* the config-level figure (estimate's) is the same */
            uint64_t params = 0;
            for (size_t i = 0; i < m.src->n_tensors; i++) params += m.src->tensors[i].numel;
            mk_cu_train_req req = {params, mode ? lo.r : 0, lo.targets, mode == 2, true, 3, 24, ck, bf16};
            uint64_t of = mk_cu_train_bytes_of(&m.cfg, &req);
            CHECK_MSG(of == est, "bf16 %d mode %d checkpointing %d: mk_cu_train_bytes_of %llu, mk_cu_train_need %llu", bf16, mode,
                      ck, (unsigned long long)of, (unsigned long long)est);
            /* estimate's and finetune's figure (train/mem.h): that plus the reserve */
            mk_train_mem_req rq = {mode ? lo.r : 0, lo.targets, mode == 2, bf16, ck, 3, 24, mk_qlora_bytes,
                                   mk_train_qk_norm(m.src, &m.cfg)};
            mk_train_mem tm;
            mk_train_mem_of(&m.cfg, params, &rq, &tm);
            CHECK_MSG(tm.gpu == est + MK_CU_TRAIN_RESERVE, "bf16 %d mode %d checkpointing %d: mk_train_mem_of's GPU %llu, the trainer's %llu + the reserve",
                      bf16, mode, ck, (unsigned long long)tm.gpu, (unsigned long long)est);
            /* LoRA: no gradients or moments for the base, less than full finetuning; QLoRA: its
             * projections in NF4 and one layer decoded, less than LoRA */
            if (mode && ck == 0)
                CHECK_MSG(est < prev, "bf16 %d mode %d: %llu bytes, the mode before %llu", bf16, mode, (unsigned long long)est,
                          (unsigned long long)prev);
            if (ck == 0) prev = est;
            mk_cu_emu_memory(est + MK_CU_TRAIN_RESERVE - 1, NULL);
            CHECK_ERR(mk_cu_train_open(m.t, 3, 24, ck, &g), MK_ERR_NOMEM, "of GPU memory, the device has");
            mk_cu_emu_memory(0, NULL);
        }
        mk_nn_train_close(m.t); /* the trainer, then its holder, then the source */
        m.t = NULL;
        mk_qlora_free(q);
        mk_cu_tmodel_close(&m);
    }
    }
    mk_threads_set(0);
}

/* Under LoRA in bf16 the device keeps the frozen base in bf16 (its embedding and norms also in
 * f32): less than the same run in f32, whose base is all f32. */
MK_TEST(cuda_emulated_bf16_lora_base_in_bf16)
{
    const char *bin = getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c";
    char dir[1024], err[1200] = "";
    snprintf(dir, sizeof dir, "%s/cuda-lora-bf16", mk_test_tmpdir());
    CHECK_MSG(mk_cu_tmodel_synth(bin, dir, "--hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 64 --vocab 64", err,
                                 sizeof err),
              "%s", err);
    uint64_t need[2] = {0, 0}, frozen = 0;
    for (int bf16 = 0; bf16 < 2; bf16++) {
        mk_cu_tmodel m = {0};
        CHECK_OK(mk_cu_tmodel_open(dir, &m));
        mk_nn_lora lo = {2, 4.0, false, 1u << MK_ROLE_Q, 1};
        if (m.t) CHECK_OK(mk_nn_train_lora(m.t, &lo));
        if (m.t && bf16) CHECK_OK(mk_nn_train_set_bf16(m.t));
        if (m.t) need[bf16] = mk_cu_train_need(m.t, 2, 16, false), mk_nn_train_frozen(m.t, &frozen);
        mk_cu_tmodel_close(&m);
    }
    /* 4 bytes a frozen value in f32; 2 in bf16 plus the f32 embedding and norms */
    CHECK_MSG(need[1] < need[0] && need[0] - need[1] > frozen, "bf16 %llu bytes, f32 %llu, %llu frozen values",
              (unsigned long long)need[1], (unsigned long long)need[0], (unsigned long long)frozen);
}
