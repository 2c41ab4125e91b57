/* cmd_synth.c - `mergekit-c synth OUT`: random checkpoints shaped like real ones, and
 * seeded "finetunes" of them, for tests, demos and benchmarks.
 *
 * Values depend only on (seed, tensor name, element index) through the counter-based
 * generator and exactly-rounded arithmetic, so a given command writes the same bytes on
 * every machine and at any thread count. Weights look like trained ones: matrices are
 * normal with a per-matrix standard deviation around 0.02 and about one element in 5,000
 * an outlier several times larger; norm weights are near 1.
 */
#include "cli.h"

#include "../core/mk_io.h"
#include "../core/mk_parallel.h"
#include "../core/mk_rng.h"
#include "../formats/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNTH_CHUNK (1u << 20)
#define OUTLIER_RATE (1.0 / 5000.0)

typedef struct synth_opts {
    mk_common c;
    long hidden, layers, heads, kv_heads, intermediate, vocab, max_pos;
    const char *dtype, *arch, *finetune_of;
    uint64_t seed, shard_size;
    double delta, density, std;
    bool tie, force;
} synth_opts;

typedef enum { GEN_MATRIX, GEN_NORM, GEN_BIAS } gen_kind;

typedef struct synth_tensor {
    mk_tensor_info info;
    gen_kind kind;
    double std;
} synth_tensor;

typedef struct synth_model {
    size_t n, cap;
    synth_tensor *t;
} synth_model;

static mk_status add(synth_model *m, mk_dtype dt, gen_kind kind, const char *fmt, long layer, int ndim, int64_t d0, int64_t d1)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        synth_tensor *t = mk_realloc_array(m->t, cap, sizeof *t);
        if (!t) return MK_ERR_NOMEM;
        m->t = t;
        m->cap = cap;
    }
    synth_tensor *t = &m->t[m->n];
    memset(t, 0, sizeof *t);
    char name[256];
    snprintf(name, sizeof name, fmt, layer);
    t->info.name = mk_strdup(name);
    if (!t->info.name) return MK_ERR_NOMEM;
    m->n++;
    t->info.dtype = dt;
    t->info.ndim = ndim;
    t->info.shape[0] = d0;
    t->info.shape[1] = d1;
    t->kind = kind;
    return mk_tensor_info_finish(&t->info);
}

/* The architectures synth can write: transformers' module names (modeling_llama.py,
 * modeling_qwen2.py, modeling_qwen3.py, modeling_gemma.py, modeling_gemma2.py,
 * modeling_phi3.py, modeling_gpt2.py) and the config keys they read. */
typedef enum { A_LLAMA, A_MISTRAL, A_QWEN2, A_QWEN3, A_GEMMA, A_GEMMA2, A_PHI3, A_GPT2 } synth_arch;

static const struct {
    const char *name, *arch_name, *model_type;
    synth_arch id;
} synth_archs[] = {
    {"llama", "LlamaForCausalLM", "llama", A_LLAMA},    {"mistral", "MistralForCausalLM", "mistral", A_MISTRAL},
    {"qwen2", "Qwen2ForCausalLM", "qwen2", A_QWEN2},    {"qwen3", "Qwen3ForCausalLM", "qwen3", A_QWEN3},
    {"gemma", "GemmaForCausalLM", "gemma", A_GEMMA},    {"gemma2", "Gemma2ForCausalLM", "gemma2", A_GEMMA2},
    {"phi3", "Phi3ForCausalLM", "phi3", A_PHI3},        {"gpt2", "GPT2LMHeadModel", "gpt2", A_GPT2},
};

