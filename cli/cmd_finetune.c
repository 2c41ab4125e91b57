/* cmd_finetune.c - `mergekit-c finetune MODEL DATA OUT`: full or LoRA finetuning on the CPU (train/):
 * the memory it needs first (refused over --max-memory or the machine's memory), then AdamW
 * steps with a progress line, held-out perplexity through eval/ every --eval-every steps,
 * checkpoints in OUT.checkpoint, and OUT a model folder written atomically (weights in the
 * input's dtype or f32, config.json and tokenizer files of the input, train_log.jsonl and
 * loss.svg), or with --lora a PEFT adapter folder; --qlora holds the frozen base's projections as
 * NF4 (quant/nf4hold.h). --device cuda runs the steps on a GPU (nn/cuda/cu_train.h) in a build
 * with `make CUDA=1` (MK_CUDA); otherwise it is refused naming that switch. */
#include "cli.h"

#include "../eval/eval.h"
#include "../formats/output.h"
#include "../formats/peft.h"
#include "../nn/nn.h"
#include "../nn/tokenizer.h"
#include "../quant/nf4hold.h"
#include "../quant/qsource.h"
#include "../train/mem.h"
#include "../train/train.h"
#ifdef MK_CUDA
#include "../nn/cuda/cu_train.h"
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* the CUDA trainer decodes the NF4 base held here in blocks of its own constant */
_Static_assert(MK_QLORA_BLOCK == MK_NN_HELD_BLOCK, "QLoRA's NF4 block size");

#define DATA_CAP ((uint64_t)4 << 30)

typedef struct ft {
    mk_common c;
    long steps, warmup, batch, accum, seq, seed, save_every, eval_every, eval_ctx, stop_after;
    double epochs, lr, clip, wd, plw;
    const char *sched, *eval_text, *out_dtype, *lora_targets, *device, *dtype;
    bool bf16; /* --dtype bf16: mixed precision (nn/backward.h, mk_nn_train_set_bf16) */
    const struct mk_cu_train_api *dev; /* --device cuda: the CUDA trainer; NULL: the CPU */
    long lora_r;
    double lora_alpha;
    bool rslora, qlora;
    mk_qlora *q;
    unsigned targets;
    bool ckpt, resume, force;
    uint64_t max_mem;
    /* the run */
    const mk_model_config *cfg;
    mk_nn_train *t;
    int32_t *eval_ids;
    size_t eval_n;
    int32_t eval_bos;
    double t0;
} ft;

/* ---- hooks ------------------------------------------------------------------------------- */

