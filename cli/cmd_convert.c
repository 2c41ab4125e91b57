/* cmd_convert.c - `mergekit-c convert MODEL OUT.gguf --type T`: a Hugging Face model (any
 * input format; a GGUF file reads dequantized) to a llama.cpp GGUF file in one streaming
 * pass, as convert_hf_to_gguf.py writes it for the architectures model/gguf_names.h knows:
 * llama.cpp tensor names, Q/K rows permuted for llama-family attention, {arch}.* and
 * tokenizer.ggml.* metadata. Tensor types (convert_hf_to_gguf.py prepare_tensors, llama.cpp
 * llama_tensor_get_type): 1-D tensors and norms stay F32; matrices in T, F16 where a row
 * is not a whole number of T's blocks; for the 4- and 5-bit types the output matrix (the
 * token embedding when tied) is Q6_K as llama-quantize picks it, Q8_0 where its rows are not
 * whole 256-value blocks; for
 * the ternary TQ1_0 / TQ2_0 the token embedding and output matrix are F16, as the converter
 * writes them. The k-quant mixes (q2_k ... q6_k, general.file_type as llama.cpp's) take each
 * matrix's type from quant/ggml_mix.h, llama-quantize's choices.
 */
#include "cli.h"

#include "../core/mk_dtype.h"
#include "../core/mk_hash.h"
#include "../formats/output.h"
#include "../formats/gguf_write.h"
#include "../formats/safetensors.h"
#include "../core/mk_parallel.h"
#include "../core/mk_thread.h"
#include "../model/config.h"
#include "../model/gguf_names.h"
#include "../quant/ggml.h"
#include "../formats/imatrix.h"
#include "../quant/ggml_kquant.h"
#include "../quant/ggml_mix.h"
#include "../quant/alloc_gguf.h"
#include "gguf_moe.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* --type names: the ggml type and llama.cpp's general.file_type (LlamaFileType) */
static const struct {
    const char *name;
    uint32_t type, ftype;
} types[] = {
    {"f32", MK_GGML_F32, 0}, {"f16", MK_GGML_F16, 1},   {"bf16", MK_GGML_BF16, 32}, {"q8_0", MK_GGML_Q8_0, 7},
    {"q4_0", MK_GGML_Q4_0, 2}, {"q4_1", MK_GGML_Q4_1, 3}, {"q5_0", MK_GGML_Q5_0, 8},  {"q5_1", MK_GGML_Q5_1, 9},
    {"tq1_0", MK_GGML_TQ1_0, 36}, {"tq2_0", MK_GGML_TQ2_0, 37},
    /* llama.cpp's k-quant mixes (quant/ggml_mix.h); q3_k, q4_k and q5_k are the _m mixes, as
     * llama-quantize names them */
    {"q2_k", MK_GGML_Q2_K, MK_FTYPE_Q2_K}, {"q3_k_s", MK_GGML_Q3_K, MK_FTYPE_Q3_K_S}, {"q3_k_m", MK_GGML_Q3_K, MK_FTYPE_Q3_K_M},
    {"q3_k", MK_GGML_Q3_K, MK_FTYPE_Q3_K_M}, {"q3_k_l", MK_GGML_Q3_K, MK_FTYPE_Q3_K_L}, {"q4_k_s", MK_GGML_Q4_K, MK_FTYPE_Q4_K_S},
    {"q4_k_m", MK_GGML_Q4_K, MK_FTYPE_Q4_K_M}, {"q4_k", MK_GGML_Q4_K, MK_FTYPE_Q4_K_M}, {"q5_k_s", MK_GGML_Q5_K, MK_FTYPE_Q5_K_S},
    {"q5_k_m", MK_GGML_Q5_K, MK_FTYPE_Q5_K_M}, {"q5_k", MK_GGML_Q5_K, MK_FTYPE_Q5_K_M}, {"q6_k", MK_GGML_Q6_K, MK_FTYPE_Q6_K},
    {"iq4_nl", MK_GGML_IQ4_NL, MK_FTYPE_IQ4_NL},
};
#define TYPE_NAMES \
    "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, tq1_0, tq2_0, q2_k, q3_k_s, q3_k_m (q3_k), q3_k_l, q4_k_s, q4_k_m (q4_k), " \
    "q5_k_s, q5_k_m (q5_k), q6_k, iq4_nl"
#define N_TYPES (sizeof types / sizeof types[0])

typedef struct plan {
    size_t src;      /* source tensor */
    char name[MK_GGUF_MAX_NAME];
    uint32_t type;
    uint64_t rows, cols;
    uint64_t heads;  /* Q/K: rows are permuted in groups of rows / heads; else 0 */
    const float *qw; /* --imatrix: the importance of each column (borrowed), or NULL */
    const float *imp; /* the imatrix's importances for it, whatever its type */
    /* ffn_*_exps (gguf_moe.h): `experts` matrices of erows rows stacked (rows = experts * erows),
     * expert e's row r at value (e * estride + (row0 + r) * cols) of source tensor esrc[e];
     * imp / qw then hold experts rows of cols. experts 0 otherwise. */
    uint64_t experts, erows, estride, row0;
    size_t *esrc;
} plan;

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* convert_hf_to_gguf.py's general.name: the folder's name */
static char *model_name(const char *path)
{
    char *p = mk_strdup(path);
    if (!p) return NULL;
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') p[--n] = 0;
    char *b = mk_path_basename(p);
    free(p);
    return b;
}

static void plan_free(plan *p, size_t n)
{
    for (size_t i = 0; p && i < n; i++) free(p[i].esrc);
    free(p);
}

/* Expert weight t (parts pt[0..np)) into its stacked ffn_*_exps row of p (made at its first
 * expert, in place of the tensor's position). */
static mk_status plan_expert(const mk_source *src, size_t i, const mk_cli_gguf_part *pt, size_t np, plan *p, size_t *n)
{
    for (size_t k = 0; k < np; k++) {
        plan *q = NULL;
        for (size_t j = 0; j < *n && !q; j++)
            if (!strcmp(p[j].name, pt[k].name)) q = &p[j];
        if (!q) {
            q = &p[(*n)++];
            memcpy(q->name, pt[k].name, sizeof q->name);
            q->src = i;
            q->experts = pt[k].nmat, q->erows = pt[k].rows, q->cols = pt[k].cols, q->rows = q->experts * q->erows;
            q->estride = pt[k].estride, q->row0 = pt[k].row0;
            if (!(q->esrc = mk_malloc(q->experts * sizeof *q->esrc))) return MK_ERR_NOMEM;
            for (uint64_t e = 0; e < q->experts; e++) q->esrc[e] = SIZE_MAX;
        } else if (q->erows != pt[k].rows || q->cols != pt[k].cols) {
            return mk_error(MK_ERR_FORMAT, "%s: tensor %s: [%llu, %llu], but the other experts of %s are [%llu, %llu]", src->path,
                            src->tensors[i].name, (unsigned long long)pt[k].rows, (unsigned long long)pt[k].cols, q->name,
                            (unsigned long long)q->erows, (unsigned long long)q->cols);
        }
        for (uint64_t e = 0; e < q->experts; e++) {
            if (pt[k].expert >= 0 && (uint64_t)pt[k].expert != e) continue;
            if (q->esrc[e] != SIZE_MAX)
                return mk_error(MK_ERR_FORMAT, "%s: tensor %s: expert %llu of %s given twice", src->path, src->tensors[i].name,
                                (unsigned long long)e, q->name);
            q->esrc[e] = i;
        }
    }
    return MK_OK;
}

/* every expert of every ffn_*_exps there */
static mk_status plan_experts_check(const mk_source *src, const plan *p, size_t n)
{
    for (size_t j = 0; j < n; j++)
        for (uint64_t e = 0; e < p[j].experts; e++)
            if (p[j].esrc[e] == SIZE_MAX)
                return mk_error(MK_ERR_FORMAT, "%s: %s: expert %llu of %llu has no tensor", src->path, p[j].name, (unsigned long long)e,
                                (unsigned long long)p[j].experts);
    return MK_OK;
}