/* Llama-family layout (model.layers.N...), with each architecture's differences. */
static mk_status build_llama(synth_model *m, const synth_opts *o, mk_dtype dt, synth_arch a)
{
    long hd = o->hidden / o->heads;
    int64_t h = o->hidden, q = o->heads * hd, kv = o->kv_heads * hd, f = o->intermediate;
    MK_TRY(add(m, dt, GEN_MATRIX, "model.embed_tokens.weight", 0, 2, o->vocab, h));
    for (long l = 0; l < o->layers; l++) {
        MK_TRY(add(m, dt, GEN_NORM, "model.layers.%ld.input_layernorm.weight", l, 1, h, 0));
        if (a == A_PHI3) {
            MK_TRY(add(m, dt, GEN_MATRIX, "model.layers.%ld.self_attn.qkv_proj.weight", l, 2, q + 2 * kv, h));
        } else {
            MK_TRY(add(m, dt, GEN_MATRIX, "model.layers.%ld.self_attn.q_proj.weight", l, 2, q, h));
            MK_TRY(add(m, dt, GEN_MATRIX, "model.layers.%ld.self_attn.k_proj.weight", l, 2, kv, h));
            MK_TRY(add(m, dt, GEN_MATRIX, "model.layers.%ld.self_attn.v_proj.weight", l, 2, kv, h));
        }
        if (a == A_QWEN2) {
            MK_TRY(add(m, dt, GEN_BIAS, "model.layers.%ld.self_attn.q_proj.bias", l, 1, q, 0));
            MK_TRY(add(m, dt, GEN_BIAS, "model.layers.%ld.self_attn.k_proj.bias", l, 1, kv, 0));
            MK_TRY(add(m, dt, GEN_BIAS, "model.layers.%ld.self_attn.v_proj.bias", l, 1, kv, 0));
        }
        if (a == A_QWEN3) {
            MK_TRY(add(m, dt, GEN_NORM, "model.layers.%ld.self_attn.q_norm.weight", l, 1, hd, 0));
            MK_TRY(add(m, dt, GEN_NORM, "model.layers.%ld.self_attn.k_norm.weight", l, 1, hd, 0));
        }
        MK_TRY(add(m, dt, GEN_MATRIX, "model.layers.%ld.self_attn.o_proj.weight", l, 2, h, q));
        MK_TRY(add(m, dt, GEN_NORM, "model.layers.%ld.post_attention_layernorm.weight", l, 1, h, 0));
        if (a == A_GEMMA2) {
            MK_TRY(add(m, dt, GEN_NORM, "model.layers.%ld.pre_feedforward_layernorm.weight", l, 1, h, 0));
            MK_TRY(add(m, dt, GEN_NORM, "model.layers.%ld.post_feedforward_layernorm.weight", l, 1, h, 0));
        }
        if (a == A_PHI3) {
            MK_TRY(add(m, dt, GEN_MATRIX, "model.layers.%ld.mlp.gate_up_proj.weight", l, 2, 2 * f, h));
        } else {
            MK_TRY(add(m, dt, GEN_MATRIX, "model.layers.%ld.mlp.gate_proj.weight", l, 2, f, h));
            MK_TRY(add(m, dt, GEN_MATRIX, "model.layers.%ld.mlp.up_proj.weight", l, 2, f, h));
        }
        MK_TRY(add(m, dt, GEN_MATRIX, "model.layers.%ld.mlp.down_proj.weight", l, 2, h, f));
    }
    MK_TRY(add(m, dt, GEN_NORM, "model.norm.weight", 0, 1, h, 0));
    if (!o->tie) MK_TRY(add(m, dt, GEN_MATRIX, "lm_head.weight", 0, 2, o->vocab, h));
    return MK_OK;
}

/* GPT-2 as the original checkpoints store it: no "transformer." prefix, Conv1D weights
 * [in, out], lm_head tied to wte. */
