/* cmd_estimate.c - `mergekit-c estimate [MODEL]`: what a model needs to serve, to fully
 * finetune, or to LoRA / QLoRA finetune (model/estimate.h has the formulas and sources).
 * The parameter count comes from the tensors when MODEL has weights (exact), else from
 * config.json (formula), or from --params / --matrix for a model that is not on disk.
 * A quantized MODEL is read through quant/'s dequantizing view: parameters and LoRA counts
 * from its logical tensors, and, unless --dtype prices them, the weights at the bytes they
 * take as stored (model/ sees only these numbers).
 */
#include "cli.h"

#include "../core/mk_io.h"
#include "../formats/model.h"
#include "../model/estimate.h"
#include "../nn/cuda/cu_train.h"
#include "../quant/nf4hold.h"
#include "../quant/qsource.h"
#include "../quant/quant.h"
#include "../train/mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct est_opts {
    mk_common c;
    const char *dtype, *train, *optim, *targets, *params, *matrix;
    long rank;
    uint64_t batch, seq, adapters, gpu_mem;
} est_opts;

typedef struct est_model {
    const char *source;    /* "tensors", "config.json", "--params", "--matrix" */
    bool has_shape, has_tensors;
    mk_est_shape shape;
    uint64_t params, linear;
    mk_source *src;        /* the logical tensors (a quantized checkpoint: dequantizing view) */
    mk_arch arch;          /* roles of the tensors' names */
    mk_qinfo qi;           /* quantized: its format, and the bytes as stored */
} est_model;

/* Bytes per value of --dtype: float types from the dtype table, every quantization format
 * of the format table at its bits per code (scales not counted), and 8bit / 4bit. */
static bool dtype_bytes(const char *s, double *b, const char **label)
{
    const char *name = strcmp(s, "8bit") == 0 ? "int8" : strcmp(s, "4bit") == 0 ? "int4" : s;
    const mk_qformat *f = mk_qformat_find(name);
    if (f) {
        *b = f->bits / 8.0;
        *label = f->name;
        return true;
    }
    mk_dtype d = mk_dtype_from_user(s);
    if (d == MK_DTYPE_NONE || !mk_dtype_info(d)->is_float) return false;
    *b = mk_dtype_size(d);
    *label = mk_dtype_info(d)->torch_name;
    return true;
}

static mk_status load_model(const char *path, est_model *m)
{
    char *cfg = NULL;
    size_t len = 0;
    mk_status s = MK_OK;
    char *cfg_path = NULL;
    if (mk_is_file(path) && mk_str_ends_with(path, ".json")) {
        cfg_path = mk_strdup(path);
    } else {
        cfg_path = mk_path_join(path, "config.json");
        if (mk_model_probe(path)) {
            mk_source *raw = NULL;
            s = mk_cli_open_model(path, &raw);
            if (s == MK_OK) s = mk_qsource_open(raw, &m->src, &m->qi); /* quantized: count the logical tensors */
            if (s != MK_OK) {
                mk_source_close(raw);
                free(cfg_path);
                return s;
            }
            m->has_tensors = true;
            m->source = "tensors";
            s = m->src->ops->aux_read(m->src, "config.json", 16u << 20, &cfg, &len);
        }
    }
    if (!cfg_path) return MK_ERR_NOMEM;
    if (s == MK_OK && !cfg && mk_is_file(cfg_path)) s = mk_read_file(cfg_path, 16u << 20, &cfg, &len);
    if (s == MK_OK && m->has_tensors) s = mk_arch_from_config(cfg, cfg_path, &m->arch);
    if (s == MK_OK && m->has_tensors) mk_est_params_tensors(&m->arch, m->src->tensors, m->src->n_tensors, &m->params, &m->linear);
    if (s == MK_OK && cfg) {
        s = mk_est_shape_from_config(cfg, len, cfg_path, &m->shape);
        m->has_shape = s == MK_OK;
        if (s == MK_OK && !m->has_tensors) {
            mk_est_params_shape(&m->shape, &m->params, &m->linear);
            m->source = "config.json";
        }
    }
    if (s == MK_OK && !m->has_tensors && !m->has_shape)
        s = mk_error(MK_ERR_USAGE, "%s: no weights and no config.json to count parameters from", path);
    free(cfg);
    free(cfg_path);
    return s;
}

