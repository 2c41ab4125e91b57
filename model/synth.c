/* synth.c - see synth.h */
#include "synth.h"

#include "../core/mk_parallel.h"
#include "../core/mk_rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNTH_CHUNK (1u << 20)
#define OUTLIER_RATE (1.0 / 5000.0)

const char mk_synth_arch_names[] = "llama, mistral, qwen2, qwen3, gemma, gemma2, phi3 or gpt2";

/* A growing tensor list while planning. */
typedef struct builder {
    mk_synth_model *m;
    size_t cap;
    mk_dtype dt;
} builder;

static mk_status add(builder *b, mk_synth_kind kind, const char *fmt, long layer, int ndim, int64_t d0, int64_t d1)
{
    mk_synth_model *m = b->m;
    if (m->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        mk_tensor_info *t = mk_realloc_array(m->t, cap, sizeof *t);
        if (!t) return MK_ERR_NOMEM;
        m->t = t;
        mk_synth_kind *k = mk_realloc_array(m->kind, cap, sizeof *k);
        if (!k) return MK_ERR_NOMEM;
        m->kind = k;
        b->cap = cap;
    }
    mk_tensor_info *t = &m->t[m->n];
    memset(t, 0, sizeof *t);
    char name[256];
    snprintf(name, sizeof name, fmt, layer);
    t->name = mk_strdup(name);
    if (!t->name) return MK_ERR_NOMEM;
    m->kind[m->n] = kind;
    m->n++;
    t->dtype = b->dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    return mk_tensor_info_finish(t);
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
static mk_status build_llama(builder *m, const mk_synth_opts *o, synth_arch a)
{
    long hd = o->hidden / o->heads;
    int64_t h = o->hidden, q = o->heads * hd, kv = o->kv_heads * hd, f = o->intermediate;
    MK_TRY(add(m, MK_SYNTH_MATRIX, "model.embed_tokens.weight", 0, 2, o->vocab, h));
    for (long l = 0; l < o->layers; l++) {
        MK_TRY(add(m, MK_SYNTH_NORM, "model.layers.%ld.input_layernorm.weight", l, 1, h, 0));
        if (a == A_PHI3) {
            MK_TRY(add(m, MK_SYNTH_MATRIX, "model.layers.%ld.self_attn.qkv_proj.weight", l, 2, q + 2 * kv, h));
        } else {
            MK_TRY(add(m, MK_SYNTH_MATRIX, "model.layers.%ld.self_attn.q_proj.weight", l, 2, q, h));
            MK_TRY(add(m, MK_SYNTH_MATRIX, "model.layers.%ld.self_attn.k_proj.weight", l, 2, kv, h));
            MK_TRY(add(m, MK_SYNTH_MATRIX, "model.layers.%ld.self_attn.v_proj.weight", l, 2, kv, h));
        }
        if (a == A_QWEN2) {
            MK_TRY(add(m, MK_SYNTH_BIAS, "model.layers.%ld.self_attn.q_proj.bias", l, 1, q, 0));
            MK_TRY(add(m, MK_SYNTH_BIAS, "model.layers.%ld.self_attn.k_proj.bias", l, 1, kv, 0));
            MK_TRY(add(m, MK_SYNTH_BIAS, "model.layers.%ld.self_attn.v_proj.bias", l, 1, kv, 0));
        }
        if (a == A_QWEN3) {
            MK_TRY(add(m, MK_SYNTH_NORM, "model.layers.%ld.self_attn.q_norm.weight", l, 1, hd, 0));
            MK_TRY(add(m, MK_SYNTH_NORM, "model.layers.%ld.self_attn.k_norm.weight", l, 1, hd, 0));
        }
        MK_TRY(add(m, MK_SYNTH_MATRIX, "model.layers.%ld.self_attn.o_proj.weight", l, 2, h, q));
        MK_TRY(add(m, MK_SYNTH_NORM, "model.layers.%ld.post_attention_layernorm.weight", l, 1, h, 0));
        if (a == A_GEMMA2) {
            MK_TRY(add(m, MK_SYNTH_NORM, "model.layers.%ld.pre_feedforward_layernorm.weight", l, 1, h, 0));
            MK_TRY(add(m, MK_SYNTH_NORM, "model.layers.%ld.post_feedforward_layernorm.weight", l, 1, h, 0));
        }
        if (a == A_PHI3) {
            MK_TRY(add(m, MK_SYNTH_MATRIX, "model.layers.%ld.mlp.gate_up_proj.weight", l, 2, 2 * f, h));
        } else {
            MK_TRY(add(m, MK_SYNTH_MATRIX, "model.layers.%ld.mlp.gate_proj.weight", l, 2, f, h));
            MK_TRY(add(m, MK_SYNTH_MATRIX, "model.layers.%ld.mlp.up_proj.weight", l, 2, f, h));
        }
        MK_TRY(add(m, MK_SYNTH_MATRIX, "model.layers.%ld.mlp.down_proj.weight", l, 2, h, f));
    }
    MK_TRY(add(m, MK_SYNTH_NORM, "model.norm.weight", 0, 1, h, 0));
    if (!o->tie) MK_TRY(add(m, MK_SYNTH_MATRIX, "lm_head.weight", 0, 2, o->vocab, h));
    return MK_OK;
}

/* GPT-2 as the original checkpoints store it: no "transformer." prefix, Conv1D weights
 * [in, out], lm_head tied to wte. */
static mk_status build_gpt2(builder *m, const mk_synth_opts *o)
{
    int64_t h = o->hidden, f = o->intermediate;
    MK_TRY(add(m, MK_SYNTH_MATRIX, "wte.weight", 0, 2, o->vocab, h));
    MK_TRY(add(m, MK_SYNTH_MATRIX, "wpe.weight", 0, 2, o->max_pos, h));
    for (long l = 0; l < o->layers; l++) {
        MK_TRY(add(m, MK_SYNTH_NORM, "h.%ld.ln_1.weight", l, 1, h, 0));
        MK_TRY(add(m, MK_SYNTH_BIAS, "h.%ld.ln_1.bias", l, 1, h, 0));
        MK_TRY(add(m, MK_SYNTH_MATRIX, "h.%ld.attn.c_attn.weight", l, 2, h, 3 * h));
        MK_TRY(add(m, MK_SYNTH_BIAS, "h.%ld.attn.c_attn.bias", l, 1, 3 * h, 0));
        MK_TRY(add(m, MK_SYNTH_MATRIX, "h.%ld.attn.c_proj.weight", l, 2, h, h));
        MK_TRY(add(m, MK_SYNTH_BIAS, "h.%ld.attn.c_proj.bias", l, 1, h, 0));
        MK_TRY(add(m, MK_SYNTH_NORM, "h.%ld.ln_2.weight", l, 1, h, 0));
        MK_TRY(add(m, MK_SYNTH_BIAS, "h.%ld.ln_2.bias", l, 1, h, 0));
        MK_TRY(add(m, MK_SYNTH_MATRIX, "h.%ld.mlp.c_fc.weight", l, 2, h, f));
        MK_TRY(add(m, MK_SYNTH_BIAS, "h.%ld.mlp.c_fc.bias", l, 1, f, 0));
        MK_TRY(add(m, MK_SYNTH_MATRIX, "h.%ld.mlp.c_proj.weight", l, 2, f, h));
        MK_TRY(add(m, MK_SYNTH_BIAS, "h.%ld.mlp.c_proj.bias", l, 1, h, 0));
    }
    MK_TRY(add(m, MK_SYNTH_NORM, "ln_f.weight", 0, 1, h, 0));
    MK_TRY(add(m, MK_SYNTH_BIAS, "ln_f.bias", 0, 1, h, 0));
    return MK_OK;
}

static char *llama_config(const mk_synth_opts *o, const char *arch_name, const char *model_type, synth_arch a, mk_dtype dt)
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

static void gen_base_chunk(const mk_synth_model *m, size_t ti, uint64_t e0, uint64_t n, float *out)
{
    mk_rng key = mk_rng_key(m->o.seed, m->t[ti].name);
    for (uint64_t i = 0; i < n; i++) {
        bool outl;
        double sc;
        double z = normal_at(key, 0, e0 + i, &outl, &sc);
        double v;
        switch (m->kind[ti]) {
        case MK_SYNTH_NORM: v = 1.0 + 0.1 * z; break;
        case MK_SYNTH_BIAS: v = 0.02 * z; break;
        default: v = m->std[ti] * z * (outl ? sc : 1.0); break;
        }
        out[i] = (float)v;
    }
}


/* ---- generating through a consumer ------------------------------------------------------- */

/* Values [e0, e0+n) of tensor ti into out; scratch holds SYNTH_CHUNK * 8 bytes. */
typedef mk_status (*gen_fn)(const void *ctx, size_t ti, uint64_t e0, uint64_t n, float *out, void *scratch);

typedef struct gen_pass {
    mk_consumer *c;
    const mk_tensor_info *t;
    size_t ti;
    gen_fn fn;
    const void *ctx;
} gen_pass;

typedef struct gen_tls {
    float *v;
    void *scratch;
} gen_tls;

static void gen_tls_free(void *p)
{
    gen_tls *g = p;
    if (!g) return;
    free(g->v);
    free(g->scratch);
    free(g);
}

static void *gen_tls_new(void *ctx)
{
    (void)ctx;
    gen_tls *g = mk_calloc(1, sizeof *g);
    if (!g) return NULL;
    g->v = mk_malloc(SYNTH_CHUNK * sizeof(float));
    g->scratch = mk_malloc(SYNTH_CHUNK * 8);
    if (!g->v || !g->scratch) {
        gen_tls_free(g);
        return NULL;
    }
    return g;
}

static mk_status gen_chunk(void *ctx, uint64_t c, void *tls)
{
    const gen_pass *g = ctx;
    gen_tls *b = tls;
    uint64_t e0 = c * SYNTH_CHUNK, n = g->t->numel - e0 < SYNTH_CHUNK ? g->t->numel - e0 : SYNTH_CHUNK;
    MK_TRY(g->fn(g->ctx, g->ti, e0, n, b->v, b->scratch));
    return g->c->ops->rows(g->c, g->ti, e0, b->v, n);
}

/* Every tensor chunk by chunk, in parallel, through the consumer. */
static mk_status generate(mk_consumer *c, const mk_tensor_info *infos, size_t n, gen_fn fn, const void *ctx,
                          mk_synth_progress progress, void *pctx)
{
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < n; i++) total += infos[i].nbytes;
    for (size_t ti = 0; ti < n; ti++) {
        const mk_tensor_info *t = &infos[ti];
        gen_pass g = {c, t, ti, fn, ctx};
        MK_TRY(c->ops->begin(c, ti, t));
        MK_TRY(mk_parallel_chunks((t->numel + SYNTH_CHUNK - 1) / SYNTH_CHUNK, gen_chunk, &g, gen_tls_new, gen_tls_free));
        MK_TRY(c->ops->end(c, ti));
        done += t->nbytes;
        if (progress) progress(pctx, ti + 1, n, done, total, t->name);
    }
    return MK_OK;
}