static mk_status build_gpt2(synth_model *m, const synth_opts *o, mk_dtype dt)
{
    int64_t h = o->hidden, f = o->intermediate;
    MK_TRY(add(m, dt, GEN_MATRIX, "wte.weight", 0, 2, o->vocab, h));
    MK_TRY(add(m, dt, GEN_MATRIX, "wpe.weight", 0, 2, o->max_pos, h));
    for (long l = 0; l < o->layers; l++) {
        MK_TRY(add(m, dt, GEN_NORM, "h.%ld.ln_1.weight", l, 1, h, 0));
        MK_TRY(add(m, dt, GEN_BIAS, "h.%ld.ln_1.bias", l, 1, h, 0));
        MK_TRY(add(m, dt, GEN_MATRIX, "h.%ld.attn.c_attn.weight", l, 2, h, 3 * h));
        MK_TRY(add(m, dt, GEN_BIAS, "h.%ld.attn.c_attn.bias", l, 1, 3 * h, 0));
        MK_TRY(add(m, dt, GEN_MATRIX, "h.%ld.attn.c_proj.weight", l, 2, h, h));
        MK_TRY(add(m, dt, GEN_BIAS, "h.%ld.attn.c_proj.bias", l, 1, h, 0));
        MK_TRY(add(m, dt, GEN_NORM, "h.%ld.ln_2.weight", l, 1, h, 0));
        MK_TRY(add(m, dt, GEN_BIAS, "h.%ld.ln_2.bias", l, 1, h, 0));
        MK_TRY(add(m, dt, GEN_MATRIX, "h.%ld.mlp.c_fc.weight", l, 2, h, f));
        MK_TRY(add(m, dt, GEN_BIAS, "h.%ld.mlp.c_fc.bias", l, 1, f, 0));
        MK_TRY(add(m, dt, GEN_MATRIX, "h.%ld.mlp.c_proj.weight", l, 2, f, h));
        MK_TRY(add(m, dt, GEN_BIAS, "h.%ld.mlp.c_proj.bias", l, 1, h, 0));
    }
    MK_TRY(add(m, dt, GEN_NORM, "ln_f.weight", 0, 1, h, 0));
    MK_TRY(add(m, dt, GEN_BIAS, "ln_f.bias", 0, 1, h, 0));
    return MK_OK;
}

static char *llama_config(const synth_opts *o, const char *arch_name, const char *model_type, synth_arch a, mk_dtype dt)
{
    mk_buf b = {0};
    long hd = o->hidden / o->heads;
    if (a == A_GPT2) {
        mk_buf_printf(&b,
                      "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n  \"n_embd\": %ld,\n"
                      "  \"n_head\": %ld,\n  \"n_layer\": %ld,\n  \"n_inner\": %ld,\n  \"n_positions\": %ld,\n"
                      "  \"n_ctx\": %ld,\n  \"vocab_size\": %ld,\n  \"activation_function\": \"gelu_new\",\n"
                      "  \"layer_norm_epsilon\": 1e-05,\n  \"initializer_range\": 0.02,\n"
                      "  \"tie_word_embeddings\": true,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
                      "  \"use_cache\": true,\n  \"torch_dtype\": \"%s\"\n}\n",
                      arch_name, model_type, o->hidden, o->heads, o->layers, o->intermediate, o->max_pos, o->max_pos,
                      o->vocab, mk_dtype_info(dt)->torch_name);
        return b.failed ? (free(b.data), NULL) : b.data;
    }
    const char *act = a == A_GEMMA || a == A_GEMMA2 ? "gelu_pytorch_tanh" : "silu";
    mk_buf_printf(&b,
                  "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n  \"hidden_size\": %ld,\n"
                  "  \"intermediate_size\": %ld,\n  \"num_attention_heads\": %ld,\n  \"num_key_value_heads\": %ld,\n"
                  "  \"head_dim\": %ld,\n  \"num_hidden_layers\": %ld,\n  \"vocab_size\": %ld,\n"
                  "  \"max_position_embeddings\": %ld,\n  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 10000.0,\n"
                  "  \"hidden_act\": \"%s\",\n  \"initializer_range\": 0.02,\n  \"attention_bias\": %s,\n",
                  arch_name, model_type, o->hidden, o->intermediate, o->heads, o->kv_heads, hd, o->layers, o->vocab,
                  o->max_pos, act, a == A_QWEN2 ? "true" : "false");
    if (a == A_GEMMA || a == A_GEMMA2) mk_buf_printf(&b, "  \"hidden_activation\": \"%s\",\n", act);
    if (a == A_PHI3) mk_buf_puts(&b, "  \"pad_token_id\": 0,\n"); /* Phi3Config defaults to 32000 */
    if (a == A_GEMMA2)
        mk_buf_printf(&b,
                      "  \"query_pre_attn_scalar\": %ld,\n  \"sliding_window\": 4096,\n"
                      "  \"final_logit_softcapping\": 30.0,\n  \"attn_logit_softcapping\": 50.0,\n",
                      hd);
    mk_buf_printf(&b,
                  "  \"tie_word_embeddings\": %s,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
                  "  \"use_cache\": true,\n  \"torch_dtype\": \"%s\"\n}\n",
                  o->tie ? "true" : "false", mk_dtype_info(dt)->torch_name);
    return b.failed ? (free(b.data), NULL) : b.data;
}

