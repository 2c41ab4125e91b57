/* moe.c - see moe.h. Behaviour follows mergekit 0.1.5's mergekit/moe/ (mixtral.py, qwen.py,
 * qwen3.py, common.py, router.py) and scripts/moe.py; tensor names follow transformers'
 * MixtralForCausalLM / Qwen2MoeForCausalLM / Qwen3MoeForCausalLM checkpoints. */
#include "moe.h"

#include "../core/mk_parallel.h"
#include "../core/mk_rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOE_CHUNK (1u << 16) /* elements per chunk */

static const char *const arch_names[MK_MOE_ARCH_COUNT] = {"Mixtral", "Qwen MoE", "Qwen3 MoE"};

const char *mk_moe_arch_name(mk_moe_arch a) { return a < MK_MOE_ARCH_COUNT ? arch_names[a] : "?"; }

static bool type_in(const char *t, const char *const *list)
{
    for (; t && *list; list++)
        if (strcmp(t, *list) == 0) return true;
    return false;
}

/* mergekit's supports_config of each output architecture, with the reason when not. */
static bool supports(mk_moe_arch a, const mk_moe_config *c, const mk_model_config *const *cfgs, size_t n, const char **why)
{
    static const char *const mixtral_in[] = {"llama", "mistral", NULL}, *const qwen_in[] = {"llama", "mistral", "qwen2", NULL},
                             *const qwen3_in[] = {"qwen3", NULL};
    const char *const *ok = a == MK_MOE_MIXTRAL ? mixtral_in : a == MK_MOE_QWEN2 ? qwen_in : qwen3_in;
    if (a == MK_MOE_QWEN2 ? c->n_shared != 1 : c->n_shared != 0) {
        *why = a == MK_MOE_QWEN2 ? "needs exactly one shared expert" : "takes no shared experts";
        return false;
    }
    if (a == MK_MOE_QWEN2 && !c->shared[0].n_pos) {
        *why = "needs positive_prompts for the shared expert (its gate)";
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const char *t = cfgs[i]->arch.model_type;
        if (!type_in(t, ok)) {
            *why = a == MK_MOE_MIXTRAL ? "takes llama or mistral models" : a == MK_MOE_QWEN2 ? "takes qwen2, llama or mistral models"
                                                                                           : "takes qwen3 models";
            return false;
        }
        if (a != MK_MOE_QWEN3 && strcmp(t, cfgs[0]->arch.model_type) != 0) {
            *why = "needs every model to have the same architecture";
            return false;
        }
    }
    return true;
}

/* deepseek.py supports_config: llama or mistral models, at most one shared expert, without prompts */
static bool deepseek_fits(const mk_moe_config *c, const mk_model_config *const *cfgs, size_t n)
{
    static const char *const in[] = {"llama", "mistral", NULL};
    if (c->n_shared > 1 || (c->n_shared && (c->shared[0].n_pos || c->shared[0].n_neg))) return false;
    for (size_t i = 0; i < n; i++)
        if (!type_in(cfgs[i]->arch.model_type, in) || strcmp(cfgs[i]->arch.model_type, cfgs[0]->arch.model_type) != 0) return false;
    return true;
}

/* scripts/moe.py select_output_arch: the `architecture` prefix filters the candidates (in
 * mergekit's order Mixtral, DeepSeek MoE, Qwen MoE, Qwen3 MoE), Mixtral wins when it fits,
 * else the first that fits. */
