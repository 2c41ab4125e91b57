/* cmd_lora.c - `mergekit-c lora apply | extract | combine`: PEFT LoRA adapters.
 *
 *   apply BASE ADAPTER OUT        W' = W + s B A streamed into a full model (as PEFT's
 *                                 merge_and_unload); also how recipes read `base+adapter`
 *   extract BASE FINETUNED OUT    truncated SVD of (finetuned - base) per module, written as
 *                                 a PEFT adapter; prints the share of each difference's
 *                                 energy the rank keeps
 *   combine A1 A2 ... OUT         several adapters of one base into one (PEFT's
 *                                 add_weighted_adapter: cat, svd, ties_svd, dare_linear_svd;
 *                                 and linear = the weighted sum of the updates, re-factored)
 *
 * formats/peft reads and binds adapters, lora/ does the arithmetic; this file wires them,
 * plans the output tensors and streams them into a sink in OUT.tmp (renamed when done).
 */
#include "cli.h"

#include "../core/mk_io.h"
#include "../core/mk_thread.h"
#include "../formats/output.h"
#include "../formats/peft.h"
#include "../lora/lora.h"
#include "../model/arch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#define MK_OMP(x) _Pragma(x)
#else
#define MK_OMP(x)
#endif

#define APPLY_CHUNK (1u << 20) /* elements per parallel work item */

/* ---- apply ----------------------------------------------------------------------------------- */

typedef struct copy_err {
    mk_status s;
    uint64_t chunk;
    char msg[512];
} copy_err;

static void note_err(copy_err *e, mk_status s, uint64_t chunk)
{
    MK_OMP("omp critical(mk_lora_err)")
    {
        if (e->s == MK_OK || chunk < e->chunk) {
            e->s = s;
            e->chunk = chunk;
            snprintf(e->msg, sizeof e->msg, "%s", mk_errmsg());
        }
    }
}

/* Every tensor of `src`, in order, as raw bytes into `k` (declared with src's tensors). */
static mk_status stream_all(mk_source *src, mk_sink *k, mk_progress *prog)
{
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < src->n_tensors; i++) total += src->tensors[i].nbytes;
    for (size_t i = 0; i < src->n_tensors; i++) {
        const mk_tensor_info *t = &src->tensors[i];
        uint64_t cols = mk_tensor_cols(t), es = mk_dtype_size(t->dtype);
        uint64_t rows_per = cols >= APPLY_CHUNK ? 1 : APPLY_CHUNK / (cols ? cols : 1);
        uint64_t chunk_elems = rows_per * (cols ? cols : 1);
        uint64_t nch = t->numel ? (t->numel + chunk_elems - 1) / chunk_elems : 0;
        copy_err err = {MK_OK, 0, ""};
        MK_OMP("omp parallel for schedule(dynamic, 1)")
        for (uint64_t c = 0; c < nch; c++) {
            if (err.s != MK_OK || mk_interrupted()) continue;
            uint64_t e0 = c * chunk_elems, n = t->numel - e0 < chunk_elems ? t->numel - e0 : chunk_elems;
            void *buf = malloc((size_t)(n * es));
            mk_status s = buf ? src->ops->read(src, i, e0 * es, n * es, buf) : mk_error(MK_ERR_NOMEM, "out of memory");
            if (s == MK_OK) s = k->ops->write(k, i, e0 * es, buf, n * es);
            if (src->ops->release) src->ops->release(src, i, e0 * es, n * es);
            free(buf);
            if (s != MK_OK) note_err(&err, s, c);
        }
        if (err.s != MK_OK) return mk_error(err.s, "%s", err.msg);
        if (mk_interrupted()) return mk_error(MK_ERR_IO, "interrupted");
        MK_TRY(k->ops->tensor_done(k, i));
        done += t->nbytes;
        mk_progress_cb(prog, i + 1, src->n_tensors, done, total, t->name);
    }
    return MK_OK;
}

static int cmd_apply(int argc, char **argv)
{
    mk_common c = {0};
    uint64_t shard = 5000000000ull;
    bool force = false;
    const mk_opt opts[] = {
        {"out-shard-size", 0, MK_OPT_SIZE, &shard, "SIZE", "maximum bytes of tensor data per shard", "5e9"},
        {"force", 'f', MK_OPT_FLAG, &force, NULL, "replace OUT if it exists (only once the new output is complete)", NULL},
        MK_COMMON_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {
        "lora apply", "BASE ADAPTER OUT [options]",
        "Merge a PEFT LoRA adapter into its base model: W' = W + s B A for every adapted weight.",
        "s = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), per module after rank_pattern and\n"
        "alpha_pattern; embeddings and Conv1D (fan_in_fan_out) weights get (B A)^T; tensors saved in the\n"
        "adapter (modules_to_save) replace the base's. Computed in f32 and rounded once to each weight's\n"
        "dtype, streamed in row chunks. OUT gets the base's config.json and tokenizer files.",
        opts, 3, 3};
    char *pos[3];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    const char *ins[2] = {pos[0], pos[1]};
    mk_status s = mk_cli_check_output(pos[2], ins, 2);
    mk_source *src = NULL;
    if (s == MK_OK) s = mk_cli_open_lora(pos[0], pos[1], &src);
    if (s != MK_OK) return mk_cli_fail(s);
    mk_output o;
    mk_output_opts oo = {.shard_size = shard, .force = force};
    double t0 = mk_now();
    s = mk_output_begin(&o, pos[2], &oo, src->tensors, src->n_tensors);
    mk_progress prog;
    mk_progress_init(&prog, "lora apply", &c);
    if (s == MK_OK) s = stream_all(src, o.k, &prog);
    mk_progress_end(&prog);
    bool found;
    if (s == MK_OK) s = mk_output_config(&o, src, NULL, &found);
    if (s == MK_OK) s = mk_output_tokenizer(&o, src);
    if (s == MK_OK) s = mk_output_seal(&o);
    if (s == MK_OK) s = mk_output_commit(&o);
    uint64_t bytes = 0;
    for (size_t i = 0; i < src->n_tensors; i++) bytes += src->tensors[i].nbytes;
    if (s == MK_OK) {
        char a[32];
        if (!c.quiet)
            fprintf(stderr, "mergekit-c: wrote %s: %zu tensors, %s in %.1f s\n", pos[2], src->n_tensors, mk_fmt_bytes(bytes, a),
                    mk_now() - t0);
        if (c.json) {
            printf("{\"out\": ");
            mk_buf b = {0};
            mk_buf_json_str(&b, pos[2]);
            printf("%s, \"tensors\": %zu, \"bytes\": %llu, \"files\": [", b.data ? b.data : "\"\"", src->n_tensors,
                   (unsigned long long)bytes);
            mk_buf_free(&b);
            for (size_t i = 0; i < o.k->n_out_files; i++)
                printf("%s{\"name\": \"%s\", \"size\": %llu, \"xxh128\": \"%s\"}", i ? ", " : "", o.k->out_files[i].name,
                       (unsigned long long)o.k->out_files[i].size, o.k->out_files[i].hash);
            printf("]}\n");
        }
    }
    mk_output_close(&o);
    mk_source_close(src);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}

/* ---- writing adapters ---------------------------------------------------------------------- */

typedef struct out_list {
    size_t n, cap;
    mk_tensor_info *t;
} out_list;

static mk_status out_add(out_list *l, char *name, mk_dtype dt, int64_t d0, int64_t d1, int ndim)
{
    if (!name) return MK_ERR_NOMEM;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        mk_tensor_info *t = mk_realloc_array(l->t, cap, sizeof *t);
        if (!t) {
            free(name);
            return MK_ERR_NOMEM;
        }
        l->t = t;
        l->cap = cap;
    }
    mk_tensor_info *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    return mk_tensor_info_finish(t);
}