/* A word-level tokenizer over the model's vocabulary: valid for the tokenizers library,
 * so the folder loads like a real model. */
static char *tokenizer_json(long vocab)
{
    mk_buf b = {0};
    mk_buf_puts(&b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    static const char *const special[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3 && i < vocab; i++)
        mk_buf_printf(&b,
                      "%s\n    {\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, "
                      "\"rstrip\": false, \"normalized\": false, \"special\": true}",
                      i ? "," : "", i, special[i]);
    mk_buf_puts(&b, "\n  ],\n  \"normalizer\": null,\n  \"pre_tokenizer\": {\"type\": \"Whitespace\"},\n"
                    "  \"post_processor\": null,\n  \"decoder\": null,\n  \"model\": {\n    \"type\": \"WordLevel\",\n"
                    "    \"vocab\": {");
    for (long i = 0; i < vocab; i++) {
        if (i < 3) mk_buf_printf(&b, "%s\"%s\": %ld", i ? ", " : "", special[i], i);
        else mk_buf_printf(&b, ", \"tok%ld\": %ld", i, i);
    }
    mk_buf_puts(&b, "},\n    \"unk_token\": \"<unk>\"\n  }\n}\n");
    return b.failed ? (free(b.data), NULL) : b.data;
}

static const char tokenizer_config[] =
    "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n"
    "  \"unk_token\": \"<unk>\",\n  \"model_max_length\": 2048\n}\n";
static const char special_tokens_map[] = "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n  \"unk_token\": \"<unk>\"\n}\n";
static const char generation_config[] = "{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2\n}\n";

/* ---- value generation --------------------------------------------------------------- */

/* Element e of a standard-normal field keyed by `key`/`stream`; pairs of elements share
 * one Box-Muller draw. Also reports whether e is an outlier. */
static double normal_at(mk_rng key, uint64_t stream, uint64_t e, bool *outlier, double *outlier_scale)
{
    uint32_t w[4];
    mk_rng_block(key, stream, e >> 1, w);
    double u1 = ((double)w[0] + 1.0) * 0x1p-32; /* (0, 1] */
    double u2 = (double)w[1] * 0x1p-32;
    double z0, z1;
    mk_det_normal2(u1, u2, &z0, &z1);
    uint32_t ow = (e & 1) ? w[3] : w[2];
    *outlier = (double)(ow >> 8) * 0x1p-24 < OUTLIER_RATE;
    *outlier_scale = 4.0 + (double)(ow & 0xff) / 32.0; /* 4x .. 12x */
    return (e & 1) ? z1 : z0;
}

static double unit_hash(uint64_t seed, const char *name)
{
    return mk_rng_uniform(mk_rng_key(seed, name), 7, 0);
}

static void gen_base_chunk(const synth_tensor *t, const synth_opts *o, uint64_t e0, uint64_t n, float *out)
{
    mk_rng key = mk_rng_key(o->seed, t->info.name);
    for (uint64_t i = 0; i < n; i++) {
        bool outl;
        double sc;
        double z = normal_at(key, 0, e0 + i, &outl, &sc);
        double v;
        switch (t->kind) {
        case GEN_NORM: v = 1.0 + 0.1 * z; break;
        case GEN_BIAS: v = 0.02 * z; break;
        default: v = t->std * z * (outl ? sc : 1.0); break;
        }
        out[i] = (float)v;
    }
}

/* ---- the base model -------------------------------------------------------------------- */

typedef struct writer {
    mk_outdir od;
    mk_sink *sink;
    mk_consumer cons;
} writer;

static mk_status writer_open(writer *w, const char *out, const synth_opts *o, mk_tensor_info *infos, size_t n)
{
    memset(w, 0, sizeof *w);
    MK_TRY(mk_outdir_begin(&w->od, out, false, o->force, false));
    mk_st_sink_opts so = {o->shard_size, NULL, false};
    MK_TRY(mk_safetensors_sink(w->od.tmp_path, &so, &w->sink));
    MK_TRY(mk_consumer_plain(&w->cons, w->sink, infos, n, false));
    return w->sink->ops->begin(w->sink, infos, n);
}

static void writer_close(writer *w, bool ok)
{
    if (w->cons.ops) w->cons.ops->close(&w->cons);
    mk_sink_close(w->sink);
    if (!ok) mk_outdir_abort(&w->od);
}

typedef void (*gen_fn)(void *ctx, size_t ti, uint64_t e0, uint64_t n, float *out);

typedef struct gen_pass {
    writer *w;
    const mk_tensor_info *t;
    size_t ti;
    gen_fn fn;
    void *ctx;
} gen_pass;

static void *gen_tls_new(void *ctx)
{
    (void)ctx;
    return mk_malloc(SYNTH_CHUNK * sizeof(float));
}

static mk_status gen_chunk(void *ctx, uint64_t c, void *buf)
{
    const gen_pass *g = ctx;
    uint64_t e0 = c * SYNTH_CHUNK, n = g->t->numel - e0 < SYNTH_CHUNK ? g->t->numel - e0 : SYNTH_CHUNK;
    g->fn(g->ctx, g->ti, e0, n, buf);
    return g->w->cons.ops->rows(&g->w->cons, g->ti, e0, buf, n);
}

/* Generate every tensor chunk by chunk, in parallel, through the plain consumer. */
static mk_status generate(writer *w, const mk_tensor_info *infos, size_t n, gen_fn fn, void *ctx, mk_progress *prog)
{
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < n; i++) total += infos[i].nbytes;
    for (size_t ti = 0; ti < n; ti++) {
        const mk_tensor_info *t = &infos[ti];
        gen_pass g = {w, t, ti, fn, ctx};
        MK_TRY(w->cons.ops->begin(&w->cons, ti, t));
        MK_TRY(mk_parallel_chunks((t->numel + SYNTH_CHUNK - 1) / SYNTH_CHUNK, gen_chunk, &g, gen_tls_new, free));
        MK_TRY(w->cons.ops->end(&w->cons, ti));
        done += t->nbytes;
        mk_progress_cb(prog, ti + 1, n, done, total, t->name);
    }
    return MK_OK;
}

