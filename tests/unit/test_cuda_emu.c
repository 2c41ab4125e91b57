/* test_cuda_emu.c - the CUDA kernels' per-thread bodies (nn/cuda/bodies.h) run over their grids
 * on the CPU (nn/cuda/emu.c) against the CPU kernels they must match (tests/cuda/cases.c):
 * the same comparisons `make test-cuda` runs on a device, here with the emulation's
 * tolerances; and the CUDA trainer (nn/cuda/train.c) on the emulated kernels against the CPU
 * trainer on a tiny llama. No GPU or nvcc is needed. */
#include "harness.h"

#include <stdlib.h>

#include "../../core/mk_thread.h"
#include "../cuda/cases.h"

/* The emulation runs the bodies with the CPU's compiler flags (no contraction into fused
 * multiply-adds), so elementwise kernels are the CPU's bytes; reductions are summed in a tree
 * in double instead of in order (1e-6 of the largest output); attention sums its scores in
 * double where the CPU's BLAS uses float (1e-5); products go through BLAS in another order. */
/* Through a 2-layer model the differences add up to 1e-6 of the largest gradient of a tensor
 * (1e-5 allowed) and less in the loss. */
static const mk_cu_tol EMU_TOL = {"emulated f32", 0.0, 1e-6, 1e-5, 1e-5, 1e-5, 1e-6};

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