static void row(mk_buf *b, const char *what, double bytes, const char *note)
{
    char x[32];
    mk_buf_printf(b, "  %-34s %10s%s%s\n", what, mk_est_fmt_bytes(bytes, x), note ? "   " : "", note ? note : "");
}

/* Options -> request; a usage error names the option. */
static mk_status check_opts(est_opts *o, size_t npos, mk_est_request *r, const char **dlabel)
{
    memset(r, 0, sizeof *r);
    r->optim = MK_OPTIM_COUNT;
    for (int i = 0; i < MK_OPTIM_COUNT; i++)
        if (strcmp(o->optim, mk_est_optim_names[i]) == 0) r->optim = (mk_est_optim)i;
    if (!o->train) o->train = o->rank ? "lora" : "full";
    r->train = MK_TRAIN_COUNT;
    for (int i = 0; i < MK_TRAIN_COUNT; i++)
        if (strcmp(o->train, mk_est_train_names[i]) == 0) r->train = (mk_est_train)i;
    if (!o->rank) o->rank = 8;
    r->batch = o->batch;
    r->seq = o->seq;
    r->adapters = o->adapters;
    if (!dtype_bytes(o->dtype ? o->dtype : "bfloat16", &r->bpv, dlabel))
    {
        char names[160];
        return mk_error(MK_ERR_USAGE, "--dtype: '%s' is not float32, bfloat16, float16 or a quantization format (%s)", o->dtype,
                        mk_qformat_names(names, sizeof names, " or "));
    }
    if (r->optim == MK_OPTIM_COUNT) return mk_error(MK_ERR_USAGE, "--optimizer: '%s' is not sgd, momentum or adam", o->optim);
    if (r->train == MK_TRAIN_COUNT) return mk_error(MK_ERR_USAGE, "--train: '%s' is not none, full, lora or qlora", o->train);
    if (o->rank < 1 || o->rank > 65536) return mk_error(MK_ERR_USAGE, "--lora-rank: %ld is not between 1 and 65536", o->rank);
    if ((o->batch == 0) != (o->seq == 0))
        return mk_error(MK_ERR_USAGE, "--batch and --seq go together (got only %s)", o->batch ? "--batch" : "--seq");
    if (npos + (o->params != NULL) + (o->matrix != NULL) != 1)
        return mk_error(MK_ERR_USAGE, "give exactly one of MODEL, --params or --matrix");
    return MK_OK;
}

/* The model from --matrix, --params or MODEL, and its LoRA trainables when asked. */
static mk_status load(est_opts *o, const char *path, mk_est_request *r, est_model *m, uint64_t *lora, uint64_t *matched)
{
    if (o->matrix) {
        long out = 0, in = 0;
        char tail;
        if (sscanf(o->matrix, "%ldx%ld%c", &out, &in, &tail) != 2 || out <= 0 || in <= 0 || out > 100000000L || in > 100000000L)
            return mk_error(MK_ERR_USAGE, "--matrix: expected OUTxIN such as 4096x4096, got '%s'", o->matrix);
        mk_est_shape_matrix(&m->shape, out, in);
        m->has_shape = true;
        mk_est_params_shape(&m->shape, &m->params, &m->linear);
        m->source = "--matrix";
    } else if (o->params) {
        uint64_t n = 0;
        if (!mk_parse_size(o->params, &n) || n == 0)
            return mk_error(MK_ERR_USAGE, "--params: expected a count such as 7B, 13e9 or 70000000000, got '%s'", o->params);
        m->params = m->linear = n;
        m->source = "--params";
    } else {
        MK_TRY(load_model(path, m));
    }
    if (o->batch && !m->has_shape)
        return mk_error(MK_ERR_USAGE, "--batch/--seq need the model's shape (a config.json), which %s does not give",
                        path ? path : "--params");
    *lora = *matched = 0;
    if (m->qi.quantized && !o->dtype) r->stored = (double)m->qi.stored_bytes; /* the weights as stored */
    if (r->train != MK_TRAIN_LORA && r->train != MK_TRAIN_QLORA && !o->adapters) return MK_OK;
    if (m->has_tensors) return mk_est_lora_tensors(&m->arch, m->src->tensors, m->src->n_tensors, o->targets, o->rank, lora, matched);
    if (m->has_shape) return mk_est_lora_shape(&m->shape, o->targets, o->rank, lora);
    return mk_error(MK_ERR_USAGE, "LoRA counts need the model's shape: give MODEL (or --matrix), not only --params");
}