static mk_status plan_tensors(const mk_source *src, const mk_gguf_arch *a, const mk_model_config *cfg, uint32_t want, uint32_t ftype,
                              bool imatrix, plan **out, size_t *n_out)
{
    plan *p = mk_calloc(src->n_tensors ? 2 * src->n_tensors : 1, sizeof *p);
    if (!p) return MK_ERR_NOMEM;
    size_t n = 0;
    mk_status s = MK_OK;
    bool has_output = false;
    for (size_t i = 0; i < src->n_tensors; i++) has_output |= strcmp(src->tensors[i].name, "lm_head.weight") == 0;
    bool small = want == MK_GGML_Q4_0 || want == MK_GGML_Q4_1 || want == MK_GGML_Q5_0 || want == MK_GGML_Q5_1;
    bool ternary = want == MK_GGML_TQ1_0 || want == MK_GGML_TQ2_0, plain = small || want == MK_GGML_Q8_0;
    uint32_t base;
    bool mix = mk_ggml_mix_base(ftype, &base);
    mk_ggml_mix_model mm = {(int)cfg->layers, cfg->kv_heads > 0 ? (int)(cfg->heads / cfg->kv_heads) : 0, !has_output,
                            cfg->layers == 80 && ((strcmp(a->name, "llama") == 0 && cfg->heads != cfg->kv_heads) || strcmp(a->name, "qwen2") == 0),
                            (int)cfg->n_experts, imatrix};
    bool moe = cfg->n_experts > 0;
    for (size_t i = 0; i < src->n_tensors; i++) {
        const mk_tensor_info *t = &src->tensors[i];
        if (ends_with(t->name, "rotary_emb.inv_freq")) continue; /* not a weight */
        char qk = 0;
        plan *q = &p[n];
        mk_cli_gguf_part pt[2];
        size_t np = 0;
        if (moe && (s = mk_cli_gguf_parts(cfg, a, t, src->path, pt, &np, &qk)) != MK_OK) break;
        if (np && pt[0].nmat > 1) { /* typed when its first expert comes */
            size_t n0 = n;
            if ((s = plan_expert(src, i, pt, np, p, &n)) != MK_OK) break;
            for (; n0 < n; n0++) {
                p[n0].type = mix ? mk_ggml_mix_type(ftype, &mm, p[n0].name, p[n0].cols) : plain ? mk_ggml_plain_type(want, &mm, p[n0].name) : want;
                if (p[n0].cols % mk_ggml_type_of(p[n0].type)->block) p[n0].type = MK_GGML_F16;
            }
            continue;
        }
        if (np) memcpy(q->name, pt[0].name, sizeof q->name);
        if (!np && !mk_gguf_name(a, t->name, q->name, sizeof q->name, &qk)) {
            s = mk_error(MK_ERR_UNSUPPORTED, "%s: tensor %s has no llama.cpp name for architecture %s", src->path, t->name, a->name);
            break;
        }
        if (!mk_dtype_info(t->dtype)->is_float || t->ndim < 1 || t->ndim > 2) {
            s = mk_error(MK_ERR_UNSUPPORTED, "%s: tensor %s: %s with %d dimensions cannot go into GGUF here", src->path, t->name,
                            mk_dtype_info(t->dtype)->name, t->ndim);
            break;
        }
        q->src = i;
        q->cols = (uint64_t)t->shape[t->ndim - 1];
        q->rows = t->ndim == 2 ? (uint64_t)t->shape[0] : 1;
        bool out_like = strcmp(q->name, "output.weight") == 0 || (!has_output && strcmp(q->name, "token_embd.weight") == 0);
        bool embd_or_out = strcmp(q->name, "output.weight") == 0 || strcmp(q->name, "token_embd.weight") == 0;
        q->type = t->ndim == 1 || ends_with(q->name, "_norm.weight") ? MK_GGML_F32
                  : mix                                               ? mk_ggml_mix_type(ftype, &mm, q->name, q->cols)
                  : small && out_like                                 ? (q->cols % 256 ? MK_GGML_Q8_0 : MK_GGML_Q6_K)
                  : ternary && embd_or_out                            ? MK_GGML_F16
                  : plain                                             ? mk_ggml_plain_type(want, &mm, q->name)
                                                                      : want;
        /* llama-quantize leaves the routers as converted, and a [1, hidden] gate (ggml: one dimension) */
        if (mk_cli_gguf_is_router(q->name) || (moe && q->rows == 1 && mk_ggml_type_of(q->type)->block > 1)) q->type = MK_GGML_F32;
        if (q->cols % mk_ggml_type_of(q->type)->block) q->type = MK_GGML_F16;
        if (qk) {
            q->heads = (uint64_t)(qk == 'q' ? cfg->heads : cfg->kv_heads);
            if (q->heads == 0 || q->rows % q->heads || (q->rows / q->heads) % 2) {
                s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: %llu rows are not %llu heads of an even size", src->path, t->name,
                                (unsigned long long)q->rows, (unsigned long long)q->heads);
                break;
            }
        }
        n++;
    }
    if (s == MK_OK) s = plan_experts_check(src, p, n);
    if (s != MK_OK) {
        plan_free(p, n);
        return s;
    }
    *out = p;
    *n_out = n;
    return MK_OK;
}

static void metadata(mk_gguf_w *w, const mk_gguf_arch *a, const mk_model_config *c, const char *name, uint32_t ftype)
{
    char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s." s, a->name), k)
    mk_gguf_w_str(w, "general.architecture", a->name);
    mk_gguf_w_str(w, "general.type", "model");
    mk_gguf_w_str(w, "general.name", name);
    mk_gguf_w_u32(w, KEY("block_count"), (uint32_t)c->layers);
    mk_gguf_w_u32(w, KEY("context_length"), (uint32_t)c->max_pos);
    mk_gguf_w_u32(w, KEY("embedding_length"), (uint32_t)c->hidden);
    mk_gguf_w_u32(w, KEY("feed_forward_length"), (uint32_t)c->intermediate);
    mk_gguf_w_u32(w, KEY("attention.head_count"), (uint32_t)c->heads);
    mk_gguf_w_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->kv_heads);
    mk_gguf_w_f32(w, KEY("rope.freq_base"), (float)c->rope.theta);
    mk_gguf_w_f32(w, KEY("attention.layer_norm_rms_epsilon"), (float)c->norm_eps);
    if (c->head_dim != c->hidden / c->heads || a->qk_norm) {
        mk_gguf_w_u32(w, KEY("attention.key_length"), (uint32_t)c->head_dim);
        mk_gguf_w_u32(w, KEY("attention.value_length"), (uint32_t)c->head_dim);
    }
    mk_gguf_w_u32(w, "general.file_type", ftype);
    if (a->permute_qk) mk_gguf_w_u32(w, KEY("rope.dimension_count"), (uint32_t)c->head_dim);
    if (c->rope.type == MK_ROPE_LINEAR) {
        mk_gguf_w_str(w, KEY("rope.scaling.type"), "linear");
        mk_gguf_w_f32(w, KEY("rope.scaling.factor"), (float)c->rope.factor);
    }
}

/* LlamaModel writes {arch}.vocab_size; llama.cpp needs it where there is no vocabulary */
static void vocab_size(mk_gguf_w *w, const mk_gguf_arch *a, const mk_model_config *c, bool vocab)
{
    char k[128];
    if (a->permute_qk || !vocab) mk_gguf_w_u32(w, KEY("vocab_size"), (uint32_t)c->vocab);
#undef KEY
}

/* The tensors' data in steps: a step is up to STEP_CHUNKS chunks of rows (pieces of one or
 * more tensors, in file order, at most STEP_BYTES encoded), each chunk read (f32 sources
 * straight into the encoder's buffer, or encoded from the source's own bytes where it lends
 * them) and encoded by one of the pool's threads into its place in one of two buffers, while
 * the thread that takes chunk 0 of the same loop writes the step before it. The bytes and
 * their order are those of one thread at a time; each thread keeps its buffers for the whole
 * file. */
#define CHUNK_VALUES (1u << 16)
#define STEP_CHUNKS 128
#define STEP_PIECES 64
#define STEP_BYTES ((size_t)2 << 20)
#define STEP_BYTES_1 ((size_t)1 << 20) /* on one thread */

typedef struct piece {
    size_t p;            /* row of the plan */
    uint64_t row0, rows; /* its rows in GGUF order */
    uint64_t c0;         /* its first chunk in the step (chunk 0 writes the step before) */
    size_t off, bytes;   /* its encoded bytes in the step's buffer */
} piece;

typedef struct step {
    piece pc[STEP_PIECES];
    size_t n;
    uint64_t chunks; /* encoding chunks */
    unsigned char *buf;
} step;

typedef struct tbuf {
    float *f;   /* rows as f32 */
    void *raw;  /* the source's bytes when it cannot lend them and they are not f32 */
} tbuf;

typedef struct pipeline {
    mk_gguf_w *w;
    mk_source *src;
    const plan *p;
    const size_t *todo; /* the plan rows to write, in order */
    size_t ntodo;
    size_t k;           /* next: todo[k] from row `row` */
    uint64_t row;
    step st[2];
    int cur;            /* the step being encoded; st[!cur] is written in the same loop */
    bool pending;       /* st[!cur] holds a step to write */
    size_t cap;         /* bytes of each step buffer */
    uint64_t chunk_values;
    uint64_t fvals;     /* values of each thread's buffers: a chunk of any tensor */
    tbuf *tb;           /* [nt] per thread (mk_thread_index) */
    int nt;
    char (*hex)[33];    /* or NULL: each tensor's XXH3-128 as written, by plan row */
    mk_hasher *h;       /* the tensor being hashed */
} pipeline;

