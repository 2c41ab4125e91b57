/* gguf_moe.c - see gguf_moe.h. Sources: llama.cpp's conversion/llama.py (MixtralModel),
 * conversion/qwen.py (Qwen2MoeModel), gguf-py tensor_mapping.py and llama-arch.cpp. */
#include "gguf_moe.h"

#include "../model/arch.h"

#include <stdio.h>
#include <string.h>

static const mk_gguf_arch mixtral = {"llama", "mixtral", "MixtralForCausalLM", true, false};
static const mk_gguf_arch qwen2moe = {"qwen2moe", "qwen2_moe", "Qwen2MoeForCausalLM", false, false};

const mk_gguf_arch *mk_cli_gguf_names_for(const char *model_type)
{
    static const char *const moe[][2] = {{"mixtral", "llama"}, {"qwen2_moe", "qwen2"}, {"qwen3_moe", "qwen3"}};
    const mk_gguf_arch *a = mk_gguf_arch_for_model_type(model_type);
    for (size_t i = 0; !a && model_type && i < sizeof moe / sizeof moe[0]; i++)
        if (!strcmp(model_type, moe[i][0])) a = mk_gguf_arch_for_model_type(moe[i][1]);
    return a;
}

const mk_gguf_arch *mk_cli_gguf_write_arch(const char *model_type)
{
    if (model_type && !strcmp(model_type, "mixtral")) return &mixtral;
    if (model_type && !strcmp(model_type, "qwen2_moe")) return &qwen2moe;
    return mk_gguf_arch_for_model_type(model_type);
}

/* llama.cpp's names of the mixture-of-experts tensors (llama-arch.cpp: LLM_TENSOR_FFN_*) */
static const char *moe_suffix(mk_role r)
{
    switch (r) {
    case MK_ROLE_ROUTER: return "ffn_gate_inp";
    case MK_ROLE_EXPERT_GATE: return "ffn_gate_exps";
    case MK_ROLE_EXPERT_UP: return "ffn_up_exps";
    case MK_ROLE_EXPERT_DOWN: case MK_ROLE_EXPERTS_DOWN: return "ffn_down_exps";
    case MK_ROLE_SHARED_GATE: return "ffn_gate_shexp";
    case MK_ROLE_SHARED_UP: return "ffn_up_shexp";
    case MK_ROLE_SHARED_DOWN: return "ffn_down_shexp";
    case MK_ROLE_SHARED_ROUTER: return "ffn_gate_inp_shexp";
    default: return NULL;
    }
}

static bool part_name(mk_cli_gguf_part *p, long layer, const char *sfx, const char *kind)
{
    return (size_t)snprintf(p->name, sizeof p->name, "blk.%ld.%s.%s", layer, sfx, kind) < sizeof p->name;
}