static void fmt_time(double s, char *buf, size_t cap)
{
    long x = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (x >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", x / 3600, x / 60 % 60, x % 60);
    else snprintf(buf, cap, "%ld:%02ld", x / 60, x % 60);
}

static void on_step(void *ctx, const mk_train_rec *r, long steps, double eta)
{
    ft *f = ctx;
    if (f->c.quiet) return;
    char e[32];
    fmt_time(eta, e, sizeof e);
    fprintf(stderr, "step %ld/%ld  loss %.4f  lr %.3g  grad norm %.4g  %.0f tokens/s  ETA %s", r->step, steps, r->loss, r->lr,
            r->grad_norm, r->tokens_per_s, e);
    if (!isnan(r->eval_ppl)) fprintf(stderr, "  eval PPL %.4f", r->eval_ppl);
    if (!isnan(r->eval_kl)) fprintf(stderr, "  KL to base %.6f", r->eval_kl);
    fputc('\n', stderr);
}

static void on_saved(void *ctx, const char *path, long step)
{
    ft *f = ctx;
    if (!f->c.quiet) fprintf(stderr, "checkpoint %s (step %ld)\n", path, step);
}

/* KL(p || q) of two logit rows, in nats (double sums). */
static double kl_rows(const float *p, const float *q, size_t V)
{
    double mp = -INFINITY, mq = -INFINITY, zp = 0, zq = 0, kl = 0;
    for (size_t v = 0; v < V; v++) mp = p[v] > mp ? p[v] : mp, mq = q[v] > mq ? q[v] : mq;
    for (size_t v = 0; v < V; v++) zp += exp(p[v] - mp), zq += exp(q[v] - mq);
    double lp = mp + log(zp), lq = mq + log(zq);
    for (size_t v = 0; v < V; v++) kl += exp(p[v] - lp) * ((p[v] - lp) - (q[v] - lq));
    return kl;
}

/* --eval-text under LoRA / QLoRA: the training forward itself (the frozen base, held as NF4
 * with --qlora, plus the adapters) over eval's windows (mk_eval_windows: the same windows,
 * BOS and scored positions as `eval`), each window once more with the adapters set to zero
 * (which adds exactly 0: the base's forward) for KL(base || adapted). The adapters are put
 * back bit for bit. */
static mk_status eval_adapted(ft *f, double *ppl, double *kl)
{
    mk_eval_opts eo = {(size_t)f->eval_ctx, 0, 0, f->eval_bos, NULL, NULL};
    size_t windows, first, scored, T = (size_t)f->eval_ctx, V = mk_nn_train_vocab(f->t);
    mk_eval_windows(f->eval_n, &eo, &windows, &first, &scored);
    uint64_t n = mk_nn_train_numel(f->t);
    float *w = mk_calloc(T, sizeof *w), *la = mk_malloc(T * V * sizeof *la), *lb = mk_malloc(T * V * sizeof *lb);
    float *keep = mk_malloc((n ? n : 1) * sizeof *keep), *wt = mk_nn_train_weights(f->t);
    int32_t *tok = mk_malloc(T * sizeof *tok);
    mk_status s = w && la && lb && keep && tok ? MK_OK : MK_ERR_NOMEM;
    double nll = 0, base_nll = 0, sum_kl = 0;
    for (size_t j = first + 1; j < T; j++) w[j] = 1; /* position j - 1 predicts token j */
    for (size_t k = 0; k < windows && s == MK_OK; k++) {
        memcpy(tok, f->eval_ids + k * T, T * sizeof *tok);
        if (f->eval_bos >= 0) tok[0] = f->eval_bos;
        s = mk_nn_train_pass(f->t, tok, w, 1, T, 1.0f, false, false, &nll, la);
        memcpy(keep, wt, n * sizeof *wt);
        memset(wt, 0, n * sizeof *wt);
        if (s == MK_OK) s = mk_nn_train_pass(f->t, tok, w, 1, T, 1.0f, false, false, &base_nll, lb);
        memcpy(wt, keep, n * sizeof *wt);
        for (size_t j = first; j < first + scored && s == MK_OK; j++) sum_kl += kl_rows(lb + j * V, la + j * V, V);
    }
    if (s == MK_OK) {
        *ppl = exp(nll / (double)(windows * scored));
        *kl = sum_kl / (double)(windows * scored);
    }
    free(w), free(la), free(lb), free(keep), free(tok);
    return s;
}

static mk_status on_eval(void *ctx, long step, double *ppl, double *kl)
{
    ft *f = ctx;
    (void)step;
    if (f->lora_r) return eval_adapted(f, ppl, kl);
    mk_source *view = NULL;
    mk_nn_model *m = NULL;
    MK_TRY(mk_nn_train_source(f->t, &view));
    mk_status s = mk_nn_open(view, f->cfg, &m);
    mk_eval_opts eo = {(size_t)f->eval_ctx, 0, 0, f->eval_bos, NULL, NULL};
    mk_eval_result r;
    if (s == MK_OK) s = mk_eval_run(m, NULL, 0, f->eval_ids, f->eval_n, &eo, &r);
    if (s == MK_OK) *ppl = r.ppl;
    mk_nn_close(m);
    mk_source_close(view);
    return s;
}

/* ---- outputs ------------------------------------------------------------------------------ */

static mk_status write_log(mk_output *o, const mk_train_result *r)
{
    mk_buf b = {0};
    for (long i = 0; i < r->n_log; i++) {
        const mk_train_rec *x = &r->log[i];
        mk_buf_printf(&b, "{\"step\": %ld, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, \"tokens_per_s\": %.1f", x->step,
                      x->loss, x->lr, x->grad_norm, x->tokens_per_s);
        if (!isnan(x->eval_ppl)) mk_buf_printf(&b, ", \"eval_ppl\": %.9g", x->eval_ppl);
        if (!isnan(x->eval_kl)) mk_buf_printf(&b, ", \"eval_kl\": %.9g", x->eval_kl);
        mk_buf_puts(&b, "}\n");
    }
    mk_status s = b.failed ? MK_ERR_NOMEM : mk_output_file(o, "train_log.jsonl", b.data ? b.data : "", b.len);
    mk_buf_free(&b);
    return s;
}

/* The loss per step as an SVG line chart (and the held-out perplexity's NLL as dots). */
static mk_status write_svg(mk_output *o, const mk_train_result *r)
{
    const double W = 640, Hh = 360, L = 60, R = 20, T = 30, B = 40;
    double lo = INFINITY, hi = -INFINITY;
    for (long i = 0; i < r->n_log; i++) {
        double v = r->log[i].loss;
        if (isfinite(v)) lo = v < lo ? v : lo, hi = v > hi ? v : hi;
    }
    if (!(hi >= lo)) lo = 0, hi = 1;
    if (hi - lo < 1e-9) hi = lo + 1e-3;
    long n = r->n_log > 1 ? r->n_log - 1 : 1;
    mk_buf b = {0};
    mk_buf_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
                      "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, Hh);
    mk_buf_printf(&b, "<text x=\"%.0f\" y=\"18\">training loss (%ld steps)</text>\n", L, r->n_log);
    mk_buf_printf(&b, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, Hh - B, W - R, Hh - B);
    mk_buf_printf(&b, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, T, L, Hh - B);
    mk_buf_printf(&b, "<text x=\"4\" y=\"%.0f\">%.4g</text>\n<text x=\"4\" y=\"%.0f\">%.4g</text>\n", T + 4, hi, Hh - B, lo);
    mk_buf_printf(&b, "<text x=\"%.0f\" y=\"%.0f\">1</text>\n<text x=\"%.0f\" y=\"%.0f\">%ld (step)</text>\n", L, Hh - B + 16,
                  W - R - 60, Hh - B + 16, r->n_log);
    mk_buf_puts(&b, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
    for (long i = 0; i < r->n_log; i++) {
        double v = isfinite(r->log[i].loss) ? r->log[i].loss : hi;
        mk_buf_printf(&b, "%s%.1f,%.1f", i ? " " : "", L + (W - L - R) * (double)i / (double)n,
                      Hh - B - (Hh - T - B) * (v - lo) / (hi - lo));
    }
    mk_buf_puts(&b, "\"/>\n</svg>\n");
    mk_status s = b.failed ? MK_ERR_NOMEM : mk_output_file(o, "loss.svg", b.data, b.len);
    mk_buf_free(&b);
    return s;
}

/* One tensor's values through the consumer. */
static mk_status put_tensor(mk_consumer *cons, size_t i, const mk_tensor_info *t, const float *v)
{
    MK_TRY(cons->ops->begin(cons, i, t));
    MK_TRY(cons->ops->rows(cons, i, 0, v, t->numel));
    return cons->ops->end(cons, i);
}

/* The log and the chart, then seal and commit OUT. */
static mk_status finish_output(mk_output *o, const mk_train_result *r)
{
    MK_TRY(write_log(o, r));
    MK_TRY(write_svg(o, r));
    MK_TRY(mk_output_seal(o));
    return mk_output_commit(o);
}

/* OUT: the trained weights (dtype: the input's, or out_dtype), the input's config and
 * tokenizer files, the log and the chart. */
static mk_status write_model(ft *f, mk_source *in, const char *out, const mk_train_result *r)
{
    mk_source *view = NULL;
    MK_TRY(mk_nn_train_source(f->t, &view));
    mk_dtype want = strcmp(f->out_dtype, "input") == 0 ? MK_DTYPE_NONE : mk_dtype_from_user(f->out_dtype);
    mk_tensor_info *ti = mk_calloc(view->n_tensors ? view->n_tensors : 1, sizeof *ti);
    mk_status s = ti ? MK_OK : MK_ERR_NOMEM;
    for (size_t i = 0; i < view->n_tensors && s == MK_OK; i++) {
        ti[i] = view->tensors[i];
        long k = mk_source_find(in, ti[i].name);
        mk_dtype d = want != MK_DTYPE_NONE ? want : k >= 0 && mk_dtype_info(in->tensors[k].dtype)->is_float ? in->tensors[k].dtype
                                                                                                            : MK_F32;
        if (d == MK_F8_E4M3 || d == MK_F8_E5M2) d = MK_BF16; /* fp8 layouts need scales; keep 16 bits */
        ti[i].dtype = d;
        ti[i].nbytes = ti[i].numel * mk_dtype_size(d);
    }
    mk_output o = {0};
    mk_consumer cons = {0};
    mk_output_opts oo = {.shard_size = (uint64_t)5e9, .force = f->force};
    if (s == MK_OK) s = mk_output_begin(&o, out, &oo, ti, view->n_tensors);
    if (s == MK_OK) s = mk_consumer_plain(&cons, o.k, ti, view->n_tensors, false);
    for (size_t i = 0; i < view->n_tensors && s == MK_OK; i++)
        s = put_tensor(&cons, i, &ti[i], view->ops->borrow(view, i, 0, view->tensors[i].nbytes));
    bool found;
    if (s == MK_OK) s = mk_output_config(&o, in, NULL, &found);
    if (s == MK_OK) s = mk_output_tokenizer(&o, in);
    if (s == MK_OK) s = finish_output(&o, r);
    if (cons.ops) cons.ops->close(&cons);
    mk_output_close(&o);
    free(ti);
    mk_source_close(view);
    return s;
}

/* OUT as a PEFT adapter folder: lora_A and lora_B (f32; B times the scale, so that the
 * config's lora_alpha = r gives scale 1), adapter_config.json, the log and the chart. */
static mk_status write_adapter(ft *f, const char *base, const char *out, const mk_train_result *r)
{
    size_t n = mk_nn_train_n_params(f->t);
    float sc = mk_nn_train_lora_scale(f->t);
    const float *w = mk_nn_train_weights(f->t);
    mk_tensor_info *ti = mk_calloc(n ? n : 1, sizeof *ti);
    mk_peft_out_module *om = mk_calloc(n ? n : 1, sizeof *om);
    char **mods = mk_calloc(n ? n : 1, sizeof *mods);
    float *tmp = NULL;
    mk_status s = ti && om && mods ? MK_OK : MK_ERR_NOMEM;
    size_t nm = 0;
    uint64_t maxn = 0;
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        const mk_nn_param *p = mk_nn_train_param(f->t, i);
        bool is_b = strstr(p->name, ".lora_B.") != NULL;
        uint64_t rr = (uint64_t)f->lora_r;
        ti[i] = (mk_tensor_info){(char *)p->name, MK_F32, 2, {is_b ? (int64_t)(p->numel / rr) : (int64_t)rr,
                                                                is_b ? (int64_t)rr : (int64_t)(p->numel / rr)},
                                 p->numel, p->numel * 4, 0, 0};
        maxn = p->numel > maxn ? p->numel : maxn;
        if (!is_b) { /* the module: between the prefix and ".lora_A.weight" */
            size_t pl = strlen(MK_PEFT_PREFIX), len = strlen(p->name) - pl - strlen(".lora_A.weight");
            mods[nm] = mk_asprintf("%.*s", (int)len, p->name + pl);
            if (!mods[nm]) s = MK_ERR_NOMEM;
            else om[nm] = (mk_peft_out_module){mods[nm], f->lora_r}, nm++;
        }
    }
    char *cfg = s == MK_OK ? mk_peft_config_text(base, f->lora_r, om, nm, NULL, 0, false, false, false) : NULL;
    if (s == MK_OK && !cfg) s = MK_ERR_NOMEM;
    if (s == MK_OK && !(tmp = mk_malloc(maxn * sizeof *tmp))) s = MK_ERR_NOMEM;
    mk_output o = {0};
    mk_consumer cons = {0};
    mk_output_opts oo = {.stem = "adapter_model", .force = f->force};
    if (s == MK_OK) s = mk_output_begin(&o, out, &oo, ti, n);
    if (s == MK_OK) s = mk_consumer_plain(&cons, o.k, ti, n, false);
    for (size_t i = 0; i < n && s == MK_OK; i++) {
        const mk_nn_param *p = mk_nn_train_param(f->t, i);
        bool is_b = strstr(p->name, ".lora_B.") != NULL;
        for (uint64_t e = 0; e < p->numel; e++) tmp[e] = is_b ? w[p->off + e] * sc : w[p->off + e];
        s = put_tensor(&cons, i, &ti[i], tmp);
    }
    if (s == MK_OK) s = mk_output_file(&o, MK_PEFT_CONFIG, cfg, strlen(cfg));
    if (s == MK_OK) s = finish_output(&o, r);
    if (cons.ops) cons.ops->close(&cons);
    mk_output_close(&o);
    for (size_t i = 0; i < nm; i++) free(mods[i]);
    free(mods), free(om), free(ti), free(tmp), free(cfg);
    return s;
}

/* ---- the command -------------------------------------------------------------------------- */

static mk_status check_opts(ft *f, mk_sched *sched)
{
    *sched = mk_sched_parse(f->sched);
    if (*sched == MK_SCHED_COUNT) return mk_error(MK_ERR_USAGE, "--schedule: '%s' is not constant, linear or cosine", f->sched);
    if (f->steps < 0 || f->steps > 100000000) return mk_error(MK_ERR_USAGE, "--steps %ld: between 1 and 1e8", f->steps);
    if (f->steps && f->epochs > 0) return mk_error(MK_ERR_USAGE, "--steps and --epochs: give one of them");
    if (!(f->epochs >= 0 && f->epochs <= 1e6)) return mk_error(MK_ERR_USAGE, "--epochs %g: between 0 and 1e6", f->epochs);
    if (f->batch < 1 || f->batch > 65536) return mk_error(MK_ERR_USAGE, "--batch %ld: between 1 and 65536", f->batch);
    if (f->accum < 1 || f->accum > 65536) return mk_error(MK_ERR_USAGE, "--grad-accum %ld: between 1 and 65536", f->accum);
    if (f->seq < 2 || f->seq > 1 << 20) return mk_error(MK_ERR_USAGE, "--seq %ld: between 2 and 1048576", f->seq);
    if (!(f->lr >= 0 && f->lr < 10)) return mk_error(MK_ERR_USAGE, "--lr %g: between 0 and 10", f->lr);
    if (!(f->clip >= 0)) return mk_error(MK_ERR_USAGE, "--clip %g: 0 (off) or more", f->clip);
    if (!(f->wd >= 0 && f->wd < 1e3)) return mk_error(MK_ERR_USAGE, "--weight-decay %g: 0 or more", f->wd);
    if (!(f->plw >= 0 && f->plw <= 1)) return mk_error(MK_ERR_USAGE, "--prompt-loss-weight %g: between 0 and 1", f->plw);
    if (f->warmup < 0) return mk_error(MK_ERR_USAGE, "--warmup %ld: 0 or more", f->warmup);
    if (f->stop_after < 0) return mk_error(MK_ERR_USAGE, "--stop-after %ld: 1 or more", f->stop_after);
    if (f->save_every < 0 || f->eval_every < 0) return mk_error(MK_ERR_USAGE, "--save-every / --eval-every: 0 or more");
    if (f->eval_every && !f->eval_text) return mk_error(MK_ERR_USAGE, "--eval-every needs --eval-text FILE");
    if (f->lora_r < 0 || f->lora_r > 65536) return mk_error(MK_ERR_USAGE, "--lora %ld: a rank between 1 and 65536", f->lora_r);
    if (f->lora_r) MK_TRY(mk_train_lora_targets(f->lora_targets, &f->targets));
    if (f->qlora && !f->lora_r) return mk_error(MK_ERR_USAGE, "--qlora trains LoRA adapters on an NF4 base: give --lora R");
    if (f->lora_alpha == 0) f->lora_alpha = (double)f->lora_r;
    if (f->lora_r && !(f->lora_alpha > 0 && f->lora_alpha < 1e6)) return mk_error(MK_ERR_USAGE, "--lora-alpha %g: above 0", f->lora_alpha);
    if (strcmp(f->device, "cuda") == 0) {
#ifdef MK_CUDA
        f->dev = &mk_cu_train_impl;
#else
        return mk_error(MK_ERR_USAGE, "--device cuda: this mergekit-c was built without CUDA (build it with make CUDA=1)");
#endif
    } else if (strcmp(f->device, "cpu") != 0) {
        return mk_error(MK_ERR_USAGE, "--device: '%s' is not cpu or cuda", f->device);
    }
    mk_dtype cd = mk_dtype_from_user(f->dtype);
    if (cd != MK_F32 && cd != MK_BF16) return mk_error(MK_ERR_USAGE, "--dtype: '%s' is not f32 or bf16", f->dtype);
    f->bf16 = cd == MK_BF16;
    if (strcmp(f->out_dtype, "input") != 0 && mk_dtype_from_user(f->out_dtype) != MK_F32 &&
        mk_dtype_from_user(f->out_dtype) != MK_BF16 && mk_dtype_from_user(f->out_dtype) != MK_F16)
        return mk_error(MK_ERR_USAGE, "--out-dtype: '%s' is not input, float32, bfloat16 or float16", f->out_dtype);
    return MK_OK;
}

static uint64_t machine_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 0;
}