static uint64_t rows_per_chunk(const pipeline *pp, const plan *q)
{
    return pp->chunk_values / q->cols ? pp->chunk_values / q->cols : 1;
}

static uint64_t row_bytes(const plan *q)
{
    const mk_ggml_type *ty = mk_ggml_type_of(q->type);
    return q->cols / ty->block * ty->bytes;
}

/* The next step's pieces, from where the last one ended. */
static void step_fill(pipeline *pp, step *s)
{
    s->n = 0;
    s->chunks = 0;
    size_t off = 0;
    while (pp->k < pp->ntodo && s->n < STEP_PIECES && s->chunks < STEP_CHUNKS) {
        const plan *q = &pp->p[pp->todo[pp->k]];
        uint64_t rpc = rows_per_chunk(pp, q), rb = row_bytes(q), room = (pp->cap - off) / rb; /* rows that fit */
        uint64_t take = q->rows - pp->row < (STEP_CHUNKS - s->chunks) * rpc ? q->rows - pp->row : (STEP_CHUNKS - s->chunks) * rpc;
        if (take > room) take = room / rpc * rpc; /* whole chunks */
        if (!take) break; /* (an empty step holds a whole chunk of any tensor: cap, so steps move on) */
        s->pc[s->n++] = (piece){pp->todo[pp->k], pp->row, take, s->chunks + 1, off, (size_t)(take * rb)};
        s->chunks += (take + rpc - 1) / rpc;
        off += (size_t)(take * rb);
        if ((pp->row += take) == q->rows) pp->k++, pp->row = 0;
    }
}

static void *tbuf_get(void *ctx)
{
    pipeline *pp = ctx;
    int i = mk_thread_index();
    if (i < 0 || i >= pp->nt) {
        mk_error(MK_ERR_NOMEM, "convert: thread %d outside the pool of %d", i, pp->nt);
        return NULL;
    }
    tbuf *t = &pp->tb[i];
    if (!t->f && !(t->f = mk_malloc((size_t)pp->fvals * sizeof *t->f))) return NULL;
    if (!t->raw && !(t->raw = mk_malloc((size_t)pp->fvals * 8))) return NULL;
    return t;
}

/* Values [e0, e0 + n) of tensor i as f32: f32 bytes lent by the source where it can (*out
 * points at them), else read straight into dst (f32) or converted there from raw. */
static mk_status read_f32(mk_source *src, size_t i, uint64_t e0, uint64_t n, float *dst, void *raw, const float **out)
{
    const mk_tensor_info *t = &src->tensors[i];
    *out = dst;
    if (t->dtype != MK_F32) return mk_source_read_f32(src, i, e0, n, dst, raw);
    if (e0 > t->numel || n > t->numel - e0) MK_BUG("read past the end of a tensor");
    const void *lent = src->ops->borrow ? src->ops->borrow(src, i, e0 * 4, n * 4) : NULL;
    if (lent && (uintptr_t)lent % sizeof(float) == 0) *out = lent;
    else if (lent) memcpy(dst, lent, (size_t)n * 4);
    else MK_TRY(src->ops->read(src, i, e0 * 4, n * 4, dst)); /* little-endian f32: the values */
    return MK_OK;
}

/* Rows r0 .. r0 + nr of a stacked expert tensor q into dst, one expert's run at a time: read
 * (buf: room for nr rows, scratch: for mk_source_read_f32) and encoded with that expert's
 * importances (llama-quantize: chunks never cross an expert). */
static mk_status encode_experts(mk_source *src, const plan *q, uint64_t r0, uint64_t nr, float *buf, void *scratch, unsigned char *dst)
{
    const mk_ggml_type *ty = mk_ggml_type_of(q->type);
    uint64_t row_bytes = q->cols / ty->block * ty->bytes;
    for (uint64_t r = r0; r < r0 + nr;) {
        uint64_t e = r / q->erows, er = r % q->erows, k = q->erows - er < r0 + nr - r ? q->erows - er : r0 + nr - r;
        MK_TRY(mk_source_read_f32(src, q->esrc[e], e * q->estride + (q->row0 + er) * q->cols, k * q->cols, buf, scratch));
        if (q->qw ? !mk_ggml_kquant_encode_w(q->type, buf, k, q->cols, q->qw + e * q->cols, dst)
                  : !mk_ggml_encode(q->type, buf, k * q->cols / ty->block, dst))
            MK_BUG("ggml type without an encoder");
        dst += k * row_bytes;
        r += k;
    }
    return MK_OK;
}

/* Rows [r0, r0 + nr) of q in GGUF order, as f32: in t->f, or lent by the source */
static mk_status read_rows(pipeline *pp, const plan *q, uint64_t r0, uint64_t nr, tbuf *t, const float **out)
{
    if (!q->heads) return read_f32(pp->src, q->src, r0 * q->cols, nr * q->cols, t->f, t->raw, out);
    for (uint64_t r = 0; r < nr; r++) {
        const float *row;
        float *at = t->f + r * q->cols;
        MK_TRY(read_f32(pp->src, q->src, mk_gguf_permute_src_row(r0 + r, q->rows, q->heads) * q->cols, q->cols, at, t->raw, &row));
        if (row != at) memcpy(at, row, (size_t)q->cols * sizeof *at);
    }
    *out = t->f;
    return MK_OK;
}

/* Step s's bytes into the file, in order. */
static mk_status write_step(pipeline *pp, const step *s)
{
    for (size_t i = 0; i < s->n; i++) {
        const piece *e = &s->pc[i];
        if (!pp->w->random) {
            MK_TRY(mk_gguf_w_data(pp->w, s->buf + e->off, e->bytes));
            continue;
        }
        MK_TRY(mk_gguf_w_at(pp->w, e->p, e->row0 * row_bytes(&pp->p[e->p]), s->buf + e->off, e->bytes));
        if (pp->hex) { /* a tensor's pieces come in order */
            if (!e->row0 && !pp->h && !(pp->h = mk_hasher_new())) return MK_ERR_NOMEM;
            mk_hasher_update(pp->h, s->buf + e->off, e->bytes);
            if (e->row0 + e->rows == pp->p[e->p].rows) {
                mk_hash128_hex(mk_hasher_digest(pp->h), pp->hex[e->p]);
                mk_hasher_free(pp->h);
                pp->h = NULL;
            }
        }
        mk_testpoint(); /* a part's region half written */
    }
    return MK_OK;
}

/* Chunk 0 writes the step before (when one is pending); chunk c >= 1 encodes its rows of
 * the current step. */
static mk_status step_chunk(void *ctx, uint64_t c, void *tp)
{
    pipeline *pp = ctx;
    if (c == 0) return pp->pending ? write_step(pp, &pp->st[!pp->cur]) : MK_OK;
    const step *s = &pp->st[pp->cur];
    size_t i = 0;
    while (i + 1 < s->n && s->pc[i + 1].c0 <= c) i++;
    const piece *e = &s->pc[i];
    const plan *q = &pp->p[e->p];
    const mk_ggml_type *ty = mk_ggml_type_of(q->type);
    uint64_t rpc = rows_per_chunk(pp, q), k = c - e->c0, r0 = e->row0 + k * rpc;
    uint64_t nr = e->row0 + e->rows - r0 < rpc ? e->row0 + e->rows - r0 : rpc;
    void *dst = s->buf + e->off + k * rpc * row_bytes(q);
    if (q->experts) return encode_experts(pp->src, q, r0, nr, ((tbuf *)tp)->f, ((tbuf *)tp)->raw, dst);
    const float *x;
    MK_TRY(read_rows(pp, q, r0, nr, tp, &x));
    if (q->qw ? !mk_ggml_kquant_encode_w(q->type, x, nr, q->cols, q->qw, dst) : !mk_ggml_encode(q->type, x, nr * q->cols / ty->block, dst))
        MK_BUG("ggml type without an encoder");
    return MK_OK;
}

/* The plan rows todo[0..n) written in order: streamed, or, into a part's shared file
 * (w->random), each put in its place, and then, where hex is not NULL, its bytes' XXH3-128
 * in hex[plan row]. prog: one tick per tensor written. */