static void out_free(out_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->t[i].name);
    free(l->t);
}

/* A tensor saved whole, under the same name and shape. */
static mk_status out_add_full(out_list *l, const mk_tensor_info *F, char *name)
{
    MK_TRY(out_add(l, name, F->dtype, F->shape[0], F->ndim > 1 ? F->shape[1] : 0, F->ndim));
    if (F->ndim <= 2) return MK_OK;
    memcpy(l->t[l->n - 1].shape, F->shape, sizeof F->shape);
    return mk_tensor_info_finish(&l->t[l->n - 1]);
}

/* Write f32 values [n] as output tensor i (converted to its dtype) and mark it done. */
static mk_status put_f32(mk_sink *k, const out_list *l, size_t i, const float *v)
{
    const mk_tensor_info *t = &l->t[i];
    void *buf = mk_malloc((size_t)t->nbytes + 1);
    if (!buf) return MK_ERR_NOMEM;
    size_t first;
    mk_status s = MK_OK;
    if (mk_dtype_count_overflow(t->dtype, v, (size_t)t->numel, &first))
        s = mk_error(MK_ERR_NUMERIC, "%s: value %g overflows %s", t->name, (double)v[first], mk_dtype_name(t->dtype));
    if (s == MK_OK) {
        mk_dtype_info(t->dtype)->from_f32(v, buf, (size_t)t->numel);
        s = k->ops->write(k, i, 0, buf, t->nbytes);
    }
    free(buf);
    return s == MK_OK ? k->ops->tensor_done(k, i) : s;
}

/* Raw copy of a source tensor as output tensor i (same dtype and size). */
static mk_status put_raw(mk_sink *k, size_t i, mk_source *src, size_t si)
{
    const mk_tensor_info *t = &src->tensors[si];
    uint64_t step = 64u << 20;
    void *buf = mk_malloc((size_t)(t->nbytes < step ? t->nbytes : step) + 1);
    if (!buf) return MK_ERR_NOMEM;
    mk_status s = MK_OK;
    for (uint64_t off = 0; off < t->nbytes && s == MK_OK; off += step) {
        uint64_t n = t->nbytes - off < step ? t->nbytes - off : step;
        s = src->ops->read(src, si, off, n, buf);
        if (s == MK_OK) s = k->ops->write(k, i, off, buf, n);
    }
    free(buf);
    return s == MK_OK ? k->ops->tensor_done(k, i) : s;
}

static float *read_all(mk_source *s, size_t i, mk_status *st)
{
    const mk_tensor_info *t = &s->tensors[i];
    float *v = mk_malloc((size_t)t->numel * sizeof *v + 1);
    void *scratch = mk_malloc((size_t)t->nbytes + 1);
    *st = v && scratch ? mk_source_read_f32(s, i, 0, t->numel, v, scratch) : MK_ERR_NOMEM;
    free(scratch);
    if (*st != MK_OK) {
        free(v);
        return NULL;
    }
    return v;
}

static void transpose(const float *in, uint64_t rows, uint64_t cols, float *out)
{
    for (uint64_t i = 0; i < rows; i++)
        for (uint64_t j = 0; j < cols; j++) out[j * rows + i] = in[i * cols + j];
}

/* --svd exact|randomized: LAPACK's full SVD, or a randomized one (--power-iters passes,
 * 10 extra sketch columns), its sketch keyed by the module name. */
typedef struct svd_opts {
    const char *kind;
    long power;
    bool randomized;
} svd_opts;

static mk_status svd_opts_check(svd_opts *o)
{
    if (strcmp(o->kind, "exact") == 0) o->randomized = false;
    else if (strcmp(o->kind, "randomized") == 0) o->randomized = true;
    else return mk_error(MK_ERR_USAGE, "--svd: '%s' is not exact or randomized", o->kind);
    if (o->power < 0 || o->power > 20) return mk_error(MK_ERR_USAGE, "--power-iters: %ld is not between 0 and 20", o->power);
    return MK_OK;
}

static mk_status factor(const svd_opts *o, const float *d, uint64_t m, uint64_t n, long rank, float *B, float *A, long *k,
                        double *kept, const char *what)
{
    if (!o->randomized) return mk_lora_svd(d, m, n, rank, B, A, k, kept, NULL, what);
    return mk_lora_rsvd(d, m, n, rank, (unsigned)o->power, 10, mk_rng_key(0, what), B, A, k, kept, what);
}

#define SVD_OPTS(o)                                                                                                     \
    {"svd", 0, MK_OPT_STR, &(o).kind, "KIND", "exact (LAPACK sgesdd) or randomized (much faster for low ranks of big matrices)", "exact"}, \
    {"power-iters", 0, MK_OPT_INT, &(o).power, "N", "power iterations of the randomized SVD", "2"}