static mk_status select_arch(const mk_moe_config *c, const mk_model_config *const *cfgs, size_t n, mk_moe_arch *out)
{
    const char *want = c->architecture;
    char lower[64] = {0};
    for (size_t i = 0; want && want[i] && i < sizeof lower - 1; i++)
        lower[i] = (char)(want[i] >= 'A' && want[i] <= 'Z' ? want[i] + 32 : want[i]);
    int first = -1;
    const char *why[MK_MOE_ARCH_COUNT] = {0};
    for (int a = 0; a < MK_MOE_ARCH_COUNT; a++) {
        char name[32];
        snprintf(name, sizeof name, "%s", arch_names[a]);
        for (char *q = name; *q; q++) *q = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
        if (want && strncmp(name, lower, strlen(lower)) != 0) continue;
        if (first < 0) first = a;
        /* DeepSeek MoE comes before Qwen MoE in mergekit's list: llama / mistral models with at
         * most one shared expert without prompts select it */
        if (a == MK_MOE_QWEN2 && (!want || strncmp("deepseek moe", lower, strlen(lower)) == 0) && deepseek_fits(c, cfgs, n))
            break;
        if (supports((mk_moe_arch)a, c, cfgs, n, &why[a])) {
            *out = (mk_moe_arch)a;
            return MK_OK;
        }
    }
    if ((!want || strncmp("deepseek moe", lower, strlen(lower)) == 0) && deepseek_fits(c, cfgs, n))
        return mk_error(MK_ERR_UNSUPPORTED, "%s: these models make a DeepSeek-MoE model in mergekit-moe, which mergekit-c does not "
                                            "write; set 'architecture' (mixtral, qwen, qwen3) and give a shared expert prompts for "
                                            "Qwen2-MoE", c->path);
    if (first < 0)
        return mk_error(MK_ERR_RECIPE, "%s:%d:%d: unknown architecture '%s' (mixtral, qwen, qwen3)", c->path, c->arch_pos.line,
                        c->arch_pos.col, want);
    return mk_error(MK_ERR_RECIPE, "%s: no output architecture fits these models: %s %s (base model type %s)", c->path,
                    arch_names[first], why[first], cfgs[0]->arch.model_type ? cfgs[0]->arch.model_type : "unknown");
}

/* ---- output tensors ------------------------------------------------------------------------ */

static size_t model_index(const mk_moe_config *c, const mk_model_ref *r)
{
    const mk_model_ref *refs[256];
    size_t n = mk_moe_models(c, refs, 256);
    for (size_t i = 0; i < n; i++)
        if (strcmp(refs[i]->key, r->key) == 0) return i;
    return 0;
}

/* Append an output tensor; takes `name` and `parts` (freed on failure). */
static mk_status add_out(mk_moe_plan *p, size_t *cap, char *name, int ndim, const int64_t *shape, mk_dtype dt, mk_moe_out how)
{
    if (!name) return free(how.parts), MK_ERR_NOMEM;
    if (p->n == *cap) {
        size_t nc = *cap ? 2 * *cap : 64;
        mk_tensor_info *o = mk_realloc_array(p->outs, nc, sizeof *o);
        if (o) p->outs = o;
        mk_moe_out *h = o ? mk_realloc_array(p->how, nc, sizeof *h) : NULL;
        if (!h) return free(name), free(how.parts), MK_ERR_NOMEM;
        p->how = h;
        *cap = nc;
    }
    mk_tensor_info *t = &p->outs[p->n];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = dt;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    p->how[p->n++] = how;
    return mk_tensor_info_finish(t);
}

static mk_dtype out_dtype_for(const mk_moe_plan *p, mk_dtype src)
{
    return p->out_dtype != MK_DTYPE_NONE ? p->out_dtype : src;
}

/* Expert x's copy of the base model's MLP tensor bt: the same name in the expert's model,
 * with the same shape. */
static mk_status expert_part(mk_moe_plan *p, const mk_tensor_info *bt, size_t e, const mk_moe_expert *x, bool shared,
                             mk_moe_part *part)
{
    size_t mi = model_index(p->cfg, &x->ref);
    mk_source *s = p->srcs[mi];
    long ti = mk_source_find(s, bt->name);
    if (ti < 0)
        return mk_error(MK_ERR_RECIPE, "%s:%d:%d: %sexpert %zu (%s) has no tensor %s", p->cfg->path, x->at.line, x->at.col,
                        shared ? "shared " : "", e, x->ref.text, bt->name);
    const mk_tensor_info *et = &s->tensors[ti];
    if (!mk_shape_eq(et, bt)) {
        char a[160], b[160];
        return mk_error(MK_ERR_RECIPE, "%s:%d:%d: %sexpert %zu (%s): tensor %s is %s, but the base model's is %s", p->cfg->path,
                        x->at.line, x->at.col, shared ? "shared " : "", e, x->ref.text, bt->name, mk_shape_str(et, a),
                        mk_shape_str(bt, b));
    }
    *part = (mk_moe_part){mi, (size_t)ti, x};
    return MK_OK;
}