/* What `mergekit-c finetune --dtype f32|bf16` allocates for this request (train/mem.h, the
 * formula finetune prints before it starts): for a MODEL with tensors and a config the trainer
 * runs, --batch and --seq, and --dtype float32 or bfloat16. */
typedef struct est_trainer {
    bool on, bf16;
    uint64_t gpu_mem; /* --gpu-memory (0: not given) */
    mk_train_mem m, ckpt; /* without and with --checkpointing */
} est_trainer;

static void trainer_of(const est_opts *o, const est_model *m, const mk_est_request *r, est_trainer *tr)
{
    memset(tr, 0, sizeof *tr);
    mk_dtype d = mk_dtype_from_user(o->dtype ? o->dtype : "bfloat16");
    if (!m->has_tensors || !r->batch || r->train == MK_TRAIN_NONE || (d != MK_F32 && d != MK_BF16)) return;
    mk_model_config cfg;
    if (mk_model_config_of_source(m->src, &cfg) != MK_OK) {
        mk_error_clear();
        return;
    }
    unsigned targets = 0;
    bool lora = r->train == MK_TRAIN_LORA || r->train == MK_TRAIN_QLORA;
    if (!lora || mk_train_lora_targets(o->targets, &targets) == MK_OK) {
        mk_train_mem_req q = {lora ? o->rank : 0, targets, r->train == MK_TRAIN_QLORA, d == MK_BF16, false, r->batch, r->seq,
                              mk_qlora_bytes, mk_train_qk_norm(m->src, &cfg)};
        mk_train_mem_of(&cfg, m->params, &q, &tr->m);
        q.checkpointing = true;
        mk_train_mem_of(&cfg, m->params, &q, &tr->ckpt);
        tr->on = true, tr->bf16 = d == MK_BF16;
    }
    mk_error_clear();
    mk_model_config_free(&cfg);
}

static void print_trainer_json(mk_buf *out, const est_trainer *tr)
{
    const mk_train_mem *t = &tr->m;
    mk_buf_printf(out, ",\n \"finetune\": {\"dtype\": \"%s\", \"weights_bytes\": %llu, \"adapters_bytes\": %llu, "
                       "\"bf16_copy_bytes\": %llu, \"gradients_bytes\": %llu, \"moments_bytes\": %llu, \"activations_bytes\": "
                       "%llu, \"activations_checkpointing_bytes\": %llu, \"total_bytes\": %llu, \"total_checkpointing_bytes\": "
                       "%llu",
                  tr->bf16 ? "bf16" : "f32", (unsigned long long)t->weights, (unsigned long long)t->adapters,
                  (unsigned long long)t->bf16_copy, (unsigned long long)t->grads, (unsigned long long)t->moments,
                  (unsigned long long)t->act, (unsigned long long)tr->ckpt.act, (unsigned long long)t->total,
                  (unsigned long long)tr->ckpt.total);
    /* finetune --device cuda (full, LoRA or QLoRA) */
    if (t->gpu)
        mk_buf_printf(out, ", \"gpu_bytes\": %llu, \"gpu_checkpointing_bytes\": %llu", (unsigned long long)t->gpu,
                      (unsigned long long)tr->ckpt.gpu);
    else
        mk_buf_puts(out, ", \"gpu_bytes\": null, \"gpu_checkpointing_bytes\": null");
    if (tr->gpu_mem)
        mk_buf_printf(out, ", \"gpu_memory_bytes\": %llu, \"gpu_fits\": %s, \"gpu_fits_checkpointing\": %s",
                      (unsigned long long)tr->gpu_mem, t->gpu <= tr->gpu_mem ? "true" : "false",
                      tr->ckpt.gpu <= tr->gpu_mem ? "true" : "false");
    mk_buf_puts(out, "}");
}