/* The resident set of this process now (the program, its libraries, the tokenizer, the data):
 * what the run starts from. 0 when /proc is absent. */
static uint64_t resident_now(void)
{
    FILE *fp = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, res = 0;
    int n = fp ? fscanf(fp, "%llu %llu", &size, &res) : 0;
    if (fp) fclose(fp);
    long pg = sysconf(_SC_PAGESIZE);
    return n == 2 && pg > 0 ? (uint64_t)res * (uint64_t)pg : 0;
}

/* Print what the run needs (train/mem.h's parts, the data and the process so far); refuse it
 * over --max-memory or the machine's memory. */
static mk_status memory_check(ft *f, mk_source *src, const mk_train_data *d)
{
    uint64_t P = 0;
    for (size_t i = 0; i < src->n_tensors; i++) P += src->tensors[i].numel;
    mk_train_mem_req req = {f->lora_r, f->targets, f->qlora, f->bf16, f->ckpt, (size_t)f->batch, (size_t)f->seq, mk_qlora_bytes,
                            mk_train_qk_norm(src, f->cfg)};
    mk_train_mem mm;
    mk_train_mem_of(f->cfg, P, &req, &mm);
    uint64_t data = (uint64_t)d->n_rows * d->seq * 8;
    uint64_t base = resident_now(); /* holds the data already */
    uint64_t total = mm.total + (base > data ? base : data);
    char a[32], b[32], c[32], e[32], g[32], h[32], m[32], k[32], l[32], l2[32], bc[32];
    uint64_t mem = machine_memory();
    if (!f->c.quiet)
        fprintf(stderr, "finetune: memory: weights %s (%s)%s%s%s%s + gradients %s + AdamW moments %s + activations %s (%s %s) + "
                        "data %s + the process so far %s = %s; machine %s\n",
                mk_fmt_bytes(mm.weights, a), f->qlora ? "NF4 projections, the rest f32" : "f32",
                f->lora_r ? " + LoRA adapters " : "", f->lora_r ? mk_fmt_bytes(mm.adapters, l) : "",
                f->bf16 ? " + bf16-rounded copies " : "", f->bf16 ? mk_fmt_bytes(mm.bf16_copy, bc) : "",
                mk_fmt_bytes(mm.grads, b), mk_fmt_bytes(mm.moments, c), mk_fmt_bytes(mm.act, e),
                f->ckpt ? "without --checkpointing" : "with --checkpointing", mk_fmt_bytes(mm.act_other, g), mk_fmt_bytes(data, h),
                mk_fmt_bytes(base > data ? base - data : 0, l2), mk_fmt_bytes(total, m), mk_fmt_bytes(mem, k));
    if (f->max_mem && total > f->max_mem)
        return mk_error(MK_ERR_NOMEM, "finetune needs about %s, over --max-memory %s (try --checkpointing, a smaller --batch or "
                                      "--seq)", mk_fmt_bytes(total, m), mk_fmt_bytes(f->max_mem, a));
    if (mem && total > mem)
        return mk_error(MK_ERR_NOMEM, "finetune needs about %s, more than this machine's %s (try --checkpointing, a smaller "
                                      "--batch or --seq)", mk_fmt_bytes(total, m), mk_fmt_bytes(mem, a));
    return MK_OK;
}

