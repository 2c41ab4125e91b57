/* cmd_estimate.c - `mergekit-c estimate [MODEL]`: what a model needs to serve, to fully
 * finetune, or to LoRA / QLoRA finetune (model/estimate.h has the formulas and sources).
 * The parameter count comes from the tensors when MODEL has weights (exact), else from
 * config.json (formula), or from --params / --matrix for a model that is not on disk.
 */
#include "cli.h"

#include "../core/mk_io.h"
#include "../formats/mkz.h"
#include "../model/estimate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct est_opts {
    mk_common c;
    const char *dtype, *train, *optim, *targets, *params, *matrix;
    long rank;
    uint64_t batch, seq, adapters;
} est_opts;

typedef struct est_model {
    const char *source;    /* "tensors", "config.json", "--params", "--matrix" */
    bool has_shape, has_tensors;
    mk_est_shape shape;
    uint64_t params, linear;
    mk_source *src;
    mk_arch arch;          /* roles of the tensors' names */
} est_model;

/* Bytes per value of --dtype: float types from the dtype table, plus 8- and 4-bit names. */
static bool dtype_bytes(const char *s, double *b, const char **label)
{
    static const struct {
        const char *name;
        double bytes;
        const char *label;
    } extra[] = {{"int8", 1, "int8"}, {"8bit", 1, "int8"}, {"fp8", 1, "fp8"}, {"int4", 0.5, "int4"},
                 {"4bit", 0.5, "int4"}, {"nf4", 0.5, "nf4"}, {"fp4", 0.5, "fp4"}};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        if (strcmp(s, extra[i].name) == 0) {
            *b = extra[i].bytes;
            *label = extra[i].label;
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
        char *a = mk_path_join(path, "model.safetensors"), *b = mk_path_join(path, "model.safetensors.index.json");
        bool weights = (a && mk_path_exists(a)) || (b && mk_path_exists(b)) || mk_str_ends_with(path, ".safetensors") ||
                       mk_str_ends_with(path, ".mkz") || mk_mkz_probe(path);
        free(a);
        free(b);
        if (weights) {
            s = mk_cli_open_model(path, &m->src);
            if (s != MK_OK) {
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

int mk_cmd_estimate(int argc, char **argv)
{
    est_opts o = {.dtype = "bfloat16", .optim = "adam", .targets = "q,k,v,o", .rank = 0};
    const mk_opt opts[] = {
        {"dtype", 0, MK_OPT_STR, &o.dtype, "DTYPE", "weights and training values: float32, bfloat16, float16, fp8, int8, int4, nf4", "bfloat16"},
        {"train", 0, MK_OPT_STR, &o.train, "KIND", "none, full, lora or qlora (4-bit NF4 base, adapters at --dtype)", "full; lora with --lora-rank"},
        {"optimizer", 0, MK_OPT_STR, &o.optim, "NAME", "sgd (no state), momentum (1 value) or adam (2 values per trainable)", "adam"},
        {"lora-rank", 0, MK_OPT_INT, &o.rank, "R", "LoRA rank", "8"},
        {"lora-targets", 0, MK_OPT_STR, &o.targets, "LIST", "targeted matrices: q,k,v,o,gate,up,down, HF names (q_proj..), or all-linear", "q,k,v,o"},
        {"batch", 0, MK_OPT_U64, &o.batch, "B", "batch size: adds the KV cache (serving) and activations (training)", NULL},
        {"seq", 0, MK_OPT_U64, &o.seq, "S", "sequence length, with --batch", NULL},
        {"adapters", 0, MK_OPT_U64, &o.adapters, "N", "compare serving N finetunes as full copies vs one base + N LoRA adapters", NULL},
        {"params", 0, MK_OPT_STR, &o.params, "N", "parameter count instead of MODEL's (7B, 13e9, 175000000000)", NULL},
        {"matrix", 0, MK_OPT_STR, &o.matrix, "OUTxIN", "a model of one [OUT, IN] matrix (per-matrix LoRA arithmetic)", NULL},
        MK_COMMON_OPTS(o.c),
        {0},
    };
    const mk_cmd_spec spec = {
        "estimate", "[MODEL] [options]",
        "Memory needed to serve a model, to finetune it fully, or with LoRA / QLoRA (GB = 1e9 bytes).",
        "MODEL is a model folder, .safetensors file or .mkz container (parameters counted from the\n"
        "tensors), or a config.json (counted by formula). Serving: weights x 1.2, plus the KV cache\n"
        "with --batch and --seq. Training: weights + activations (with --batch and --seq) + gradients\n"
        "+ optimizer states, each value at --dtype: SGD 0, momentum 1, Adam 2 states per trainable value.",
        opts, 0, 1};
    char *pos[1];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &o.c, false, &rc)) return rc;

    est_model m = {0};
    mk_status s = MK_OK;
    double bpv = 0;
    const char *dlabel = NULL;
    mk_est_optim optim = MK_OPTIM_COUNT;
    for (int i = 0; i < MK_OPTIM_COUNT; i++)
        if (strcmp(o.optim, mk_est_optim_names[i]) == 0) optim = (mk_est_optim)i;
    bool lora_given = o.rank != 0;
    const char *train = o.train ? o.train : lora_given ? "lora" : "full";
    bool t_none = strcmp(train, "none") == 0, t_full = strcmp(train, "full") == 0, t_lora = strcmp(train, "lora") == 0,
         t_qlora = strcmp(train, "qlora") == 0;
    if (!o.rank) o.rank = 8;
    if (!dtype_bytes(o.dtype, &bpv, &dlabel))
        s = mk_error(MK_ERR_USAGE, "--dtype: '%s' is not float32, bfloat16, float16, fp8, int8, int4 or nf4", o.dtype);
    else if (optim == MK_OPTIM_COUNT)
        s = mk_error(MK_ERR_USAGE, "--optimizer: '%s' is not sgd, momentum or adam", o.optim);
    else if (!t_none && !t_full && !t_lora && !t_qlora)
        s = mk_error(MK_ERR_USAGE, "--train: '%s' is not none, full, lora or qlora", train);
    else if (o.rank < 1 || o.rank > 65536)
        s = mk_error(MK_ERR_USAGE, "--lora-rank: %ld is not between 1 and 65536", o.rank);
    else if ((o.batch == 0) != (o.seq == 0))
        s = mk_error(MK_ERR_USAGE, "--batch and --seq go together (got only %s)", o.batch ? "--batch" : "--seq");
    else if (npos + (o.params != NULL) + (o.matrix != NULL) != 1)
        s = mk_error(MK_ERR_USAGE, "give exactly one of MODEL, --params or --matrix");
    if (s == MK_OK && o.matrix) {
        long out = 0, in = 0;
        char tail;
        if (sscanf(o.matrix, "%ldx%ld%c", &out, &in, &tail) != 2 || out <= 0 || in <= 0 || out > 100000000L || in > 100000000L)
            s = mk_error(MK_ERR_USAGE, "--matrix: expected OUTxIN such as 4096x4096, got '%s'", o.matrix);
        else {
            mk_est_shape_matrix(&m.shape, out, in);
            m.has_shape = true;
            mk_est_params_shape(&m.shape, &m.params, &m.linear);
            m.source = "--matrix";
        }
    } else if (s == MK_OK && o.params) {
        uint64_t n = 0;
        if (!mk_parse_size(o.params, &n) || n == 0)
            s = mk_error(MK_ERR_USAGE, "--params: expected a count such as 7B, 13e9 or 70000000000, got '%s'", o.params);
        m.params = n;
        m.linear = n;
        m.source = "--params";
    } else if (s == MK_OK) {
        s = load_model(pos[0], &m);
    }
    if (s == MK_OK && o.batch && !m.has_shape)
        s = mk_error(MK_ERR_USAGE, "--batch/--seq need the model's shape (a config.json), which %s does not give",
                     npos ? pos[0] : "--params");
    /* LoRA trainables */
    uint64_t lora = 0, matched = 0;
    bool need_lora = t_lora || t_qlora || o.adapters;
    if (s == MK_OK && need_lora) {
        if (m.has_tensors) s = mk_est_lora_tensors(&m.arch, m.src->tensors, m.src->n_tensors, o.targets, o.rank, &lora, &matched);
        else if (m.has_shape) s = mk_est_lora_shape(&m.shape, o.targets, o.rank, &lora);
        else s = mk_error(MK_ERR_USAGE, "LoRA counts need the model's shape: give MODEL (or --matrix), not only --params");
    }
    if (s != MK_OK) {
        mk_arch_free(&m.arch);
        mk_source_close(m.src);
        return mk_cli_fail(s);
    }

    uint64_t N = m.params;
    double w = mk_est_weights(N, bpv);
    double serve = mk_est_serve(w);
    double kv = o.batch ? mk_est_kv_cache(&m.shape, o.batch, o.seq, bpv) : 0;
    double act = o.batch ? mk_est_activations(&m.shape, o.batch, o.seq, bpv) : 0;
    uint64_t trainable = t_full ? N : (t_lora || t_qlora) ? lora : 0;
    double tw = t_qlora ? mk_est_qlora_weights(m.linear, N - m.linear, bpv) : w;
    if (t_lora || t_qlora) tw += mk_est_weights(lora, bpv);
    double go = mk_est_grad_optim(trainable, bpv, optim);
    double grads = mk_est_weights(trainable, bpv), states = go - grads;
    double ttotal = tw + act + go;
    uint64_t fleet_full = 0, fleet_shared = 0;
    if (o.adapters) mk_est_fleet(N, lora, o.adapters, &fleet_full, &fleet_shared);

    char a[32], b[32], c[32];
    mk_buf out = {0};
    if (o.c.json) {
        mk_buf_puts(&out, "{\"model\": ");
        if (npos) mk_buf_json_str(&out, pos[0]);
        else mk_buf_puts(&out, "null");
        mk_buf_printf(&out, ", \"params_from\": \"%s\", \"params\": %llu, \"linear_params\": %llu, \"dtype\": \"%s\", "
                            "\"bytes_per_value\": %g,\n",
                      m.source, (unsigned long long)N, (unsigned long long)m.linear, dlabel, bpv);
        mk_buf_printf(&out, " \"serve\": {\"weights_bytes\": %.0f, \"rule_of_thumb_bytes\": %.0f, \"batch\": %llu, \"seq\": %llu, "
                            "\"kv_cache_bytes\": %.0f, \"total_bytes\": %.0f},\n",
                      w, serve, (unsigned long long)o.batch, (unsigned long long)o.seq, kv, serve + kv);
        mk_buf_printf(&out, " \"train\": {\"kind\": \"%s\", \"optimizer\": \"%s\", \"optimizer_states_per_value\": %u, "
                            "\"trainable_params\": %llu, \"weights_bytes\": %.0f, \"activations_bytes\": %.0f, "
                            "\"gradients_bytes\": %.0f, \"optimizer_bytes\": %.0f, \"total_bytes\": %.0f}",
                      train, mk_est_optim_names[optim], mk_est_optim_states(optim), (unsigned long long)trainable,
                      t_none ? 0 : tw, t_none ? 0 : act, grads, states, t_none ? 0 : ttotal);
        if (need_lora) {
            mk_buf_printf(&out, ",\n \"lora\": {\"rank\": %ld, \"targets\": ", o.rank);
            mk_buf_json_str(&out, o.targets);
            mk_buf_printf(&out, ", \"params\": %llu, \"bytes\": %.0f", (unsigned long long)lora, mk_est_weights(lora, bpv));
            if (m.has_tensors) mk_buf_printf(&out, ", \"matrices\": %llu", (unsigned long long)matched);
            mk_buf_puts(&out, "}");
        }
        if (o.adapters)
            mk_buf_printf(&out, ",\n \"adapters\": {\"count\": %llu, \"full_copies_params\": %llu, \"base_plus_adapters_params\": %llu}",
                          (unsigned long long)o.adapters, (unsigned long long)fleet_full, (unsigned long long)fleet_shared);
        mk_buf_puts(&out, "}\n");
    } else {
        mk_buf_printf(&out, "model: %s (parameters from %s)\n", npos ? pos[0] : m.source, m.source);
        mk_buf_printf(&out, "parameters: %s (%s)", mk_est_fmt_int(N, a), mk_est_fmt_count(N, b));
        if (m.has_shape && !m.shape.matrix)
            mk_buf_printf(&out, "; %ld layers, hidden %ld, %ld/%ld heads, intermediate %ld, vocab %ld", m.shape.layers,
                          m.shape.hidden, m.shape.heads, m.shape.kv_heads, m.shape.intermediate, m.shape.vocab);
        mk_buf_printf(&out, "\nvalues: %s (%g bytes each); GB = 1e9 bytes\n\nserve\n", dlabel, bpv);
        row(&out, "weights", w, NULL);
        row(&out, "weights x 1.2 (rule of thumb)", serve, NULL);
        if (o.batch) {
            char lbl[64];
            snprintf(lbl, sizeof lbl, "KV cache (batch %llu x seq %llu)", (unsigned long long)o.batch, (unsigned long long)o.seq);
            row(&out, lbl, kv, NULL);
            row(&out, "total", serve + kv, NULL);
        }
        if (!t_none) {
            mk_buf_printf(&out, "\ntrain: %s, %s (%u state%s per trainable value)\n", train, mk_est_optim_names[optim],
                          mk_est_optim_states(optim), mk_est_optim_states(optim) == 1 ? "" : "s");
            if (t_lora || t_qlora)
                mk_buf_printf(&out, "  %-34s %10s   %s at rank %ld on %s\n", "trainable parameters", mk_est_fmt_count(trainable, a),
                              mk_est_fmt_int(trainable, b), o.rank, o.targets);
            else
                mk_buf_printf(&out, "  %-34s %10s   %s\n", "trainable parameters", mk_est_fmt_count(trainable, a),
                              mk_est_fmt_int(trainable, b));
            if (t_lora || t_qlora) row(&out, "adapter weights", mk_est_weights(lora, bpv), NULL);
            row(&out, t_qlora ? "weights (NF4 base + adapters)" : (t_lora ? "weights (base + adapters)" : "weights"), tw, NULL);
            if (o.batch) row(&out, "activations", act, NULL);
            row(&out, "gradients", grads, NULL);
            row(&out, "optimizer states", states, NULL);
            snprintf(c, sizeof c, "%s", mk_est_fmt_bytes(go, a));
            mk_buf_printf(&out, "  %-34s %10s\n", "gradients + optimizer states", c);
            row(&out, o.batch ? "total" : "total (without activations)", ttotal, NULL);
        }
        if (o.adapters) {
            mk_buf_printf(&out, "\n%llu finetunes (LoRA rank %ld on %s: %s parameters each)\n", (unsigned long long)o.adapters,
                          o.rank, m.shape.matrix ? "the matrix" : o.targets, mk_est_fmt_int(lora, a));
            mk_buf_printf(&out, "  %-34s %10s   %s\n", "as full copies", mk_est_fmt_count(fleet_full, a),
                          mk_est_fmt_bytes(mk_est_weights(fleet_full, bpv), b));
            mk_buf_printf(&out, "  %-34s %10s   %s\n", "as one base + adapters", mk_est_fmt_count(fleet_shared, a),
                          mk_est_fmt_bytes(mk_est_weights(fleet_shared, bpv), b));
        }
    }
    fputs(out.data ? out.data : "", stdout);
    mk_buf_free(&out);
    mk_arch_free(&m.arch);
    mk_source_close(m.src);
    return 0;
}
