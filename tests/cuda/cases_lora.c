/* cases_lora.c - see cases.h (mk_cu_run_lora): the kernels of nn/cuda/mk_cuda_lora.h against
 * the CPU's, and the CUDA trainer with LoRA, QLoRA (NF4 base), qwen2's biases and qwen3's
 * q/k norms against the CPU trainer on tiny models. */
#include "cases.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/model.h"
#include "../../nn/cuda/mk_cuda_lora.h"
#include "../../nn/ops_bwd.h"
#include "../../quant/bnb.h"
#include "../../quant/nf4hold.h"

static mk_cu_report outer;
static const char *prefix = "";
static int failed;

static void report(bool ok, const char *what, const char *detail)
{
    char full[400];
    snprintf(full, sizeof full, "%s%s", prefix, what);
    if (!ok) failed++;
    outer(ok, full, detail);
}

/* got (device, n floats) against want: the worst |got - want| over max |want| */
static void cmp(const char *what, const float *dev, const float *want, size_t n, double tol, const char *prec)
{
    float *got = malloc(n * sizeof *got + 1);
    char detail[300] = "";
    mk_status s = mk_cu_sync();
    if (s == MK_OK) s = mk_cu_get(got, dev, n * sizeof *got);
    if (s != MK_OK)
        report(false, what, mk_errmsg());
    else
        report(mk_cu_worst_err(got, want, n, prec, tol, detail, sizeof detail) <= tol, what, detail);
    free(got);
}

/* bias add and its backward (mk_nn_linear_bwd's db), NF4 decode (mk_bnb4_dequant) */
static void kernel_cases(const mk_cu_tol *tol)
{
    size_t T = 37, out = 300, n = 64 * 41 + 6; /* n: a last block short, an odd element count */
    float *y = mk_cu_rnd(T * out, 1, -1, 1), *b = mk_cu_rnd(out, 2, -1, 1), *dy = mk_cu_rnd(T * out, 3, -1, 1),
          *db = mk_cu_rnd(out, 4, -1, 1);
    float *want = malloc(T * out * sizeof *want), *wdb = malloc(out * sizeof *wdb);
    for (size_t i = 0; i < T * out; i++) want[i] = y[i] + b[i % out];
    memcpy(wdb, db, out * sizeof *wdb);
    mk_nn_linear_bwd(y, T, 1, b, out, dy, NULL, NULL, wdb); /* x, w unused without dx and dw */
    float *dyd = mk_cu_dput(y, T * out * 4), *bd = mk_cu_dput(b, out * 4), *dgd = mk_cu_dput(dy, T * out * 4),
          *dbd = mk_cu_dput(db, out * 4);
    mk_cu_bias_add(dyd, bd, T, out);
    cmp("bias add (nn.Linear's bias)", dyd, want, T * out, tol->elem, tol->name);
    mk_cu_bias_bwd(dgd, T, out, dbd);
    cmp("bias backward (mk_nn_linear_bwd's db)", dbd, wdb, out, tol->reduce, tol->name);
    float *v = mk_cu_rnd(n, 5, -2, 2), *absmax = malloc(((n + 63) / 64) * sizeof *absmax), *dq = malloc(n * sizeof *dq);
    uint8_t *codes = malloc((n + 1) / 2);
    mk_bnb4_quantize(MK_BNB_NF4, 64, v, n, absmax, codes, NULL, NULL);
    mk_bnb4_dequant(MK_BNB_NF4, 64, codes, absmax, 0, n, dq);
    uint8_t *cd = mk_cu_dput(codes, (n + 1) / 2);
    float *ad = mk_cu_dput(absmax, ((n + 63) / 64) * 4), *td = mk_cu_dput(mk_bnb4_decode[MK_BNB_NF4], 16 * 4), *od = NULL;
    if (mk_cu_alloc((void **)&od, n * 4) == MK_OK) {
        mk_cu_nf4_decode(cd, ad, td, 64, n, od);
        cmp("NF4 decode (mk_bnb4_dequant)", od, dq, n, 0.0, tol->name); /* one product of two floats: exact */
    }
    mk_cu_free(dyd), mk_cu_free(bd), mk_cu_free(dgd), mk_cu_free(dbd), mk_cu_free(cd), mk_cu_free(ad), mk_cu_free(td);
    mk_cu_free(od);
    free(y), free(b), free(dy), free(db), free(want), free(wdb), free(v), free(absmax), free(dq), free(codes);
}

/* how a case opens its model for training */
static struct {
    long rank; /* 0: full finetuning */
    bool qlora;
    unsigned targets;
    bool bf16; /* mixed precision (mk_nn_train_set_bf16, after LoRA) */
} opt;

static void hold_free(void *q) { mk_qlora_free(q); }

static mk_status open_model(const char *dir, mk_cu_tmodel *m)
{
    memset(m, 0, sizeof *m);
    mk_status s = mk_model_open(dir, &m->src);
    if (s == MK_OK) s = mk_model_config_of_source(m->src, &m->cfg), m->has_cfg = s == MK_OK;
    if (s == MK_OK && opt.qlora) {
        mk_qlora *q = NULL;
        s = mk_qlora_new(m->src, &q);
        m->hold = q, m->hold_free = hold_free;
        mk_nn_held held = {q, mk_nf4_hold_fill, mk_nf4_hold_codes};
        if (s == MK_OK) s = mk_nn_train_open_held(m->src, &m->cfg, &held, &m->t);
    } else if (s == MK_OK) {
        s = mk_nn_train_open(m->src, &m->cfg, &m->t);
    }
    mk_nn_lora lo = {opt.rank, 16.0, false, opt.targets, 5};
    if (s == MK_OK && opt.rank) s = mk_nn_train_lora(m->t, &lo);
    if (s == MK_OK && opt.bf16) s = mk_nn_train_set_bf16(m->t);
    return s;
}