typedef struct base_ctx {
    const synth_model *m;
    const synth_opts *o;
} base_ctx;

static void base_gen(void *ctx, size_t ti, uint64_t e0, uint64_t n, float *out)
{
    base_ctx *b = ctx;
    gen_base_chunk(&b->m->t[ti], b->o, e0, n, out);
}

static mk_status synth_base(const char *out, synth_opts *o)
{
    mk_dtype dt = mk_dtype_from_user(o->dtype);
    if (dt != MK_F32 && dt != MK_F16 && dt != MK_BF16 && dt != MK_F8_E4M3)
        return mk_error(MK_ERR_USAGE, "--dtype '%s': use float32, float16, bfloat16 or float8_e4m3fn", o->dtype);
    if (o->kv_heads <= 0) o->kv_heads = o->heads;
    if (o->intermediate <= 0) o->intermediate = (8 * o->hidden / 3 + 15) / 16 * 16;
    if (o->hidden <= 0 || o->layers < 0 || o->heads <= 0 || o->vocab <= 0 || o->intermediate <= 0 || o->hidden % o->heads ||
        o->heads % o->kv_heads)
        return mk_error(MK_ERR_USAGE, "shape: need hidden > 0 divisible by heads, heads divisible by kv-heads, vocab > 0");
    size_t ai = 0;
    while (ai < sizeof synth_archs / sizeof synth_archs[0] && strcmp(synth_archs[ai].name, o->arch) != 0) ai++;
    if (ai == sizeof synth_archs / sizeof synth_archs[0])
        return mk_error(MK_ERR_USAGE, "--arch '%s': use llama, mistral, qwen2, qwen3, gemma, gemma2, phi3 or gpt2", o->arch);
    const char *arch_name = synth_archs[ai].arch_name, *model_type = synth_archs[ai].model_type;
    synth_arch arch = synth_archs[ai].id;
    /* Gemma and GPT-2 checkpoints always tie lm_head to the input embeddings */
    if (arch == A_GEMMA || arch == A_GEMMA2 || arch == A_GPT2) o->tie = true;
    if (arch == A_GPT2 && o->kv_heads != o->heads)
        return mk_error(MK_ERR_USAGE, "--kv-heads: gpt2 has no grouped-query attention");

    synth_model m = {0};
    mk_status s = arch == A_GPT2 ? build_gpt2(&m, o, dt) : build_llama(&m, o, dt, arch);
    for (size_t i = 0; i < m.n && s == MK_OK; i++)
        m.t[i].std = o->std * (0.75 + 0.5 * unit_hash(o->seed, m.t[i].info.name));
    mk_tensor_info *infos = mk_calloc(m.n ? m.n : 1, sizeof *infos);
    if (!infos) s = MK_ERR_NOMEM;
    for (size_t i = 0; i < m.n && s == MK_OK; i++) infos[i] = m.t[i].info;
    writer w = {0};
    if (s == MK_OK) s = writer_open(&w, out, o, infos, m.n);
    mk_progress prog;
    mk_progress_init(&prog, "synth", &o->c);
    base_ctx bc = {&m, o};
    if (s == MK_OK) s = generate(&w, infos, m.n, base_gen, &bc, &prog);
    mk_progress_end(&prog);
    char *cfg = s == MK_OK ? llama_config(o, arch_name, model_type, arch, dt) : NULL;
    char *tok = s == MK_OK ? tokenizer_json(o->vocab) : NULL;
    if (s == MK_OK && (!cfg || !tok)) s = mk_error(MK_ERR_NOMEM, "out of memory");
    if (s == MK_OK) s = w.sink->ops->add_file(w.sink, "config.json", cfg, strlen(cfg));
    if (s == MK_OK) s = w.sink->ops->add_file(w.sink, "tokenizer.json", tok, strlen(tok));
    if (s == MK_OK) s = w.sink->ops->add_file(w.sink, "tokenizer_config.json", tokenizer_config, sizeof tokenizer_config - 1);
    if (s == MK_OK) s = w.sink->ops->add_file(w.sink, "special_tokens_map.json", special_tokens_map, sizeof special_tokens_map - 1);
    if (s == MK_OK) s = w.sink->ops->add_file(w.sink, "generation_config.json", generation_config, sizeof generation_config - 1);
    if (s == MK_OK) s = w.sink->ops->commit(w.sink);
    if (s == MK_OK) s = mk_outdir_commit(&w.od);
    writer_close(&w, s == MK_OK);
    free(cfg);
    free(tok);
    for (size_t i = 0; i < m.n; i++) free(m.t[i].info.name);
    free(m.t);
    free(infos);
    return s;
}