/* qwen.py: each expert's (and the shared expert's) MLP tensors under their own names:
 * "model.layers.3.mlp.gate_proj.weight" -> "...mlp.experts.<e>.gate_proj.weight" and
 * "...mlp.shared_expert.gate_proj.weight". */
static mk_status add_qwen2_experts(mk_moe_plan *p, size_t *cap, const mk_tensor_info *bt, bool residual)
{
    const char *m = strstr(bt->name, ".mlp.");
    int pre = (int)(m - bt->name);
    for (size_t e = 0; e <= p->cfg->n_experts; e++) {
        bool shared = e == p->cfg->n_experts;
        const mk_moe_expert *x = shared ? &p->cfg->shared[0] : &p->cfg->experts[e];
        mk_moe_part *part = mk_malloc(sizeof *part);
        if (!part) return MK_ERR_NOMEM;
        mk_status s = expert_part(p, bt, shared ? 0 : e, x, shared, part);
        if (s != MK_OK) return free(part), s;
        char *name = shared ? mk_asprintf("%.*s.mlp.shared_expert.%s", pre, bt->name, m + 5)
                            : mk_asprintf("%.*s.mlp.experts.%zu.%s", pre, bt->name, e, m + 5);
        mk_moe_out how = {MK_MOE_EXPERT, 1, part, residual, -1, false};
        MK_TRY(add_out(p, cap, name, bt->ndim, bt->shape, out_dtype_for(p, bt->dtype), how));
    }
    return MK_OK;
}

/* mixtral.py / qwen3.py: layer l's experts fused as transformers 5 holds them:
 * mlp.experts.gate_up_proj [E, 2F, H] (each expert's gate_proj rows, then its up_proj rows)
 * and mlp.experts.down_proj [E, H, F]. */
static mk_status add_fused_experts(mk_moe_plan *p, size_t *cap, long l)
{
    const mk_source *bs = p->srcs[0];
    const mk_tensor_info *bt[3];
    static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
    for (int k = 0; k < 3; k++) {
        char name[96];
        snprintf(name, sizeof name, "model.layers.%ld.mlp.%s.weight", l, proj[k]);
        long i = mk_source_find(bs, name);
        if (i < 0) return mk_error(MK_ERR_RECIPE, "%s: base model %s has no tensor %s", p->cfg->path, bs->path, name);
        bt[k] = &bs->tensors[i];
        if (bt[k]->ndim != 2) return mk_error(MK_ERR_FORMAT, "%s: %s is not a matrix", bs->path, name);
    }
    size_t E = p->cfg->n_experts;
    for (int down = 0; down < 2; down++) {
        size_t per = down ? 1 : 2;
        mk_moe_part *parts = mk_calloc(E * per, sizeof *parts);
        if (!parts) return MK_ERR_NOMEM;
        mk_status s = MK_OK;
        for (size_t e = 0; e < E && s == MK_OK; e++)
            for (size_t k = 0; k < per && s == MK_OK; k++)
                s = expert_part(p, bt[down ? 2 : k], e, &p->cfg->experts[e], false, &parts[e * per + k]);
        if (s != MK_OK) return free(parts), s;
        const mk_tensor_info *t = bt[down ? 2 : 0];
        int64_t shape[3] = {(int64_t)E, t->shape[0] * (int64_t)per, t->shape[1]};
        mk_moe_out how = {MK_MOE_EXPERT, E * per, parts, down == 1, -1, false};
        MK_TRY(add_out(p, cap, mk_asprintf("model.layers.%ld.mlp.experts.%s", l, down ? "down_proj" : "gate_up_proj"), 3, shape,
                       out_dtype_for(p, t->dtype), how));
    }
    return MK_OK;
}