static mk_status write_tensors(mk_gguf_w *w, mk_source *src, const plan *p, const size_t *todo, size_t n, mk_progress *prog,
                               char (*hex)[33])
{
    pipeline pp = {.w = w, .src = src, .p = p, .todo = todo, .ntodo = n, .chunk_values = CHUNK_VALUES, .fvals = CHUNK_VALUES,
                   .nt = mk_threads_get(), .hex = w->random ? hex : NULL};
    bool overlap = pp.nt > 1; /* one thread: each step written once encoded, from one buffer */
    pp.cap = overlap ? STEP_BYTES : STEP_BYTES_1;
    for (size_t i = 0; i < n; i++) { /* a step holds at least a whole chunk of any tensor */
        const plan *q = &p[todo[i]];
        uint64_t cb = rows_per_chunk(&pp, q) * row_bytes(q);
        if (cb > pp.cap) pp.cap = (size_t)cb;
        if (q->cols > pp.fvals) pp.fvals = q->cols;
    }
    if (pp.nt < 1) pp.nt = 1;
    pp.tb = mk_calloc((size_t)pp.nt, sizeof *pp.tb);
    pp.st[0].buf = mk_malloc(pp.cap);
    pp.st[1].buf = overlap ? mk_malloc(pp.cap) : NULL;
    mk_status s = pp.tb && pp.st[0].buf && (pp.st[1].buf || !overlap) ? MK_OK : MK_ERR_NOMEM;
    size_t ticked = 0;
    while (s == MK_OK && (pp.k < n || pp.pending)) {
        step *cur = &pp.st[pp.cur];
        step_fill(&pp, cur);
        s = mk_parallel_chunks(cur->chunks + 1, step_chunk, &pp, tbuf_get, NULL);
        const step *done = pp.pending ? &pp.st[!pp.cur] : NULL; /* written in the loop */
        if (s == MK_OK && !overlap) s = write_step(&pp, done = cur);
        for (size_t i = 0; s == MK_OK && done && i < done->n; i++) /* the tensors whose last bytes are written */
            if (done->pc[i].row0 + done->pc[i].rows == p[done->pc[i].p].rows)
                mk_progress_cb(prog, ++ticked, n, 0, 0, src->tensors[p[done->pc[i].p].src].name);
        if (!overlap) continue;
        pp.pending = cur->n > 0;
        pp.cur = !pp.cur;
    }
    for (int i = 0; pp.tb && i < pp.nt; i++) {
        free(pp.tb[i].f);
        free(pp.tb[i].raw);
    }
    free(pp.tb);
    mk_hasher_free(pp.h);
    free(pp.st[0].buf);
    free(pp.st[1].buf);
    return s;
}

typedef struct conv {
    mk_source *src;
    mk_model_config cfg;
    const mk_gguf_arch *a;
    size_t ti;          /* row of types[] */
    plan *p;
    size_t np;
    char *name;
    mk_gguf_w w;
    bool vocab;
    const char *imatrix_path;
    mk_imatrix im;
    const mk_cli_bpw_opts *bpw; /* --target-bpw, or NULL */
    const mk_common *c;
    mk_cli_bpw_result bres;
} conv;

/* --imatrix: each matrix the file has importances for gets them, as llama-quantize does
 * (types whose quantizer takes no weights ignore them). The file must name at least one of the model's matrices, each with one
 * importance per column. */
static mk_status attach_imatrix(conv *v)
{
    const char *f = v->imatrix_path;
    MK_TRY(mk_imatrix_read(f, &v->im));
    size_t used = 0;
    for (size_t i = 0; i < v->np; i++) {
        plan *q = &v->p[i];
        MK_TRY(mk_imatrix_lookup(&v->im, f, q->name, q->experts ? q->experts : 1, q->cols, &q->imp));
        used += q->imp != NULL; /* q->qw once the types are known (prepare) */
    }
    if (!used)
        return mk_error(MK_ERR_FORMAT, "%s: none of its %zu matrices (the first: %s) is a tensor of this model", f, v->im.n, v->im.n ? v->im.e[0].name : "-");
    return MK_OK;
}

/* --target-bpw: every matrix (2-D, not f32) allocated a type, the output matrix fixed as
 * planned (cli/convert_alloc.c); *ftype: the file type of the type holding the most elements. */
static mk_status allocate(conv *v, uint32_t *ftype)
{
    mk_cli_bpw_mat *m = mk_calloc(v->np ? v->np : 1, sizeof *m);
    size_t *at = mk_calloc(v->np ? v->np : 1, sizeof *at), n = 0;
    mk_status s = m && at ? MK_OK : MK_ERR_NOMEM;
    bool has_output = false;
    for (size_t i = 0; s == MK_OK && i < v->np; i++) has_output |= strcmp(v->p[i].name, "output.weight") == 0;
    for (size_t i = 0; s == MK_OK && i < v->np; i++) {
        const plan *q = &v->p[i];
        if (v->src->tensors[q->src].ndim != 2 || q->type == MK_GGML_F32) continue;
        bool out = strcmp(q->name, "output.weight") == 0 || (!has_output && strcmp(q->name, "token_embd.weight") == 0);
        m[n] = (mk_cli_bpw_mat){q->name, q->src, q->rows, q->cols, q->imp, out, q->type};
        at[n++] = i;
    }
    if (s == MK_OK) s = mk_cli_convert_alloc(v->bpw, v->c, v->src, m, n, &v->bres);
    for (size_t k = 0; s == MK_OK && k < n; k++) v->p[at[k]].type = m[k].type;
    for (size_t r = 0; s == MK_OK && r < N_TYPES; r++)
        if (!strcasecmp(types[r].name, mk_ggml_type_of(v->bres.main_type)->name)) {
            *ftype = types[r].ftype;
            break;
        }
    free(m);
    free(at);
    return s;
}

/* The model's config and architecture checked, the tensors planned, the metadata and tensor
 * infos declared: everything before the first byte is written. */
static mk_status prepare(conv *v, const char *in, const char *name)
{
    MK_TRY(mk_model_config_of_source(v->src, &v->cfg));
    const mk_model_config *cfg = &v->cfg;
    if (!(v->a = mk_cli_gguf_write_arch(cfg->arch.model_type)))
        return mk_error(MK_ERR_UNSUPPORTED, "%s: model_type '%s' has no GGUF tensor names here (llama, mistral, qwen2, qwen3, mixtral and qwen2_moe have)", in,
                        cfg->arch.model_type ? cfg->arch.model_type : "(none)");
    /* linear RoPE scaling has metadata keys; the others need more (Llama 3: a rope_freqs
     * tensor of per-frequency factors; YaRN: its own keys) than convert writes yet */
    if (cfg->rope.type != MK_ROPE_DEFAULT && cfg->rope.type != MK_ROPE_LINEAR)
        return mk_error(MK_ERR_UNSUPPORTED, "%s: RoPE scaling '%s' is not written to GGUF yet (default and linear are)", in,
                        mk_rope_type_name(cfg->rope.type));
    /* --target-bpw: planned as the q4_k_m mix (the output matrix's type, f32 norms), then allocated */
    uint32_t ftype = v->bpw ? MK_FTYPE_Q4_K_M : types[v->ti].ftype;
    if (cfg->n_experts > 0 && v->bpw) return mk_error(MK_ERR_UNSUPPORTED, "%s: --target-bpw does not allocate expert tensors yet", in);
    MK_TRY(plan_tensors(v->src, v->a, cfg, v->bpw ? MK_GGML_Q4_K : types[v->ti].type, ftype, v->imatrix_path != NULL, &v->p, &v->np));
    if (v->imatrix_path) MK_TRY(attach_imatrix(v));
    if (v->bpw) MK_TRY(allocate(v, &ftype));
    for (size_t i = 0; i < v->np; i++) /* the weighted quantizers take every type convert writes but these */
        v->p[i].qw = v->p[i].imp && mk_alloc_gguf_weighted(v->p[i].type) ? v->p[i].imp : NULL;
    if (!(v->name = name ? mk_strdup(name) : model_name(in))) return MK_ERR_NOMEM;
    metadata(&v->w, v->a, cfg, v->name, ftype);
    mk_cli_gguf_moe_metadata(&v->w, v->a, cfg);
    if (v->bpw) mk_cli_convert_alloc_metadata(&v->w, v->bpw, &v->bres);
    MK_TRY(mk_gguf_w_tokenizer(&v->w, v->src, cfg->vocab, &v->vocab));
    vocab_size(&v->w, v->a, cfg, v->vocab);
    mk_gguf_w_u32(&v->w, "general.quantization_version", 2);
    for (size_t i = 0; i < v->np; i++) {
        const plan *q = &v->p[i];
        uint64_t ne[4] = {q->cols, q->experts ? q->erows : q->rows, q->experts ? q->experts : 1, 1};
        MK_TRY(mk_gguf_w_tensor(&v->w, q->name, q->experts ? 3 : (uint32_t)v->src->tensors[q->src].ndim, ne, q->type));
    }
    return MK_OK;
}