/* ---- finetunes --------------------------------------------------------------------------- */

typedef struct ft_ctx {
    mk_source *base;
    const synth_opts *o;
    double *rms; /* per tensor */
    mk_status err;
} ft_ctx;

static void ft_gen(void *ctx, size_t ti, uint64_t e0, uint64_t n, float *out)
{
    ft_ctx *f = ctx;
    const mk_tensor_info *t = &f->base->tensors[ti];
    void *scratch = malloc((size_t)n * mk_dtype_size(t->dtype) + 1);
    if (!scratch || mk_source_read_f32(f->base, ti, e0, n, out, scratch) != MK_OK) {
        for (uint64_t i = 0; i < n; i++) out[i] = NAN; /* reported by the overflow-free path below */
        f->err = MK_ERR_IO;
        free(scratch);
        return;
    }
    free(scratch);
    if (!mk_dtype_info(t->dtype)->is_float) return;
    mk_rng key = mk_rng_key(f->o->seed, t->name);
    double scale = f->o->delta * f->rms[ti];
    for (uint64_t i = 0; i < n; i++) {
        uint64_t e = e0 + i;
        if (f->o->density < 1.0 && mk_rng_uniform(key, 1, e) >= f->o->density) continue;
        bool outl;
        double sc;
        double z = normal_at(key, 2, e, &outl, &sc);
        out[i] = (float)((double)out[i] + scale * z);
    }
}