static void print_trainer_text(mk_buf *out, const mk_est_request *r, const est_trainer *tr)
{
    const mk_train_mem *t = &tr->m;
    mk_buf_printf(out, "\nmergekit-c finetune --dtype %s (%s; AdamW, f32 gradients and moments; what it allocates, "
                       "before the data and the program)\n",
                  tr->bf16 ? "bf16" : "f32", tr->bf16 ? "f32 master weights, bf16 products" : "f32 throughout");
    row(out, r->train == MK_TRAIN_QLORA ? "weights (NF4 projections, rest f32)" : "weights (f32)", (double)t->weights, NULL);
    if (t->adapters) row(out, "LoRA adapters", (double)t->adapters, NULL);
    if (tr->bf16) row(out, "bf16-rounded copies", (double)t->bf16_copy, NULL);
    row(out, "gradients", (double)t->grads, NULL);
    row(out, "AdamW moments", (double)t->moments, NULL);
    row(out, "activations", (double)t->act, NULL);
    row(out, "activations with --checkpointing", (double)tr->ckpt.act, NULL);
    row(out, "total", (double)t->total, NULL);
    row(out, "total with --checkpointing", (double)tr->ckpt.total, NULL);
    if (!t->gpu) return;
    char a[32];
    bool lora = r->train == MK_TRAIN_LORA || r->train == MK_TRAIN_QLORA, q = r->train == MK_TRAIN_QLORA;
    const char *what = !lora      ? (tr->bf16 ? "weights, gradients and moments in f32, a bf16 copy of the weights"
                                              : "weights, gradients and moments in f32")
                       : q        ? (tr->bf16 ? "the projections as NF4 codes (a layer decoded to bf16 at a time), the rest of "
                                                "the base in bf16"
                                              : "the projections as NF4 codes (a layer decoded at a time), the rest of the base "
                                                "in f32")
                       : tr->bf16 ? "the frozen base in bf16 (its embedding and norms also in f32)"
                                  : "the frozen base in f32";
    mk_buf_printf(out, "\nmergekit-c finetune --device cuda%s --dtype %s (GPU memory, what it checks against the card before it "
                       "starts:\n%s%s; activations, scratch and %s kept free)\n",
                  !lora ? "" : q ? " --qlora" : " --lora", tr->bf16 ? "bf16" : "f32", what,
                  lora ? "; the adapters' weights, gradients and moments in f32" : "",
                  mk_est_fmt_bytes((double)MK_CU_TRAIN_RESERVE, a));
    char fit[96] = "", fitc[96] = "";
    if (tr->gpu_mem) {
        snprintf(fit, sizeof fit, "%s a %s card", t->gpu <= tr->gpu_mem ? "fits" : "does not fit", mk_est_fmt_bytes((double)tr->gpu_mem, a));
        snprintf(fitc, sizeof fitc, "%s", tr->ckpt.gpu <= tr->gpu_mem ? "fits" : "does not fit");
    }
    row(out, "GPU", (double)t->gpu, tr->gpu_mem ? fit : NULL);
    row(out, "GPU with --checkpointing", (double)tr->ckpt.gpu, tr->gpu_mem ? fitc : NULL);
}

/* Bits per weight of the quantized weights as stored (0 when they hold no value). */
static double qbpw(const mk_qinfo *q) { return q->q_numel ? 8.0 * (double)q->q_bytes / (double)q->q_numel : 0.0; }