static void report(const mk_common *c, const conv *v, const char *out, double secs)
{
    char b[32], tb[48];
    const char *t = types[v->ti].name;
    if (v->bpw) snprintf(tb, sizeof tb, "target-bpw %g (%.4f)", v->bpw->target, v->bres.bpw), t = tb;
    if (!c->quiet)
        fprintf(stderr, "mergekit-c: wrote %s: %s, %s (%s), %zu tensors, %s in %.1f s\n", out, v->a->name, t,
                v->vocab ? "with vocabulary" : "no vocabulary", v->np, mk_fmt_bytes(v->w.pos, b), secs);
    if (!c->json) return;
    mk_buf j = {0};
    mk_buf_puts(&j, "{\"out\": ");
    mk_buf_json_str(&j, out);
    mk_buf_printf(&j, ", \"architecture\": \"%s\", \"type\": \"%s\", \"tensors\": %zu, \"bytes\": %llu, \"vocab\": %s", v->a->name, t,
                  v->np, (unsigned long long)v->w.pos, v->vocab ? "true" : "false");
    if (v->bres.json) mk_buf_printf(&j, ", \"allocation\": %s", v->bres.json);
    mk_buf_puts(&j, "}\n");
    if (!j.failed) fputs(j.data, stdout);
    mk_buf_free(&j);
}

static size_t type_row(const char *type_s)
{
    size_t i = 0;
    while (i < N_TYPES && strcmp(types[i].name, type_s) != 0) i++;
    return i;
}

mk_status mk_cli_gguf_type_check(const char *opt, const char *type_s)
{
    if (type_row(type_s) == N_TYPES)
        return mk_error(MK_ERR_USAGE, "%s: '%s' is not one of " TYPE_NAMES, opt, type_s);
    return MK_OK;
}

/* --part, --parts, --dry-run and finalize of one GGUF file (below) */
typedef struct split_state split_state;
static mk_status split_begin(conv *v, const char *out, bool force, const mk_cli_gguf_split *x, split_state **st, bool *finished);
static mk_status split_end(conv *v, const char *out, const mk_cli_gguf_split *x, split_state *st, char (*hex)[33]);
static void split_free(split_state *st);
static uint32_t split_owner(const split_state *st, size_t i);

/* convert with --part (this part's tensors into the shared file), --dry-run or finalize. */
static mk_status convert_part(mk_common *c, conv *v, const char *out, bool force, const mk_cli_gguf_split *x)
{
    split_state *st = NULL;
    bool finished = false;
    mk_status s = split_begin(v, out, force, x, &st, &finished);
    size_t *todo = mk_calloc(v->np ? v->np : 1, sizeof *todo), n = 0;
    char (*hex)[33] = mk_calloc(v->np ? v->np : 1, sizeof *hex);
    if (s == MK_OK && (!todo || !hex)) s = MK_ERR_NOMEM;
    for (size_t i = 0; s == MK_OK && !finished && i < v->np; i++)
        if (split_owner(st, i) == x->parts->p.i - 1) todo[n++] = i;
    mk_progress prog;
    mk_progress_init(&prog, "convert", c);
    if (s == MK_OK && !finished) s = write_tensors(&v->w, v->src, v->p, todo, n, &prog, hex);
    mk_progress_end(&prog);
    free(todo);
    if (s == MK_OK && !finished) s = split_end(v, out, x, st, hex);
    free(hex);
    split_free(st);
    return s;
}

/* OUT in one process, streamed in order. */
static mk_status write_whole(mk_common *c, conv *v, const char *out, bool force)
{
    mk_progress prog;
    mk_progress_init(&prog, "convert", c);
    double t0 = mk_now();
    size_t *todo = mk_calloc(v->np ? v->np : 1, sizeof *todo);
    mk_status s = todo ? mk_gguf_w_begin(&v->w, out, force) : MK_ERR_NOMEM;
    for (size_t i = 0; s == MK_OK && i < v->np; i++) todo[i] = i;
    if (s == MK_OK) s = write_tensors(&v->w, v->src, v->p, todo, v->np, &prog, NULL);
    mk_progress_end(&prog);
    free(todo);
    if (s == MK_OK) s = mk_gguf_w_commit(&v->w);
    if (s == MK_OK) report(c, v, out, mk_now() - t0);
    return s;
}

static mk_status convert_run(mk_common *c, const char *in, const char *out, const char *type_s, bool force, const char *name,
                             const mk_cli_gguf_split *x, const char *imatrix, const mk_cli_bpw_opts *bpw)
{
    conv v;
    memset(&v, 0, sizeof v);
    v.imatrix_path = imatrix;
    v.bpw = bpw;
    v.c = c;
    MK_TRY(mk_cli_gguf_type_check("--type", type_s));
    v.ti = type_row(type_s);
    bool split = x && (x->dry_run || x->parts->p.n || x->finalize);
    if (!x || !x->dry_run) MK_TRY(mk_cli_check_output(out, &in, 1));
    if (mk_path_exists(out) && !force && !(x && x->dry_run))
        return mk_error(MK_ERR_EXISTS, "%s already exists (use --force to replace it)", out);
    if (!split) MK_TRY(mk_parts_refuse_plain(out)); /* the atomic writer would start OUT.tmp afresh */
    MK_TRY(mk_cli_open_model_values(in, &v.src));
    mk_gguf_w_init(&v.w);
    mk_status s = prepare(&v, in, name);
    if (s == MK_OK) s = split ? convert_part(c, &v, out, force, x) : write_whole(c, &v, out, force);
    mk_gguf_w_free(&v.w);
    free(v.name);
    plan_free(v.p, v.np);
    free(v.bres.json);
    mk_imatrix_free(&v.im);
    mk_model_config_free(&v.cfg);
    mk_source_close(v.src);
    return s;
}

mk_status mk_cli_convert_gguf(mk_common *c, const char *in, const char *out, const char *type_s, bool force, const char *name)
{
    return convert_run(c, in, out, type_s, force, name, NULL, NULL, NULL);
}