static mk_status set_key(mk_moe_plan *p, size_t *k, const char *key, char *val)
{
    if (!val) return MK_ERR_NOMEM;
    if (*k + 2 >= sizeof p->cfg_set / sizeof p->cfg_set[0]) return free(val), mk_error(MK_ERR_NOMEM, "too many config keys");
    p->cfg_set[(*k)++] = mk_strdup(key);
    p->cfg_set[(*k)++] = val;
    return p->cfg_set[*k - 2] ? MK_OK : MK_ERR_NOMEM;
}

/* A float as Python's repr writes it: the shortest text that reads back; positional with
 * ".0" when whole for 1e-4 <= |x| < 1e16, else scientific (1e-05). */
static char *float_text(double x)
{
    char buf[64];
    double ax = fabs(x);
    if (ax >= 1e-4 && ax < 1e16) {
        for (int d = 0; d <= 20; d++) {
            snprintf(buf, sizeof buf, "%.*f", d, x);
            if (strtod(buf, NULL) == x) break;
        }
        if (!strchr(buf, '.')) strcat(buf, ".0");
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, x);
            if (strtod(buf, NULL) == x) break;
        }
    }
    return mk_strdup(buf);
}

/* config.json: the MoE keys each mergekit output class sets, and the base model's values of
 * the keys whose defaults differ between the dense and the MoE config classes (mergekit
 * builds the new config from the base config's to_dict(), which holds every value). */
static mk_status config_keys(mk_moe_plan *p)
{
    const mk_model_config *b = p->base_cfg;
    size_t k = 0, E = p->cfg->n_experts;
    static const char *const cls[] = {"MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"},
                             *const types[] = {"mixtral", "qwen2_moe", "qwen3_moe"};
    MK_TRY(set_key(p, &k, "architectures", mk_asprintf("[\"%s\"]", cls[p->arch])));
    MK_TRY(set_key(p, &k, "model_type", mk_asprintf("\"%s\"", types[p->arch])));
    MK_TRY(set_key(p, &k, p->arch == MK_MOE_QWEN2 ? "num_experts" : "num_local_experts", mk_asprintf("%zu", E)));
    MK_TRY(set_key(p, &k, "num_experts_per_tok", mk_asprintf("%ld", p->cfg->experts_per_token)));
    MK_TRY(set_key(p, &k, "sliding_window", mk_strdup("null")));
    MK_TRY(set_key(p, &k, "rope_theta", float_text(b->rope.theta)));
    MK_TRY(set_key(p, &k, "rms_norm_eps", float_text(b->norm_eps)));
    MK_TRY(set_key(p, &k, "hidden_act", mk_asprintf("\"%s\"", b->act_name)));
    MK_TRY(set_key(p, &k, "max_position_embeddings", mk_asprintf("%ld", b->max_pos)));
    MK_TRY(set_key(p, &k, "tie_word_embeddings", mk_strdup(b->tied ? "true" : "false")));
    MK_TRY(set_key(p, &k, "head_dim", mk_asprintf("%ld", b->head_dim)));
    MK_TRY(set_key(p, &k, "num_key_value_heads", mk_asprintf("%ld", b->kv_heads)));
    if (p->arch != MK_MOE_MIXTRAL) {
        MK_TRY(set_key(p, &k, "decoder_sparse_step", mk_strdup("1")));
        MK_TRY(set_key(p, &k, "norm_topk_prob", mk_strdup("true")));
        MK_TRY(set_key(p, &k, "moe_intermediate_size", mk_asprintf("%ld", b->intermediate)));
        MK_TRY(set_key(p, &k, "mlp_only_layers", mk_strdup("[]")));
        MK_TRY(set_key(p, &k, "use_sliding_window", mk_strdup("false")));
    }
    if (p->arch == MK_MOE_QWEN2)
        MK_TRY(set_key(p, &k, "shared_expert_intermediate_size", mk_asprintf("%ld", b->intermediate)));
    if (p->out_dtype != MK_DTYPE_NONE) MK_TRY(set_key(p, &k, "torch_dtype", mk_asprintf("\"%s\"", mk_dtype_info(p->out_dtype)->torch_name)));
    return MK_OK;
}

