/* mem.c - see mem.h. */
#include "mem.h"

#include "../nn/backward.h"
#include "../nn/cuda/cu_train.h"

#include <string.h>

static const struct {
    const char *name, *alias;
    mk_role role;
} proj_names[] = {{"q_proj", "q", MK_ROLE_Q},          {"k_proj", "k", MK_ROLE_K},   {"v_proj", "v", MK_ROLE_V},
                  {"o_proj", "o", MK_ROLE_O},          {"gate_proj", "gate", MK_ROLE_GATE}, {"up_proj", "up", MK_ROLE_UP},
                  {"down_proj", "down", MK_ROLE_DOWN}};
#define N_PROJ (sizeof proj_names / sizeof proj_names[0])

mk_status mk_train_lora_targets(const char *list, unsigned *out)
{
    *out = 0;
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        bool all = n == 10 && strncmp(p, "all-linear", n) == 0, found = all;
        for (size_t i = 0; i < N_PROJ; i++)
            if (all || (strlen(proj_names[i].name) == n && strncmp(p, proj_names[i].name, n) == 0) ||
                (strlen(proj_names[i].alias) == n && strncmp(p, proj_names[i].alias, n) == 0))
                *out |= 1u << proj_names[i].role, found = true;
        if (!found)
            return mk_error(MK_ERR_USAGE, "--lora-targets: '%.*s' is not q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                                          "down_proj or all-linear", (int)n, p);
        p += n;
        if (*p == ',') p++;
    }
    return *out ? MK_OK : mk_error(MK_ERR_USAGE, "--lora-targets: empty");
}

void mk_train_mem_of(const mk_model_config *c, uint64_t params, const mk_train_mem_req *r, mk_train_mem *m)
{
    memset(m, 0, sizeof *m);
    uint64_t H = (uint64_t)c->hidden, q = (uint64_t)(c->heads * c->head_dim), kv = (uint64_t)(c->kv_heads * c->head_dim);
    uint64_t F = (uint64_t)c->intermediate, L = (uint64_t)c->layers, PL = 0, cols = 0;
    if (r->lora_r) { /* the adapters: r (in + out) per adapted projection of each layer */
        uint64_t io[][2] = {{H, q}, {H, kv}, {H, kv}, {q, H}, {H, F}, {H, F}, {F, H}};
        for (size_t i = 0; i < N_PROJ; i++)
            if (r->targets & (1u << proj_names[i].role)) PL += (uint64_t)r->lora_r * (io[i][0] + io[i][1]), cols += (uint64_t)r->lora_r;
        PL *= L;
    }
    m->act = mk_nn_train_act_bytes(c, r->batch, r->seq, r->checkpointing, cols, r->bf16);
    m->act_other = mk_nn_train_act_bytes(c, r->batch, r->seq, !r->checkpointing, cols, r->bf16);
    m->weights = 4 * params;
    if (r->qlora && r->held_bytes) { /* the layers' projections as NF4, one layer of them in f32 */
        uint64_t per = mk_nn_train_held_scratch(c) / 4, held = per * L;
        m->weights = 4 * (params - held) + r->held_bytes(per) * L + 4 * per;
    }
    m->adapters = 4 * PL;
    m->trainable = r->lora_r ? PL : params;
    m->grads = 4 * m->trainable;
    m->moments = 8 * m->trainable;
    if (r->bf16) /* full: a rounded copy of every weight; LoRA: of the adapters (and of a tied head) */
        m->bf16_copy = r->lora_r ? 4 * PL + (c->tied ? 4 * (uint64_t)c->vocab * H : 0) : 4 * params;
    m->total = m->weights + m->adapters + m->bf16_copy + m->grads + m->moments + m->act;
    mk_cu_train_req g = {params, r->lora_r, r->targets, r->qlora, r->qk_norm, r->batch, r->seq, r->checkpointing, r->bf16};
    m->gpu = mk_cu_train_bytes_of(c, &g) + MK_CU_TRAIN_RESERVE;
    g.checkpointing = !r->checkpointing;
    m->gpu_other = mk_cu_train_bytes_of(c, &g) + MK_CU_TRAIN_RESERVE;
}

bool mk_train_qk_norm(const mk_source *src, const mk_model_config *c)
{
    for (size_t i = 0; i < src->n_tensors; i++)
        if (mk_arch_role(&c->arch, src->tensors[i].name).role == MK_ROLE_Q_NORM) return true;
    return false;
}