static mk_status load_data(ft *f, const char *path, const mk_tokenizer *tk, mk_train_data *d)
{
    char *text = NULL;
    size_t len = 0;
    MK_TRY(mk_read_file(path, DATA_CAP, &text, &len));
    size_t pl = strlen(path);
    bool jsonl = (pl > 6 && strcmp(path + pl - 6, ".jsonl") == 0) || (pl > 5 && strcmp(path + pl - 5, ".json") == 0);
    mk_status s = mk_train_data_load(path, text, len, jsonl, tk, (size_t)f->seq, f->plw, d);
    free(text);
    return s;
}

/* What a run holds, released by run_free. */
typedef struct job {
    mk_source *src;
    mk_model_config cfg;
    bool have_cfg;
    mk_tokenizer *tk;
    mk_train_data d;
    mk_train_result r;
    char *ckpt;
    long steps;
} job;

static void job_free(ft *f, job *j)
{
    free(j->ckpt);
    mk_train_result_free(&j->r);
    mk_nn_train_close(f->t);
    mk_qlora_free(f->q);
    mk_train_data_free(&j->d);
    free(f->eval_ids);
    mk_tokenizer_free(j->tk);
    if (j->have_cfg) mk_model_config_free(&j->cfg);
    mk_source_close(j->src);
}