static mk_status tensor_rms(mk_source *src, size_t ti, double *out)
{
    const mk_tensor_info *t = &src->tensors[ti];
    if (!t->numel || !mk_dtype_info(t->dtype)->is_float) {
        *out = 0;
        return MK_OK;
    }
    float *buf = mk_malloc(SYNTH_CHUNK * sizeof(float));
    void *scratch = mk_malloc(SYNTH_CHUNK * 8);
    mk_status s = buf && scratch ? MK_OK : MK_ERR_NOMEM;
    double sum = 0;
    for (uint64_t e0 = 0; e0 < t->numel && s == MK_OK; e0 += SYNTH_CHUNK) {
        uint64_t n = t->numel - e0 < SYNTH_CHUNK ? t->numel - e0 : SYNTH_CHUNK;
        s = mk_source_read_f32(src, ti, e0, n, buf, scratch);
        double part = 0;
        for (uint64_t i = 0; i < n && s == MK_OK; i++) part += (double)buf[i] * buf[i];
        sum += part;
    }
    free(buf);
    free(scratch);
    *out = sqrt(sum / (double)t->numel);
    return s;
}

static mk_status synth_finetune(const char *out, synth_opts *o)
{
    if (!(o->density > 0 && o->density <= 1)) return mk_error(MK_ERR_USAGE, "--density must be in (0, 1]");
    if (!(o->delta >= 0)) return mk_error(MK_ERR_USAGE, "--delta must be >= 0");
    mk_source *base = NULL;
    MK_TRY(mk_cli_open_model(o->finetune_of, &base));
    ft_ctx f = {base, o, mk_calloc(base->n_tensors ? base->n_tensors : 1, sizeof(double)), MK_OK};
    mk_status s = f.rms ? MK_OK : MK_ERR_NOMEM;
    for (size_t i = 0; i < base->n_tensors && s == MK_OK; i++) s = tensor_rms(base, i, &f.rms[i]);
    writer w = {0};
    if (s == MK_OK) s = writer_open(&w, out, o, base->tensors, base->n_tensors);
    mk_progress prog;
    mk_progress_init(&prog, "synth", &o->c);
    if (s == MK_OK) s = generate(&w, base->tensors, base->n_tensors, ft_gen, &f, &prog);
    mk_progress_end(&prog);
    if (s == MK_OK && f.err != MK_OK) s = mk_error(f.err, "%s: cannot read the base model", o->finetune_of);
    const char *const *aux = base->ops->aux_list(base);
    for (size_t i = 0; aux && aux[i] && s == MK_OK; i++) {
        char *data = NULL;
        size_t len = 0;
        s = base->ops->aux_read(base, aux[i], 512u << 20, &data, &len);
        if (s == MK_OK && data && strcmp(aux[i], "README.md") != 0) s = w.sink->ops->add_file(w.sink, aux[i], data, len);
        free(data);
    }
    if (s == MK_OK) s = w.sink->ops->commit(w.sink);
    if (s == MK_OK) s = mk_outdir_commit(&w.od);
    writer_close(&w, s == MK_OK);
    free(f.rms);
    mk_source_close(base);
    return s;
}

