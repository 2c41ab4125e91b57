/* cmd_moe.c - `mergekit-c moe CONFIG.yaml OUT`: mixture-of-experts upcycling by a mergekit-moe
 * config. Wires the config (merge/moe.h), the models, the router vectors (random modes in
 * merge/moe.c; prompt modes from the base model's tokenizer and forward pass, nn/moe.h) and
 * the atomic output (formats/output.h): tensors streamed one at a time, then config.json,
 * tokenizer files and the config copied as mergekit_moe_config.yml. */
#include "cli.h"

#include "../core/mk_json.h"
#include "../formats/output.h"
#include "../merge/moe.h"
#include "../nn/moe.h"
#include "../nn/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#define MOE_MAX_MODELS 256

typedef struct moe_run {
    mk_moe_config cfg;
    size_t n;                            /* models */
    const mk_model_ref *refs[MOE_MAX_MODELS];
    mk_source *srcs[MOE_MAX_MODELS];
    mk_model_config mcfg[MOE_MAX_MODELS];
    const mk_model_config *cfgp[MOE_MAX_MODELS];
    size_t n_cfg;
    mk_moe_plan plan;
} moe_run;

/* The base model's torch_dtype (or transformers 5's "dtype") from its config.json. */
static mk_dtype config_dtype(mk_source *src)
{
    char *text = NULL;
    size_t len = 0;
    mk_dtype d = MK_DTYPE_NONE;
    if (!src->ops->aux_read || src->ops->aux_read(src, "config.json", 16u << 20, &text, &len) != MK_OK || !text) return d;
    mk_json j;
    mk_json_limits lim = {64, len / 2 + 16};
    if (mk_json_parse(&j, text, len, &lim, src->path) == MK_OK) {
        uint32_t v = mk_json_get(&j, 0, "torch_dtype");
        if (!v) v = mk_json_get(&j, 0, "dtype");
        if (v && mk_json_at(&j, v)->type == MK_JSON_STR) {
            mk_dtype t = mk_dtype_from_user(mk_json_strv(&j, v));
            if (t == MK_F32 || t == MK_F16 || t == MK_BF16) d = t;
        }
        mk_json_free(&j);
    }
    free(text);
    return d;
}

/* Token ids of "BOS text + prompt" without added special tokens, as router.py's
 * tokenize_prompts gives them to the model. */
static mk_status tokenize_prompts(const mk_tokenizer *t, char *const *prompts, size_t n, int32_t **ids, size_t *n_ids)
{
    size_t bl = 0;
    int32_t bos = mk_tokenizer_bos(t);
    const char *bt = bos >= 0 ? mk_tokenizer_token(t, bos, &bl) : NULL;
    for (size_t i = 0; i < n; i++) {
        char *text = mk_asprintf("%.*s%s", (int)(bt ? bl : 0), bt ? bt : "", prompts[i]);
        if (!text) return MK_ERR_NOMEM;
        mk_status s = mk_tokenizer_encode(t, text, strlen(text), false, &ids[i], &n_ids[i]);
        free(text);
        if (s != MK_OK) return mk_error_prefix(s, "prompt '%.40s'", prompts[i]);
    }
    return MK_OK;
}

/* One set of prompts' vectors [L, H] into v. */
static mk_status prompt_vectors(mk_nn_model *nn, const mk_tokenizer *t, bool hidden, char *const *prompts, size_t n, float *v)
{
    int32_t **ids = mk_calloc(n, sizeof *ids);
    size_t *n_ids = mk_calloc(n, sizeof *n_ids);
    mk_status s = ids && n_ids ? tokenize_prompts(t, prompts, n, ids, n_ids) : MK_ERR_NOMEM;
    if (s == MK_OK) s = mk_nn_moe_prompt_vectors(nn, hidden, ids, n_ids, n, v);
    for (size_t i = 0; ids && i < n; i++) free(ids[i]);
    free(ids);
    free(n_ids);
    return s;
}