mk_status mk_moe_plan_build(mk_moe_plan *p, const mk_moe_config *c, mk_source **srcs, const mk_model_config *const *cfgs,
                            size_t n_srcs)
{
    mk_dtype base_dt = p->out_dtype; /* the caller may have put the base model's torch_dtype here */
    memset(p, 0, sizeof *p);
    p->cfg = c;
    p->srcs = srcs;
    p->n_srcs = n_srcs;
    p->base_cfg = cfgs[0];
    p->out_dtype = c->dtype != MK_DTYPE_NONE ? c->dtype : base_dt;
    MK_TRY(select_arch(c, cfgs, n_srcs, &p->arch));
    const mk_model_config *b = cfgs[0];
    if (b->arch.def && b->arch.def->moe)
        return mk_error(MK_ERR_RECIPE, "%s: base_model %s is already a mixture of experts", c->path, c->base.text);
    for (size_t i = 1; i < n_srcs; i++)
        if (cfgs[i]->hidden != b->hidden || cfgs[i]->layers != b->layers)
            return mk_error(MK_ERR_RECIPE, "%s: %s has hidden size %ld and %ld layers, the base model %ld and %ld", c->path,
                            srcs[i]->path, cfgs[i]->hidden, cfgs[i]->layers, b->hidden, b->layers);
    bool shared_gate = c->n_shared && c->shared[0].n_pos;
    p->n_gate_experts = c->n_experts + (shared_gate ? c->n_shared : 0);
    size_t cap = 0;
    mk_source *bs = srcs[0];
    mk_status s = MK_OK;
    for (size_t i = 0; i < bs->n_tensors && s == MK_OK; i++) {
        const mk_tensor_info *t = &bs->tensors[i];
        mk_tensor_role r = mk_arch_role(&b->arch, t->name);
        if (r.role == MK_ROLE_UNKNOWN || r.role == MK_ROLE_ATTN_BUFFER) continue; /* not in mergekit's weight list */
        bool mlp = r.role == MK_ROLE_GATE || r.role == MK_ROLE_UP || r.role == MK_ROLE_DOWN || r.role == MK_ROLE_GATE_UP;
        if (mlp && (r.layer < 0 || r.bias || r.role == MK_ROLE_GATE_UP || !strstr(t->name, ".mlp.")))
            return mk_error(MK_ERR_UNSUPPORTED, "%s: tensor %s of base model %s has no MoE counterpart", c->path, t->name, bs->path);
        if (mlp) {
            if (p->arch == MK_MOE_QWEN2) s = add_qwen2_experts(p, &cap, t, r.role == MK_ROLE_DOWN);
            continue; /* Mixtral / Qwen3-MoE: fused per layer below */
        }
        mk_moe_part *part = mk_malloc(sizeof *part);
        if (!part) return MK_ERR_NOMEM;
        *part = (mk_moe_part){0, i, NULL};
        mk_moe_out how = {MK_MOE_COPY, 1, part, false, -1, false};
        s = add_out(p, &cap, mk_strdup(t->name), t->ndim, t->shape, out_dtype_for(p, t->dtype), how);
        /* qwen.py: Qwen2-MoE attention has q/k/v biases; inputs without them get zeros */
        if (s == MK_OK && p->arch == MK_MOE_QWEN2 && !r.bias && (r.role == MK_ROLE_Q || r.role == MK_ROLE_K || r.role == MK_ROLE_V)) {
            char *bn = mk_strdup(t->name);
            if (!bn) return MK_ERR_NOMEM;
            strcpy(bn + strlen(bn) - 6, "bias"); /* ".weight" -> ".bias" */
            if (mk_source_find(bs, bn) >= 0) {
                free(bn);
                continue;
            }
            mk_moe_out z = {MK_MOE_ZEROS, 0, NULL, false, -1, false};
            s = add_out(p, &cap, bn, 1, t->shape, out_dtype_for(p, t->dtype), z);
        }
    }
    for (long l = 0; p->arch != MK_MOE_QWEN2 && l < b->layers && s == MK_OK; l++) s = add_fused_experts(p, &cap, l);
    /* the routers come last, as mergekit writes them */
    int64_t rs[2] = {(int64_t)c->n_experts, b->hidden}, ss[2] = {1, b->hidden};
    mk_dtype rd = p->out_dtype != MK_DTYPE_NONE ? p->out_dtype : MK_F32;
    for (long l = 0; l < b->layers && s == MK_OK; l++) {
        mk_moe_out how = {MK_MOE_ROUTER, 0, NULL, false, l, false};
        s = add_out(p, &cap, mk_asprintf("model.layers.%ld.mlp.gate.weight", l), 2, rs, rd, how);
        if (s == MK_OK && p->arch == MK_MOE_QWEN2) {
            how.shared = true;
            s = add_out(p, &cap, mk_asprintf("model.layers.%ld.mlp.shared_expert_gate.weight", l), 2, ss, rd, how);
        }
    }
    if (s == MK_OK) s = config_keys(p);
    if (s == MK_OK) {
        size_t ng = (size_t)b->layers * p->n_gate_experts * (size_t)b->hidden;
        p->gates = mk_calloc(ng ? ng : 1, sizeof(float));
        if (!p->gates) s = MK_ERR_NOMEM;
    }
    return s;
}