static mk_dtype parse_out_dtype(const char *s)
{
    mk_dtype d = mk_dtype_from_user(s);
    return d == MK_F32 || d == MK_F16 || d == MK_BF16 ? d : MK_DTYPE_NONE;
}

/* Begin OUT.tmp with an adapter sink (adapter_model.safetensors, one file) declaring `l`. */
static mk_status adapter_begin(const char *out, bool force, const out_list *l, mk_output *o)
{
    mk_output_opts oo = {.stem = "adapter_model", .force = force};
    return mk_output_begin(o, out, &oo, l->t, l->n);
}

/* One LoRA module to write: per-module rank and the share of energy kept. */
typedef struct lora_mod {
    char *module;
    bool embedding, transposed; /* transposed: the stored weight is (B A)^T */
    uint64_t out, in;           /* B A is [out, in] */
    long k;
    double kept;
    size_t oa, ob;              /* output tensor indices */
    /* extract */
    size_t bi, fi;
    /* combine */
    long *idx;
} lora_mod;

/* A module's lora_A [k, in] and lora_B [out, k] (lora_embedding_A/B for embeddings). */
static mk_status out_add_pair(out_list *l, lora_mod *m, mk_dtype dt)
{
    m->oa = l->n;
    MK_TRY(out_add(l, mk_asprintf("%s%s.%s", MK_PEFT_PREFIX, m->module, m->embedding ? "lora_embedding_A" : "lora_A.weight"),
                   dt, m->k, (int64_t)m->in, 2));
    m->ob = l->n;
    return out_add(l, mk_asprintf("%s%s.%s", MK_PEFT_PREFIX, m->module, m->embedding ? "lora_embedding_B" : "lora_B.weight"),
                   dt, (int64_t)m->out, m->k, 2);
}

static void report(const lora_mod *m, size_t n, const char *out, const char *what, const mk_common *c, bool with_kept)
{
    if (c->json) {
        printf("{\"out\": ");
        mk_buf b = {0};
        mk_buf_json_str(&b, out);
        printf("%s, \"%s\": [", b.data ? b.data : "\"\"", "modules");
        mk_buf_free(&b);
        for (size_t i = 0; i < n; i++) {
            mk_buf q = {0};
            mk_buf_json_str(&q, m[i].module);
            printf("%s\n  {\"module\": %s, \"shape\": [%llu, %llu], \"rank\": %ld", i ? "," : "", q.data ? q.data : "\"\"",
                   (unsigned long long)m[i].out, (unsigned long long)m[i].in, m[i].k);
            if (with_kept) printf(", \"energy_kept\": %.9f", m[i].kept);
            printf("}");
            mk_buf_free(&q);
        }
        printf("\n]}\n");
        return;
    }
    if (c->quiet) return;
    printf("%-60s %-14s %6s%s\n", "module", "update", "rank", with_kept ? "  energy kept" : "");
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        char shp[48];
        snprintf(shp, sizeof shp, "[%llu, %llu]", (unsigned long long)m[i].out, (unsigned long long)m[i].in);
        printf("%-60s %-14s %6ld", m[i].module, shp, m[i].k);
        if (with_kept) printf("  %10.4f%%", 100.0 * m[i].kept);
        printf("\n");
        sum += m[i].kept;
    }
    if (with_kept && n) printf("%s: %zu module(s), mean energy kept %.4f%%\n", what, n, 100.0 * sum / (double)n);
}

static mk_status write_config(mk_sink *k, const char *base_model, const lora_mod *m, size_t n, char *const *save,
                              size_t n_save, bool fifo)
{
    long r = 0;
    for (size_t i = 0; i < n; i++)
        if (m[i].k > r) r = m[i].k;
    mk_peft_out_module *om = mk_calloc(n ? n : 1, sizeof *om);
    if (!om) return MK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) om[i] = (mk_peft_out_module){m[i].module, m[i].k};
    char *text = mk_peft_config_text(base_model, r ? r : 1, om, n, (const char *const *)save, n_save, false, fifo);
    free(om);
    if (!text) return MK_ERR_NOMEM;
    mk_status s = k->ops->add_file(k, MK_PEFT_CONFIG, text, strlen(text));
    free(text);
    return s;
}

static void mods_free(lora_mod *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(m[i].module);
        free(m[i].idx);
    }
    free(m);
}

/* ---- extract ----------------------------------------------------------------------------------- */

typedef struct full_t {
    char *key;   /* modules_to_save entry: last module component */
    size_t src;  /* tensor in the finetuned model */
    size_t out;
} full_t;

