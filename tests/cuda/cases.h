/* cases.h - every kernel of nn/cuda/mk_cuda.h, forward and backward, against the CPU kernel it
 * must match, on random inputs of several shapes (grouped heads, a sliding window, rows longer
 * than a block). Linked with the CPU emulation (nn/cuda/emu.c) in the unit tests and with the
 * device (nn/cuda/kernels.cu) in `make test-cuda`, each with its own tolerances.
 * An error is the largest |got - want| over the largest |want| of the output; a failure names
 * the worst element. */
#ifndef MK_TESTS_CUDA_CASES_H
#define MK_TESTS_CUDA_CASES_H

#include <stdbool.h>
#include <stddef.h>

typedef struct mk_cu_tol {
    const char *name; /* the precision, in messages */
    double elem;      /* elementwise kernels (embedding, RoPE, SwiGLU, AdamW, scaling) */
    double reduce;    /* kernels with a row reduction (RMSNorm, softmax cross-entropy, norm) */
    double attn;      /* attention (scores, softmax, weighted sums) */
    double matmul;    /* cuBLAS products */
} mk_cu_tol;

/* report(ok, what, detail) once per check; returns the number of failed checks. */
typedef void (*mk_cu_report)(bool ok, const char *what, const char *detail);
int mk_cu_run_cases(const mk_cu_tol *tol, mk_cu_report report);

#endif