static void print_json(mk_buf *out, const est_opts *o, const char *path, const est_model *m, const mk_est_request *r,
                       const char *dlabel, const mk_est_figures *f, uint64_t lora, uint64_t matched, const est_trainer *tr)
{
    bool none = r->train == MK_TRAIN_NONE, need_lora = r->train == MK_TRAIN_LORA || r->train == MK_TRAIN_QLORA || o->adapters;
    mk_buf_puts(out, "{\"model\": ");
    if (path) mk_buf_json_str(out, path);
    else mk_buf_puts(out, "null");
    mk_buf_printf(out, ", \"params_from\": \"%s\", \"params\": %llu, \"linear_params\": %llu, \"dtype\": \"%s\", "
                       "\"bytes_per_value\": %g,\n",
                  m->source, (unsigned long long)m->params, (unsigned long long)m->linear, dlabel, r->bpv);
    if (m->qi.quantized) {
        const mk_qinfo *q = &m->qi;
        char d[160];
        mk_buf_printf(out, " \"quantized\": {\"format\": \"%s\", \"layout\": \"%s\", \"description\": ", q->format, q->layout);
        mk_buf_json_str(out, mk_qinfo_describe(q, d));
        mk_buf_printf(out, ", \"quantized_tensors\": %zu, \"quantized_params\": %llu, \"quantized_bytes\": %llu, "
                           "\"bits_per_weight\": %.4f, \"stored_bytes\": %llu, \"weights_as_stored\": %s},\n",
                      q->n_quantized, (unsigned long long)q->q_numel, (unsigned long long)q->q_bytes,
                      qbpw(q), (unsigned long long)q->stored_bytes, r->stored > 0 ? "true" : "false");
    }
    mk_buf_printf(out, " \"serve\": {\"weights_bytes\": %.0f, \"rule_of_thumb_bytes\": %.0f, \"batch\": %llu, \"seq\": %llu, "
                       "\"kv_cache_bytes\": %.0f, \"total_bytes\": %.0f},\n",
                  f->weights, f->serve, (unsigned long long)r->batch, (unsigned long long)r->seq, f->kv, f->serve + f->kv);
    mk_buf_printf(out, " \"train\": {\"kind\": \"%s\", \"optimizer\": \"%s\", \"optimizer_states_per_value\": %u, "
                       "\"trainable_params\": %llu, \"weights_bytes\": %.0f, \"activations_bytes\": %.0f, "
                       "\"gradients_bytes\": %.0f, \"optimizer_bytes\": %.0f, \"total_bytes\": %.0f}",
                  mk_est_train_names[r->train], mk_est_optim_names[r->optim], mk_est_optim_states(r->optim),
                  (unsigned long long)f->trainable, none ? 0 : f->train_weights, none ? 0 : f->act, f->grads, f->states,
                  none ? 0 : f->train_total);
    if (need_lora) {
        mk_buf_printf(out, ",\n \"lora\": {\"rank\": %ld, \"targets\": ", o->rank);
        mk_buf_json_str(out, o->targets);
        mk_buf_printf(out, ", \"params\": %llu, \"bytes\": %.0f", (unsigned long long)lora, mk_est_weights(lora, r->bpv));
        if (m->has_tensors) mk_buf_printf(out, ", \"matrices\": %llu", (unsigned long long)matched);
        mk_buf_puts(out, "}");
    }
    if (o->adapters)
        mk_buf_printf(out, ",\n \"adapters\": {\"count\": %llu, \"full_copies_params\": %llu, \"base_plus_adapters_params\": %llu}",
                      (unsigned long long)o->adapters, (unsigned long long)f->fleet_full, (unsigned long long)f->fleet_shared);
    if (tr->on) print_trainer_json(out, tr);
    mk_buf_puts(out, "}\n");
}

static void print_train(mk_buf *out, const est_opts *o, const mk_est_request *r, const char *dlabel, const mk_est_figures *f,
                        uint64_t lora)
{
    char a[32], b[32];
    bool adapters = r->train == MK_TRAIN_LORA || r->train == MK_TRAIN_QLORA;
    unsigned states = mk_est_optim_states(r->optim);
    mk_buf_printf(out, "\ntrain: %s, %s (%u state%s per trainable value)\n", mk_est_train_names[r->train],
                  mk_est_optim_names[r->optim], states, states == 1 ? "" : "s");
    if (adapters)
        mk_buf_printf(out, "  %-34s %10s   %s at rank %ld on %s\n", "trainable parameters", mk_est_fmt_count(f->trainable, a),
                      mk_est_fmt_int(f->trainable, b), o->rank, o->targets);
    else
        mk_buf_printf(out, "  %-34s %10s   %s\n", "trainable parameters", mk_est_fmt_count(f->trainable, a),
                      mk_est_fmt_int(f->trainable, b));
    if (adapters) row(out, "adapter weights", mk_est_weights(lora, r->bpv), NULL);
    char lbl[64];
    if (r->stored > 0) /* a quantized model: the frozen base as stored; a full finetune trains dequantized weights */
        snprintf(lbl, sizeof lbl, adapters ? "weights (base as stored + adapters)" : "weights (dequantized, %s)", dlabel);
    else
        snprintf(lbl, sizeof lbl, "%s",
                 r->train == MK_TRAIN_QLORA ? "weights (NF4 base + adapters)" : (adapters ? "weights (base + adapters)" : "weights"));
    row(out, lbl, f->train_weights, NULL);
    if (r->batch) row(out, "activations", f->act, NULL);
    row(out, "gradients", f->grads, NULL);
    row(out, "optimizer states", f->states, NULL);
    mk_buf_printf(out, "  %-34s %10s\n", "gradients + optimizer states", mk_est_fmt_bytes(f->grad_optim, a));
    row(out, r->batch ? "total" : "total (without activations)", f->train_total, NULL);
}