static bool in_list(const char *list, const char *module)
{
    if (!list) return false;
    const char *d = strrchr(module, '.');
    const char *last = d ? d + 1 : module;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if ((strlen(last) == l && strncmp(last, p, l) == 0) || (strlen(module) == l && strncmp(module, p, l) == 0))
            return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

static bool same_bytes(mk_source *a, size_t ia, mk_source *b, size_t ib)
{
    const mk_tensor_info *x = &a->tensors[ia], *y = &b->tensors[ib];
    if (x->dtype != y->dtype || !mk_shape_eq(x, y)) return false;
    uint64_t step = 16u << 20;
    void *p = malloc((size_t)step), *q = malloc((size_t)step);
    bool same = p && q;
    for (uint64_t off = 0; off < x->nbytes && same; off += step) {
        uint64_t n = x->nbytes - off < step ? x->nbytes - off : step;
        same = a->ops->read(a, ia, off, n, p) == MK_OK && b->ops->read(b, ib, off, n, q) == MK_OK && memcmp(p, q, (size_t)n) == 0;
    }
    free(p);
    free(q);
    return same;
}

static int cmd_extract(int argc, char **argv)
{
    mk_common c = {0};
    long rank = 0;
    bool force = false, embed_lora = false, skip_undecomp = false;
    const char *modules = NULL, *save = NULL, *dtype = NULL, *exclude = NULL;
    svd_opts so = {"exact", 2, false};
    const mk_opt opts[] = {
        {"rank", 'r', MK_OPT_INT, &rank, "R", "rank of every LoRA module (smaller where a matrix is smaller)", NULL},
        {"modules", 0, MK_OPT_LIST, &modules, "LIST", "only these modules (last name component, e.g. q_proj,v_proj, or full names)", "all linear layers"},
        {"embed-lora", 0, MK_OPT_FLAG, &embed_lora, NULL, "LoRA on embeddings and lm_head too (default: saved whole, in modules_to_save)", NULL},
        {"save-module", 0, MK_OPT_LIST, &save, "NAME", "save these modules whole (modules_to_save)", NULL},
        {"exclude", 0, MK_OPT_LIST, &exclude, "LIST", "leave these modules out entirely (embeddings too), like mergekit's --exclude-regex", NULL},
        {"skip-undecomposable", 0, MK_OPT_FLAG, &skip_undecomp, NULL, "leave out changed norms and other non-matrix weights", NULL},
        {"dtype", 0, MK_OPT_STR, &dtype, "DTYPE", "adapter dtype: float32, bfloat16, float16", "the finetuned weights' dtype"},
        SVD_OPTS(so),
        {"force", 'f', MK_OPT_FLAG, &force, NULL, "replace OUT if it exists", NULL},
        MK_COMMON_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {
        "lora extract", "BASE FINETUNED OUT --rank R [options]",
        "Turn a finetune into a PEFT LoRA adapter: truncated SVD of (finetuned - base) per module.",
        "For each linear weight, delta = finetuned - base (in f32) is factored by LAPACK's SVD into\n"
        "B = U sqrt(S), A = sqrt(S) Vh at rank min(R, rows, cols): the best rank-R approximation. The\n"
        "table gives each module's share of the delta's energy (squared Frobenius norm) kept.\n"
        "As mergekit-extract-lora does: embeddings and lm_head are saved whole (modules_to_save) unless\n"
        "--embed-lora; changed norms are saved whole unless --skip-undecomposable; weights identical in\n"
        "both models are left out. lora_alpha = r (scale 1), rank_pattern where a module's rank is lower.",
        opts, 3, 3};
    char *pos[3];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    mk_status s = MK_OK;
    mk_dtype odt = MK_DTYPE_NONE;
    if (rank <= 0 || rank > MK_PEFT_MAX_R) s = mk_error(MK_ERR_USAGE, "--rank: give a rank between 1 and %d", MK_PEFT_MAX_R);
    else if (dtype && (odt = parse_out_dtype(dtype)) == MK_DTYPE_NONE)
        s = mk_error(MK_ERR_USAGE, "--dtype: '%s' is not float32, bfloat16 or float16", dtype);
    if (s == MK_OK) s = svd_opts_check(&so);
    const char *ins[2] = {pos[0], pos[1]};
    if (s == MK_OK) s = mk_cli_check_output(pos[2], ins, 2);
    mk_source *base = NULL, *ft = NULL;
    if (s == MK_OK) s = mk_cli_open_model(pos[0], &base);
    if (s == MK_OK) s = mk_cli_open_model(pos[1], &ft);
    lora_mod *mods = NULL;
    full_t *fulls = NULL;
    size_t nm = 0, nf = 0;
    out_list ol = {0};
    mk_arch arch = {0};
    if (s == MK_OK) s = mk_arch_of_source(base, &arch);
    bool conv1d = s == MK_OK && mk_arch_is_conv1d(&arch);
    if (s == MK_OK) {
        mods = mk_calloc(ft->n_tensors + 1, sizeof *mods);
        fulls = mk_calloc(ft->n_tensors + 1, sizeof *fulls);
        if (!mods || !fulls) s = MK_ERR_NOMEM;
    }
    /* plan */
    for (size_t i = 0; s == MK_OK && i < ft->n_tensors; i++) {
        const mk_tensor_info *F = &ft->tensors[i];
        long bi = mk_source_find(base, F->name);
        if (bi < 0) {
            s = mk_error(MK_ERR_USAGE, "%s: tensor %s is not in the base model %s", pos[1], F->name, pos[0]);
            break;
        }
        const mk_tensor_info *Bt = &base->tensors[bi];
        bool is_w = mk_str_ends_with(F->name, ".weight");
        size_t nl = strlen(F->name) - (is_w ? 7 : (mk_str_ends_with(F->name, ".bias") ? 5 : 0));
        char *module = mk_strndup(F->name, nl);
        if (!module) {
            s = MK_ERR_NOMEM;
            break;
        }
        mk_role role = mk_arch_role(&arch, F->name).role;
        bool emb_in = mk_role_is_embedding(role), emb_out = role == MK_ROLE_LM_HEAD, emb = emb_in || emb_out;
        bool vocab_changed = emb && !mk_shape_eq(F, Bt);
        if (!vocab_changed && !mk_shape_eq(F, Bt)) {
            char a[160], b[160];
            s = mk_error(MK_ERR_USAGE, "%s: tensor %s is %s but %s in the base %s", pos[1], F->name, mk_shape_str(F, a),
                         mk_shape_str(Bt, b), pos[0]);
            free(module);
            break;
        }
        bool full = false, lora = false;
        if (in_list(exclude, module)) {
            /* left out */
        } else if (emb && (!embed_lora || vocab_changed)) {
            if (vocab_changed && embed_lora) mk_warn("%s: vocabulary size changed; saving it whole, not as LoRA", F->name);
            full = true;
        } else if (in_list(save, module)) {
            full = true;
        } else if (modules && !in_list(modules, module)) {
            /* not asked for */
        } else if (is_w && F->ndim == 2 && mk_dtype_info(F->dtype)->is_float) {
            lora = true;
        } else if (!skip_undecomp) {
            full = true;
        }
        if (!lora && !full) {
            free(module);
            continue;
        }
        if (!vocab_changed && same_bytes(ft, i, base, (size_t)bi)) {
            mk_debug("%s: identical in both models; left out", F->name);
            free(module);
            continue;
        }
        if (full) {
            const char *d = strrchr(module, '.');
            fulls[nf].key = mk_strdup(d ? d + 1 : module);
            fulls[nf].src = i;
            free(module);
            if (!fulls[nf].key) s = MK_ERR_NOMEM;
            else nf++;
            continue;
        }
        if (!is_w) {
            mk_warn("%s changed but is not a weight matrix; it is not in the adapter", F->name);
            free(module);
            continue;
        }
        lora_mod *m = &mods[nm++];
        m->module = module;
        m->embedding = emb_in;
        m->transposed = emb_in || (conv1d && !emb_out);
        m->out = (uint64_t)(m->transposed ? F->shape[1] : F->shape[0]);
        m->in = (uint64_t)(m->transposed ? F->shape[0] : F->shape[1]);
        m->k = rank < (long)(m->out < m->in ? m->out : m->in) ? rank : (long)(m->out < m->in ? m->out : m->in);
        m->bi = (size_t)bi;
        m->fi = i;
    }
    if (s == MK_OK && nm == 0 && nf == 0)
        s = mk_error(MK_ERR_USAGE, "%s and %s do not differ in any selected module; no adapter to write", pos[0], pos[1]);
    /* output tensors: per module A then B, then the whole ones */
    for (size_t q = 0; q < nm && s == MK_OK; q++) {
        lora_mod *m = &mods[q];
        s = out_add_pair(&ol, m, odt != MK_DTYPE_NONE ? odt : ft->tensors[m->fi].dtype);
    }
    for (size_t q = 0; q < nf && s == MK_OK; q++) {
        const mk_tensor_info *F = &ft->tensors[fulls[q].src];
        fulls[q].out = ol.n;
        s = out_add_full(&ol, F, mk_asprintf("%s%s", MK_PEFT_PREFIX, F->name));
    }
    mk_output o = {0};
    if (s == MK_OK) s = adapter_begin(pos[2], force, &ol, &o);
    mk_sink *k = o.k;
    mk_progress prog;
    mk_progress_init(&prog, "lora extract", &c);
    double t0 = mk_now();
    for (size_t q = 0; q < nm && s == MK_OK; q++) {
        lora_mod *m = &mods[q];
        if (mk_interrupted()) {
            s = mk_error(MK_ERR_IO, "interrupted");
            break;
        }
        mk_status st;
        float *d = read_all(ft, m->fi, &st);
        float *b0 = d ? read_all(base, m->bi, &st) : NULL;
        if (!d || !b0) {
            free(d);
            s = st;
            break;
        }
        const mk_tensor_info *F = &ft->tensors[m->fi];
        uint64_t rows = (uint64_t)F->shape[0], cols = (uint64_t)F->shape[1];
        for (uint64_t e = 0; e < F->numel; e++) d[e] -= b0[e];
        free(b0);
        /* factor the stored [rows, cols] difference: Bs [rows, k], As [k, cols] */
        float *Bs = mk_malloc((size_t)(rows * (uint64_t)m->k) * sizeof *Bs);
        float *As = mk_malloc((size_t)((uint64_t)m->k * cols) * sizeof *As);
        long kk = 0;
        s = Bs && As ? factor(&so, d, rows, cols, m->k, Bs, As, &kk, &m->kept, F->name) : MK_ERR_NOMEM;
        free(d);
        if (s == MK_OK && kk != m->k) MK_BUG("rank mismatch");
        if (s == MK_OK && m->transposed) {
            /* stored = (B A)^T = Bs As  =>  A = Bs^T [k, rows], B = As^T [cols, k] */
            float *A = mk_malloc((size_t)(rows * (uint64_t)m->k) * sizeof *A), *B = mk_malloc((size_t)(cols * (uint64_t)m->k) * sizeof *B);
            if (!A || !B) s = MK_ERR_NOMEM;
            else {
                transpose(Bs, rows, (uint64_t)m->k, A);
                transpose(As, (uint64_t)m->k, cols, B);
                s = put_f32(k, &ol, m->oa, A);
                if (s == MK_OK) s = put_f32(k, &ol, m->ob, B);
            }
            free(A);
            free(B);
        } else if (s == MK_OK) {
            s = put_f32(k, &ol, m->oa, As);
            if (s == MK_OK) s = put_f32(k, &ol, m->ob, Bs);
        }
        free(Bs);
        free(As);
        mk_progress_cb(&prog, q + 1, nm + nf, q + 1, nm + nf, m->module);
    }
    for (size_t q = 0; q < nf && s == MK_OK; q++) s = put_raw(k, fulls[q].out, ft, fulls[q].src);
    mk_progress_end(&prog);
    /* modules_to_save: distinct keys in order */
    char **keys = mk_calloc(nf + 1, sizeof *keys);
    size_t nk = 0;
    if (!keys && s == MK_OK) s = MK_ERR_NOMEM;
    for (size_t q = 0; q < nf && keys; q++) {
        bool seen = false;
        for (size_t z = 0; z < nk; z++) seen |= strcmp(keys[z], fulls[q].key) == 0;
        if (!seen) keys[nk++] = fulls[q].key;
    }
    if (s == MK_OK) s = write_config(k, pos[0], mods, nm, keys, nk, conv1d);
    if (s == MK_OK) s = mk_output_seal(&o);
    if (s == MK_OK) s = mk_output_commit(&o);
    free(keys);
    if (s == MK_OK) {
        report(mods, nm, pos[2], "extract", &c, true);
        if (!c.quiet)
            fprintf(stderr, "mergekit-c: wrote %s: %zu LoRA module(s) at rank <= %ld, %zu whole tensor(s) in %.1f s\n", pos[2], nm,
                    rank, nf, mk_now() - t0);
    }
    mk_output_close(&o);
    out_free(&ol);
    mods_free(mods, nm);
    for (size_t q = 0; q < nf; q++) free(fulls[q].key);
    free(fulls);
    mk_arch_free(&arch);
    mk_source_close(base);
    mk_source_close(ft);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}

/* ---- combine ----------------------------------------------------------------------------------- */

typedef enum { CB_CAT, CB_LINEAR, CB_SVD, CB_TIES, CB_DARE_LINEAR, CB_COUNT } cb_method;
static const char *const cb_names[CB_COUNT] = {"cat", "linear", "svd", "ties", "dare_linear"};

static long adapter_max_rank(const mk_peft_config *c)
{
    long r = c->r;
    for (size_t i = 0; i < c->n_rank; i++)
        if ((long)c->rank_pattern[i].value > r) r = (long)c->rank_pattern[i].value;
    return r;
}

static mk_status parse_weights(const char *s, size_t n, double *w)
{
    for (size_t i = 0; i < n; i++) w[i] = 1.0;
    if (!s) return MK_OK;
    size_t got = 0;
    const char *p = s;
    while (*p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !isfinite(v) || (*end && *end != ','))
            return mk_error(MK_ERR_USAGE, "--weights: expected numbers separated by commas, got '%s'", s);
        if (got == n) return mk_error(MK_ERR_USAGE, "--weights: %zu weights for %zu adapters", got + 1, n);
        w[got++] = v;
        p = *end ? end + 1 : end;
    }
    if (got != n) return mk_error(MK_ERR_USAGE, "--weights: %zu weight(s) for %zu adapters", got, n);
    return MK_OK;
}

static mk_status cb_module_delta(mk_peft_adapter *a, const mk_peft_module *pm, uint64_t out, uint64_t in, float *d)
{
    return mk_lora_update_read(a->src, pm->a, pm->b, false, pm->scale, out, in, 0, out, d);
}

static int cmd_combine(int argc, char **argv)
{
    mk_common c = {0};
    const char *method = NULL, *weights = NULL, *dtype = NULL;
    long rank = 0;
    double density = -1;
    uint64_t seed = 0;
    bool force = false;
    svd_opts so = {"exact", 2, false};
    const mk_opt opts[] = {
        {"method", 'm', MK_OPT_STR, &method, "NAME", "cat, linear, svd, ties or dare_linear", NULL},
        {"weights", 'w', MK_OPT_STR, &weights, "W1,W2,..", "one weight per adapter", "1 each"},
        {"rank", 'r', MK_OPT_INT, &rank, "R", "rank of the result (linear: sum of ranks; svd, ties, dare_linear: the largest)", NULL},
        {"density", 0, MK_OPT_DOUBLE, &density, "D", "share of each update kept (ties: by magnitude; dare_linear: at random)", NULL},
        {"seed", 0, MK_OPT_U64, &seed, "N", "seed for dare_linear", "0"},
        {"dtype", 0, MK_OPT_STR, &dtype, "DTYPE", "adapter dtype: float32, bfloat16, float16", "float32"},
        SVD_OPTS(so),
        {"force", 'f', MK_OPT_FLAG, &force, NULL, "replace OUT if it exists", NULL},
        MK_COMMON_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {
        "lora combine", "ADAPTER1 ADAPTER2 [...] OUT --method M [options]",
        "Combine LoRA adapters of one base into one adapter (PEFT's add_weighted_adapter).",
        "Each adapter i contributes its update D_i = s_i B_i A_i with weight w_i.\n"
        "  cat          exact: A = [w_i s_i A_i] stacked, B = [B_i] side by side; ranks add up (PEFT cat)\n"
        "  linear       sum w_i D_i, re-factored by SVD at the sum of the ranks (exact), or --rank\n"
        "  svd          sum w_i D_i, truncated SVD to --rank (default: the largest rank) (PEFT svd)\n"
        "  ties         TIES on the D_i (top --density by magnitude, majority sign, disjoint mean),\n"
        "               then truncated SVD (PEFT ties_svd)\n"
        "  dare_linear  each D_i keeps a random --density share, rescaled, weighted sum, truncated SVD\n"
        "               (PEFT dare_linear_svd; the random choice is ours, keyed by --seed)\n"
        "The result has lora_alpha = r (scale 1). Tensors an adapter saves whole are copied; two\n"
        "adapters saving the same tensor is an error.",
        opts, 3, 64};
    char *pos[64];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    size_t na = npos - 1;
    const char *out = pos[npos - 1];
    mk_status s = MK_OK;
    cb_method meth = CB_COUNT;
    for (int i = 0; i < CB_COUNT && method; i++)
        if (strcmp(method, cb_names[i]) == 0) meth = (cb_method)i;
    mk_dtype odt = MK_F32;
    double *w = mk_calloc(na, sizeof *w);
    if (!w) return mk_cli_fail(MK_ERR_NOMEM);
    if (!method) s = mk_error(MK_ERR_USAGE, "--method is required: cat, linear, svd, ties or dare_linear");
    else if (meth == CB_COUNT) {
        const char *hint = mk_did_you_mean(method, cb_names, CB_COUNT);
        s = mk_error(MK_ERR_USAGE, "--method: unknown '%s'%s%s%s (cat, linear, svd, ties, dare_linear)", method,
                     hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
    } else if (dtype && (odt = parse_out_dtype(dtype)) == MK_DTYPE_NONE)
        s = mk_error(MK_ERR_USAGE, "--dtype: '%s' is not float32, bfloat16 or float16", dtype);
    else if (rank < 0 || rank > MK_PEFT_MAX_R) s = mk_error(MK_ERR_USAGE, "--rank: %ld is not between 1 and %d", rank, MK_PEFT_MAX_R);
    else if (meth == CB_CAT && rank) s = mk_error(MK_ERR_USAGE, "--rank does not apply to cat (its rank is the sum of the ranks)");
    else if ((meth == CB_TIES || meth == CB_DARE_LINEAR) && !(density > 0 && density <= 1))
        s = mk_error(MK_ERR_USAGE, "--method %s needs --density D with 0 < D <= 1", method);
    else if (meth != CB_TIES && meth != CB_DARE_LINEAR && density != -1)
        s = mk_error(MK_ERR_USAGE, "--density applies to ties and dare_linear only");
    if (s == MK_OK) s = svd_opts_check(&so);
    if (s == MK_OK) s = parse_weights(weights, na, w);
    if (s == MK_OK) s = mk_cli_check_output(out, (const char *const *)pos, na);
    mk_peft_adapter **ad = mk_calloc(na, sizeof *ad);
    if (!ad && s == MK_OK) s = MK_ERR_NOMEM;
    for (size_t i = 0; i < na && s == MK_OK; i++) s = mk_peft_open(pos[i], &ad[i]);
    bool fifo = false;
    long sum_r = 0, max_r = 0;
    for (size_t i = 0; i < na && s == MK_OK; i++) {
        long r = adapter_max_rank(&ad[i]->cfg);
        sum_r += r;
        if (r > max_r) max_r = r;
        if (i == 0) fifo = ad[0]->cfg.fan_in_fan_out;
        else if (ad[i]->cfg.fan_in_fan_out != fifo)
            s = mk_error(MK_ERR_USAGE, "%s: fan_in_fan_out differs from %s's; adapters of one base agree on it", pos[i], pos[0]);
        for (size_t q = 0; q < ad[i]->lay.n_modules && s == MK_OK; q++)
            if (ad[i]->lay.m[q].bias >= 0)
                s = mk_error(MK_ERR_UNSUPPORTED, "%s: module %s has lora_B.bias; adapters with LoRA biases cannot be combined",
                             pos[i], ad[i]->lay.m[q].module);
    }
    long target_rank = rank ? rank : meth == CB_LINEAR ? sum_r : max_r;
    /* modules: union over the adapters (each layout is sorted by name) */
    size_t cap = 0;
    for (size_t i = 0; i < na && s == MK_OK; i++) cap += ad[i]->lay.n_modules;
    lora_mod *mods = s == MK_OK ? mk_calloc(cap + 1, sizeof *mods) : NULL;
    size_t nm = 0;
    if (s == MK_OK && !mods) s = MK_ERR_NOMEM;
    for (size_t i = 0; i < na && s == MK_OK; i++) {
        for (size_t q = 0; q < ad[i]->lay.n_modules && s == MK_OK; q++) {
            const mk_peft_module *pm = &ad[i]->lay.m[q];
            const mk_tensor_info *A = &ad[i]->src->tensors[pm->a], *B = &ad[i]->src->tensors[pm->b];
            size_t z;
            for (z = 0; z < nm; z++)
                if (strcmp(mods[z].module, pm->module) == 0) break;
            if (z == nm) {
                mods[nm].module = mk_strdup(pm->module);
                mods[nm].idx = mk_malloc(na * sizeof *mods[nm].idx);
                if (!mods[nm].module || !mods[nm].idx) {
                    s = MK_ERR_NOMEM;
                    break;
                }
                for (size_t e = 0; e < na; e++) mods[nm].idx[e] = -1;
                mods[nm].embedding = pm->embedding;
                mods[nm].out = (uint64_t)B->shape[0];
                mods[nm].in = (uint64_t)A->shape[1];
                nm++;
            }
            lora_mod *m = &mods[z];
            if (m->embedding != pm->embedding || m->out != (uint64_t)B->shape[0] || m->in != (uint64_t)A->shape[1]) {
                s = mk_error(MK_ERR_USAGE, "%s: module %s has a [%lld, %lld] %supdate, but %s's is [%llu, %llu]; adapters of "
                                           "different bases?", pos[i], pm->module, (long long)B->shape[0], (long long)A->shape[1],
                             pm->embedding ? "embedding " : "", pos[0], (unsigned long long)m->out, (unsigned long long)m->in);
                break;
            }
            m->idx[i] = (long)q;
            if (meth == CB_CAT) m->k += pm->r;
        }
    }
    /* sort modules by name for a deterministic order */
    for (size_t a = 1; a < nm; a++)
        for (size_t b = a; b > 0 && strcmp(mods[b - 1].module, mods[b].module) > 0; b--) {
            lora_mod tmp = mods[b];
            mods[b] = mods[b - 1];
            mods[b - 1] = tmp;
        }
    out_list ol = {0};
    for (size_t q = 0; q < nm && s == MK_OK; q++) {
        lora_mod *m = &mods[q];
        if (meth != CB_CAT) {
            uint64_t mn = m->out < m->in ? m->out : m->in;
            m->k = target_rank < (long)mn ? target_rank : (long)mn;
        }
        s = out_add_pair(&ol, m, odt);
    }
    /* whole tensors (modules_to_save): copied; the same one from two adapters is an error */
    size_t nfull = 0;
    size_t *full_ad = NULL, *full_ix = NULL, *full_out = NULL;
    char **save = NULL;
    size_t nsave = 0;
    for (size_t i = 0; i < na && s == MK_OK; i++) nfull += ad[i]->lay.n_full;
    if (s == MK_OK) {
        full_ad = mk_calloc(nfull + 1, sizeof *full_ad);
        full_ix = mk_calloc(nfull + 1, sizeof *full_ix);
        full_out = mk_calloc(nfull + 1, sizeof *full_out);
        save = mk_calloc(nfull + 1, sizeof *save);
        if (!full_ad || !full_ix || !full_out || !save) s = MK_ERR_NOMEM;
    }
    size_t nf = 0;
    for (size_t i = 0; i < na && s == MK_OK; i++) {
        for (size_t q = 0; q < ad[i]->lay.n_full && s == MK_OK; q++) {
            const mk_peft_full *f = &ad[i]->lay.full[q];
            for (size_t z = 0; z < nf; z++)
                if (strcmp(ad[full_ad[z]]->lay.full[full_ix[z]].name, f->name) == 0)
                    s = mk_error(MK_ERR_USAGE, "%s and %s both save %s whole; PEFT cannot combine such adapters", pos[full_ad[z]],
                                 pos[i], f->name);
            if (s != MK_OK) break;
            const mk_tensor_info *F = &ad[i]->src->tensors[f->index];
            full_ad[nf] = i;
            full_ix[nf] = q;
            full_out[nf] = ol.n;
            s = out_add_full(&ol, F, mk_strdup(F->name));
            nf++;
        }
        for (size_t q = 0; q < ad[i]->cfg.n_save && s == MK_OK; q++) {
            bool seen = false;
            for (size_t z = 0; z < nsave; z++) seen |= strcmp(save[z], ad[i]->cfg.modules_to_save[q]) == 0;
            if (!seen) save[nsave++] = ad[i]->cfg.modules_to_save[q];
        }
    }
    if (s == MK_OK && nm == 0 && nf == 0) s = mk_error(MK_ERR_USAGE, "the adapters have no modules to combine");
    mk_output o = {0};
    if (s == MK_OK) s = adapter_begin(out, force, &ol, &o);
    mk_sink *k = o.k;
    float *fw = mk_calloc(na, sizeof *fw);
    if (!fw && s == MK_OK) s = MK_ERR_NOMEM;
    for (size_t i = 0; i < na && fw; i++) fw[i] = (float)w[i];
    for (size_t q = 0; q < nm && s == MK_OK; q++) {
        lora_mod *m = &mods[q];
        if (mk_interrupted()) {
            s = mk_error(MK_ERR_IO, "interrupted");
            break;
        }
        uint64_t kk = (uint64_t)m->k;
        float *A = mk_calloc((size_t)(kk * m->in) + 1, sizeof *A), *B = mk_calloc((size_t)(m->out * kk) + 1, sizeof *B);
        if (!A || !B) s = MK_ERR_NOMEM;
        if (s == MK_OK && meth == CB_CAT) {
            /* PEFT cat: A rows (A_i * w_i) * s_i, B columns B_i, in adapter order */
            uint64_t row = 0;
            for (size_t i = 0; i < na && s == MK_OK; i++) {
                if (m->idx[i] < 0) continue;
                const mk_peft_module *pm = &ad[i]->lay.m[m->idx[i]];
                mk_status st;
                float *Ai = read_all(ad[i]->src, pm->a, &st);
                float *Bi = Ai ? read_all(ad[i]->src, pm->b, &st) : NULL;
                if (!Ai || !Bi) {
                    free(Ai);
                    s = st;
                    break;
                }
                uint64_t r = (uint64_t)pm->r;
                float sc = (float)pm->scale;
                for (uint64_t e = 0; e < r * m->in; e++) A[row * m->in + e] = (Ai[e] * fw[i]) * sc;
                for (uint64_t row_o = 0; row_o < m->out; row_o++)
                    for (uint64_t j = 0; j < r; j++) B[row_o * kk + row + j] = Bi[row_o * r + j];
                row += r;
                m->kept = 1;
                free(Ai);
                free(Bi);
            }
        } else if (s == MK_OK) {
            uint64_t n = m->out * m->in;
            float **d = mk_calloc(na, sizeof *d);
            float *D = mk_malloc((size_t)n * sizeof *D + 1);
            float *dw = mk_calloc(na, sizeof *dw);
            if (!d || !D || !dw) s = MK_ERR_NOMEM;
            size_t nd = 0;
            mk_rng rng = mk_rng_key(seed, m->module);
            for (size_t i = 0; i < na && s == MK_OK; i++) {
                if (m->idx[i] < 0) continue; /* absent: PEFT combines the adapters that have the module */
                d[nd] = mk_malloc((size_t)n * sizeof *d[nd] + 1);
                if (!d[nd]) {
                    s = MK_ERR_NOMEM;
                    break;
                }
                s = cb_module_delta(ad[i], &ad[i]->lay.m[m->idx[i]], m->out, m->in, d[nd]);
                if (s == MK_OK && meth == CB_TIES) s = mk_lora_prune_magnitude(d[nd], n, density);
                if (s == MK_OK && meth == CB_DARE_LINEAR) mk_lora_prune_random(d[nd], n, density, rng, i);
                dw[nd] = fw[i];
                nd++;
            }
            if (s == MK_OK) {
                if (meth == CB_TIES) mk_lora_ties_merge((const float *const *)d, dw, nd, n, D);
                else mk_lora_weighted_sum((const float *const *)d, dw, nd, n, D);
            }
            for (size_t i = 0; i < nd; i++) free(d[i]);
            free(d);
            free(dw);
            long got = 0;
            if (s == MK_OK) s = factor(&so, D, m->out, m->in, m->k, B, A, &got, &m->kept, m->module);
            if (s == MK_OK && got != m->k) MK_BUG("rank mismatch");
            free(D);
        }
        if (s == MK_OK) s = put_f32(k, &ol, m->oa, A);
        if (s == MK_OK) s = put_f32(k, &ol, m->ob, B);
        free(A);
        free(B);
    }
    for (size_t q = 0; q < nf && s == MK_OK; q++) {
        mk_peft_adapter *a = ad[full_ad[q]];
        s = put_raw(k, full_out[q], a->src, a->lay.full[full_ix[q]].index);
    }
    if (s == MK_OK) s = write_config(k, na ? ad[0]->cfg.base_model : NULL, mods, nm, save, nsave, fifo);
    if (s == MK_OK) s = mk_output_seal(&o);
    if (s == MK_OK) s = mk_output_commit(&o);
    if (s == MK_OK) {
        report(mods, nm, out, method, &c, meth != CB_CAT);
        if (!c.quiet) fprintf(stderr, "mergekit-c: wrote %s: %zu module(s) combined by %s from %zu adapters\n", out, nm, method, na);
    }
    mk_output_close(&o);
    out_free(&ol);
    mods_free(mods, nm);
    free(full_ad);
    free(full_ix);
    free(full_out);
    free(save);
    free(fw);
    for (size_t i = 0; i < na && ad; i++) mk_peft_close(ad[i]);
    free(ad);
    free(w);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

int mk_cmd_lora(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
        const char *summary;
    } subs[] = {
        {"apply", cmd_apply, "merge an adapter into its base model (W + s B A)"},
        {"extract", cmd_extract, "turn a finetune into an adapter (truncated SVD of the difference)"},
        {"combine", cmd_combine, "combine adapters of one base (cat, linear, svd, ties, dare_linear)"},
    };
    const size_t n = sizeof subs / sizeof subs[0];
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: mergekit-c lora COMMAND [args] [options]\n\nPEFT LoRA adapters (adapter_config.json + "
                   "adapter_model.safetensors or .bin).\n\ncommands:\n");
        for (size_t i = 0; i < n; i++) fprintf(f, "  %-10s %s\n", subs[i].name, subs[i].summary);
        fprintf(f, "\n'mergekit-c lora COMMAND --help' shows a command's options.\n");
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(argv[1], subs[i].name) == 0) return subs[i].fn(argc - 1, argv + 1);
    const char *names[3] = {subs[0].name, subs[1].name, subs[2].name};
    const char *hint = mk_did_you_mean(argv[1], names, n);
    fprintf(stderr, "mergekit-c: error: unknown lora command '%s'%s%s%s (apply, extract, combine)\n", argv[1],
            hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
    return 2;
}