static int convert_main(int argc, char **argv, const mk_parts_manifest *finalize)
{
    mk_common c = {0};
    const char *type = NULL, *imatrix = NULL, *target = NULL, *tlist = NULL, *sens = NULL;
    bool force = false;
    mk_cli_parts parts = {0};
    mk_cli_gguf_split x = {"convert", NULL, &parts, false, finalize, argc, argv, &c, false};
    const mk_opt opts[] = {
        {"type", 't', MK_OPT_STR, &type, "T", "tensor type or llama.cpp mix: " TYPE_NAMES, "f16"},
        {"force", 'f', MK_OPT_FLAG, &force, NULL, "replace OUT if it exists (only once the new file is complete)", NULL},
        {"imatrix", 0, MK_OPT_STR, &imatrix, "FILE", "importance matrix (GGUF or legacy .dat, from llama-imatrix or mergekit-c imatrix): llama-quantize --imatrix's weighted quantizers", NULL},
        {"target-bpw", 0, MK_OPT_STR, &target, "B", "instead of --type: a type per matrix (from --types) minimising the total predicted error within B bits per weight of the matrices", NULL},
        {"types", 0, MK_OPT_STR, &tlist, "LIST", "--target-bpw's candidate types (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k ... q6_k, iq4_nl)", mk_alloc_gguf_default_types},
        {"sensitivity", 0, MK_OPT_STR, &sens, "S", "--target-bpw's error: weight (squared error) or imatrix (weighted by --imatrix's importances)", "weight"},
        {"dry-run", 'n', MK_OPT_FLAG, &x.dry_run, NULL, "print each tensor's GGUF type and bytes (with --parts N: the split); write nothing", NULL},
        MK_PART_OPTS(parts),
        MK_COMMON_OPTS(c),
        MK_HUB_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {
        "convert", "MODEL OUT.gguf [--type T | --target-bpw B]",
        "Write a model as a llama.cpp GGUF file.",
        "As llama.cpp's convert_hf_to_gguf.py does, for Llama, Mistral, Qwen2 and Qwen3 models: llama.cpp\n"
        "tensor names, Q/K rows permuted for Llama-family attention, {arch}.* metadata from config.json,\n"
        "tokenizer.ggml.* from tokenizer.json and tokenizer_config.json (byte-level BPE; other vocabularies\n"
        "are written as no_vocab). 1-D tensors and norms stay f32; matrices are quantized with llama.cpp's\n"
        "reference quantizers (byte-identical blocks), f16 where a row is not whole blocks; for q4_*/q5_*\n"
        "the output matrix is q6_k as llama-quantize makes it (q8_0 if its rows are not whole 256-value\n"
        "blocks), for tq1_0/tq2_0 (ternary, BitNet-style models) the embedding and output\n"
        "matrices are f16. The k-quant mixes (q2_k ... q6_k) choose each matrix's type as llama-quantize\n"
        "does without an imatrix (iq4_nl too): the output matrix q6_k, attn_v / ffn_down / attn_output\n"
        "promoted in some layers, and q4_0 / q5_0 / q5_1 / q8_0 for rows that are not whole 256-value\n"
        "blocks; the bytes are llama.cpp's. --imatrix FILE (llama-imatrix's GGUF or .dat) quantizes the 4-, 5-bit,\n"
        "k-quant and iq4_nl matrices with llama-quantize --imatrix's weighted searches (the same bytes).\n"
        "Mixtral (as 'llama') and Qwen2-MoE ('qwen2moe'): each layer's experts stacked into ffn_*_exps\n"
        "[experts, rows, columns], routers f32, expert_count keys; with --imatrix each expert's slice takes\n"
        "its own row of the entry (one per expert, as llama-quantize); 8 experts: llama-quantize's rules.\n"
        "--target-bpw B [--types LIST] [--sensitivity weight|imatrix] measures every candidate type on every\n"
        "matrix (its encode and decode round trip; with --imatrix the weighted quantizer) and chooses a type\n"
        "per matrix minimising the total squared error (imatrix: weighted by the importances) within B bits\n"
        "per weight of the matrices; the output matrix keeps the mixes' q6_k (q8_0), llama-quantize's\n"
        "fallbacks apply to rows that are not whole blocks, each matrix's bytes are those of --type with its\n"
        "type; the allocation is printed (--json: as \"allocation\") and kept in mergekit-c.quantize.* keys.\n"
        "Streams one tensor at a time; OUT appears only when complete.\n"
        "--part I/N writes part I of N (tensor data split by bytes) into the shared OUT.gguf.tmp/; once\n"
        "every part is done, 'mergekit-c finalize OUT.gguf' checks them and renames the one file into\n"
        "place: the same bytes as one process (docs/cluster.md).",
        opts, 2, 2, 0x1};
    char *pos[2];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    mk_status s = mk_cli_parts_resolve(&parts, x.dry_run, !finalize && !x.dry_run);
    if (s == MK_OK && imatrix && (parts.p.n || finalize))
        s = mk_error(MK_ERR_USAGE, "--imatrix cannot be combined with --part or finalize yet");
    mk_cli_bpw_opts bpw = {0, tlist, sens ? sens : "weight", imatrix};
    char *end = NULL;
    if (s == MK_OK && target && type) s = mk_error(MK_ERR_USAGE, "--target-bpw chooses the types (--types); not with --type");
    if (s == MK_OK && !target && (tlist || sens)) s = mk_error(MK_ERR_USAGE, "--types and --sensitivity choose how --target-bpw allocates; give --target-bpw");
    if (s == MK_OK && target && ((bpw.target = strtod(target, &end)), end == target || *end))
        s = mk_error(MK_ERR_USAGE, "--target-bpw '%s': expected a number", target);
    if (s == MK_OK) s = convert_run(&c, pos[0], pos[1], type ? type : "f16", force, NULL, &x, imatrix, target ? &bpw : NULL);
    rc = s == MK_OK ? 0 : mk_cli_fail(s);
    return mk_cli_parts_after(&parts, rc, pos[1], &c);
}

int mk_cmd_convert(int argc, char **argv) { return convert_main(argc, argv, NULL); }

int mk_cmd_convert_finalize(int argc, char **argv, const mk_parts_manifest *m) { return convert_main(argc, argv, m); }

/* ---- --part: one GGUF file written by several processes (formats/parts.h) ------------------
 * Every part plans the same file (header, tensor infos, offsets), so each can size the shared
 * OUT.gguf.tmp/OUT.gguf, write the header and put its tensors' bytes in place; the tensors are
 * split between parts by bytes (mk_parts_split), each part's record lists its tensors' sizes
 * and hashes, and finalize checks the records and the file's size and header, then renames it. */

struct split_state {
    char *key;          /* the plan's hash */
    char *file;         /* OUT's file name: the shared file in OUT.tmp */
    char *tmp, *path;   /* OUT.tmp, the shared file */
    char **names;       /* [np] borrowed from v->p */
    uint64_t *size;     /* [np] tensor data bytes */
    uint32_t *part_of;  /* [np] */
    int locks[2];
    double t0;
};

static uint32_t split_owner(const split_state *st, size_t i) { return st->part_of[i]; }

static void split_free(split_state *st)
{
    if (!st) return;
    mk_parts_release(st->locks);
    free(st->key);
    free(st->file);
    free(st->tmp);
    free(st->path);
    free(st->names);
    free(st->size);
    free(st->part_of);
    free(st);
}

/* The plan: its hash (the caller's plan text, the whole header: metadata, vocabulary, every
 * tensor's name, type, shape and offset; the input's file sizes and tensors) and the split. */
static mk_status split_plan_make(const conv *v, const char *out, unsigned n, const char *key, split_state *st)
{
    mk_buf b = {0};
    st->locks[0] = st->locks[1] = -1;
    if (!(st->file = mk_path_basename(out)) || !(st->tmp = mk_parts_tmp_path(out)) || !(st->path = mk_path_join(st->tmp, st->file)))
        return MK_ERR_NOMEM;
    mk_buf_printf(&b, "gguf|mergekit-c %s|%s|%s", MK_VERSION, st->file, key ? key : "");
    mk_cli_parts_hash_inputs(&b, v->src);
    mk_buf_puts(&b, "|");
    mk_gguf_w_header(&v->w, &b);
    st->key = b.failed ? NULL : mk_parts_plan_hash(b.data, b.len, v->src->tensors, v->src->n_tensors);
    mk_buf_free(&b);
    size_t np = v->np ? v->np : 1;
    st->names = mk_calloc(np, sizeof *st->names);
    st->size = mk_calloc(np, sizeof *st->size);
    st->part_of = mk_calloc(np, sizeof *st->part_of);
    if (!st->key || !st->names || !st->size || !st->part_of) return MK_ERR_NOMEM;
    for (size_t i = 0; i < v->np; i++) {
        st->names[i] = (char *)v->p[i].name;
        st->size[i] = v->w.nbytes[i];
    }
    mk_parts_split(st->size, v->np, n ? n : 1, st->part_of);
    return MK_OK;
}

static void print_dry_run(const mk_common *c, const conv *v)
{
    char b[32];
    if (c->json && v->bres.json) { /* --target-bpw: the allocation lists every matrix's type */
        printf("%s\n", v->bres.json);
        return;
    }
    if (c->json) printf("[");
    for (size_t i = 0; i < v->np; i++) {
        const plan *q = &v->p[i];
        if (c->json)
            printf("%s\n  {\"name\": \"%s\", \"type\": \"%s\", \"shape\": [%llu, %llu], \"bytes\": %llu}", i ? "," : "", q->name,
                   mk_ggml_type_of(q->type)->name, (unsigned long long)q->cols, (unsigned long long)q->rows,
                   (unsigned long long)v->w.nbytes[i]);
        else
            printf("  %-40s %-6s %8llu x %-8llu %s\n", q->name, mk_ggml_type_of(q->type)->name, (unsigned long long)q->rows,
                   (unsigned long long)q->cols, mk_fmt_bytes(v->w.nbytes[i], b));
    }
    mk_buf h = {0};
    mk_gguf_w_header(&v->w, &h);
    if (c->json) printf("\n]\n");
    else printf("%zu tensors, %s with the header\n", v->np, mk_fmt_bytes(h.len + v->w.data_size, b));
    mk_buf_free(&h);
}

/* The shared file: its size and header those of the plan. */
static mk_status check_file(conv *v, const split_state *st)
{
    mk_buf h = {0};
    mk_gguf_w_header(&v->w, &h);
    uint64_t want = h.len + v->w.data_size;
    char *have = h.failed ? NULL : mk_malloc(h.len);
    if (!have) {
        mk_buf_free(&h);
        return MK_ERR_NOMEM;
    }
    mk_rfile rf;
    mk_status s = mk_path_exists(st->path)
                      ? mk_rfile_open(&rf, st->path)
                      : mk_error(MK_ERR_MISMATCH, "%s: holds no %s; rerun every part, then finalize", st->tmp, st->file);
    if (s == MK_OK) {
        if (rf.size != want)
            s = mk_error(MK_ERR_MISMATCH, "%s: is %llu bytes, not the plan's %llu; rerun every part, then finalize", st->path,
                         (unsigned long long)rf.size, (unsigned long long)want);
        if (s == MK_OK) s = mk_rfile_read(&rf, 0, have, h.len);
        if (s == MK_OK && memcmp(have, h.data, h.len) != 0)
            s = mk_error(MK_ERR_MISMATCH, "%s: its GGUF header is not this plan's; rerun every part, then finalize", st->path);
        mk_rfile_close(&rf);
    }
    if (s == MK_OK) v->w.pos = want; /* for the report */
    free(have);
    mk_buf_free(&h);
    return s;
}

/* finalize: every part's record and the shared file checked, the file renamed to OUT, OUT.tmp
 * removed. Nothing is changed when it refuses. */
static mk_status finalize_file(const mk_common *c, conv *v, const char *out, bool force, const mk_parts_manifest *m,
                               split_state *st)
{
    char *abs = mk_path_absolute(st->tmp), *dir = mk_path_dirname(out);
    mk_out_file *adopt = mk_calloc(v->np ? v->np : 1, sizeof *adopt);
    int lock = -1;
    mk_status s = abs && dir && adopt ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && (!m->self || strcmp(abs, m->self) != 0 || !m->file || strcmp(m->file, st->file) != 0))
        s = mk_error(MK_ERR_MISMATCH, "%s: its manifest names another output (%s, from %s); finalize it where the parts ran",
                     m->self ? m->self : "OUT.tmp", abs, m->cwd);
    if (s == MK_OK && strcmp(st->key, m->plan) != 0)
        s = mk_error(MK_ERR_MISMATCH,
                     "%s: the parts were written for another plan than this input and these options make now; rerun every "
                     "part, then finalize",
                     st->tmp);
    if (s == MK_OK) s = mk_parts_hold(st->tmp, &lock);
    if (s == MK_OK) s = mk_parts_check(st->tmp, m, st->names, st->size, st->part_of, v->np, adopt, NULL);
    if (s == MK_OK) s = check_file(v, st);
    if (s == MK_OK && mk_path_exists(out) && !force)
        s = mk_error(MK_ERR_EXISTS, "%s already exists (use --force to replace it)", out);
    if (s == MK_OK && rename(st->path, out) != 0)
        s = mk_error(MK_ERR_IO, "%s: cannot rename to %s: %s", st->path, out, strerror(errno));
    if (s == MK_OK) s = mk_fsync_dir(dir);
    if (s == MK_OK) s = mk_rm_rf(st->tmp);
    if (s == MK_OK) report(c, v, out, 0);
    if (lock >= 0) close(lock);
    free(adopt);
    free(dir);
    free(abs);
    return s;
}

