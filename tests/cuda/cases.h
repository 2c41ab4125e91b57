/* cases.h - every kernel of nn/cuda/mk_cuda.h, forward and backward, against the CPU kernel it
 * must match, on random inputs of several shapes (grouped heads, a sliding window, rows longer
 * than a block). Linked with the CPU emulation (nn/cuda/emu.c) in the unit tests and with the
 * device (nn/cuda/kernels.cu) in `make test-cuda`, each with its own tolerances; and the
 * training pass built on them against the CPU trainer on a tiny model.
 * An error is the largest |got - want| over the largest |want| of the output; a failure names
 * the worst element. */
#ifndef MK_TESTS_CUDA_CASES_H
#define MK_TESTS_CUDA_CASES_H

#include "../../formats/model.h"
#include "../../nn/backward.h"

typedef struct mk_cu_tol {
    const char *name; /* the precision, in messages */
    double elem;      /* elementwise kernels (embedding, RoPE, SwiGLU, AdamW, scaling) */
    double reduce;    /* kernels with a row reduction (RMSNorm, softmax cross-entropy, norm) */
    double attn;      /* attention (scores, softmax, weighted sums) */
    double matmul;    /* cuBLAS products */
    double grad;      /* a tiny model's gradients, norm and weights after 10 steps (per tensor) */
    double loss;      /* its losses over 10 steps */
    /* bf16 mixed precision (nn/cuda/mk_cuda16.h; its elementwise kernels use elem): */
    double b16;       /* kernels with sums (norm, attention, products) against the CPU's bf16 kernels */
    double b16_grad;  /* the tiny models' gradients and weights against the CPU trainer in bf16 */
    double b16_loss;  /* their losses */
} mk_cu_tol;

/* report(ok, what, detail) once per check; returns the number of failed checks. */
typedef void (*mk_cu_report)(bool ok, const char *what, const char *detail);
int mk_cu_run_cases(const mk_cu_tol *tol, mk_cu_report report);
/* The CUDA trainer (nn/cuda/cu_train.h) against the CPU trainer on a tiny llama (untied, and
 * tied with checkpointing) and a mistral with a sliding window of 5, made by `mk_bin synth` in tmpdir: one step's gradients, the norm,
 * 10 AdamW steps' losses and the weights after them; and finetune's loop (mk_train_run) with
 * the device's trainer against the CPU's, stopped and resumed. Returns the failed checks. */
/* A tiny f32 model for the trainer's checks: `mk_bin synth dir --dtype float32 ARGS` (err: the
 * command when it fails), and opened for training (mk_cu_tmodel_close also after a failure). */
typedef struct mk_cu_tmodel {
    mk_source *src;
    mk_model_config cfg;
    bool has_cfg;
    mk_nn_train *t;
    void *hold;                 /* a holder of the frozen base (QLoRA), freed with hold_free */
    void (*hold_free)(void *);
} mk_cu_tmodel;
bool mk_cu_tmodel_synth(const char *mk_bin, const char *dir, const char *args, char *err, size_t cap);
mk_status mk_cu_tmodel_open(const char *dir, mk_cu_tmodel *m);
void mk_cu_tmodel_close(mk_cu_tmodel *m);

int mk_cu_run_model(const char *mk_bin, const char *tmpdir, const mk_cu_tol *tol, mk_cu_report report);

/* The checks of mk_cu_run_model on a model opened by the caller (t as it wants it: LoRA, a
 * held base): one step's gradients, the norm, 10 steps' losses and the trained tensors after
 * them (within wtol; 0: tol->grad); and finetune's loop on the model in dir, each run opened
 * by `open`, stopped and resumed. */
int mk_cu_check_model(mk_cu_tmodel *m, const char *name, bool checkpointing, double wtol, const mk_cu_tol *tol,
                      mk_cu_report report);
int mk_cu_check_loop(const char *dir, const char *tmpdir, mk_status (*open)(const char *dir, mk_cu_tmodel *m),
                     const mk_cu_tol *tol, mk_cu_report report);
/* cases.c's helpers: n uniform floats in [lo, hi) from seed (malloc'd); a device copy of
 * host bytes; the worst |got - want| over max |want| (detail: where, as the checks print it). */
float *mk_cu_rnd(size_t n, uint64_t seed, float lo, float hi);
void *mk_cu_dput(const void *h, size_t bytes);
double mk_cu_worst_err(const float *got, const float *want, size_t n, const char *prec, double tol, char *detail, size_t cap);

/* LoRA and QLoRA on the device (nn/cuda/train_lora.c), and qwen2's biases and qwen3's q/k
 * norms, against the CPU trainer; the kernels of mk_cuda_lora.h (tests/cuda/cases_lora.c). */
int mk_cu_run_lora(const char *mk_bin, const char *tmpdir, const mk_cu_tol *tol, mk_cu_report report);
/* The bf16 kernels of nn/cuda/mk_cuda_lora16.h against the CPU's (tests/cuda/cases_lora16.c;
 * run by mk_cu_run_lora, beside the bf16 trainer's checks there). */
int mk_cu_run_lora16_kernels(const mk_cu_tol *tol, mk_cu_report report);

/* The trainer's simple attention (MK_CUDA_ATTENTION=simple, and past the fused kernel's
 * head_dim) against the CPU trainer (tests/cuda/cases_attn.c). */
int mk_cu_run_attn_paths(const char *mk_bin, const char *tmpdir, const mk_cu_tol *tol, mk_cu_report report);

#endif