mk_status mk_cli_gguf_parts(const mk_model_config *cfg, const mk_gguf_arch *a, const mk_tensor_info *t, const char *path,
                            mk_cli_gguf_part out[2], size_t *n, char *role_qk)
{
    *n = 0;
    *role_qk = 0;
    memset(out, 0, 2 * sizeof *out);
    mk_tensor_role r = mk_arch_role(&cfg->arch, t->name);
    uint64_t E = cfg->n_experts > 0 ? (uint64_t)cfg->n_experts : 0;
    const char *sfx = moe_suffix(r.role), *kind = r.bias ? "bias" : "weight";
    mk_cli_gguf_part *p = &out[0];
    p->nmat = 1;
    p->expert = -1;
    p->cols = t->ndim ? (uint64_t)t->shape[t->ndim - 1] : 1;
    p->rows = t->ndim == 2 ? (uint64_t)t->shape[0] : 1;
    bool fused = r.role == MK_ROLE_EXPERTS_GATE_UP || r.role == MK_ROLE_EXPERTS_DOWN;
    bool expert = fused || r.role == MK_ROLE_EXPERT_GATE || r.role == MK_ROLE_EXPERT_UP || r.role == MK_ROLE_EXPERT_DOWN;
    if (expert && !E) return mk_error(MK_ERR_FORMAT, "%s: tensor %s is an expert's, but the config names no experts", path, t->name);
    if (fused) { /* [E, rows, cols] */
        if (t->ndim != 3 || (uint64_t)t->shape[0] != E || (r.role == MK_ROLE_EXPERTS_GATE_UP && t->shape[1] % 2))
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s: not [%llu experts, rows, columns]%s", path, t->name, (unsigned long long)E,
                            r.role == MK_ROLE_EXPERTS_GATE_UP ? " with an even number of rows" : "");
        p->nmat = E;
        p->rows = (uint64_t)t->shape[1];
        p->estride = p->rows * p->cols;
        if (r.role == MK_ROLE_EXPERTS_GATE_UP) { /* each expert's gate rows, then its up rows */
            p->rows /= 2;
            out[1] = *p;
            out[1].row0 = p->rows;
            if (!part_name(p, r.layer, "ffn_gate_exps", kind) || !part_name(&out[1], r.layer, "ffn_up_exps", kind)) return MK_OK;
            *n = 2;
            return MK_OK;
        }
    } else if (expert) {
        if (r.expert < 0 || (uint64_t)r.expert >= E)
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s: expert %ld of %llu", path, t->name, r.expert, (unsigned long long)E);
        p->nmat = E;
        p->expert = r.expert;
    }
    if (sfx) {
        if (!part_name(p, r.layer, sfx, kind)) return MK_OK;
    } else if (r.role == MK_ROLE_LM_HEAD) {
        snprintf(p->name, sizeof p->name, "output.%s", kind);
    } else if (!mk_gguf_name(a, t->name, p->name, sizeof p->name, role_qk)) {
        return MK_OK;
    }
    *n = 1;
    return MK_OK;
}

mk_status mk_cli_imatrix_for(const mk_imatrix *im, const char *file, const char *model, const mk_model_config *cfg, const mk_gguf_arch *a,
                             const mk_tensor_info *t, const char *noun, const float **imp)
{
    mk_cli_gguf_part pt[2];
    size_t n;
    char qk;
    *imp = NULL;
    if (t->ndim != 2) return MK_OK;
    MK_TRY(mk_cli_gguf_parts(cfg, a, t, model, pt, &n, &qk));
    const mk_imatrix_entry *e = n ? mk_imatrix_find(im, pt[0].name) : NULL;
    if (!e) return MK_OK;
    if (!mk_imatrix_fits(im, e, pt[0].nmat, pt[0].cols)) {
        if (pt[0].nmat == 1)
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s: %llu x %llu importances for %s, a %s of %llu columns", file, e->name,
                            (unsigned long long)e->nmat, (unsigned long long)e->cols, t->name, noun, (unsigned long long)pt[0].cols);
        return mk_error(MK_ERR_FORMAT, "%s: tensor %s: %llu x %llu importances for %s, expert %ld of %llu of %llu columns", file, e->name,
                        (unsigned long long)e->nmat, (unsigned long long)e->cols, t->name, pt[0].expert, (unsigned long long)pt[0].nmat,
                        (unsigned long long)pt[0].cols);
    }
    MK_TRY(mk_imatrix_lookup(im, file, pt[0].name, pt[0].nmat, pt[0].cols, imp));
    if (*imp && pt[0].expert > 0) *imp += (uint64_t)pt[0].expert * pt[0].cols;
    return MK_OK;
}

bool mk_cli_gguf_is_router(const char *gguf_name)
{
    return strstr(gguf_name, "ffn_gate_inp.weight") != NULL;
}

void mk_cli_gguf_moe_metadata(mk_gguf_w *w, const mk_gguf_arch *a, const mk_model_config *c)
{
    if (c->n_experts <= 0) return;
    char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s." s, a->name), k)
    mk_gguf_w_u32(w, KEY("expert_count"), (uint32_t)c->n_experts);
    mk_gguf_w_u32(w, KEY("expert_used_count"), (uint32_t)c->experts_per_tok);
    if (c->moe_intermediate > 0) mk_gguf_w_u32(w, KEY("expert_feed_forward_length"), (uint32_t)c->moe_intermediate);
    if (c->shared_intermediate > 0) mk_gguf_w_u32(w, KEY("expert_shared_feed_forward_length"), (uint32_t)c->shared_intermediate);
#undef KEY
}