void mk_moe_plan_free(mk_moe_plan *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) free(p->outs[i].name), free(p->how[i].parts);
    free(p->outs);
    free(p->how);
    free(p->gates);
    for (size_t i = 0; p->cfg_set[i]; i++) free(p->cfg_set[i]);
    memset(p, 0, sizeof *p);
}

/* ---- gates --------------------------------------------------------------------------------- */

/* torch's CPU generator: MT19937 (Matsumoto & Nishimura 1998) as torch.manual_seed(seed)
 * sets it up, from the seed's low 32 bits (ATen/core/MT19937RNGEngine.h). */
typedef struct mt19937 {
    uint32_t s[624];
    int next, left;
} mt19937;

static void mt_seed(mt19937 *m, uint32_t seed)
{
    m->s[0] = seed;
    for (uint32_t j = 1; j < 624; j++) m->s[j] = 1812433253u * (m->s[j - 1] ^ (m->s[j - 1] >> 30)) + j;
    m->left = 1, m->next = 0;
}

static uint32_t mt_next(mt19937 *m)
{
    if (--m->left == 0) {
        for (int j = 0; j < 624; j++) {
            uint32_t y = (m->s[j] & 0x80000000u) | (m->s[(j + 1) % 624] & 0x7fffffffu);
            m->s[j] = m->s[(j + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        m->left = 624, m->next = 0;
    }
    uint32_t y = m->s[m->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* at::uniform_real_distribution<float>(0, 1): 24 random bits over 2^24 */
static float mt_uniform(mt19937 *m) { return (float)(mt_next(m) & 0xffffffu) * (1.0f / 16777216.0f); }

/* ATen's normal_fill_16: Box-Muller on pairs (j, j + 8) of a block of 16 uniforms */
static void normal16(float *d)
{
    for (int j = 0; j < 8; j++) {
        float u1 = 1 - d[j], u2 = d[j + 8];
        float radius = sqrtf(-2 * logf(u1)), theta = 2.0f * (float)M_PI * u2;
        d[j] = radius * cosf(theta);
        d[j + 8] = radius * sinf(theta);
    }
}

mk_status mk_moe_random_gates(mk_moe_plan *p)
{
    size_t H = (size_t)p->base_cfg->hidden, n = (size_t)p->base_cfg->layers * p->n_gate_experts * H;
    mt19937 *m = mk_malloc(sizeof *m);
    if (!m) return MK_ERR_NOMEM;
    mt_seed(m, (uint32_t)(p->seed & 0xffffffffu));
    float *g = p->gates;
    for (size_t i = 0; i < n; i++) g[i] = mt_uniform(m);
    if (p->cfg->gate == MK_MOE_GATE_UNIFORM_RANDOM) {
        /* router.py: torch.rand(...) * 2 * scale - scale, scale = sqrt(1 / hidden) (float32 ops) */
        float scale = (float)sqrt(1.0 / (double)H);
        for (size_t i = 0; i < n; i++) g[i] = g[i] * 2.0f * scale - scale;
    } else if (n >= 16) {
        /* ATen normal_fill: blocks of 16; a ragged tail redraws the last 16 and transforms them */
        for (size_t i = 0; i + 16 <= n; i += 16) normal16(g + i);
        if (n % 16) {
            for (size_t i = n - 16; i < n; i++) g[i] = mt_uniform(m);
            normal16(g + n - 16);
        }
    }
    free(m);
    return MK_OK;
}

void mk_moe_gate_finish(float *v, const float *neg, size_t n, size_t d)
{
    for (size_t r = 0; r < n; r++) {
        float *x = v + r * d;
        if (neg)
            for (size_t i = 0; i < d; i++) x[i] -= neg[r * d + i];
        double ss = 0;
        for (size_t i = 0; i < d; i++) ss += (double)x[i] * x[i];
        float nrm = (float)sqrt(ss);
        if (nrm < 1e-8f) nrm = 1e-8f;
        for (size_t i = 0; i < d; i++) x[i] /= nrm;
    }
}

/* ---- streaming ----------------------------------------------------------------------------- */

typedef struct run_ctx {
    const mk_moe_plan *p;
    mk_consumer *c;
    size_t i;
    uint64_t rpc;       /* rows per chunk */
    uint64_t raw_base;  /* raw copy: byte offset of the part being copied */
} run_ctx;

static void *scratch_new(void *ctx)
{
    const run_ctx *r = ctx;
    uint64_t cols = mk_tensor_cols(&r->p->outs[r->i]);
    return mk_malloc((size_t)(r->rpc * cols) * 12 + 16); /* f32 values + raw bytes of up to 8 */
}

/* common.py noise_and_scale on elements [e0, e0 + n) of an expert tensor, in its own dtype
 * sd: + randn * noise_scale, then * residual_scale on down projections. The noise is
 * mergekit-c's own (keyed by the seed, the output name and the element), not torch's. */
static void noise_and_scale(const mk_moe_plan *p, const char *name, const mk_moe_expert *x, bool residual, mk_dtype sd,
                            uint64_t e0, float *v, uint64_t n)
{
    if (!x->has_noise && !(residual && x->has_residual)) return;
    mk_rng key = mk_rng_key(p->seed, name);
    for (uint64_t k = 0; x->has_noise && k < n; k++) {
        double u1 = 1.0 - mk_rng_uniform(key, 0, e0 + k), u2 = mk_rng_uniform(key, 1, e0 + k), z0, z1;
        mk_det_normal2(u1, u2, &z0, &z1);
        v[k] += (float)(z0 * x->noise_scale);
    }
    if (residual && x->has_residual)
        for (uint64_t k = 0; k < n; k++) v[k] *= (float)x->residual_scale;
    if (sd == MK_BF16 || sd == MK_F16) mk_dtype_round_f32(sd, v, (size_t)n);
}

static mk_status run_chunk(void *ctx, uint64_t ch, void *tls)
{
    const run_ctx *r = ctx;
    const mk_moe_plan *p = r->p;
    const mk_tensor_info *t = &p->outs[r->i];
    const mk_moe_out *h = &p->how[r->i];
    uint64_t cols = mk_tensor_cols(t), rows = mk_tensor_rows(t);
    uint64_t row0 = ch * r->rpc, nr = rows - row0 < r->rpc ? rows - row0 : r->rpc, e0 = row0 * cols, n = nr * cols;
    float *v = tls;
    if (h->from == MK_MOE_ZEROS) {
        memset(v, 0, (size_t)n * sizeof *v);
    } else if (h->from == MK_MOE_ROUTER) {
        size_t H = (size_t)p->base_cfg->hidden, G = p->n_gate_experts;
        const float *g = p->gates + (size_t)h->layer * G * H + (h->shared ? p->cfg->n_experts * H : 0);
        memcpy(v, g + e0, (size_t)n * sizeof *v);
    } else { /* parts of equal size, one after another */
        uint64_t per = t->numel / h->n_parts;
        for (uint64_t e = e0; e < e0 + n;) {
            size_t k = (size_t)(e / per);
            uint64_t off = e - k * per, len = per - off < e0 + n - e ? per - off : e0 + n - e;
            const mk_moe_part *pt = &h->parts[k];
            mk_source *s = p->srcs[pt->model];
            MK_TRY(mk_source_read_f32(s, pt->tensor, off, len, v + (e - e0), v + n));
            if (pt->expert)
                noise_and_scale(p, t->name, pt->expert, h->residual, s->tensors[pt->tensor].dtype, e, v + (e - e0), len);
            e += len;
        }
    }
    return r->c->ops->rows(r->c, r->i, e0, v, n);
}

static mk_status raw_fn(void *ctx, uint64_t off, const void *data, uint64_t len)
{
    const run_ctx *r = ctx;
    return r->c->ops->raw(r->c, r->i, r->raw_base + off, data, len);
}

/* Tensor i can pass as raw bytes: every part in the output dtype, nothing added. */
static bool raw_ok(const mk_moe_plan *p, mk_consumer *c, size_t i)
{
    const mk_moe_out *h = &p->how[i];
    if (!h->n_parts || !c->ops->raw_ok) return false;
    for (size_t k = 0; k < h->n_parts; k++) {
        const mk_moe_part *pt = &h->parts[k];
        const mk_moe_expert *x = pt->expert;
        if (x && (x->has_noise || (h->residual && x->has_residual))) return false;
        if (!c->ops->raw_ok(c, i, &p->outs[i], p->srcs[pt->model]->tensors[pt->tensor].dtype)) return false;
    }
    return true;
}

mk_status mk_moe_run(const mk_moe_plan *p, mk_consumer *c,
                     void (*progress)(void *ctx, size_t done, size_t total, uint64_t bd, uint64_t bt, const char *name), void *pctx)
{
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < p->n; i++) total += p->outs[i].nbytes;
    for (size_t i = 0; i < p->n; i++) {
        const mk_tensor_info *t = &p->outs[i];
        const mk_moe_out *h = &p->how[i];
        run_ctx r = {p, c, i, 0, 0};
        MK_TRY(c->ops->begin(c, i, t));
        if (raw_ok(p, c, i)) {
            for (size_t k = 0; k < h->n_parts; k++) {
                mk_source *s = p->srcs[h->parts[k].model];
                MK_TRY(mk_source_copy_raw(s, h->parts[k].tensor, raw_fn, &r));
                r.raw_base += s->tensors[h->parts[k].tensor].nbytes;
            }
        } else {
            uint64_t cols = mk_tensor_cols(t), align = c->ops->align ? c->ops->align(c, t) : 1;
            r.rpc = mk_rows_per_chunk(cols, align ? align : 1, MOE_CHUNK);
            uint64_t rows = mk_tensor_rows(t), nch = t->numel ? (rows + r.rpc - 1) / r.rpc : 0;
            MK_TRY(mk_parallel_chunks(nch, run_chunk, &r, scratch_new, free));
        }
        MK_TRY(c->ops->end(c, i));
        done += t->nbytes;
        if (progress) progress(pctx, i + 1, p->n, done, total, t->name);
    }
    return MK_OK;
}