/* router.py get_gate_params for gate_mode hidden / cheap_embed: per gate expert, the
 * positive prompts' vectors minus the negative ones', normalized; into plan.gates. */
static mk_status prompt_gates(moe_run *r)
{
    mk_moe_plan *p = &r->plan;
    mk_source *src = r->srcs[0];
    mk_tokenizer *t = NULL;
    mk_nn_model *nn = NULL;
    MK_TRY(mk_cli_open_tokenizer(src, r->cfg.base.text, &t));
    mk_status s = mk_nn_open(src, &r->mcfg[0], &nn);
    size_t L = (size_t)r->mcfg[0].layers, H = (size_t)r->mcfg[0].hidden, G = p->n_gate_experts;
    float *pos = mk_malloc(L * H * sizeof(float)), *neg = mk_malloc(L * H * sizeof(float));
    if (s == MK_OK && (!pos || !neg)) s = MK_ERR_NOMEM;
    bool hidden = r->cfg.gate == MK_MOE_GATE_HIDDEN;
    for (size_t e = 0; e < G && s == MK_OK; e++) {
        const mk_moe_expert *x = e < r->cfg.n_experts ? &r->cfg.experts[e] : &r->cfg.shared[e - r->cfg.n_experts];
        s = prompt_vectors(nn, t, hidden, x->pos, x->n_pos, pos);
        if (s == MK_OK && x->n_neg) s = prompt_vectors(nn, t, hidden, x->neg, x->n_neg, neg);
        if (s != MK_OK) {
            s = mk_error_prefix(s, "%s:%d:%d: expert %zu", r->cfg.path, x->at.line, x->at.col, e);
            break;
        }
        mk_moe_gate_finish(pos, x->n_neg ? neg : NULL, L, H);
        for (size_t l = 0; l < L; l++) memcpy(p->gates + (l * G + e) * H, pos + l * H, H * sizeof(float));
    }
    free(pos);
    free(neg);
    mk_nn_close(nn);
    mk_tokenizer_free(t);
    return s;
}

static mk_status open_models(moe_run *r)
{
    r->n = mk_moe_models(&r->cfg, r->refs, MOE_MAX_MODELS);
    if (r->n == MOE_MAX_MODELS) return mk_error(MK_ERR_RECIPE, "%s: more than %d models", r->cfg.path, MOE_MAX_MODELS - 1);
    for (size_t i = 0; i < r->n; i++) {
        if (r->refs[i]->lora)
            return mk_error(MK_ERR_UNSUPPORTED, "%s:%d:%d: %s: adapters (model+lora) are not supported in MoE configs", r->cfg.path,
                            r->refs[i]->pos.line, r->refs[i]->pos.col, r->refs[i]->text);
        MK_TRY(mk_cli_open_model(r->refs[i]->path, &r->srcs[i]));
        MK_TRY(mk_model_config_of_source(r->srcs[i], &r->mcfg[i]));
        r->cfgp[i] = &r->mcfg[i];
        r->n_cfg = i + 1;
    }
    return MK_OK;
}

static void moe_run_free(moe_run *r)
{
    mk_moe_plan_free(&r->plan);
    for (size_t i = 0; i < r->n_cfg; i++) mk_model_config_free(&r->mcfg[i]);
    for (size_t i = 0; i < r->n; i++) mk_source_close(r->srcs[i]);
    mk_moe_config_free(&r->cfg);
}

typedef struct moe_opts {
    const char *out;
    uint64_t shard, seed;
    bool force, all_same, dry_run;
} moe_opts;