/* After prepare: --dry-run prints (the split with --parts N); finalize finishes OUT; a part
 * joins OUT.tmp and opens the shared file, or finds itself complete. *finished: nothing is
 * left to write. */
static mk_status split_begin(conv *v, const char *out, bool force, const mk_cli_gguf_split *x, split_state **stp, bool *finished)
{
    const mk_cli_parts *xp = x->parts;
    unsigned n = x->finalize ? x->finalize->n : xp->parts ? (unsigned)xp->parts : xp->p.n;
    split_state *st = mk_calloc(1, sizeof *st);
    *stp = st;
    *finished = true;
    if (!st) return MK_ERR_NOMEM;
    MK_TRY(split_plan_make(v, out, n, x->key, st));
    if (x->dry_run && !n) print_dry_run(x->c, v);
    if (x->dry_run && n) {
        mk_output_split os = {v->np, st->names, st->size, st->part_of};
        mk_cli_parts_print(&os, n, x->c->json, "tensor");
    }
    if (x->dry_run) return MK_OK;
    if (x->finalize) return finalize_file(x->c, v, out, force, x->finalize, st);
    mk_parts_manifest man = {0};
    mk_status s = mk_cli_parts_manifest(&man, x->command, x->argc, x->argv, st->key, xp->p.n);
    if (s == MK_OK && !(man.file = mk_strdup(st->file))) s = MK_ERR_NOMEM;
    if (s == MK_OK && mk_parts_complete(st->tmp, xp->p, st->key)) {
        if (!x->c->quiet) fprintf(stderr, "mergekit-c: part %u/%u of %s is already complete; nothing to do\n", xp->p.i, xp->p.n, out);
    } else if (s == MK_OK) {
        *finished = false;
        s = mk_parts_join(st->tmp, &man, xp->p, st->locks);
        if (s == MK_OK) s = mk_gguf_w_begin_shared(&v->w, st->path);
    }
    mk_parts_manifest_free(&man);
    st->t0 = mk_now();
    return s;
}

/* Bytes [off, off + len) of the file, hashed (read back: a merge puts rows from several threads). */
static mk_status hash_region(const mk_rfile *rf, uint64_t off, uint64_t len, unsigned char *buf, size_t cap, char hex[33])
{
    mk_hasher *h = mk_hasher_new();
    mk_status s = h ? mk_hasher_update_fd(h, rf->fd, rf->path, off, len, buf, cap) : MK_ERR_NOMEM;
    if (s == MK_OK) mk_hash128_hex(mk_hasher_digest(h), hex);
    mk_hasher_free(h);
    return s;
}

/* The part's bytes durable, then its record: each of its tensors' size and XXH3-128 (hex[i]
 * where the writer hashed them, else read back). */
static mk_status split_end(conv *v, const char *out, const mk_cli_gguf_split *x, split_state *st, char (*hex)[33])
{
    mk_part p = x->parts->p;
    enum { CAP = 1 << 22 };
    mk_out_file *reg = mk_calloc(v->np ? v->np : 1, sizeof *reg);
    unsigned char *buf = hex ? NULL : mk_malloc(CAP);
    size_t nr = 0;
    mk_status s = reg && (hex || buf) ? mk_gguf_w_sync(&v->w) : MK_ERR_NOMEM;
    mk_rfile rf;
    bool open = s == MK_OK && !hex && (s = mk_rfile_open(&rf, st->path)) == MK_OK;
    for (size_t i = 0; s == MK_OK && i < v->np; i++) {
        if (st->part_of[i] != p.i - 1) continue;
        reg[nr].name = st->names[i];
        reg[nr].size = st->size[i];
        if (hex) memcpy(reg[nr++].hash, hex[i], sizeof hex[i]);
        else s = hash_region(&rf, v->w.data0 + v->w.offs[i], st->size[i], buf, CAP, reg[nr++].hash);
    }
    if (open) mk_rfile_close(&rf);
    if (s == MK_OK) s = mk_parts_record(st->tmp, p, st->key, reg, nr, NULL, 0);
    if (s == MK_OK && !x->c->quiet)
        fprintf(stderr, "mergekit-c: wrote part %u/%u of %s: %zu tensor(s) in %.1f s%s%s\n", p.i, p.n, out, nr, mk_now() - st->t0,
                x->parts->mpi ? "" : "; once every part is done: mergekit-c finalize ", x->parts->mpi ? "" : out);
    mk_parts_release(st->locks);
    free(reg);
    free(buf);
    return s;
}

/* ---- a GGUF file filled by a consumer (merge's OUT.gguf) ------------------------------ */

struct mk_cli_gguf_out {
    conv v;
    mk_source view;      /* the source's tensors in the order its folder would list them */
    mk_tensor_info *ts;
    long *at;            /* per logical tensor: its row of v.p, or -1 (not written) */
    uint64_t *dst;       /* the tensor being filled, when Q/K-permuted: GGUF row of each row */
    bool allow_overflow;
    const mk_cli_gguf_split *x; /* a part of a split file (else NULL) */
    split_state *st;
};

static uint64_t out_align(mk_consumer *c, const mk_tensor_info *t)
{
    (void)c;
    return t->ndim ? (uint64_t)t->shape[t->ndim - 1] : 1; /* whole rows */
}

static bool out_raw_ok(mk_consumer *c, size_t i, const mk_tensor_info *t, mk_dtype d)
{
    (void)c, (void)i, (void)t, (void)d;
    return false; /* every value goes through the encoder */
}

static mk_status out_begin(mk_consumer *c, size_t i, const mk_tensor_info *t)
{
    mk_cli_gguf_out *g = c->impl;
    (void)t;
    free(g->dst);
    g->dst = NULL;
    if (g->at[i] < 0 || !g->v.p[g->at[i]].heads) return MK_OK;
    const plan *q = &g->v.p[g->at[i]];
    if (!(g->dst = mk_malloc((size_t)q->rows * sizeof *g->dst))) return MK_ERR_NOMEM;
    for (uint64_t r = 0; r < q->rows; r++) g->dst[mk_gguf_permute_src_row(r, q->rows, q->heads)] = r;
    return MK_OK;
}

/* Values [elem0, elem0 + n) of tensor i: rounded to the dtype the tensor has in a folder (so
 * that the bytes are those `convert` makes of that folder), encoded, put in place. */