/* The model, its tokenizer, the data, the held-out text, the step count: every check that
 * needs no weights, before the memory line. */
static mk_status prepare(ft *f, char **pos, job *j)
{
    mk_source *raw = NULL;
    mk_qinfo qi;
    MK_TRY(mk_cli_open_model(pos[0], &raw));
    mk_status qs = mk_qsource_open(raw, &j->src, &qi); /* a quantized input reads dequantized */
    if (qs != MK_OK) {
        mk_source_close(raw);
        return qs;
    }
    if (qi.quantized && !f->lora_r)
        return mk_error(MK_ERR_USAGE, "%s is quantized (%s): it trains only with --lora R (or --qlora), the base frozen", pos[0],
                        qi.format);
    MK_TRY(mk_model_config_of_source(j->src, &j->cfg));
    j->have_cfg = true;
    f->cfg = &j->cfg;
    MK_TRY(mk_nn_train_check(j->src, &j->cfg));
    if (j->cfg.max_pos > 0 && f->seq > j->cfg.max_pos)
        return mk_error(MK_ERR_USAGE, "--seq %ld is longer than the model's context of %ld tokens (max_position_embeddings)",
                        f->seq, j->cfg.max_pos);
    MK_TRY(mk_cli_open_tokenizer(j->src, pos[0], &j->tk));
    MK_TRY(load_data(f, pos[1], j->tk, &j->d));
    if (f->eval_text) {
        MK_TRY(mk_cli_tokenize_file(j->tk, f->eval_text, &f->eval_ids, &f->eval_n, &f->eval_bos));
        if (!f->eval_ctx) f->eval_ctx = f->seq < 512 ? f->seq : 512;
        if (f->eval_ctx < 8 || f->eval_n < (size_t)f->eval_ctx)
            return mk_error(MK_ERR_USAGE, "--eval-text %s: %zu tokens, fewer than one window of %ld (--eval-ctx, at least 8)",
                            f->eval_text, f->eval_n, f->eval_ctx);
    }
    j->steps = f->steps;
    if (!j->steps) {
        double e = f->epochs > 0 ? f->epochs : 1.0;
        j->steps = (long)ceil(e * (double)j->d.n_rows / (double)(f->batch * f->accum));
        if (j->steps < 1) j->steps = 1;
    }
    size_t ol = strlen(pos[2]);
    while (ol > 1 && pos[2][ol - 1] == '/') ol--; /* OUT/ -> OUT.checkpoint beside it */
    j->ckpt = mk_asprintf("%.*s.checkpoint", (int)ol, pos[2]);
    return j->ckpt ? MK_OK : MK_ERR_NOMEM;
}