static mk_status write_output(moe_run *r, const moe_opts *o, const mk_common *c)
{
    mk_moe_plan *p = &r->plan;
    mk_output w = {0};
    mk_consumer cons = {0};
    mk_output_opts oo = {.shard_size = o->shard, .force = o->force};
    mk_status s = mk_output_begin(&w, o->out, &oo, p->outs, p->n);
    if (s == MK_OK) s = mk_consumer_plain(&cons, w.k, p->outs, p->n, false);
    mk_progress prog;
    mk_progress_init(&prog, "moe", c);
    if (s == MK_OK) s = mk_moe_run(p, &cons, mk_progress_cb, &prog);
    mk_progress_end(&prog);
    mk_hfconfig_edit e = {.set = (const char *const *)p->cfg_set};
    bool found = false;
    if (s == MK_OK) s = mk_output_config(&w, r->srcs[0], &e, &found);
    if (s == MK_OK && !found) s = mk_error(MK_ERR_FORMAT, "%s: no config.json", r->srcs[0]->path);
    if (s == MK_OK) s = mk_output_tokenizer(&w, r->srcs[0]);
    if (s == MK_OK) s = mk_output_file(&w, "mergekit_moe_config.yml", r->cfg.text, r->cfg.text_len);
    if (s == MK_OK) s = mk_output_seal(&w);
    if (s == MK_OK) s = mk_output_commit(&w);
    if (cons.ops) cons.ops->close(&cons);
    mk_output_close(&w);
    return s;
}

static mk_status run(const char *config, const moe_opts *o, const mk_common *c)
{
    moe_run *r = mk_calloc(1, sizeof *r);
    if (!r) return MK_ERR_NOMEM;
    double t0 = mk_now();
    mk_status s = mk_moe_config_load(config, &r->cfg);
    if (s == MK_OK) s = open_models(r);
    if (s == MK_OK) {
        const char *in[MOE_MAX_MODELS];
        for (size_t i = 0; i < r->n; i++) in[i] = r->srcs[i]->path;
        s = mk_cli_check_output(o->out, in, r->n);
    }
    /* config.py is_bad_config: every expert the same model makes a model no better than one */
    bool same = r->cfg.n_experts > 1;
    for (size_t i = 1; s == MK_OK && i < r->cfg.n_experts; i++) same &= strcmp(r->cfg.experts[i].ref.key, r->cfg.experts[0].ref.key) == 0;
    if (s == MK_OK && same && !o->all_same)
        s = mk_error(MK_ERR_RECIPE, "%s: every expert is the same model: the MoE would cost more and answer the same "
                                    "(--i-understand-this-is-not-useful-without-training to make it for training)", config);
    if (s == MK_OK) {
        r->plan.out_dtype = config_dtype(r->srcs[0]);
        s = mk_moe_plan_build(&r->plan, &r->cfg, r->srcs, r->cfgp, r->n);
    }
    r->plan.seed = o->seed;
    if (s == MK_OK && !o->dry_run) {
        if (r->cfg.gate == MK_MOE_GATE_RANDOM || r->cfg.gate == MK_MOE_GATE_UNIFORM_RANDOM) s = mk_moe_random_gates(&r->plan);
        else s = prompt_gates(r);
    }
    if (s == MK_OK && o->dry_run) {
        uint64_t bytes = 0;
        if (c->json) printf("{\"architecture\": \"%s\", \"tensors\": [", mk_moe_arch_name(r->plan.arch));
        for (size_t i = 0; i < r->plan.n; i++) {
            char sh[160];
            const mk_tensor_info *t = &r->plan.outs[i];
            bytes += t->nbytes;
            if (c->json)
                printf("%s\n  {\"name\": \"%s\", \"dtype\": \"%s\", \"shape\": %s}", i ? "," : "", t->name,
                       mk_dtype_info(t->dtype)->name, mk_shape_str(t, sh));
            else printf("%-64s %-8s %s\n", t->name, mk_dtype_info(t->dtype)->name, mk_shape_str(t, sh));
        }
        char a[32];
        if (c->json) printf("\n], \"bytes\": %llu}\n", (unsigned long long)bytes);
        else
            printf("%s: %zu experts, %ld per token, gate_mode %s, %zu tensors, %s\n", mk_moe_arch_name(r->plan.arch), r->cfg.n_experts,
                   r->cfg.experts_per_token, mk_moe_gate_name(r->cfg.gate), r->plan.n, mk_fmt_bytes(bytes, a));
    } else if (s == MK_OK) {
        s = write_output(r, o, c);
        if (s == MK_OK && !c->quiet) {
            char a[32];
            uint64_t bytes = 0;
            for (size_t i = 0; i < r->plan.n; i++) bytes += r->plan.outs[i].nbytes;
            fprintf(stderr, "mergekit-c: wrote %s: %s, %zu experts (%ld per token), gate_mode %s, %zu tensors, %s in %.1f s\n",
                    o->out, mk_moe_arch_name(r->plan.arch), r->cfg.n_experts, r->cfg.experts_per_token, mk_moe_gate_name(r->cfg.gate),
                    r->plan.n, mk_fmt_bytes(bytes, a), mk_now() - t0);
        }
        if (s == MK_OK && c->json)
            printf("{\"out\": \"%s\", \"architecture\": \"%s\", \"experts\": %zu, \"experts_per_token\": %ld, \"gate_mode\": \"%s\", "
                   "\"tensors\": %zu}\n",
                   o->out, mk_moe_arch_name(r->plan.arch), r->cfg.n_experts, r->cfg.experts_per_token, mk_moe_gate_name(r->cfg.gate),
                   r->plan.n);
    }
    moe_run_free(r);
    free(r);
    return s;
}