static mk_status base_gen(const void *ctx, size_t ti, uint64_t e0, uint64_t n, float *out, void *scratch)
{
    (void)scratch;
    gen_base_chunk(ctx, ti, e0, n, out);
    return MK_OK;
}

mk_status mk_synth_generate(const mk_synth_model *m, mk_consumer *c, mk_synth_progress progress, void *pctx)
{
    return generate(c, m->t, m->n, base_gen, m, progress, pctx);
}

/* ---- finetunes ---------------------------------------------------------------------------- */

typedef struct ft_ctx {
    mk_source *base;
    double delta, density;
    uint64_t seed;
    double *rms; /* per tensor */
} ft_ctx;

static mk_status ft_gen(const void *ctx, size_t ti, uint64_t e0, uint64_t n, float *out, void *scratch)
{
    const ft_ctx *f = ctx;
    const mk_tensor_info *t = &f->base->tensors[ti];
    MK_TRY(mk_source_read_f32(f->base, ti, e0, n, out, scratch));
    if (!mk_dtype_info(t->dtype)->is_float) return MK_OK;
    mk_rng key = mk_rng_key(f->seed, t->name);
    double scale = f->delta * f->rms[ti];
    for (uint64_t i = 0; i < n; i++) {
        uint64_t e = e0 + i;
        if (f->density < 1.0 && mk_rng_uniform(key, 1, e) >= f->density) continue;
        bool outl;
        double sc;
        double z = normal_at(key, 2, e, &outl, &sc);
        out[i] = (float)((double)out[i] + scale * z);
    }
    return MK_OK;
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


mk_status mk_synth_finetune_check(double delta, double density)
{
    if (!(density > 0 && density <= 1)) return mk_error(MK_ERR_USAGE, "--density must be in (0, 1]");
    if (!(delta >= 0)) return mk_error(MK_ERR_USAGE, "--delta must be >= 0");
    return MK_OK;
}

mk_status mk_synth_finetune(mk_source *base, double delta, double density, uint64_t seed, mk_consumer *c,
                            mk_synth_progress progress, void *pctx)
{
    MK_TRY(mk_synth_finetune_check(delta, density));
    ft_ctx f = {base, delta, density, seed, mk_calloc(base->n_tensors ? base->n_tensors : 1, sizeof(double))};
    mk_status s = f.rms ? MK_OK : MK_ERR_NOMEM;
    for (size_t i = 0; i < base->n_tensors && s == MK_OK; i++) s = tensor_rms(base, i, &f.rms[i]);
    if (s == MK_OK) s = generate(c, base->tensors, base->n_tensors, ft_gen, &f, progress, pctx);
    free(f.rms);
    return s;
}

/* ---- planning ---------------------------------------------------------------------------- */

static const char tokenizer_config[] =
    "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n"
    "  \"unk_token\": \"<unk>\",\n  \"model_max_length\": 2048\n}\n";
static const char special_tokens_map[] = "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n  \"unk_token\": \"<unk>\"\n}\n";
static const char generation_config[] = "{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2\n}\n";

static mk_status add_file(mk_synth_model *m, const char *name, const char *text)
{
    char *t = text ? mk_strdup(text) : NULL;
    if (!t) return mk_error(MK_ERR_NOMEM, "out of memory");
    m->files[m->n_files++] = (mk_synth_file){name, t};
    return MK_OK;
}

mk_status mk_synth_plan(const mk_synth_opts *opts, mk_synth_model *m)
{
    memset(m, 0, sizeof *m);
    mk_synth_opts o = *opts;
    mk_dtype dt = mk_dtype_from_user(o.dtype);
    if (dt != MK_F32 && dt != MK_F16 && dt != MK_BF16 && dt != MK_F8_E4M3)
        return mk_error(MK_ERR_USAGE, "--dtype '%s': use float32, float16, bfloat16 or float8_e4m3fn", o.dtype);
    if (o.kv_heads <= 0) o.kv_heads = o.heads;
    if (o.intermediate <= 0) o.intermediate = (8 * o.hidden / 3 + 15) / 16 * 16;
    if (o.hidden <= 0 || o.layers < 0 || o.heads <= 0 || o.vocab <= 0 || o.intermediate <= 0 || o.hidden % o.heads ||
        o.heads % o.kv_heads)
        return mk_error(MK_ERR_USAGE, "shape: need hidden > 0 divisible by heads, heads divisible by kv-heads, vocab > 0");
    size_t ai = 0;
    while (ai < sizeof synth_archs / sizeof synth_archs[0] && strcmp(synth_archs[ai].name, o.arch) != 0) ai++;
    if (ai == sizeof synth_archs / sizeof synth_archs[0])
        return mk_error(MK_ERR_USAGE, "--arch '%s': use %s", o.arch, mk_synth_arch_names);
    synth_arch arch = synth_archs[ai].id;
    /* Gemma and GPT-2 checkpoints always tie lm_head to the input embeddings */
    if (arch == A_GEMMA || arch == A_GEMMA2 || arch == A_GPT2) o.tie = true;
    if (arch == A_GPT2 && o.kv_heads != o.heads) return mk_error(MK_ERR_USAGE, "--kv-heads: gpt2 has no grouped-query attention");
    m->o = o;
    m->dtype = dt;
    builder b = {m, 0, dt};
    mk_status s = arch == A_GPT2 ? build_gpt2(&b, &m->o) : build_llama(&b, &m->o, arch);
    if (s == MK_OK) {
        m->std = mk_calloc(m->n ? m->n : 1, sizeof *m->std);
        if (!m->std) s = MK_ERR_NOMEM;
    }
    for (size_t i = 0; i < m->n && s == MK_OK; i++) m->std[i] = o.std * (0.75 + 0.5 * unit_hash(o.seed, m->t[i].name));
    char *cfg = s == MK_OK ? llama_config(&m->o, synth_archs[ai].arch_name, synth_archs[ai].model_type, arch, dt) : NULL;
    char *tok = s == MK_OK ? tokenizer_json(o.vocab) : NULL;
    if (s == MK_OK && (!cfg || !tok)) s = mk_error(MK_ERR_NOMEM, "out of memory");
    if (s == MK_OK) s = add_file(m, "config.json", cfg);
    if (s == MK_OK) s = add_file(m, "tokenizer.json", tok);
    if (s == MK_OK) s = add_file(m, "tokenizer_config.json", tokenizer_config);
    if (s == MK_OK) s = add_file(m, "special_tokens_map.json", special_tokens_map);
    if (s == MK_OK) s = add_file(m, "generation_config.json", generation_config);
    free(cfg);
    free(tok);
    if (s != MK_OK) mk_synth_model_free(m);
    return s;
}

void mk_synth_model_free(mk_synth_model *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) free(m->t[i].name);
    free(m->t);
    free(m->kind);
    free(m->std);
    for (size_t i = 0; i < m->n_files; i++) free(m->files[i].text);
    memset(m, 0, sizeof *m);
}
