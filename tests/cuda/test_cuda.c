/* test_cuda.c - `make test-cuda`: the CUDA kernels on the device against the CPU kernels
 * (tests/cuda/cases.c, every kernel forward and backward) with the f32 tolerances below.
 * Prints "ok - ..." or "not ok - ..." per check in the suite's format, or one
 * "skip - cuda: ..." line and exit 0 when no device is usable (a machine with the toolkit
 * but no GPU). Exit 1 when a check failed. */
#include <stdio.h>
#include <stdlib.h>

#include "cases.h"

#include "../../nn/cuda/mk_cuda.h"

/* The device contracts multiply-adds into FMAs, its expf and division differ from the CPU's
 * by an ulp or two (1e-6 of the largest output), sums run in another order (1e-5 for
 * reductions; 1e-4 for attention and cuBLAS's f32 products, up to ~1000 terms); through a
 * 2-layer model 1e-4 of each tensor's largest gradient and 1e-5 of the loss. bf16 (estimates
 * until a GPU run measures them): those differences put some sums on the other side of a
 * rounding boundary, one bf16 ulp of an element (two ulps of the largest output allowed,
 * 2^-6); through the model 3e-2 of a tensor's largest gradient and 2e-3 of the loss. */
static const mk_cu_tol DEVICE_F32 = {"device f32", 1e-6, 1e-5, 1e-4, 1e-4, 1e-4, 1e-5, 0x1p-6, 3e-2, 2e-3};

static int passed, failed;

static void report(bool ok, const char *what, const char *detail)
{
    printf("%s - cuda %s: %s\n", ok ? "ok" : "not ok", what, detail);
    ok ? passed++ : failed++;
}

int main(void)
{
    char why[256];
    if (!mk_cu_available(why, sizeof why)) {
        printf("skip - cuda: %s; the GPU comparisons did not run\n", why);
        return 0;
    }
    printf("device: %s\n", why);
    mk_cu_run_cases(&DEVICE_F32, report);
    /* the tiny models are written by `mergekit-c synth` (MK_BIN; make test-cuda sets it) */
    char tmp[] = "/tmp/mk-cuda-XXXXXX";
    if (!mkdtemp(tmp)) {
        report(false, "scratch folder", "mkdtemp failed");
    } else {
        mk_cu_run_model(getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c", tmp, &DEVICE_F32, report);
        mk_cu_run_lora(getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c", tmp, &DEVICE_F32, report);
        mk_cu_run_attn_paths(getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c", tmp, &DEVICE_F32, report);
        char cmd[64];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    }
    printf("cuda: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