int mk_cmd_moe(int argc, char **argv)
{
    mk_common c = {0};
    moe_opts o = {.shard = 5000000000ull, .seed = 0};
    const mk_opt opts[] = {
        {"out-shard-size", 0, MK_OPT_SIZE, &o.shard, "SIZE", "maximum bytes of tensor data per shard (5e9, 500M, 2G)", "5e9"},
        {"force", 'f', MK_OPT_FLAG, &o.force, NULL, "replace OUT if it exists (only once the new output is complete)", NULL},
        {"dry-run", 'n', MK_OPT_FLAG, &o.dry_run, NULL, "print the output tensors and the architecture; write nothing", NULL},
        {"seed", 0, MK_OPT_U64, &o.seed, "N", "seed of gate_mode random / uniform_random (as torch.manual_seed(N)) and of noise_scale noise", "0"},
        {"i-understand-this-is-not-useful-without-training", 0, MK_OPT_FLAG, &o.all_same, NULL,
         "allow every expert to be the same model (mergekit-moe's flag)", NULL},
        MK_COMMON_OPTS(c),
        MK_HUB_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {
        "moe", "CONFIG.yaml OUT [options]",
        "Mixture-of-experts upcycling by a mergekit-moe config: the base model's attention, norms and\n"
        "embeddings, each expert model's MLP as one expert of every layer, and a router per layer.",
        "CONFIG is mergekit-moe's YAML (base_model, experts with source_model, positive_prompts,\n"
        "negative_prompts, noise_scale, residual_scale; gate_mode hidden | cheap_embed | random |\n"
        "uniform_random; dtype; experts_per_token; shared_experts; architecture mixtral | qwen | qwen3).\n"
        "Output: Mixtral (llama or mistral models), Qwen2-MoE (architecture: qwen, one shared expert with\n"
        "a sigmoid gate) or Qwen3-MoE (qwen3 models), in the tensor layout transformers loads, with\n"
        "config.json, the base model's tokenizer files and the config as mergekit_moe_config.yml.\n"
        "Routers: cheap_embed sums the prompts' token embeddings; hidden runs the base model on the\n"
        "prompts (CPU, f32) and takes each layer's input at the last token; negative prompts are\n"
        "subtracted; each vector is normalized. random and uniform_random draw what torch draws after\n"
        "torch.manual_seed(--seed) (mergekit-moe seeds at random). noise_scale noise is mergekit-c's own.\n"
        "Tensors stream one at a time into OUT.tmp, renamed to OUT when complete.",
        opts, 2, 2, 0};
    char *pos[2];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    o.out = pos[1];
    mk_status s = run(pos[0], &o, &c);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}