int mk_cmd_synth(int argc, char **argv)
{
    synth_opts o = {.hidden = 256, .layers = 4, .heads = 8, .kv_heads = 0, .intermediate = 0, .vocab = 1000,
                    .max_pos = 2048, .dtype = "bfloat16", .arch = "llama", .seed = 1, .shard_size = 5000000000ull,
                    .delta = 0.01, .density = 1.0, .std = 0.02};
    const mk_opt opts[] = {
        {"hidden", 0, MK_OPT_INT, &o.hidden, "N", "hidden size", "256"},
        {"layers", 0, MK_OPT_INT, &o.layers, "N", "number of layers", "4"},
        {"heads", 0, MK_OPT_INT, &o.heads, "N", "attention heads", "8"},
        {"kv-heads", 0, MK_OPT_INT, &o.kv_heads, "N", "key/value heads (grouped-query attention)", "heads"},
        {"intermediate", 0, MK_OPT_INT, &o.intermediate, "N", "MLP size", "8/3 x hidden, rounded up to 16"},
        {"vocab", 0, MK_OPT_INT, &o.vocab, "N", "vocabulary size", "1000"},
        {"max-position", 0, MK_OPT_INT, &o.max_pos, "N", "max_position_embeddings in config.json", "2048"},
        {"arch", 0, MK_OPT_STR, &o.arch, "NAME",
         "llama, mistral, qwen2 (q/k/v biases), qwen3 (q/k norms), gemma, gemma2 (tied), phi3 (fused q/k/v and "
         "gate/up), gpt2 (tied, unprefixed names)",
         "llama"},
        {"dtype", 0, MK_OPT_STR, &o.dtype, "DTYPE", "bfloat16, float16, float32 or float8_e4m3fn (fp8: use --std 4 or so, as per-tensor scaled weights)", "bfloat16"},
        {"tie", 0, MK_OPT_FLAG, &o.tie, NULL, "tie lm_head to the embeddings (no lm_head tensor)", NULL},
        {"std", 0, MK_OPT_DOUBLE, &o.std, "X", "typical standard deviation of weight matrices", "0.02"},
        {"seed", 0, MK_OPT_U64, &o.seed, "N", "random seed", "1"},
        {"finetune-of", 0, MK_OPT_STR, &o.finetune_of, "BASE", "write a finetune of BASE instead of a new model", NULL},
        {"delta", 0, MK_OPT_DOUBLE, &o.delta, "D", "finetune noise, as a fraction of each tensor's RMS", "0.01"},
        {"density", 0, MK_OPT_DOUBLE, &o.density, "P", "fraction of weights the finetune changes", "1"},
        {"out-shard-size", 0, MK_OPT_SIZE, &o.shard_size, "SIZE", "maximum bytes per shard", "5e9"},
        {"force", 'f', MK_OPT_FLAG, &o.force, NULL, "replace OUT if it exists", NULL},
        MK_COMMON_OPTS(o.c),
        {0},
    };
    const mk_cmd_spec spec = {"synth", "OUT [options]",
                              "Write a random Llama-shaped checkpoint (config.json, safetensors, tokenizer), or with\n"
                              "--finetune-of a seeded \"finetune\" of an existing one: base + noise on a fraction of weights.",
                              "The same options give the same bytes on every machine and at any thread count.", opts, 1, 1};
    char *pos[1];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &o.c, true, &rc)) return rc;
    mk_status s = o.finetune_of ? synth_finetune(pos[0], &o) : synth_base(pos[0], &o);
    if (s != MK_OK) return mk_cli_fail(s);
    if (!o.c.quiet) fprintf(stderr, "mergekit-c: wrote %s\n", pos[0]);
    return 0;
}
