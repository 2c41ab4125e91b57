/* moe_gates.c - see moe.h. */
#include "moe.h"

#include "nn_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct last_tok {
    float *out; /* [L, H] running sums */
} last_tok;

/* hidden_states[l][:, -1, :] of one sequence, added into out[l] */
static void take_last(void *ctx, size_t l, const float *x, size_t nseq, size_t T, size_t H)
{
    last_tok *lt = ctx;
    (void)nseq;
    const float *row = x + (T - 1) * H;
    for (size_t i = 0; i < H; i++) lt->out[l * H + i] += row[i];
}

mk_status mk_nn_moe_prompt_vectors(mk_nn_model *m, bool hidden, int32_t *const *ids, const size_t *n_ids, size_t n, float *out)
{
    size_t H = m->H, L = m->L;
    memset(out, 0, L * H * sizeof(float));
    for (size_t p = 0; p < n; p++) {
        if (!n_ids[p]) return mk_error(MK_ERR_USAGE, "prompt %zu has no tokens", p);
        if (m->cfg->max_pos > 0 && n_ids[p] > (size_t)m->cfg->max_pos)
            return mk_error(MK_ERR_USAGE, "a prompt of %zu tokens is longer than the model's context (max_position_embeddings %ld)",
                            n_ids[p], m->cfg->max_pos);
        for (size_t t = 0; t < n_ids[p]; t++)
            if (ids[p][t] < 0 || (size_t)ids[p][t] >= m->V)
                return mk_error(MK_ERR_USAGE, "token id %d is outside the model's vocabulary of %zu", ids[p][t], m->V);
    }
    if (!hidden) {
        /* router.py get_cheap_embedding: one-hot @ embed, masked, summed over tokens then prompts */
        float *row = mk_malloc(H * sizeof(float)), *acc = mk_calloc(H, sizeof(float)), *sum = mk_calloc(H, sizeof(float));
        mk_status s = row && acc && sum ? MK_OK : MK_ERR_NOMEM;
        size_t e = (size_t)m->g_idx[MK_ROLE_TOK_EMBED][0];
        for (size_t p = 0; p < n && s == MK_OK; p++) {
            memset(acc, 0, H * sizeof(float));
            for (size_t t = 0; t < n_ids[p] && s == MK_OK; t++) {
                s = mk_nn_read(m, e, (uint64_t)ids[p][t] * H, H, row);
                for (size_t i = 0; s == MK_OK && i < H; i++) acc[i] += row[i];
            }
            for (size_t i = 0; i < H; i++) sum[i] += acc[i];
        }
        if (s == MK_OK) {
            double ss = 0;
            for (size_t i = 0; i < H; i++) ss += (double)sum[i] * sum[i];
            float nrm = (float)sqrt(ss);
            if (nrm < 1e-8f) nrm = 1e-8f;
            for (size_t l = 0; l < L; l++)
                for (size_t i = 0; i < H; i++) out[l * H + i] = sum[i] / nrm;
        }
        free(row), free(acc), free(sum);
        return s;
    }
    /* router.py get_hidden_states (mode "hidden": the last token, averaged over the batch);
     * each prompt runs alone: left padding under the attention mask changes nothing */
    last_tok lt = {out};
    float *fin = NULL;
    size_t cap = 0;
    mk_status s = MK_OK;
    for (size_t p = 0; p < n && s == MK_OK; p++) {
        if (n_ids[p] > cap) {
            free(fin);
            cap = n_ids[p];
            fin = mk_malloc(cap * H * sizeof(float));
            if (!fin) return MK_ERR_NOMEM;
        }
        s = mk_nn_forward_hook(m, ids[p], 1, n_ids[p], fin, take_last, &lt);
    }
    free(fin);
    for (size_t i = 0; s == MK_OK && i < L * H; i++) out[i] /= (float)n;
    return s;
}