static void print_text(mk_buf *out, const est_opts *o, const char *path, const est_model *m, const mk_est_request *r,
                       const char *dlabel, const mk_est_figures *f, uint64_t lora, const est_trainer *tr)
{
    char a[32], b[32];
    mk_buf_printf(out, "model: %s (parameters from %s)\n", path ? path : m->source, m->source);
    mk_buf_printf(out, "parameters: %s (%s)", mk_est_fmt_int(m->params, a), mk_est_fmt_count(m->params, b));
    if (m->has_shape && !m->shape.matrix)
        mk_buf_printf(out, "; %ld layers, hidden %ld, %ld/%ld heads, intermediate %ld, vocab %ld", m->shape.layers,
                      m->shape.hidden, m->shape.heads, m->shape.kv_heads, m->shape.intermediate, m->shape.vocab);
    if (m->qi.quantized) {
        const mk_qinfo *q = &m->qi;
        char d[160];
        mk_buf_printf(out, "\nstored: %s; %zu weights (%s parameters) at %.3f bits per weight; %s as stored", mk_qinfo_describe(q, d),
                      q->n_quantized, mk_est_fmt_int(q->q_numel, a), qbpw(q),
                      mk_est_fmt_bytes((double)q->stored_bytes, b));
    }
    if (r->stored > 0)
        mk_buf_printf(out, "\nvalues: the weights as stored, the rest %s (%g bytes each); GB = 1e9 bytes\n\nserve\n", dlabel, r->bpv);
    else if (m->qi.quantized)
        mk_buf_printf(out, "\nvalues: %s (%g bytes each), the weights too (--dtype); GB = 1e9 bytes\n\nserve\n", dlabel, r->bpv);
    else
        mk_buf_printf(out, "\nvalues: %s (%g bytes each); GB = 1e9 bytes\n\nserve\n", dlabel, r->bpv);
    row(out, r->stored > 0 ? "weights (as stored)" : "weights", f->weights, NULL);
    row(out, "weights x 1.2 (rule of thumb)", f->serve, NULL);
    if (r->batch) {
        char lbl[64];
        snprintf(lbl, sizeof lbl, "KV cache (batch %llu x seq %llu)", (unsigned long long)r->batch, (unsigned long long)r->seq);
        row(out, lbl, f->kv, NULL);
        row(out, "total", f->serve + f->kv, NULL);
    }
    if (r->train != MK_TRAIN_NONE) print_train(out, o, r, dlabel, f, lora);
    if (o->adapters) {
        mk_buf_printf(out, "\n%llu finetunes (LoRA rank %ld on %s: %s parameters each)\n", (unsigned long long)o->adapters,
                      o->rank, m->shape.matrix ? "the matrix" : o->targets, mk_est_fmt_int(lora, a));
        mk_buf_printf(out, "  %-34s %10s   %s\n", "as full copies", mk_est_fmt_count(f->fleet_full, a),
                      mk_est_fmt_bytes(f->fleet_full_bytes, b));
        mk_buf_printf(out, "  %-34s %10s   %s\n", "as one base + adapters", mk_est_fmt_count(f->fleet_shared, a),
                      mk_est_fmt_bytes(f->fleet_shared_bytes, b));
    }
    if (tr->on) print_trainer_text(out, r, tr);
}