static void report(const ft *f, const char *out, const mk_train_result *r)
{
    double last = r->n_log ? r->log[r->n_log - 1].loss : 0.0;
    if (!f->c.quiet) fprintf(stderr, "mergekit-c: wrote %s: %ld steps, final loss %.4f, %.1f s\n", out, r->n_log, last, r->seconds);
    if (!f->c.json) return;
    mk_buf b = {0};
    mk_buf_puts(&b, "{\"out\": ");
    mk_buf_json_str(&b, out);
    mk_buf_printf(&b, ", \"steps\": %ld, \"resumed_at\": %ld, \"final_loss\": %.9g, \"tokens\": %llu, \"seconds\": %.3f}\n",
                  r->n_log, r->resumed_at, last, (unsigned long long)r->tokens, r->seconds);
    if (b.data) fputs(b.data, stdout);
    mk_buf_free(&b);
}

static mk_status run(ft *f, char **pos)
{
    mk_sched sched;
    MK_TRY(check_opts(f, &sched));
    const char *ins[2] = {pos[0], pos[1]};
    MK_TRY(mk_cli_check_output(pos[2], ins, 2));
    job j = {0};
    mk_status s = prepare(f, pos, &j);
    if (s == MK_OK) s = memory_check(f, j.src, &j.d);
    mk_nn_held held;
    if (s == MK_OK && f->qlora) s = mk_qlora_new(j.src, &f->q);
    if (f->q) held = (mk_nn_held){f->q, mk_nf4_hold_fill, mk_nf4_hold_codes};
    if (s == MK_OK) s = f->qlora ? mk_nn_train_open_held(j.src, &j.cfg, &held, &f->t) : mk_nn_train_open(j.src, &j.cfg, &f->t);
    mk_nn_lora lo = {f->lora_r, f->lora_alpha, f->rslora, f->targets, (uint64_t)f->seed};
    if (s == MK_OK && f->lora_r) s = mk_nn_train_lora(f->t, &lo);
    if (s == MK_OK && f->bf16) s = mk_nn_train_set_bf16(f->t);
    if (s == MK_OK && !f->c.quiet)
        fprintf(stderr, "finetune: %s on %s: %zu documents, %llu tokens in %zu rows of %ld; %ld steps of %ld x %ld rows, %s "
                        "schedule, lr %g, warmup %ld\n",
                pos[0], pos[1], j.d.n_docs, (unsigned long long)j.d.n_tokens, j.d.n_rows, f->seq, j.steps, f->batch, f->accum,
                mk_sched_name(sched), f->lr, f->warmup);
#ifdef MK_CUDA
    if (s == MK_OK && f->dev && !f->c.quiet) { /* what mk_cu_train_open checks against the GPU's free memory */
        char a[32];
        uint64_t need = mk_cu_train_need(f->t, (size_t)f->batch, (size_t)f->seq, f->ckpt);
        fprintf(stderr, "finetune: GPU memory: %s (%s, activations %s, scratch)\n", mk_fmt_bytes(need + MK_CU_TRAIN_RESERVE, a),
                f->qlora    ? "the frozen base's projections in NF4, one layer decoded, the rest f32; LoRA adapters, their "
                              "gradients and AdamW moments in f32"
                : f->lora_r ? "the frozen base in f32; LoRA adapters, their gradients and AdamW moments in f32"
                : f->bf16   ? "weights, gradients and AdamW moments in f32, a bf16 copy of the weights"
                            : "weights, gradients and AdamW moments in f32",
                f->ckpt ? "with --checkpointing" : "of every layer");
    }
#endif
    mk_train_opts to = {j.steps, f->warmup, f->lr, f->clip, sched, {0.9, 0.999, 1e-8, f->wd}, (size_t)f->batch,
                        (size_t)f->accum, (uint64_t)f->seed, f->ckpt, f->save_every,
                        f->eval_text ? (f->eval_every ? f->eval_every : j.steps) : 0, j.ckpt, f->resume, f->stop_after, f->dev};
    mk_train_hooks h = {f, on_step, on_eval, on_saved};
    if (s == MK_OK) {
        mk_signal_install();
        s = mk_train_run(f->t, &j.d, &to, &h, &j.r);
    }
    if (s == MK_OK && j.r.stopped) {
        if (!f->c.quiet)
            fprintf(stderr, "finetune: stopped after step %ld of %ld; %s holds the run, --resume continues it\n", j.r.n_log,
                    j.steps, j.ckpt);
    } else if (s == MK_OK) {
        s = f->lora_r ? write_adapter(f, pos[0], pos[2], &j.r) : write_model(f, j.src, pos[2], &j.r);
        if (s == MK_OK) {
            unlink(j.ckpt); /* the run is complete: its checkpoint has served */
            report(f, pos[2], &j.r);
        }
    }
    job_free(f, &j);
    return s;
}