static mk_status out_rows(mk_consumer *c, size_t i, uint64_t elem0, const float *v, uint64_t n)
{
    mk_cli_gguf_out *g = c->impl;
    if (g->at[i] < 0) return MK_OK;
    const plan *q = &g->v.p[g->at[i]];
    const mk_tensor_info *t = &g->v.src->tensors[q->src];
    size_t first = 0, bad = g->allow_overflow ? 0 : mk_dtype_count_overflow(t->dtype, v, (size_t)n, &first);
    if (bad)
        return mk_error(MK_ERR_NUMERIC, "tensor %s: %zu value(s) overflow %s (first at element %llu: %g); pass --allow-crimes to write them as Inf",
                        t->name, bad, mk_dtype_name(t->dtype), (unsigned long long)(elem0 + first), (double)v[first]);
    const mk_ggml_type *ty = mk_ggml_type_of(q->type);
    uint64_t row_bytes = q->cols / ty->block * ty->bytes, r0 = elem0 / q->cols, nr = n / q->cols;
    float *f = mk_malloc((size_t)n * sizeof *f);
    unsigned char *e = f ? mk_malloc((size_t)(nr * row_bytes)) : NULL;
    mk_status s = e ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK) {
        memcpy(f, v, (size_t)n * sizeof *f);
        if (t->dtype != MK_F32) mk_dtype_round_f32(t->dtype, f, (size_t)n);
        if (!mk_ggml_encode(q->type, f, nr * q->cols / ty->block, e)) MK_BUG("ggml type without an encoder");
    }
    if (s == MK_OK && !g->dst) s = mk_gguf_w_at(&g->v.w, (uint64_t)g->at[i], r0 * row_bytes, e, (size_t)(nr * row_bytes));
    for (uint64_t r = 0; s == MK_OK && g->dst && r < nr; r++)
        s = mk_gguf_w_at(&g->v.w, (uint64_t)g->at[i], g->dst[r0 + r] * row_bytes, e + r * row_bytes, (size_t)row_bytes);
    free(e);
    free(f);
    return s;
}

static mk_status out_end(mk_consumer *c, size_t i)
{
    mk_cli_gguf_out *g = c->impl;
    (void)i;
    free(g->dst);
    g->dst = NULL;
    return MK_OK;
}

static void out_close(mk_consumer *c) { (void)c; }

/* A part computes only its own tensors: the others read as done. */
static bool out_is_done(mk_consumer *c, size_t i)
{
    mk_cli_gguf_out *g = c->impl;
    return g->at[i] < 0 || split_owner(g->st, (size_t)g->at[i]) != g->x->parts->p.i - 1;
}

static const mk_consumer_ops out_ops = {
    .align = out_align, .raw_ok = out_raw_ok, .begin = out_begin, .rows = out_rows, .end = out_end, .close = out_close,
};
static const mk_consumer_ops part_ops = {
    .align = out_align, .raw_ok = out_raw_ok, .begin = out_begin, .rows = out_rows, .end = out_end, .close = out_close,
    .is_done = out_is_done,
};

/* Safetensors shards read back (formats/safetensors.c): one file by offset, where larger
 * elements come first, else in the order written; several by name (the index's weight_map). */
static int cmp_folder(const void *a, const void *b, void *ctx)
{
    const mk_tensor_info *t = ((const mk_tensor_info **)ctx)[0];
    bool sharded = ((const mk_tensor_info **)ctx)[1] != NULL;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    if (sharded) return strcmp(t[x].name, t[y].name);
    unsigned sx = mk_dtype_size(t[x].dtype), sy = mk_dtype_size(t[y].dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return x < y ? -1 : x > y;
}

static mk_status gguf_out_open(mk_cli_gguf_out **gp, mk_source *like, uint64_t shard_size, const char *out, const char *type_s,
                               bool force, bool allow_overflow, mk_cli_gguf_split *xs, mk_consumer *cons)
{
    *gp = NULL;
    const mk_cli_gguf_split *x = xs && (xs->parts->p.n || xs->finalize || xs->dry_run) ? xs : NULL;
    MK_TRY(mk_cli_gguf_type_check("--out-type", type_s));
    if (mk_path_exists(out) && !force && !(x && x->dry_run))
        return mk_error(MK_ERR_EXISTS, "%s already exists (use --force to replace it)", out);
    if (!x) MK_TRY(mk_parts_refuse_plain(out)); /* the atomic writer would start OUT.tmp afresh */
    mk_cli_gguf_out *g = mk_calloc(1, sizeof *g);
    if (!g) return MK_ERR_NOMEM;
    *gp = g;
    g->v.ti = type_row(type_s);
    g->allow_overflow = allow_overflow;
    mk_gguf_w_init(&g->v.w);
    size_t n = like->n_tensors, *order = mk_calloc(n ? n : 1, sizeof *order), *pos = mk_calloc(n ? n : 1, sizeof *pos);
    uint32_t *shard = mk_calloc(n ? n : 1, sizeof *shard);
    g->at = mk_calloc(n ? n : 1, sizeof *g->at);
    g->ts = mk_calloc(n ? n : 1, sizeof *g->ts);
    if (order && pos && shard && g->at && g->ts) {
        const mk_tensor_info *ctx[2] = {like->tensors, mk_st_assign_shards(like->tensors, n, shard_size, shard) > 1 ? like->tensors : NULL};
        for (size_t i = 0; i < n; i++) order[i] = i;
        qsort_r(order, n, sizeof *order, cmp_folder, ctx);
        for (size_t k = 0; k < n; k++) g->ts[k] = like->tensors[order[k]], pos[order[k]] = k;
    }
    free(order);
    free(shard);
    if (!pos || !g->at || !g->ts) {
        free(pos);
        return MK_ERR_NOMEM;
    }
    g->view = *like;
    g->view.tensors = g->ts;
    g->v.src = &g->view;
    /* general.name: OUT's file name without .gguf, as convert names a folder's model */
    char *name = model_name(out);
    if (!name) return MK_ERR_NOMEM;
    if (ends_with(name, ".gguf")) name[strlen(name) - 5] = 0;
    mk_status s = prepare(&g->v, like->path, name);
    free(name);
    for (size_t k = 0; s == MK_OK && k < g->v.np; k++) /* merged values come per source tensor: not stacked yet */
        if (g->v.p[k].experts) s = mk_error(MK_ERR_UNSUPPORTED, "%s: a mixture of experts (%s) is not merged straight to GGUF yet; merge to a folder, then convert it", out, g->v.p[k].name);
    long *row = s == MK_OK ? mk_calloc(n ? n : 1, sizeof *row) : NULL; /* per tensor of the view */
    if (s == MK_OK && !row) s = MK_ERR_NOMEM;
    for (size_t k = 0; s == MK_OK && k < n; k++) row[k] = -1;
    for (size_t k = 0; s == MK_OK && k < g->v.np; k++) row[g->v.p[k].src] = (long)k;
    for (size_t i = 0; s == MK_OK && i < n; i++) g->at[i] = row[pos[i]];
    free(row);
    free(pos);
    MK_TRY(s);
    g->x = x;
    if (x) MK_TRY(split_begin(&g->v, out, force, x, &g->st, &xs->finished));
    else MK_TRY(mk_gguf_w_begin_at(&g->v.w, out, force));
    cons->ops = x ? &part_ops : &out_ops;
    cons->impl = g;
    return MK_OK;
}

mk_status mk_cli_gguf_out_open(mk_cli_gguf_out **gp, mk_source *like, uint64_t shard_size, const char *out, const char *type_s,
                               bool force, bool allow_overflow, mk_cli_gguf_split *x, mk_consumer *cons)
{
    if (x) x->finished = false;
    mk_status s = x && !x->key && strcmp(x->command, "convert") != 0
                      ? MK_ERR_NOMEM
                      : gguf_out_open(gp, like, shard_size, out, type_s, force, allow_overflow, x, cons);
    if (x) free(x->key), x->key = NULL; /* taken: its hash is in the plan's */
    return s;
}

mk_status mk_cli_gguf_out_commit(mk_cli_gguf_out *g, const mk_common *c, const char *out, double secs)
{
    if (g->x) return split_end(&g->v, out, g->x, g->st, NULL);
    MK_TRY(mk_gguf_w_commit(&g->v.w));
    report(c, &g->v, out, secs);
    return MK_OK;
}

void mk_cli_gguf_out_free(mk_cli_gguf_out *g)
{
    if (!g) return;
    mk_gguf_w_free(&g->v.w);
    free(g->v.name);
    free(g->v.p);
    mk_model_config_free(&g->v.cfg);
    free(g->at);
    free(g->ts);
    free(g->dst);
    split_free(g->st);
    free(g);
}