#define ALL_PROJ                                                                                                                 \
    ((1u << MK_ROLE_Q) | (1u << MK_ROLE_K) | (1u << MK_ROLE_V) | (1u << MK_ROLE_O) | (1u << MK_ROLE_GATE) | (1u << MK_ROLE_UP) | \
     (1u << MK_ROLE_DOWN))

int mk_cu_run_lora(const char *mk_bin, const char *tmpdir, const mk_cu_tol *tol, mk_cu_report rep)
{
    outer = rep, failed = 0, prefix = "";
    kernel_cases(tol);
    mk_cu_run_lora16_kernels(tol, report);
    /* bf16 mixed precision: the CPU trainer set to bf16 is the reference (tol's b16_*).
     * Emulated with the fused attention (the default) every check measures 0, the CPU's bytes.
     * A sum that lands on the other side of a bf16 rounding boundary (the simple attention's
     * order, MK_CUDA_ATTENTION=simple, or another BLAS's) moves one gradient element by a bf16
     * ulp of its micro-batch part, and AdamW, dividing each element by its own RMS, makes that a
     * full-size update of a small adapter element: under LoRA the trajectories then drift apart
     * (emulated with the simple attention: from step 4, losses within 4.7e-4 and adapters within
     * 7.8e-3 of the largest after 10). Allowed there: 10 x b16_loss for the losses, as the
     * trained tensors get 10 x the gradients' tolerance. */
    mk_cu_tol t16 = *tol, t16l;
    char name16[64];
    snprintf(name16, sizeof name16, "%s, bf16", tol->name);
    t16.name = name16, t16.grad = tol->b16_grad, t16.loss = tol->b16_loss;
    t16l = t16, t16l.loss = 10 * tol->b16_loss;
    static const struct {
        const char *name, *arch;
        long rank;
        bool qlora, ckpt, loop;
        unsigned targets;
        bool bf16;
    } cases[] = {
        {"qwen2 (q/k/v biases), full finetuning", "qwen2", 0, false, false, false, 0, false},
        {"qwen3 (q/k norms), full finetuning, checkpointing", "qwen3", 0, false, true, false, 0, false},
        {"llama, LoRA r 4 on every projection", "llama", 4, false, false, true, ALL_PROJ, false},
        {"llama, QLoRA r 4 on q and v, checkpointing", "llama", 4, true, true, false, (1u << MK_ROLE_Q) | (1u << MK_ROLE_V), false},
        {"qwen2, LoRA r 3 on every projection", "qwen2", 3, false, false, false, ALL_PROJ, false},
        {"qwen3, QLoRA r 4 on every projection", "qwen3", 4, true, false, true, ALL_PROJ, false},
        {"bf16 llama, LoRA r 4 on every projection", "llama", 4, false, false, true, ALL_PROJ, true},
        {"bf16 llama, QLoRA r 4 on q and v, checkpointing", "llama", 4, true, true, false, (1u << MK_ROLE_Q) | (1u << MK_ROLE_V),
         true},
        {"bf16 llama tied, LoRA r 2 on q and down", "llama --tie", 2, false, false, false, (1u << MK_ROLE_Q) | (1u << MK_ROLE_DOWN),
         true},
        {"bf16 qwen2 (q/k/v biases), full finetuning", "qwen2", 0, false, false, false, 0, true},
        {"bf16 qwen2, LoRA r 3 on every projection", "qwen2", 3, false, false, false, ALL_PROJ, true},
        {"bf16 qwen3 (q/k norms), full finetuning, checkpointing", "qwen3", 0, false, true, false, 0, true},
        {"bf16 qwen3, QLoRA r 4 on every projection", "qwen3", 4, true, false, true, ALL_PROJ, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[1024], args[256], err[1200] = "", pre[200];
        snprintf(dir, sizeof dir, "%s/cuda-lora-%zu", tmpdir, i);
        snprintf(args, sizeof args,
                 "--kv-heads 2 --hidden 32 --layers 2 --heads 4 --intermediate 64 --vocab 64 --std 0.2 "
                 "--max-position 64 --seed 23 --arch %s",
                 cases[i].arch);
        opt.rank = cases[i].rank, opt.qlora = cases[i].qlora, opt.targets = cases[i].targets, opt.bf16 = cases[i].bf16;
        const mk_cu_tol *ct = !cases[i].bf16 ? tol : cases[i].rank ? &t16l : &t16;
        snprintf(pre, sizeof pre, "%s: ", cases[i].name);
        mk_cu_tmodel m = {0};
        if (!mk_cu_tmodel_synth(mk_bin, dir, args, err, sizeof err) || open_model(dir, &m) != MK_OK) {
            report(false, cases[i].name, err[0] ? err : mk_errmsg());
            mk_cu_tmodel_close(&m);
            continue;
        }
        /* The trained tensors after 10 AdamW steps: Adam divides each element's gradient by its
         * own RMS, so an element 1e-2 of its tensor's largest carries its relative error (1e-4 ..
         * 1e-3 in emulation, measured) into a full-size update: LoRA's A (its first step, from
         * B = 0, is all of that kind) and qwen2's small biases. 10 x the gradients' tolerance
         * (emulated: worst measured 1.8e-5, LoRA's A; 8.7e-6, a qwen2 bias). */
        mk_cu_check_model(&m, cases[i].name, cases[i].ckpt, 10 * ct->grad, ct, report);
        mk_cu_tmodel_close(&m);
        if (cases[i].loop) {
            prefix = pre;
            mk_cu_check_loop(dir, tmpdir, open_model, ct, report);
            prefix = "";
        }
    }
    opt.bf16 = false;
    return failed;
}