int mk_cmd_finetune(int argc, char **argv)
{
    ft f = {.lr = 2e-5, .clip = 1.0, .batch = 4, .accum = 1, .seq = 256, .seed = 1, .sched = "cosine", .out_dtype = "input",
            .lora_targets = "all-linear", .device = "cpu", .dtype = "f32"};
    const mk_opt opts[] = {
        {"steps", 0, MK_OPT_INT, &f.steps, "N", "optimizer steps", "one epoch"},
        {"epochs", 0, MK_OPT_DOUBLE, &f.epochs, "E", "passes over the data (instead of --steps)", "1"},
        {"lr", 0, MK_OPT_DOUBLE, &f.lr, "X", "peak learning rate", "2e-5"},
        {"schedule", 0, MK_OPT_STR, &f.sched, "S", "learning-rate schedule after the warmup: constant, linear or cosine",
         "cosine"},
        {"warmup", 0, MK_OPT_INT, &f.warmup, "N", "steps of linear warmup from 0", "0"},
        {"batch", 'b', MK_OPT_INT, &f.batch, "N", "rows of --seq tokens per micro-batch", "4"},
        {"grad-accum", 0, MK_OPT_INT, &f.accum, "N", "micro-batches per optimizer step", "1"},
        {"clip", 0, MK_OPT_DOUBLE, &f.clip, "X", "clip the global gradient norm to X (0: off)", "1"},
        {"weight-decay", 0, MK_OPT_DOUBLE, &f.wd, "X", "AdamW's decoupled weight decay, on matrices only", "0"},
        {"seed", 0, MK_OPT_INT, &f.seed, "N", "seed of the data order", "1"},
        {"seq", 0, MK_OPT_INT, &f.seq, "N", "tokens per row; at most the model's context", "256"},
        {"prompt-loss-weight", 0, MK_OPT_DOUBLE, &f.plw, "W",
         "loss weight of prompt tokens in {\"prompt\", \"response\"} data: 0 = the response only, 1 = everything", "0"},
        {"checkpointing", 0, MK_OPT_FLAG, &f.ckpt, NULL,
         "keep only each layer's input and recompute its activations in the backward pass (same gradients, less memory)",
         NULL},
        {"eval-text", 0, MK_OPT_STR, &f.eval_text, "FILE",
         "held-out text: its perplexity (as eval) at the end of training; with --lora/--qlora, of the base with the "
         "adapters applied, and the KL divergence from the base",
         NULL},
        {"eval-every", 0, MK_OPT_INT, &f.eval_every, "N", "... and every N steps", "the end only"},
        {"eval-ctx", 0, MK_OPT_INT, &f.eval_ctx, "N", "window of the perplexity", "--seq, at most 512"},
        {"save-every", 0, MK_OPT_INT, &f.save_every, "N", "write the checkpoint OUT.checkpoint every N steps", "never"},
        {"stop-after", 0, MK_OPT_INT, &f.stop_after, "N",
         "train in sessions: after step N save OUT.checkpoint and stop (OUT is not written); --resume continues", NULL},
        {"resume", 0, MK_OPT_FLAG, &f.resume, NULL, "continue from OUT.checkpoint (same model, data and options)", NULL},
        {"max-memory", 0, MK_OPT_SIZE, &f.max_mem, "SIZE", "refuse to start when the run needs more", "the machine's memory"},
        {"dtype", 0, MK_OPT_STR, &f.dtype, "D",
         "compute precision: f32, or bf16 (mixed precision as torch.autocast(\"cpu\", dtype=torch.bfloat16): bf16 "
         "products, f32 master weights, moments, norms, softmax and loss)",
         "f32"},
        {"out-dtype", 0, MK_OPT_STR, &f.out_dtype, "DTYPE", "dtype of the weights in OUT: input, float32, bfloat16, float16",
         "input"},
        {"lora", 0, MK_OPT_INT, &f.lora_r, "R", "train only a LoRA adapter of rank R; OUT is a PEFT adapter folder", NULL},
        {"lora-alpha", 0, MK_OPT_DOUBLE, &f.lora_alpha, "A", "LoRA scale alpha / R", "R"},
        {"lora-targets", 0, MK_OPT_STR, &f.lora_targets, "LIST",
         "projections to adapt: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or all-linear", "all-linear"},
        {"qlora", 0, MK_OPT_FLAG, &f.qlora, NULL,
         "QLoRA: hold the frozen base's projections as NF4 (blocks of 64, as quantize --format nf4) and decode them a "
         "layer at a time; with --lora R. An NF4-quantized MODEL is held as it is",
         NULL},
        {"rslora", 0, MK_OPT_FLAG, &f.rslora, NULL, "rank-stabilised LoRA: scale alpha / sqrt(R)", NULL},
        {"device", 0, MK_OPT_STR, &f.device, "D",
         "cpu, or cuda: the steps on a GPU (make CUDA=1; full, --lora, --qlora, in f32 or bf16; docs/cuda.md)", "cpu"},
        {"force", 'f', MK_OPT_FLAG, &f.force, NULL, "replace OUT if it exists (only once the new output is complete)", NULL},
        MK_COMMON_OPTS(f.c),
        MK_HUB_OPTS(f.c),
        {0},
    };
    const mk_cmd_spec spec = {
        "finetune", "MODEL DATA OUT [options]",
        "Full finetuning on the CPU (llama, mistral, qwen2, qwen3), or with --device cuda on a GPU: heal a merge\n"
        "by continued pretraining on a text, or supervised finetuning on {\"prompt\", \"response\"} lines.",
        "DATA: a text file (one document), or JSONL (.jsonl) with {\"text\": ...} or {\"prompt\": ..., \"response\": ...}\n"
        "per line, tokenized with the model's tokenizer and packed into rows of --seq tokens. The loss is the\n"
        "mean NLL of the next token weighted per token (--prompt-loss-weight), over each optimizer step.\n"
        "AdamW (betas 0.9, 0.999, eps 1e-8) with f32 weights and moments, as torch.optim.AdamW; schedules as\n"
        "transformers; clipping as torch.nn.utils.clip_grad_norm_. The memory the run needs is printed first.\n"
        "--dtype bf16 computes as torch.autocast(\"cpu\", dtype=torch.bfloat16): bf16 products (projections,\n"
        "LoRA, attention, the head), f32 master weights, moments, norms, softmax and loss.\n"
        "OUT: a model folder (config.json and tokenizer of MODEL, train_log.jsonl, loss.svg). The same\n"
        "options give the same bytes at any -j, and --resume gives the bytes of an uninterrupted run;\n"
        "Ctrl-C saves OUT.checkpoint and stops. With --lora only adapters train (the base frozen) and OUT is a\n"
        "PEFT adapter folder that `lora apply` merges; --qlora holds the frozen base as NF4 (QLoRA), and an\n"
        "NF4-quantized MODEL (quantize --format nf4) trains with --lora or --qlora.\n"
        "Example (supervised, a little loss on the prompts):\n"
        "  mergekit-c finetune merged/ sft.jsonl healed/ --steps 200 --lr 1e-5 --warmup 20 --prompt-loss-weight 0.1",
        opts, 3, 3, 0x1};
    char *pos[3];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &f.c, true, &rc)) return rc;
    mk_status s = run(&f, pos);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}
