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
 * formats/peft reads, binds and describes adapters (and writes adapter_config.json's text);
 * lora/ plans and computes (lora/extract.h, lora/combine.h, the merged source of lora.h).
 * This file holds the option tables, maps PEFT adapters into lora's plain descriptions,
 * opens the output (formats/output.h: OUT.tmp, renamed when done) and prints the report.
 */
#include "cli.h"

#include "../core/mk_io.h"
#include "../core/mk_parallel.h"
#include "../formats/output.h"
#include "../formats/peft.h"
#include "../lora/combine.h"
#include "../lora/extract.h"
#include "../lora/lora.h"
#include "../model/arch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APPLY_CHUNK (1u << 20) /* elements per parallel work item */

/* ---- apply ----------------------------------------------------------------------------------- */

/* One tensor of `src` copied chunk by chunk into the sink: chunks of whole rows, about
 * APPLY_CHUNK elements, each read (the merged source computes W + s B A) into the thread's
 * buffer and written at its offset. */
typedef struct apply_pass {
    mk_source *src;
    mk_sink *k;
    size_t i;
    uint64_t chunk_elems, es;
} apply_pass;

static void *apply_tls_new(void *ctx)
{
    const apply_pass *p = ctx;
    uint64_t numel = p->src->tensors[p->i].numel;
    return mk_malloc((size_t)((numel < p->chunk_elems ? numel : p->chunk_elems) * p->es) + 1);
}

static mk_status apply_chunk(void *ctx, uint64_t c, void *buf)
{
    const apply_pass *p = ctx;
    uint64_t numel = p->src->tensors[p->i].numel;
    uint64_t e0 = c * p->chunk_elems, n = numel - e0 < p->chunk_elems ? numel - e0 : p->chunk_elems;
    mk_status s = p->src->ops->read(p->src, p->i, e0 * p->es, n * p->es, buf);
    if (s == MK_OK) s = p->k->ops->write(p->k, p->i, e0 * p->es, buf, n * p->es);
    if (p->src->ops->release) p->src->ops->release(p->src, p->i, e0 * p->es, n * p->es);
    return s;
}

/* The tensor's nch chunks on the shared loop; a tensor of one chunk (most norms and
 * projections) is copied on this thread: waking the thread team for it costs more than it
 * saves, as the idle threads spin at the loop's barriers. */
static mk_status apply_tensor(apply_pass *p, uint64_t nch)
{
    if (nch != 1) return mk_parallel_chunks(nch, apply_chunk, p, apply_tls_new, free);
    void *buf = apply_tls_new(p);
    mk_status s = buf ? apply_chunk(p, 0, buf) : MK_ERR_NOMEM;
    free(buf);
    if (s == MK_OK && mk_interrupted()) s = mk_error(MK_ERR_IO, "interrupted");
    return s;
}

/* Every tensor of `src`, in order, as raw bytes into `k` (declared with src's tensors). */
static mk_status stream_all(mk_source *src, mk_sink *k, mk_progress *prog)
{
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < src->n_tensors; i++) total += src->tensors[i].nbytes;
    for (size_t i = 0; i < src->n_tensors; i++) {
        const mk_tensor_info *t = &src->tensors[i];
        uint64_t cols = mk_tensor_cols(t) ? mk_tensor_cols(t) : 1;
        apply_pass p = {src, k, i, mk_rows_per_chunk(cols, 1, APPLY_CHUNK) * cols, mk_dtype_size(t->dtype)};
        MK_TRY(apply_tensor(&p, (t->numel + p.chunk_elems - 1) / p.chunk_elems));
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
        MK_HUB_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {
        "lora apply", "BASE ADAPTER OUT [options]",
        "Merge a PEFT LoRA adapter into its base model: W' = W + s B A for every adapted weight.",
        "s = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), per module after rank_pattern and\n"
        "alpha_pattern; embeddings and Conv1D (fan_in_fan_out) weights get (B A)^T; tensors saved in the\n"
        "adapter (modules_to_save) replace the base's. Computed in f32 and rounded once to each weight's\n"
        "dtype, streamed in row chunks. OUT gets the base's config.json and tokenizer files.",
        opts, 3, 3, 0x3};
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

/* PEFT's names for the tensors of the adapters we write. */
static const mk_lora_names peft_names = {MK_PEFT_PREFIX,     "lora_A.weight",   "lora_B.weight",
                                         "lora_embedding_A", "lora_embedding_B", MK_PEFT_LAYER_BIAS};

/* --svd exact|randomized and --power-iters, checked into lora's factoring options. */
typedef struct svd_opts {
    const char *kind;
    long power;
    mk_lora_svd_opts lo;
} svd_opts;

static mk_status svd_opts_check(svd_opts *o)
{
    if (strcmp(o->kind, "exact") == 0) o->lo.randomized = false;
    else if (strcmp(o->kind, "randomized") == 0) o->lo.randomized = true;
    else return mk_error(MK_ERR_USAGE, "--svd: '%s' is not exact or randomized", o->kind);
    if (o->power < 0 || o->power > 20) return mk_error(MK_ERR_USAGE, "--power-iters: %ld is not between 0 and 20", o->power);
    o->lo.power = (unsigned)o->power;
    return MK_OK;
}

#define SVD_OPTS(o)                                                                                                     \
    {"svd", 0, MK_OPT_STR, &(o).kind, "KIND", "exact (LAPACK sgesdd) or randomized (much faster for low ranks of big matrices)", "exact"}, \
    {"power-iters", 0, MK_OPT_INT, &(o).power, "N", "power iterations of the randomized SVD", "2"}

/* --dtype of an adapter: float32, bfloat16 or float16 into *d. */
static mk_status parse_out_dtype(const char *s, mk_dtype *d)
{
    if (!s) return MK_OK;
    *d = mk_dtype_from_user(s);
    if (*d == MK_F32 || *d == MK_F16 || *d == MK_BF16) return MK_OK;
    return mk_error(MK_ERR_USAGE, "--dtype: '%s' is not float32, bfloat16 or float16", s);
}

/* adapter_config.json for the plan (r = the largest rank, rank_pattern for the others;
 * "bias": "lora_only" when it carries biases of LoRA layers), checked the way `lora apply`
 * reads adapters - the config parsed, the planned tensors paired into modules against it -
 * before anything is written: an adapter we write is one we (and PEFT) load. */
static mk_status adapter_config(const char *out, const char *base_model, const mk_lora_plan *p, bool fifo, char **text)
{
    long r = 0;
    for (size_t i = 0; i < p->n_modules; i++)
        if (p->m[i].k > r) r = p->m[i].k;
    bool layer_bias = false;
    for (size_t i = 0; i < p->n_out; i++) layer_bias |= mk_str_ends_with(p->out[i].name, "." MK_PEFT_LAYER_BIAS);
    mk_peft_out_module *om = mk_calloc(p->n_modules ? p->n_modules : 1, sizeof *om);
    if (!om) return MK_ERR_NOMEM;
    for (size_t i = 0; i < p->n_modules; i++) om[i] = (mk_peft_out_module){p->m[i].module, p->m[i].k};
    *text = mk_peft_config_text(base_model, r ? r : 1, om, p->n_modules, (const char *const *)p->save, p->n_save, false,
                                layer_bias, fifo);
    free(om);
    char *what = mk_path_join(out, MK_PEFT_CONFIG);
    if (!*text || !what) {
        free(what);
        return MK_ERR_NOMEM;
    }
    mk_peft_config cfg;
    mk_peft_layout lay;
    mk_status s = mk_peft_config_parse(*text, strlen(*text), what, &cfg);
    if (s == MK_OK) {
        s = mk_peft_layout_build(&cfg, p->out, p->n_out, what, &lay);
        mk_peft_layout_free(&lay);
        mk_peft_config_free(&cfg);
    }
    free(what);
    if (s != MK_OK && s != MK_ERR_NOMEM) {
        char why[512];
        snprintf(why, sizeof why, "%s", mk_errmsg());
        s = mk_error(MK_ERR_USAGE, "the adapter planned would not load (choose other modules): %s", why);
    }
    return s;
}

/* Begin OUT.tmp with an adapter sink (adapter_model.safetensors, one file) declaring the
 * plan's tensors, once its config (*text, for adapter_finish) checks out. */
static mk_status adapter_begin(const char *out, bool force, const char *base_model, const mk_lora_plan *p, bool fifo,
                               mk_output *o, char **text)
{
    MK_TRY(adapter_config(out, base_model, p, fifo, text));
    mk_output_opts oo = {.stem = "adapter_model", .force = force};
    return mk_output_begin(o, out, &oo, p->out, p->n_out);
}

/* adapter_config.json written, the sink sealed and OUT committed. */
static mk_status adapter_finish(mk_output *o, const char *text)
{
    mk_status s = o->k->ops->add_file(o->k, MK_PEFT_CONFIG, text, strlen(text));
    if (s == MK_OK) s = mk_output_seal(o);
    if (s == MK_OK) s = mk_output_commit(o);
    return s;
}

static void report_json(const mk_lora_plan *p, const char *out, bool with_kept)
{
    printf("{\"out\": ");
    mk_buf b = {0};
    mk_buf_json_str(&b, out);
    printf("%s, \"%s\": [", b.data ? b.data : "\"\"", "modules");
    mk_buf_free(&b);
    for (size_t i = 0; i < p->n_modules; i++) {
        const mk_lora_module *m = &p->m[i];
        mk_buf q = {0};
        mk_buf_json_str(&q, m->module);
        printf("%s\n  {\"module\": %s, \"shape\": [%llu, %llu], \"rank\": %ld", i ? "," : "", q.data ? q.data : "\"\"",
               (unsigned long long)m->out, (unsigned long long)m->in, m->k);
        if (with_kept) printf(", \"energy_kept\": %.9f", m->kept);
        printf("}");
        mk_buf_free(&q);
    }
    printf("\n]}\n");
}

/* The module table on stdout (or --json); with_kept adds the share of energy kept. */
static void report(const mk_lora_plan *p, const char *out, const char *what, const mk_common *c, bool with_kept)
{
    if (c->json) {
        report_json(p, out, with_kept);
        return;
    }
    if (c->quiet) return;
    printf("%-60s %-14s %6s%s\n", "module", "update", "rank", with_kept ? "  energy kept" : "");
    double sum = 0;
    for (size_t i = 0; i < p->n_modules; i++) {
        const mk_lora_module *m = &p->m[i];
        char shp[48];
        snprintf(shp, sizeof shp, "[%llu, %llu]", (unsigned long long)m->out, (unsigned long long)m->in);
        printf("%-60s %-14s %6ld", m->module, shp, m->k);
        if (with_kept) printf("  %10.4f%%", 100.0 * m->kept);
        printf("\n");
        sum += m->kept;
    }
    if (with_kept && p->n_modules)
        printf("%s: %zu module(s), mean energy kept %.4f%%\n", what, p->n_modules, 100.0 * sum / (double)p->n_modules);
}

/* ---- extract ----------------------------------------------------------------------------------- */

typedef struct extract_args {
    const char *dtype;
    bool force;
    svd_opts so;
    mk_lora_extract_opts lo;
} extract_args;

/* Plan, factor and write the adapter of pos[1] over pos[0] into pos[2]. */
static mk_status extract(char *const *pos, extract_args *a, const mk_common *c)
{
    const char *ins[2] = {pos[0], pos[1]};
    MK_TRY(mk_cli_check_output(pos[2], ins, 2));
    mk_source *base = NULL, *ft = NULL;
    mk_arch arch = {0};
    mk_lora_plan p = {0};
    mk_output o = {0};
    a->lo.base_name = pos[0];
    a->lo.ft_name = pos[1];
    mk_status s = mk_cli_open_model_values(pos[0], &base);
    if (s == MK_OK) s = mk_cli_open_model_values(pos[1], &ft);
    if (s == MK_OK) s = mk_arch_of_source(base, &arch);
    char *text = NULL;
    if (s == MK_OK) s = mk_lora_extract_plan(base, ft, &arch, &a->lo, &peft_names, &p);
    if (s == MK_OK) s = adapter_begin(pos[2], a->force, pos[0], &p, p.conv1d, &o, &text);
    mk_progress prog;
    mk_progress_init(&prog, "lora extract", c);
    double t0 = mk_now();
    if (s == MK_OK) s = mk_lora_extract_run(&p, base, ft, &a->so.lo, o.k, mk_progress_cb, &prog);
    mk_progress_end(&prog);
    if (s == MK_OK) s = adapter_finish(&o, text);
    if (s == MK_OK) {
        report(&p, pos[2], "extract", c, true);
        if (!c->quiet)
            fprintf(stderr, "mergekit-c: wrote %s: %zu LoRA module(s) at rank <= %ld, %zu whole tensor(s) in %.1f s\n", pos[2],
                    p.n_modules, a->lo.rank, p.n_whole, mk_now() - t0);
    }
    free(text);
    mk_output_close(&o);
    mk_lora_plan_free(&p);
    mk_arch_free(&arch);
    mk_source_close(base);
    mk_source_close(ft);
    return s;
}

static int cmd_extract(int argc, char **argv)
{
    mk_common c = {0};
    extract_args a = {.so = {"exact", 2, {false, 0}}, .lo = {.dtype = MK_DTYPE_NONE}};
    const mk_opt opts[] = {
        {"rank", 'r', MK_OPT_INT, &a.lo.rank, "R", "rank of every LoRA module (smaller where a matrix is smaller)", NULL},
        {"modules", 0, MK_OPT_LIST, &a.lo.modules, "LIST", "only these modules (last name component, e.g. q_proj,v_proj, or full names)", "all linear layers"},
        {"embed-lora", 0, MK_OPT_FLAG, &a.lo.embed_lora, NULL, "LoRA on embeddings and lm_head too (default: saved whole, in modules_to_save)", NULL},
        {"save-module", 0, MK_OPT_LIST, &a.lo.save, "NAME", "save these modules whole (modules_to_save)", NULL},
        {"exclude", 0, MK_OPT_LIST, &a.lo.exclude, "LIST", "leave these modules out entirely (embeddings too), like mergekit's --exclude-regex", NULL},
        {"skip-undecomposable", 0, MK_OPT_FLAG, &a.lo.skip_undecomposable, NULL, "leave out changed norms, biases and other non-matrix weights", NULL},
        {"dtype", 0, MK_OPT_STR, &a.dtype, "DTYPE", "adapter dtype: float32, bfloat16, float16", "the finetuned weights' dtype"},
        SVD_OPTS(a.so),
        {"force", 'f', MK_OPT_FLAG, &a.force, NULL, "replace OUT if it exists", NULL},
        MK_COMMON_OPTS(c),
        MK_HUB_OPTS(c),
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
        "both models are left out. A changed bias of a LoRA layer is saved whole as PEFT saves it\n"
        "(<module>.base_layer.bias, \"bias\": \"lora_only\"). Module paths are the model's (GPT-2:\n"
        "transformer.h.N...). lora_alpha = r (scale 1), rank_pattern where a module's rank is lower.",
        opts, 3, 3, 0x3};
    char *pos[3];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    mk_status s = MK_OK;
    if (a.lo.rank <= 0 || a.lo.rank > MK_PEFT_MAX_R)
        s = mk_error(MK_ERR_USAGE, "--rank: give a rank between 1 and %d", MK_PEFT_MAX_R);
    if (s == MK_OK) s = parse_out_dtype(a.dtype, &a.lo.dtype);
    if (s == MK_OK) s = svd_opts_check(&a.so);
    if (s == MK_OK) s = extract(pos, &a, &c);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}

/* ---- combine ----------------------------------------------------------------------------------- */

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

/* The input adapters, opened and described for lora/combine (modules and whole tensors of
 * all adapters in two flat arrays the descriptions point into). */
typedef struct cb_inputs {
    size_t n;
    mk_peft_adapter **ad;
    mk_lora_input *in;
    mk_lora_in_module *mods;
    mk_lora_in_whole *whole;
    bool fifo;            /* fan_in_fan_out, the same in all */
    mk_source *base;      /* --base, or NULL */
    mk_arch arch;         /* the base's (for the other spelling of its tensor names) */
    bool have_arch;
} cb_inputs;

static void cb_close(cb_inputs *ci)
{
    for (size_t i = 0; i < ci->n && ci->ad; i++) mk_peft_close(ci->ad[i]);
    free(ci->ad);
    free(ci->in);
    free(ci->mods);
    free(ci->whole);
    mk_arch_free(&ci->arch);
    mk_source_close(ci->base);
}

/* Adapter i checked (same fan_in_fan_out as the first, no LoRA biases) and described in
 * ci->in[i], its modules and whole tensors written from *m and *w on. */
static mk_status cb_describe(cb_inputs *ci, size_t i, char *const *paths, double weight, mk_lora_in_module **m,
                             mk_lora_in_whole **w)
{
    const mk_peft_adapter *a = ci->ad[i];
    if (i == 0) ci->fifo = a->cfg.fan_in_fan_out;
    else if (a->cfg.fan_in_fan_out != ci->fifo)
        return mk_error(MK_ERR_USAGE, "%s: fan_in_fan_out differs from %s's; adapters of one base agree on it", paths[i],
                        paths[0]);
    for (size_t q = 0; q < a->lay.n_modules; q++)
        if (a->lay.m[q].bias >= 0)
            return mk_error(MK_ERR_UNSUPPORTED, "%s: module %s has lora_B.bias; adapters with LoRA biases cannot be combined",
                            paths[i], a->lay.m[q].module);
    mk_lora_input *in = &ci->in[i];
    *in = (mk_lora_input){paths[i], a->src, *m, a->lay.n_modules, *w, a->lay.n_full,
                          (const char *const *)a->cfg.modules_to_save, a->cfg.n_save, adapter_max_rank(&a->cfg), weight};
    for (size_t q = 0; q < a->lay.n_modules; q++) {
        const mk_peft_module *pm = &a->lay.m[q];
        *(*m)++ = (mk_lora_in_module){pm->module, pm->a, pm->b, pm->embedding, pm->r, pm->scale};
    }
    for (size_t q = 0; q < a->lay.n_full; q++) {
        const mk_peft_full *f = &a->lay.full[q];
        long bi = ci->base ? mk_peft_base_find(ci->base, ci->have_arch ? &ci->arch : NULL, f->name) : -1;
        *(*w)++ = (mk_lora_in_whole){f->name, f->index, bi};
    }
    return MK_OK;
}

static mk_status cb_open(cb_inputs *ci, char *const *paths, size_t n, const double *weights, const char *base)
{
    if (base) {
        MK_TRY(mk_cli_open_model_values(base, &ci->base));
        ci->have_arch = mk_arch_of_source(ci->base, &ci->arch) == MK_OK;
        if (!ci->have_arch) mk_error_clear();
    }
    ci->n = n;
    ci->ad = mk_calloc(n, sizeof *ci->ad);
    ci->in = mk_calloc(n, sizeof *ci->in);
    if (!ci->ad || !ci->in) return MK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) MK_TRY(mk_peft_open(paths[i], &ci->ad[i]));
    size_t nm = 0, nw = 0;
    for (size_t i = 0; i < n; i++) {
        nm += ci->ad[i]->lay.n_modules;
        nw += ci->ad[i]->lay.n_full;
    }
    ci->mods = mk_calloc(nm + 1, sizeof *ci->mods);
    ci->whole = mk_calloc(nw + 1, sizeof *ci->whole);
    if (!ci->mods || !ci->whole) return MK_ERR_NOMEM;
    mk_lora_in_module *m = ci->mods;
    mk_lora_in_whole *w = ci->whole;
    for (size_t i = 0; i < n; i++) MK_TRY(cb_describe(ci, i, paths, weights[i], &m, &w));
    return MK_OK;
}

typedef struct combine_args {
    const char *method, *weights, *dtype, *base;
    bool force;
    svd_opts so;
    mk_lora_combine_opts lo;
} combine_args;

static mk_status combine_check(combine_args *a)
{
    const char *method = a->method;
    mk_lora_combine_method meth = MK_LORA_COMBINE_COUNT;
    for (int i = 0; i < MK_LORA_COMBINE_COUNT && method; i++)
        if (strcmp(method, mk_lora_combine_names[i]) == 0) meth = (mk_lora_combine_method)i;
    bool pruned = meth == MK_LORA_TIES || meth == MK_LORA_DARE_LINEAR;
    double density = a->lo.density;
    a->lo.method = meth;
    if (!method) return mk_error(MK_ERR_USAGE, "--method is required: cat, linear, svd, ties or dare_linear");
    if (meth == MK_LORA_COMBINE_COUNT) {
        const char *hint = mk_did_you_mean(method, mk_lora_combine_names, MK_LORA_COMBINE_COUNT);
        return mk_error(MK_ERR_USAGE, "--method: unknown '%s'%s%s%s (cat, linear, svd, ties, dare_linear)", method,
                        hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
    }
    MK_TRY(parse_out_dtype(a->dtype, &a->lo.dtype));
    if (a->lo.rank < 0 || a->lo.rank > MK_PEFT_MAX_R)
        return mk_error(MK_ERR_USAGE, "--rank: %ld is not between 1 and %d", a->lo.rank, MK_PEFT_MAX_R);
    if (meth == MK_LORA_CAT && a->lo.rank)
        return mk_error(MK_ERR_USAGE, "--rank does not apply to cat (its rank is the sum of the ranks)");
    if (pruned && !(density > 0 && density <= 1))
        return mk_error(MK_ERR_USAGE, "--method %s needs --density D with 0 < D <= 1", method);
    if (!pruned && density != -1) return mk_error(MK_ERR_USAGE, "--density applies to ties and dare_linear only");
    MK_TRY(svd_opts_check(&a->so));
    a->lo.svd = a->so.lo;
    return MK_OK;
}

/* Combine the adapters pos[0..na) into pos[na]. */
static mk_status combine(char *const *pos, size_t na, combine_args *a, const mk_common *c)
{
    const char *out = pos[na];
    double *w = mk_calloc(na, sizeof *w);
    if (!w) return MK_ERR_NOMEM;
    const char **ins = mk_calloc(na + 1, sizeof *ins); /* the adapters, then --base */
    if (!ins) {
        free(w);
        return MK_ERR_NOMEM;
    }
    memcpy(ins, pos, na * sizeof *ins);
    ins[na] = a->base;
    mk_status s = parse_weights(a->weights, na, w);
    if (s == MK_OK) s = mk_cli_check_output(out, ins, na + 1);
    cb_inputs ci = {0};
    mk_lora_plan p = {0};
    mk_output o = {0};
    char *text = NULL;
    if (s == MK_OK) s = cb_open(&ci, pos, na, w, a->base);
    a->lo.base = ci.base;
    if (s == MK_OK) s = mk_lora_combine_plan(ci.in, na, &a->lo, &peft_names, &p);
    if (s == MK_OK) s = adapter_begin(out, a->force, ci.ad[0]->cfg.base_model, &p, ci.fifo, &o, &text);
    if (s == MK_OK) s = mk_lora_combine_run(&p, ci.in, na, &a->lo, o.k);
    if (s == MK_OK) s = adapter_finish(&o, text);
    if (s == MK_OK) {
        report(&p, out, a->method, c, a->lo.method != MK_LORA_CAT);
        if (!c->quiet)
            fprintf(stderr, "mergekit-c: wrote %s: %zu module(s) combined by %s from %zu adapters\n", out, p.n_modules,
                    a->method, na);
    }
    free(text);
    mk_output_close(&o);
    mk_lora_plan_free(&p);
    cb_close(&ci);
    free(ins);
    free(w);
    return s;
}

static int cmd_combine(int argc, char **argv)
{
    mk_common c = {0};
    combine_args a = {.so = {"exact", 2, {false, 0}}, .lo = {.density = -1, .dtype = MK_F32}};
    const mk_opt opts[] = {
        {"method", 'm', MK_OPT_STR, &a.method, "NAME", "cat, linear, svd, ties or dare_linear", NULL},
        {"weights", 'w', MK_OPT_STR, &a.weights, "W1,W2,..", "one weight per adapter", "1 each"},
        {"rank", 'r', MK_OPT_INT, &a.lo.rank, "R", "rank of the result (linear: sum of ranks; svd, ties, dare_linear: the largest)", NULL},
        {"density", 0, MK_OPT_DOUBLE, &a.lo.density, "D", "share of each update kept (ties: by magnitude; dare_linear: at random)", NULL},
        {"seed", 0, MK_OPT_U64, &a.lo.seed, "N", "seed for dare_linear", "0"},
        {"base", 0, MK_OPT_STR, &a.base, "MODEL", "the adapters' base model: tensors they save whole are combined as differences from it", NULL},
        {"dtype", 0, MK_OPT_STR, &a.dtype, "DTYPE", "adapter dtype: float32, bfloat16, float16", "float32"},
        SVD_OPTS(a.so),
        {"force", 'f', MK_OPT_FLAG, &a.force, NULL, "replace OUT if it exists", NULL},
        MK_COMMON_OPTS(c),
        MK_HUB_OPTS(c),
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
        "The result has lora_alpha = r (scale 1). Tensors an adapter saves whole (modules_to_save, biases\n"
        "of LoRA layers) are copied; two adapters saving the same tensor need --base BASE, and then every\n"
        "whole tensor is BASE + the method's combination of the differences W_i - BASE (a copy where that\n"
        "is the same). A module one adapter saves whole and another adapts with LoRA is an error (PEFT\n"
        "cannot load both in one adapter).",
        opts, 3, 64, 0};
    char *pos[64];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    mk_status s = combine_check(&a);
    for (size_t i = 0; i + 1 < npos && s == MK_OK; i++) s = mk_cli_resolve_model(&pos[i]);
    if (s == MK_OK) s = combine(pos, npos - 1, &a, &c);
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
