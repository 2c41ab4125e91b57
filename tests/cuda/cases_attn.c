/* cases_attn.c - the CUDA trainer's simple attention (nn/cuda/train_attn.h), kept beside the
 * fused default: chosen by MK_CUDA_ATTENTION=simple (f32 and bf16), and the fallback past the
 * fused kernel's head_dim (160 here), each training a tiny llama as the CPU trainer does (one
 * step's gradients, the norm, 10 steps' losses, the weights after them: mk_cu_check_model).
 * Run on the emulation by tests/unit/test_cuda_flash.c and on a device by `make test-cuda`. */
#include <stdio.h>
#include <stdlib.h>

#include "cases.h"

#include "../../nn/cuda/mem.h"

int mk_cu_run_attn_paths(const char *mk_bin, const char *tmpdir, const mk_cu_tol *tol, mk_cu_report report)
{
    static const struct {
        const char *name, *args;
        bool bf16, simple;
    } cases[] = {
        {"llama, MK_CUDA_ATTENTION=simple", "--hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 64", false, true},
        {"bf16 llama, MK_CUDA_ATTENTION=simple", "--hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 64", true, true},
        {"llama, head_dim 160 (the simple attention)", "--hidden 320 --layers 1 --heads 2 --kv-heads 1 --intermediate 64", false,
         false},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[1024], args[256], err[1200] = "";
        snprintf(dir, sizeof dir, "%s/cuda-simple-%zu", tmpdir, i);
        snprintf(args, sizeof args, "%s --vocab 64 --std 0.2 --max-position 64 --seed 21", cases[i].args);
        mk_cu_tmodel m = {0};
        bool made = mk_cu_tmodel_synth(mk_bin, dir, args, err, sizeof err) && mk_cu_tmodel_open(dir, &m) == MK_OK &&
                    (!cases[i].bf16 || mk_nn_train_set_bf16(m.t) == MK_OK);
        if (cases[i].simple) setenv("MK_CUDA_ATTENTION", "simple", 1);
        mk_cu_tol t = *tol;
        if (cases[i].bf16) t.grad = tol->b16_grad, t.loss = tol->b16_loss;
        if (!made) {
            report(false, cases[i].name, err[0] ? err : mk_errmsg());
            failed++;
        } else if (mk_cu_attn_flash(&m.cfg)) {
            report(false, cases[i].name, "the trainer would run the fused attention");
            failed++;
        } else {
            failed += mk_cu_check_model(&m, cases[i].name, false, 0, &t, report);
        }
        unsetenv("MK_CUDA_ATTENTION");
        mk_cu_tmodel_close(&m);
    }
    return failed;
}