int mk_cmd_estimate(int argc, char **argv)
{
    est_opts o = {.dtype = NULL, .optim = "adam", .targets = "q,k,v,o", .rank = 0};
    const mk_opt opts[] = {
        {"dtype", 0, MK_OPT_STR, &o.dtype, "DTYPE", "weights and training values: float32, bfloat16, float16, or a quantization format at its bits per code (nf4, int4, fp8, ...: see 'quantize --list-formats'); a quantized MODEL's weights too, instead of as stored", "bfloat16"},
        {"train", 0, MK_OPT_STR, &o.train, "KIND", "none, full, lora or qlora (4-bit NF4 base, adapters at --dtype)", "full; lora with --lora-rank"},
        {"optimizer", 0, MK_OPT_STR, &o.optim, "NAME", "sgd (no state), momentum (1 value) or adam (2 values per trainable)", "adam"},
        {"lora-rank", 0, MK_OPT_INT, &o.rank, "R", "LoRA rank", "8"},
        {"lora-targets", 0, MK_OPT_STR, &o.targets, "LIST", "targeted matrices: q,k,v,o,gate,up,down, HF names (q_proj..), or all-linear", "q,k,v,o"},
        {"batch", 0, MK_OPT_U64, &o.batch, "B", "batch size: adds the KV cache (serving) and activations (training)", NULL},
        {"seq", 0, MK_OPT_U64, &o.seq, "S", "sequence length, with --batch", NULL},
        {"adapters", 0, MK_OPT_U64, &o.adapters, "N", "compare serving N finetunes as full copies vs one base + N LoRA adapters", NULL},
        {"gpu-memory", 0, MK_OPT_SIZE, &o.gpu_mem, "SIZE", "a card's memory (80GiB): whether finetune --device cuda fits in it (--train full, lora or qlora of MODEL, with --batch and --seq)", NULL},
        {"params", 0, MK_OPT_STR, &o.params, "N", "parameter count instead of MODEL's (7B, 13e9, 175000000000)", NULL},
        {"matrix", 0, MK_OPT_STR, &o.matrix, "OUTxIN", "a model of one [OUT, IN] matrix (per-matrix LoRA arithmetic)", NULL},
        MK_COMMON_OPTS(o.c),
        MK_HUB_OPTS(o.c),
        {0},
    };
    const mk_cmd_spec spec = {
        "estimate", "[MODEL] [options]",
        "Memory needed to serve a model, to finetune it fully, or with LoRA / QLoRA (GB = 1e9 bytes).",
        "MODEL is a model folder, .safetensors, PyTorch .bin or .mkz file (parameters counted from the\n"
        "tensors), or a config.json (counted by formula). Serving: weights x 1.2, plus the KV cache\n"
        "with --batch and --seq. Training: weights + activations (with --batch and --seq) + gradients\n"
        "+ optimizer states, each value at --dtype: SGD 0, momentum 1, Adam 2 states per trainable value.\n"
        "A quantized MODEL (what quantize writes, or bitsandbytes / compressed-tensors checkpoints) counts\n"
        "its parameters as the model has them (a 4-bit weight of n values is n parameters, not the bytes\n"
        "that hold them), and its weights at the bytes they take as stored (codes, absmax or scales, maps:\n"
        "the bits per weight of its layout): to serve, and as the frozen base of LoRA / QLoRA; a full\n"
        "finetune trains them at --dtype. With --dtype, every weight is priced at that dtype instead.\n"
        "For a MODEL with tensors that `finetune` trains, --batch and --seq, and --dtype float32 or bfloat16,\n"
        "a last block gives what `mergekit-c finetune --dtype f32|bf16` itself allocates (f32 master\n"
        "weights, gradients and AdamW moments; bf16: plus the rounded copies its products read): the figure\n"
        "finetune prints before it starts, less the data and the program. It adds the GPU memory of\n"
        "`finetune --device cuda` (full, --lora or --qlora as --train says, f32 or bf16: the check it makes\n"
        "against the card before it starts), and with --gpu-memory whether that fits a card of that size,\n"
        "with and without --checkpointing.",
        opts, 0, 1, 0x1};
    char *pos[1];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &o.c, false, &rc)) return rc;
    est_model m = {0};
    mk_est_request r;
    const char *dlabel = NULL, *path = npos ? pos[0] : NULL;
    uint64_t lora = 0, matched = 0;
    mk_status s = check_opts(&o, npos, &r, &dlabel);
    if (s == MK_OK) s = load(&o, path, &r, &m, &lora, &matched);
    if (s == MK_OK) {
        mk_est_figures f;
        mk_est_compute(m.has_shape ? &m.shape : NULL, m.params, m.linear, lora, &r, &f);
        mk_buf out = {0};
        est_trainer tr;
        trainer_of(&o, &m, &r, &tr);
        tr.gpu_mem = o.gpu_mem;
        if (o.gpu_mem && !tr.m.gpu)
            s = mk_error(MK_ERR_USAGE, "--gpu-memory: the GPU figure needs a MODEL with tensors, --batch and --seq, at --dtype "
                                       "float32 or bfloat16");
        if (s != MK_OK) (void)0;
        else if (o.c.json) print_json(&out, &o, path, &m, &r, dlabel, &f, lora, matched, &tr);
        else print_text(&out, &o, path, &m, &r, dlabel, &f, lora, &tr);
        fputs(out.data ? out.data : "", stdout);
        mk_buf_free(&out);
    }
    mk_arch_free(&m.arch);
    mk_source_close(m.src);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}
