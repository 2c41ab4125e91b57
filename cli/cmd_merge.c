/* cmd_merge.c - `mergekit-c merge RECIPE OUT` (and `mergekit-c RECIPE OUT`).
 * recipe -> open models (headers only) -> plan (all validation) -> [--dry-run: print] ->
 * hash inputs -> OUT.tmp: shards streamed by the executor, config.json, tokenizer files,
 * mergekit_config.yml, mergekit-c.json (provenance), README.md -> fsync -> rename to OUT.
 * --check re-runs the recorded merge into a temporary folder and compares file hashes.
 */
#include "cli.h"
#include "merge_hash.h"

#include "../core/mk_hash.h"
#include "../core/mk_hubfetch.h"
#include "../core/mk_io.h"
#include "../core/mk_json.h"
#include "../core/mk_thread.h"
#include "../formats/mkz.h"
#include "../formats/output.h"
#include "../formats/safetensors.h"
#include "../formats/hfconfig.h"
#include "../merge/exec.h"
#include "../merge/plan.h"
#include "../quant/quant.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROVENANCE_FILE "mergekit-c.json"
#define RECIPE_COPY "mergekit_config.yml"

typedef struct merge_opts {
    mk_common c;
    uint64_t shard_size;
    bool dry_run, force, resume, check, allow_crimes;
    const char *seed_str, *out_dtype;
    uint64_t chunk, pass_cache, hold; /* --chunk, --pass-cache, --hold */
    const char *quantize;   /* --quantize SPEC, or NULL */
    const char *out_type;   /* --out-type T: the tensor type of an OUT.gguf */
    const char *on_nonfinite;
    const char *compress; /* --compress[=LEVEL]: "" or the level */
    int level;
    bool mkz;             /* OUT is a .mkz container */
    mk_cli_eval_opts eval; /* --eval-text: score OUT against its inputs at the end */
    const char *report;    /* --report FILE: the HTML page of the merge's task vectors */
    mk_mergekit_opts mk;   /* mergekit-yaml's options */
    mk_cli_parts parts;    /* --part I/N: one part of a split output */
    const mk_parts_manifest *finalize; /* `finalize`: OUT from the parts in OUT.tmp */
    int argc;              /* the command line, for a part's manifest */
    char **argv;
} merge_opts;

typedef struct merge_run {
    const mk_recipe *r;
    const char *out;
    const char *gguf;        /* OUT ending in .gguf: it; out is then the folder it is made from */
    merge_opts *o;
    uint64_t seed;
    mk_dtype out_dtype;
    mk_source **src;
    const mk_model_ref *refs[1024];
    size_t n_refs;
    mk_plan plan;
    mk_input_hashes ih;
    mk_output w;             /* OUT (or the --check scratch folder) and its side files */
    mk_qopts qo;             /* with --quantize */
    mk_qplan qplan;
    char *quantize_rec;      /* --check: the recorded --quantize */
    size_t tok_donor;        /* the model whose tokenizer files OUT gets (tokenizer_donor) */
    char *plan_key;          /* split outputs: the plan's hash */
    bool part_done;          /* --part: this part is already complete */
    mk_parts_manifest man;   /* --part: what this part records in OUT.tmp */
    mk_tokmerge tok;         /* tokenizer_source set: the merged vocabulary (tokmerge.h) */
} merge_run;


/* ---- inputs ---------------------------------------------------------------------------- */

static mk_status open_inputs(merge_run *m)
{
    const mk_recipe *r = m->r;
    m->n_refs = mk_recipe_models(r, m->refs, 1024);
    m->src = mk_calloc(m->n_refs ? m->n_refs : 1, sizeof *m->src);
    if (!m->src) return MK_ERR_NOMEM;
    for (size_t i = 0; i < m->n_refs; i++) {
        const mk_model_ref *ref = m->refs[i];
        if (!mk_path_exists(ref->path))
            return mk_error(MK_ERR_RECIPE,
                            "%s:%d:%d: model '%s' not found (a local folder or model file, or a Hugging Face "
                            "model id in the cache)",
                            r->path, ref->pos.line, ref->pos.col, ref->path);
        if (ref->lora && !mk_path_exists(ref->lora))
            return mk_error(MK_ERR_RECIPE, "%s:%d:%d: model '%s': LoRA adapter '%s' not found (a local PEFT adapter folder)",
                            r->path, ref->pos.line, ref->pos.col, ref->text, ref->lora);
        /* base+adapter: the adapter is merged on the fly as tensors are read (no cache folder) */
        mk_status s = ref->lora ? mk_cli_open_lora(ref->path, ref->lora, &m->src[i]) : mk_cli_open_model_values(ref->path, &m->src[i]);
        if (s != MK_OK && ref->lora) return mk_error_prefix(s, "%s:%d:%d: model '%s'", r->path, ref->pos.line, ref->pos.col, ref->text);
        MK_TRY(s);
    }
    return MK_OK;
}

/* OUT must not overlap any model or adapter the recipe reads. */
static mk_status check_out_path(merge_run *m)
{
    const char *ins[2048];
    size_t n = 0;
    for (size_t i = 0; i < m->n_refs && n + 2 <= 2048; i++) {
        ins[n++] = m->refs[i]->path;
        ins[n++] = m->refs[i]->lora;
    }
    if (m->gguf) MK_TRY(mk_cli_check_output(m->gguf, ins, n));
    return mk_cli_check_output(m->out, ins, n);
}

/* The input hashing (merge_hash.h): on a thread beside the merge, or now. */
static mk_status hash_start(mk_merge_hash *h, merge_run *m, bool now)
{
    /* a part hashes its share of the files, not those it merges from: nothing to keep pace with */
    *h = (mk_merge_hash){.src = m->src, .n_src = m->n_refs, .part = m->o->parts.p,
                         .recorded = m->o->finalize ? &m->w.inputs : NULL, .ih = &m->ih, .unpaced = m->o->parts.p.n > 0};
    return now ? mk_merge_hash_now(h) : mk_merge_hash_start(h);
}

/* ---- outputs --------------------------------------------------------------------------- */

/* The donor's config.json with the output dtype, layer count, vocabulary size and
 * quantization_config of this merge. */
static mk_status config_text(merge_run *m, char **text)
{
    const mk_plan *p = &m->plan;
    mk_source *donor = p->models[p->config_donor].src;
    const mk_arch *a = &p->models[p->config_donor].arch;
    mk_dtype od = p->n ? p->t[0].out.dtype : MK_BF16;
    for (size_t i = 0; i < p->n; i++)
        if (mk_dtype_info(p->t[i].out.dtype)->is_float) {
            od = p->t[i].out.dtype;
            break;
        }
    char *qc = m->o->quantize ? mk_qplan_config_json(&m->qplan) : NULL;
    if (m->o->quantize && !qc) return MK_ERR_NOMEM;
    mk_hfconfig_edit e = {mk_dtype_info(od)->torch_name, NULL, 0, NULL, 0, qc, false, NULL};
    if (p->out_layers >= 0) {
        e.layers_key = mk_arch_layers_key(a);
        e.layers = p->out_layers;
    }
    if (p->vocab_rows) {
        e.vocab_key = mk_arch_vocab_key(a);
        e.vocab = (long)p->vocab_rows;
    }
    char *cfg = NULL;
    size_t len = 0;
    *text = NULL;
    mk_status s = donor->ops->aux_read(donor, "config.json", 16u << 20, &cfg, &len);
    if (s == MK_OK && !cfg) /* the plan saw it */
        s = mk_error(MK_ERR_IO, "%s: config.json disappeared during the merge", donor->path);
    if (s == MK_OK) s = mk_hfconfig_rewrite(cfg, donor->path, &e, text);
    free(cfg);
    free(qc);
    return s;
}

static mk_status write_config(merge_run *m)
{
    char *text;
    MK_TRY(config_text(m, &text));
    mk_status s = mk_output_file(&m->w, "config.json", text, strlen(text));
    free(text);
    return s;
}

/* The plan's model a recipe's tokenizer setting names (as written, or by its resolved key). */
static mk_status plan_model_named(merge_run *m, const char *name, const char *key, mk_pos pos, const char *what,
                                  size_t *out)
{
    const mk_plan *p = &m->plan;
    bool found = false;
    for (size_t i = 0; i < p->n_models; i++)
        if (strcmp(p->models[i].ref->text, name) == 0 || (key && strcmp(p->models[i].ref->key, key) == 0)) {
            *out = i;
            found = true;
        }
    if (!found)
        return mk_error(MK_ERR_RECIPE, "%s:%d:%d: %s '%s' is not one of the recipe's models", m->r->path, pos.line,
                        pos.col, what, name);
    return MK_OK;
}

/* The model whose tokenizer files OUT gets: the recipe's tokenizer_source, else the config
 * donor. Found right after planning, so that a tokenizer_source naming no model of the recipe
 * fails before any weight is merged. */
static mk_status tokenizer_donor(merge_run *m)
{
    size_t tok = (size_t)m->plan.donor;
    const char *ts = m->r->tokenizer_source;
    if (ts && strcmp(ts, "base") != 0 && strcmp(ts, "union") != 0) /* mk_recipe_load resolved its key */
        MK_TRY(plan_model_named(m, ts, m->r->tokenizer_key, m->r->tokenizer_pos, "tokenizer_source", &tok));
    m->tok_donor = tok;
    return MK_OK;
}

/* The recipe's chat_template picked from its models (OUT's chat_template.jinja), or NULL. */
static mk_status pick_chat(merge_run *m, char **chat)
{
    const mk_plan *p = &m->plan;
    *chat = NULL;
    if (!m->r->chat_template) return MK_OK;
    mk_source *srcs[1024];
    for (size_t i = 0; i < p->n_models; i++) srcs[i] = p->models[i].src;
    return mk_chat_template_pick(srcs, p->n_models, m->r->chat_template, chat);
}

/* OUT's tokenizer file f (one of mk_tokenizer_files): the merged vocabulary's or the recipe's
 * chat template where they replace it, else the tokenizer donor's; NULL when absent. *own
 * (to free) holds it when it was read. */
static mk_status tok_file(merge_run *m, const char *chat, const char *f, const char **data, size_t *len, char **own)
{
    *data = NULL;
    *len = 0;
    *own = NULL;
    if (strcmp(f, "chat_template.jinja") == 0 && chat) *data = chat, *len = strlen(chat);
    else if (strcmp(f, "tokenizer.json") == 0 && m->tok.tokenizer_json)
        *data = m->tok.tokenizer_json, *len = m->tok.tokenizer_json_len;
    else if (strcmp(f, "tokenizer_config.json") == 0 && m->tok.tokenizer_config)
        *data = m->tok.tokenizer_config, *len = m->tok.tokenizer_config_len;
    else {
        mk_source *d = m->plan.models[m->tok_donor].src;
        MK_TRY(d->ops->aux_read(d, f, (uint64_t)512 << 20, own, len));
        *data = *own;
    }
    return MK_OK;
}

/* mergekit --no-copy-tokenizer: no tokenizer files, unless the recipe names a tokenizer
 * source (then mergekit builds and saves one whatever the option says) */
static bool has_tokenizer(const merge_run *m) { return m->o->mk.copy_tokenizer >= 0 || m->r->tokenizer_source; }

static mk_status copy_tokenizer(merge_run *m)
{
    if (!has_tokenizer(m)) return MK_OK;
    size_t before = m->w.n_files;
    char *chat;
    MK_TRY(pick_chat(m, &chat));
    mk_status s = MK_OK;
    for (const char *const *f = mk_tokenizer_files; s == MK_OK && *f; f++) {
        const char *data;
        size_t len;
        char *own;
        s = tok_file(m, chat, *f, &data, &len, &own);
        if (s == MK_OK && data) s = mk_output_file(&m->w, *f, data, len);
        free(own);
    }
    free(chat);
    MK_TRY(s);
    /* mergekit logs "Failed to copy tokenizer" and finishes the merge */
    if (m->w.n_files == before)
        mk_warn("%s has no tokenizer files; the output has none (copy them from the model it was made from)",
                m->plan.models[m->tok_donor].ref->text);
    return MK_OK;
}

static void provenance_json(merge_run *m, const mk_sink *k, mk_buf *b)
{
    mk_hash128 rh = mk_hash128_bytes(m->r->text, m->r->text_len);
    char rhex[33];
    mk_hash128_hex(rh, rhex);
    mk_buf_printf(b, "{\n  \"tool\": \"mergekit-c %s\",\n  \"recipe\": \"%s\",\n  \"recipe_xxh128\": \"%s\",\n", MK_VERSION,
                  RECIPE_COPY, rhex);
    mk_buf_printf(b, "  \"options\": {\"out_shard_size\": %llu, \"random_seed\": %llu, \"allow_crimes\": %s, \"out_dtype\": ",
                  (unsigned long long)m->o->shard_size, (unsigned long long)m->seed, m->o->allow_crimes ? "true" : "false");
    if (m->out_dtype != MK_DTYPE_NONE) mk_buf_json_str(b, mk_dtype_info(m->out_dtype)->torch_name);
    else mk_buf_puts(b, "null");
    mk_buf_puts(b, ", \"quantize\": ");
    if (m->o->quantize) mk_buf_json_str(b, m->o->quantize);
    else mk_buf_puts(b, "null");
    mk_buf_puts(b, "},\n  \"inputs\": [");
    for (size_t i = 0; i < m->ih.n; i++) {
        mk_buf_puts(b, i ? ",\n    " : "\n    ");
        mk_buf_puts(b, "{\"model\": ");
        mk_buf_json_str(b, m->refs[m->ih.model_of[i]]->text);
        mk_buf_puts(b, ", \"file\": ");
        mk_buf_json_str(b, m->ih.files[i].name);
        if (m->ih.sha256[i][0]) mk_buf_printf(b, ", \"sha256\": \"%s\"}", m->ih.sha256[i]);
        else mk_buf_printf(b, ", \"xxh128\": \"%s\"}", m->ih.files[i].hash);
    }
    mk_buf_puts(b, "\n  ],\n  \"outputs\": [");
    bool first = true;
    mk_cli_json_files(b, k->out_files, k->n_out_files, &first, "    ");
    mk_cli_json_files(b, m->w.files, m->w.n_files, &first, "    ");
    mk_buf_puts(b, "\n  ]\n}\n");
}

static void card_text(merge_run *m, const mk_sink *k, mk_buf *b)
{
    char *title = mk_path_basename(m->out);
    const mk_plan *p = &m->plan;
    mk_buf_printf(b, "---\nlibrary_name: transformers\ntags:\n- mergekit-c\n- merge\n---\n# %s\n\n", title ? title : "merge");
    mk_buf_printf(b, "This is a merge of pre-trained language models created with mergekit-c %s.\n\n", MK_VERSION);
    mk_buf_printf(b, "## Merge details\n\nMethod: `%s` (%s).", p->method->name, p->method->summary);
    if (m->r->has_base) mk_buf_printf(b, " Base model: `%s`.", m->r->base.text);
    mk_buf_puts(b, "\n\nModels merged:\n\n");
    for (size_t i = 0; i < p->n_models; i++) mk_buf_printf(b, "- `%s`\n", p->models[i].ref->text);
    mk_buf_puts(b, "\n## Configuration\n\n```yaml\n");
    mk_buf_put(b, m->r->text, m->r->text_len);
    if (m->r->text_len && m->r->text[m->r->text_len - 1] != '\n') mk_buf_puts(b, "\n");
    mk_buf_puts(b, "```\n\n## Provenance\n\nXXH3-128 hashes (check one with `xxhsum -H2 FILE`).\n\n| input file | xxh128 |\n|---|---|\n");
    for (size_t i = 0; i < m->ih.n; i++)
        mk_buf_printf(b, "| `%s` | `%s%s` |\n", m->ih.files[i].name, m->ih.sha256[i][0] ? "sha256:" : "",
                      m->ih.sha256[i][0] ? m->ih.sha256[i] : m->ih.files[i].hash);
    mk_buf_puts(b, "\n| output file | bytes | xxh128 |\n|---|---|---|\n");
    for (size_t i = 0; i < k->n_out_files; i++)
        mk_buf_printf(b, "| `%s` | %llu | `%s` |\n", k->out_files[i].name, (unsigned long long)k->out_files[i].size,
                      k->out_files[i].hash);
    for (size_t i = 0; i < m->w.n_files; i++)
        mk_buf_printf(b, "| `%s` | %llu | `%s` |\n", m->w.files[i].name, (unsigned long long)m->w.files[i].size,
                      m->w.files[i].hash);
    if (m->o->mkz) /* the recipe copy is inside the container */
        mk_buf_printf(b, "\nTo prove the merge reproduces, from the folder it was run in: `mergekit-c unpack %s %s.d && "
                         "mergekit-c %s.d/%s %s --check` (re-derives every output hash from the recorded inputs).\n",
                      m->out, m->out, m->out, RECIPE_COPY, m->out);
    else
        mk_buf_printf(b, "\nTo prove the merge reproduces, from the folder it was run in: `mergekit-c %s/%s %s --check` "
                         "(re-derives every output hash from the recorded inputs).\n",
                      m->out, RECIPE_COPY, m->out);
    free(title);
}

/* ---- dry run ----------------------------------------------------------------------------- */

/* Bytes of the tensors the plan reads that are still to be fetched from the Hub (files being
 * fetched: core/mk_hubfetch.h), and of those files in all. */
static void hub_fetch_bytes(const mk_plan *p, uint64_t *fetch, uint64_t *total)
{
    *fetch = *total = 0;
    for (size_t mi = 0; mi < p->n_models; mi++) {
        mk_source *src = p->models[mi].src;
        bool any = false;
        char sha[65];
        for (size_t f = 0; f < src->n_files; f++)
            if (mk_hub_remote_sha256(src->files[f], sha)) {
                struct stat st;
                if (stat(src->files[f], &st) == 0) *total += (uint64_t)st.st_size;
                any = true;
            }
        if (!any) continue;
        bool *used = mk_calloc(src->n_tensors ? src->n_tensors : 1, sizeof *used);
        if (!used) return;
        for (size_t i = 0; i < p->n; i++)
            for (size_t k = 0; k < p->t[i].job.n_in; k++)
                if (p->t[i].in[k].model == mi) used[p->t[i].in[k].tensor] = true;
        for (size_t i = 0; i < src->n_tensors; i++) {
            const mk_tensor_info *t = &src->tensors[i];
            if (used[i] && t->file < src->n_files) *fetch += mk_hub_missing(src->files[t->file], t->offset, t->nbytes);
        }
        free(used);
    }
}

static void print_plan(merge_run *m)
{
    const mk_plan *p = &m->plan;
    uint64_t fetch, fetch_total;
    hub_fetch_bytes(p, &fetch, &fetch_total);
    uint32_t *shard_of = mk_calloc(p->n ? p->n : 1, sizeof *shard_of);
    size_t ns = shard_of ? mk_st_assign_shards(p->outs, p->n, m->o->shard_size, shard_of) : 1;
    int threads = mk_threads_get();
    uint64_t peak = mk_plan_peak_memory(p, threads, m->o->chunk ? m->o->chunk : MK_EXEC_CHUNK_DEFAULT, m->o->pass_cache, m->o->hold);
    char a[32], b[32];
    if (m->o->c.json) {
        mk_buf j = {0};
        mk_buf_printf(&j, "{\"method\": \"%s\", \"models\": %zu, \"tensors\": %zu, \"bytes\": %llu, \"shards\": [", p->method->name,
                      p->n_models, p->n, (unsigned long long)p->total_bytes);
        for (size_t s = 0; s < ns; s++) {
            uint64_t bytes = 0;
            size_t cnt = 0;
            for (size_t i = 0; i < p->n; i++)
                if (shard_of && shard_of[i] == s) bytes += p->outs[i].nbytes, cnt++;
            char *nm = mk_st_shard_name(s, ns);
            mk_buf_printf(&j, "%s{\"name\": \"%s\", \"tensors\": %zu, \"bytes\": %llu}", s ? ", " : "", nm ? nm : "?", cnt,
                          (unsigned long long)bytes);
            free(nm);
        }
        mk_buf_printf(&j, "], \"threads\": %d, \"peak_memory_bytes\": %llu, \"out_layers\": %ld, \"hub_fetch_bytes\": %llu, "
                      "\"plan\": [", threads, (unsigned long long)peak, p->out_layers, (unsigned long long)fetch);
        for (size_t i = 0; i < p->n; i++) {
            const mk_plan_tensor *t = &p->t[i];
            char sh[160];
            mk_buf_puts(&j, i ? ",\n  " : "\n  ");
            mk_buf_puts(&j, "{\"name\": ");
            mk_buf_json_str(&j, t->out.name);
            mk_buf_printf(&j, ", \"dtype\": \"%s\", \"shape\": %s, \"bytes\": %llu, \"op\": \"%s\", \"t\": %.17g, \"inputs\": [",
                          mk_dtype_name(t->out.dtype), mk_shape_str(&t->out, sh), (unsigned long long)t->out.nbytes,
                          t->identity ? "copy" : p->method->name, t->t);
            for (size_t k = 0; k < t->job.n_in; k++) {
                const mk_plan_model *pm = &p->models[t->in[k].model];
                mk_buf_puts(&j, k ? ", {\"model\": " : "{\"model\": ");
                mk_buf_json_str(&j, pm->ref->text);
                mk_buf_puts(&j, ", \"tensor\": ");
                mk_buf_json_str(&j, pm->src->tensors[t->in[k].tensor].name);
                mk_buf_puts(&j, "}");
            }
            mk_buf_puts(&j, "]}");
        }
        mk_buf_puts(&j, "\n]}\n");
        fputs(j.data ? j.data : "{}\n", stdout);
        mk_buf_free(&j);
    } else {
        printf("plan: %s over %zu model(s): %zu tensors, %s in %zu shard(s)\n", p->method->name, p->n_models, p->n,
               mk_fmt_bytes(p->total_bytes, a), ns);
        if (p->out_layers >= 0) printf("output layers: %ld\n", p->out_layers);
        printf("peak memory estimate: %s at %d thread(s)\n", mk_fmt_bytes(peak, b), threads);
        if (fetch_total) {
            char c[32];
            printf("to fetch from the Hub: %s of the tensors it reads (the weight files are %s; headers and side files "
                   "are fetched already)\n", mk_fmt_bytes(fetch, a), mk_fmt_bytes(fetch_total, c));
        }
        for (size_t i = 0; i < p->n; i++) {
            const mk_plan_tensor *t = &p->t[i];
            char sh[160];
            printf("  %-60s %-5s %-16s %-11s", t->out.name, mk_dtype_name(t->out.dtype), mk_shape_str(&t->out, sh),
                   t->identity ? "copy" : p->method->name);
            for (size_t k = 0; k < t->job.n_in; k++) {
                const mk_plan_model *pm = &p->models[t->in[k].model];
                const char *in_name = pm->src->tensors[t->in[k].tensor].name;
                printf(" %s%s%s", pm->ref->text, strcmp(in_name, t->out.name) ? ":" : "",
                       strcmp(in_name, t->out.name) ? in_name : "");
            }
            printf("\n");
        }
    }
    free(shard_of);
}

/* ---- the merge ---------------------------------------------------------------------------- */

/* Identity of the job for --resume: tool version, options, recipe, and each input file's
 * path, size, modification time and inode (content hashes come later, from the thread).
 * For a split output (split = true) the inputs are named by size alone, as hosts may see
 * them at other paths, and the output tensors are added (mk_parts_plan_hash). */
static char *job_key(merge_run *m, bool split)
{
    mk_buf b = {0};
    mk_buf_printf(&b, "mergekit-c %s|%llu|%llu|%d|%d|", MK_VERSION, (unsigned long long)m->o->shard_size,
                  (unsigned long long)m->seed, m->o->allow_crimes, (int)m->out_dtype);
    mk_buf_put(&b, m->r->text, m->r->text_len);
    for (size_t i = 0; i < m->n_refs; i++)
        for (size_t f = 0; f < m->src[i]->n_files; f++) {
            struct stat st;
            char sha[65];
            if (stat(m->src[i]->files[f], &st) != 0) memset(&st, 0, sizeof st);
            /* a file still being fetched from the Hub: its sha256 there, not its size so far */
            if (split && mk_hub_remote_sha256(m->src[i]->files[f], sha)) mk_buf_printf(&b, "|%s", sha);
            else if (split) mk_buf_printf(&b, "|%lld", (long long)st.st_size);
            else
                mk_buf_printf(&b, "|%s|%lld|%lld.%09ld|%llu", m->src[i]->files[f], (long long)st.st_size,
                              (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (unsigned long long)st.st_ino);
        }
    if (m->o->quantize) mk_buf_printf(&b, "|quantize %s", m->o->quantize);
    if (split) {
        const mk_tensor_info *t = m->o->quantize ? m->qplan.out : m->plan.outs;
        size_t n = m->o->quantize ? m->qplan.n_out : m->plan.n;
        char *key = b.failed ? NULL : mk_parts_plan_hash(b.data, b.len, t, n);
        mk_buf_free(&b);
        return key;
    }
    char hex[33];
    mk_hash128_hex(mk_hash128_bytes(b.data ? b.data : "", b.len), hex);
    mk_buf_free(&b);
    return mk_strdup(hex);
}

static mk_status resume_complete(merge_run *m);

/* --check: the inputs must be the ones recorded in OUT's provenance. */
static mk_status check_inputs(merge_run *m, const mk_json *expect)
{
    mk_merge_hash hj;
    MK_TRY(hash_start(&hj, m, true));
    uint32_t ins = mk_json_get(expect, 0, "inputs");
    for (uint32_t c = ins ? mk_json_at(expect, ins)->first : 0; c; c = mk_json_at(expect, c)->next) {
        uint32_t f = mk_json_get(expect, c, "file"), h = mk_json_get(expect, c, "xxh128");
        uint32_t sh = mk_json_get(expect, c, "sha256");
        if (!f || (!h && !sh)) continue;
        bool ok = false, seen = false;
        const char *fn = mk_json_strv(expect, f);
        for (size_t i = 0; i < m->ih.n && !seen; i++) {
            if (strcmp(m->ih.files[i].name, fn) != 0) continue;
            seen = true;
            char got[65];
            if (h) ok = !m->ih.sha256[i][0] && strcmp(m->ih.files[i].hash, mk_json_strv(expect, h)) == 0;
            else if (m->ih.sha256[i][0]) ok = strcmp(m->ih.sha256[i], mk_json_strv(expect, sh)) == 0;
            else {
                MK_TRY(mk_sha256_file(fn, got));
                ok = strcmp(got, mk_json_strv(expect, sh)) == 0;
            }
        }
        if (!seen) return mk_error(MK_ERR_MISMATCH, "input file %s recorded in the output is not used by the recipe now", fn);
        if (!ok)
            return mk_error(MK_ERR_MISMATCH, "input file %s changed since the merge (%s differs from the record)", fn,
                            h ? "xxh128" : "sha256");
    }
    return MK_OK;
}

/* A split output: the plan's hash; for a part, its manifest; for finalize, the plan must be
 * the one the parts recorded. */
static mk_status split_plan(merge_run *m)
{
    if (!m->o->parts.p.n && !m->o->finalize) return MK_OK;
    m->plan_key = job_key(m, true);
    if (!m->plan_key) return MK_ERR_NOMEM;
    if (m->o->finalize) {
        if (strcmp(m->plan_key, m->o->finalize->plan) != 0)
            return mk_error(MK_ERR_MISMATCH,
                            "%s.tmp: the parts were written for another plan than this recipe, its inputs and options make "
                            "now; rerun every part, then finalize",
                            m->out);
        return MK_OK;
    }
    MK_TRY(mk_cli_parts_manifest(&m->man, "merge", m->o->argc, m->o->argv, m->plan_key, m->o->parts.p.n));
    char *tmp = mk_parts_tmp_path(m->out);
    if (!tmp) return MK_ERR_NOMEM;
    m->part_done = mk_parts_complete(tmp, m->o->parts.p, m->plan_key);
    free(tmp);
    return MK_OK;
}

/* OUT.tmp (or the --check scratch folder) with the sink for the plan's tensors, or for the
 * stored tensors they become with --quantize, and the consumer that fills it. */
static mk_status open_output(merge_run *m, const mk_json *expect, mk_consumer *cons)
{
    char *key = job_key(m, false);
    char *scratch = expect ? mk_asprintf("%s.check", m->out) : NULL;
    if (!key || (expect && !scratch)) {
        free(key);
        free(scratch);
        return MK_ERR_NOMEM;
    }
    /* --check re-derives into a plain folder: the same shard hashes */
    mk_output_opts oo = {.shard_size = m->o->shard_size, .force = m->o->force || expect, .resume = m->o->resume && !expect,
                         .resume_key = key, .compress = m->o->mkz && !expect, .level = m->o->level,
                         .part = m->o->parts.p, .finalize = m->o->finalize != NULL,
                         .manifest = m->o->finalize ? m->o->finalize : &m->man};
    const char *out = expect ? scratch : m->out;
    mk_status s = MK_OK;
    if (m->o->quantize) {
        /* quantize while streaming: each merged tensor becomes its stored tensors */
        s = mk_qplan_init(&m->qplan, &m->qo, &m->plan.models[m->plan.donor].arch, m->plan.outs, m->plan.n);
        if (s == MK_OK && (s = mk_qplan_check(&m->qplan)) != MK_OK) s = mk_error_prefix(s, "--quantize %s", m->o->quantize);
        if (s == MK_OK) s = mk_qplan_layout(&m->qplan);
        if (s == MK_OK) s = split_plan(m);
        if (s == MK_OK && m->part_done) {
            free(key);
            return MK_OK;
        }
        if (s == MK_OK) s = mk_output_begin(&m->w, out, &oo, m->qplan.out, m->qplan.n_out);
        if (s == MK_OK) s = mk_quant_consumer(cons, m->w.k, &m->qplan, false, m->o->allow_crimes);
    } else {
        s = split_plan(m);
        if (s == MK_OK && m->part_done) {
            free(key);
            return MK_OK;
        }
        if (s == MK_OK) s = mk_output_begin(&m->w, out, &oo, m->plan.outs, m->plan.n);
        if (s == MK_OK) s = mk_consumer_plain(cons, m->w.k, m->plan.outs, m->plan.n, m->o->allow_crimes);
    }
    free(key);
    free(scratch);
    return s;
}

/* --check: every output recorded in `expect` was made again with its recorded hash. */
static mk_status compare_outputs(merge_run *m, const mk_json *expect)
{
    const mk_sink *k = m->w.k;
    size_t compared = 0;
    uint32_t outs = mk_json_get(expect, 0, "outputs");
    for (uint32_t c = outs ? mk_json_at(expect, outs)->first : 0; c; c = mk_json_at(expect, c)->next) {
        uint32_t nn = mk_json_get(expect, c, "name"), hh = mk_json_get(expect, c, "xxh128");
        if (!nn || !hh) continue;
        const char *name = mk_json_strv(expect, nn), *want = mk_json_strv(expect, hh);
        const char *got = NULL;
        for (size_t i = 0; i < k->n_out_files; i++)
            if (strcmp(k->out_files[i].name, name) == 0) got = k->out_files[i].hash;
        for (size_t i = 0; i < m->w.n_files; i++)
            if (strcmp(m->w.files[i].name, name) == 0) got = m->w.files[i].hash;
        if (!got) return mk_error(MK_ERR_MISMATCH, "%s: recorded output %s was not produced again", m->out, name);
        if (strcmp(got, want) != 0)
            return mk_error(MK_ERR_MISMATCH, "%s: %s differs: recorded %s, re-derived %s", m->out, name, want, got);
        compared++;
    }
    if (!m->o->c.quiet)
        fprintf(stderr, "mergekit-c: %s: reproducible: %zu output file(s) match their recorded hashes\n", m->out, compared);
    if (m->o->c.json) printf("{\"check\": \"ok\", \"files\": %zu}\n", compared);
    return MK_OK;
}

/* After the tensors: config, tokenizer, recipe; seal; then the provenance record and model
 * card that list every file's hash (not for --check: the scratch output is compared). */
static mk_status write_side_files(merge_run *m, bool check, mk_buf *prov)
{
    /* mergekit --no-write-model-card: neither README.md nor mergekit_config.yml */
    bool card = m->o->mk.write_model_card >= 0;
    MK_TRY(write_config(m));
    MK_TRY(copy_tokenizer(m));
    if (card || check) MK_TRY(mk_output_file(&m->w, RECIPE_COPY, m->r->text, m->r->text_len));
    MK_TRY(mk_output_seal(&m->w));
    mk_testpoint(); /* index written */
    mk_buf text = {0};
    provenance_json(m, m->w.k, prov);
    if (card) card_text(m, m->w.k, &text);
    mk_status s = prov->failed || text.failed ? mk_error(MK_ERR_NOMEM, "out of memory writing the model card") : MK_OK;
    if (s == MK_OK && !check) s = m->w.k->ops->add_file(m->w.k, PROVENANCE_FILE, prov->data, prov->len);
    if (s == MK_OK && !check && card) s = m->w.k->ops->add_file(m->w.k, "README.md", text.data, text.len);
    mk_buf_free(&text);
    return s;
}

/* The tensors: the executor into `cons` (when s, the status so far, is MK_OK), beside the input
 * hashing started in hj, which is joined. */
static mk_status compute(merge_run *m, mk_consumer *cons, const char *what, mk_merge_hash *hj, mk_status s, mk_exec_stats *es)
{
    mk_progress prog;
    mk_progress_init(&prog, what, &m->o->c);
    mk_exec_opts eo = {m->o->chunk, m->seed, mk_progress_cb, &prog,
                       m->o->on_nonfinite && strcmp(m->o->on_nonfinite, "error") == 0 ? MK_NONFINITE_ERROR : MK_NONFINITE_WARN, m->o->pass_cache, NULL, NULL, m->o->hold, NULL};
    if (hj->started && !m->o->parts.p.n) { /* the input hashing keeps pace with the reads */
        eo.reading = mk_merge_hash_pace;
        eo.read_input = mk_merge_hash_input_read;
        eo.reading_ctx = hj;
    }
    double t0 = mk_now();
    if (s == MK_OK) s = mk_exec_run(&m->plan, cons, &eo, es);
    mk_progress_end(&prog);
    mk_info("computed and wrote %zu tensor(s) in %.2f s", es->computed, mk_now() - t0);
    uint64_t dio, cached;
    mk_dstream_totals(&dio, &cached);
    if (dio + cached)
        mk_info("streamed %.1f MiB of inputs: %.1f MiB with O_DIRECT, %.1f MiB from the page cache", (double)(dio + cached) / 1048576.0,
                (double)dio / 1048576.0, (double)cached / 1048576.0);
    mk_status hs = mk_merge_hash_join(hj);
    return s == MK_OK ? hs : s;
}

/* --dry-run --parts N (or --part I/N): how OUT's shards split between the parts. */
static mk_status print_split(merge_run *m)
{
    unsigned n = m->o->parts.parts ? (unsigned)m->o->parts.parts : m->o->parts.p.n;
    const mk_tensor_info *t = m->plan.outs;
    size_t nt = m->plan.n;
    if (m->o->quantize) {
        MK_TRY(mk_qplan_init(&m->qplan, &m->qo, &m->plan.models[m->plan.donor].arch, m->plan.outs, m->plan.n));
        MK_TRY(mk_qplan_layout(&m->qplan));
        t = m->qplan.out;
        nt = m->qplan.n_out;
    }
    mk_output_opts oo = {.shard_size = m->o->shard_size};
    mk_output_split sp;
    MK_TRY(mk_output_split_build(t, nt, &oo, n, &sp));
    mk_cli_parts_print(&sp, n, m->o->c.json, "shard");
    mk_output_split_free(&sp);
    return MK_OK;
}

/* --part I/N: this part's shards into the shared OUT.tmp, then its completion record. The index,
 * side files and provenance are finalize's. */
static mk_status run_part(merge_run *m)
{
    mk_part p = m->o->parts.p;
    mk_consumer cons = {0};
    mk_status s = open_output(m, NULL, &cons);
    if (s == MK_OK && m->part_done) {
        if (!m->o->c.quiet) fprintf(stderr, "mergekit-c: part %u/%u of %s is already complete; nothing to do\n", p.i, p.n, m->out);
        return MK_OK;
    }
    mk_merge_hash hj = {0};
    if (s == MK_OK) s = hash_start(&hj, m, false); /* this part's share of the input hashes */
    double t0 = mk_now();
    mk_exec_stats es = {0};
    s = compute(m, &cons, "merge", &hj, s, &es);
    if (s == MK_OK) s = mk_output_seal(&m->w);
    if (s == MK_OK) s = mk_output_part_done(&m->w, m->ih.files, m->ih.n);
    if (s == MK_OK && !m->o->c.quiet) {
        char a[32];
        uint64_t bytes = 0;
        for (size_t i = 0; i < m->w.k->n_out_files; i++) bytes += m->w.k->out_files[i].size;
        fprintf(stderr, "mergekit-c: wrote part %u/%u of %s: %zu shard(s), %s in %.1f s%s%s\n", p.i, p.n, m->out,
                m->w.k->n_out_files, mk_fmt_bytes(bytes, a), mk_now() - t0,
                m->o->parts.mpi ? "" : "; once every part is done: mergekit-c finalize ", m->o->parts.mpi ? "" : m->out);
    }
    if (cons.ops) cons.ops->close(&cons);
    mk_output_close(&m->w);
    return s;
}

/* The inputs opened, OUT checked against them, the plan built (again with the merged
 * vocabulary when the recipe names a tokenizer source). */
static mk_status plan_merge(merge_run *m, const mk_json *expect)
{
    MK_TRY(open_inputs(m));
    if (!expect) MK_TRY(check_out_path(m));
    mk_plan_opts po = {m->o->allow_crimes, m->out_dtype, NULL};
    MK_TRY(mk_plan_build(m->r, m->src, m->n_refs, &po, &m->plan));
    MK_TRY(tokenizer_donor(m));
    if (m->r->tokenizer_source) { /* every vocabulary tensor gathered by the merged vocabulary */
        mk_source *srcs[1024];
        for (size_t i = 0; i < m->plan.n_models; i++) srcs[i] = m->plan.models[i].src;
        bool uni = strcmp(m->r->tokenizer_source, "union") == 0, base = strcmp(m->r->tokenizer_source, "base") == 0;
        size_t ovm[1024] = {0};
        if (m->r->n_token_overrides > 1024) return mk_error(MK_ERR_RECIPE, "%s: over 1024 tokenizer tokens", m->r->path);
        for (size_t i = 0; i < m->r->n_token_overrides; i++) {
            const mk_token_override *o = &m->r->token_overrides[i];
            if (o->model) MK_TRY(plan_model_named(m, o->model, NULL, o->model_pos, "token source", &ovm[i]));
        }
        MK_TRY(mk_tokmerge_build(&m->tok, srcs, m->plan.n_models, (size_t)m->plan.donor,
                                 uni ? "union" : base ? "base" : NULL, m->tok_donor, m->r, ovm));
        mk_plan_free(&m->plan);
        po.tok = &m->tok;
        MK_TRY(mk_plan_build(m->r, m->src, m->n_refs, &po, &m->plan));
    }
    return MK_OK;
}

/* Run the merge into OUT (or, for --check, into a scratch folder that is compared with
 * `expect` and removed). */
static mk_status run_merge(merge_run *m, const mk_json *expect)
{
    if (m->o->resume && !expect && !m->o->dry_run && !m->o->finalize && mk_path_exists(m->out) && !mk_dir_is_empty(m->out)) {
        char *tmp = mk_asprintf("%s.tmp", m->out);
        bool partial = tmp && mk_path_exists(tmp);
        free(tmp);
        if (!partial) return resume_complete(m);
    }
    MK_TRY(plan_merge(m, expect));
    if (m->o->dry_run && (m->o->parts.parts || m->o->parts.p.n)) return print_split(m);
    if (m->o->dry_run) {
        print_plan(m);
        return MK_OK;
    }
    if (m->o->parts.p.n) return run_part(m);
    if (expect) MK_TRY(check_inputs(m, expect));
    mk_merge_hash hj = {0};
    mk_consumer cons = {0};
    mk_status s = open_output(m, expect, &cons);
    if (s == MK_OK && !expect) s = hash_start(&hj, m, false);
    mk_testpoint(); /* shards created, nothing computed */
    double t0 = mk_now();
    mk_exec_stats es = {0};
    s = compute(m, &cons, expect ? "check" : "merge", &hj, s, &es);
    mk_testpoint(); /* every tensor written */
    mk_buf prov = {0};
    if (s == MK_OK) s = write_side_files(m, expect != NULL, &prov);
    /* the --check scratch output is compared, then removed by mk_output_close */
    if (s == MK_OK && expect) s = mk_sink_finish(m->w.k);
    if (s == MK_OK && expect) s = compare_outputs(m, expect);
    if (s == MK_OK && !expect) s = mk_output_commit(&m->w);
    if (s == MK_OK && !expect) {
        double el = mk_now() - t0;
        char a[32];
        if (m->o->quantize) mk_cli_quant_report(&m->qplan, &cons, &m->o->c, el, false, NULL);
        char kept[96] = "";
        if (m->o->finalize) snprintf(kept, sizeof kept, " (finalized from %u parts)", m->o->finalize->n);
        else if (es.reused) snprintf(kept, sizeof kept, " (%zu kept from the interrupted run, %zu computed)", es.reused, es.computed);
        if (!m->o->c.quiet)
            fprintf(stderr, "mergekit-c: wrote %s: %zu tensors%s, %s in %.1f s\n", m->out, m->plan.n, kept,
                    mk_fmt_bytes(m->o->quantize ? m->qplan.out_bytes : m->plan.total_bytes, a), el);
        if (m->o->c.json) fputs(prov.data, stdout);
    }
    mk_buf_free(&prov);
    if (cons.ops) cons.ops->close(&cons);
    mk_output_close(&m->w);
    return s;
}

static void merge_run_free(merge_run *m)
{
    mk_plan_free(&m->plan);
    mk_tokmerge_free(&m->tok);
    mk_qplan_free(&m->qplan);
    free(m->quantize_rec);
    free(m->plan_key);
    mk_parts_manifest_free(&m->man);
    for (size_t i = 0; i < m->n_refs; i++) mk_source_close(m->src ? m->src[i] : NULL);
    free(m->src);
    mk_input_hashes_free(&m->ih);
    mk_output_close(&m->w);
}

/* Every output file recorded in OUT's provenance still has its recorded hash. A .mkz OUT
 * (a file): every checksum of the container, and the recorded hashes are its files'. */
static mk_status verify_recorded(const char *out, const mk_json *j)
{
    mk_status s = MK_OK;
    uint32_t outs = mk_json_get(j, 0, "outputs");
    if (!outs || mk_json_at(j, outs)->type != MK_JSON_ARR)
        return mk_error(MK_ERR_FORMAT, "%s/%s: no outputs list", out, PROVENANCE_FILE);
    if (mk_is_file(out)) {
        mk_source *z = NULL;
        MK_TRY(mk_mkz_open(out, &z));
        s = mk_mkz_verify(z, NULL, NULL);
        const mk_mkz_index *ix = mk_mkz_source_index(z);
        for (uint32_t c = mk_json_at(j, outs)->first; c && s == MK_OK; c = mk_json_at(j, c)->next) {
            uint32_t nn = mk_json_get(j, c, "name"), hh = mk_json_get(j, c, "xxh128");
            const char *name = nn ? mk_json_strv(j, nn) : "", *want = hh ? mk_json_strv(j, hh) : "";
            char got[33] = "";
            for (size_t f = 0; f < ix->n_files; f++)
                if (strcmp(ix->files[f].name, name) == 0) mk_hash128_hex(ix->files[f].hash, got);
            if (strcmp(got, want) != 0)
                s = mk_error(MK_ERR_MISMATCH, "%s: %s differs from its recorded hash (changed after the merge)", out, name);
        }
        mk_source_close(z);
        return s;
    }
    for (uint32_t c = mk_json_at(j, outs)->first; c && s == MK_OK; c = mk_json_at(j, c)->next) {
        uint32_t nn = mk_json_get(j, c, "name"), hh = mk_json_get(j, c, "xxh128");
        if (!nn || !hh || mk_json_at(j, nn)->type != MK_JSON_STR || mk_json_at(j, hh)->type != MK_JSON_STR ||
            strchr(mk_json_strv(j, nn), '/'))
            return mk_error(MK_ERR_FORMAT, "%s/%s: malformed outputs entry", out, PROVENANCE_FILE);
        char *fp = mk_path_join(out, mk_json_strv(j, nn));
        mk_hash128 h;
        char got[33];
        s = fp ? mk_hash_file(fp, &h) : MK_ERR_NOMEM;
        if (s == MK_OK) {
            mk_hash128_hex(h, got);
            if (strcmp(got, mk_json_strv(j, hh)) != 0)
                s = mk_error(MK_ERR_MISMATCH, "%s: %s differs from its recorded hash (changed after the merge)", out,
                             mk_json_strv(j, nn));
        }
        free(fp);
    }
    return s;
}

static mk_status load_record(const char *out, mk_json *j)
{
    bool container = mk_is_file(out); /* a .mkz output */
    char *path = container ? mk_asprintf("%s:%s", out, PROVENANCE_FILE) : mk_path_join(out, PROVENANCE_FILE);
    char *text = NULL;
    size_t len = 0;
    mk_status s = path ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && container) {
        mk_source *z = NULL;
        s = mk_mkz_open(out, &z);
        if (s == MK_OK) s = z->ops->aux_read(z, PROVENANCE_FILE, 64u << 20, &text, &len);
        mk_source_close(z);
        if (s != MK_OK) {
            free(path);
            return s; /* a damaged container says what is damaged */
        }
        if (!text) s = MK_ERR_IO;
    } else if (s == MK_OK) {
        s = mk_read_file(path, 64u << 20, &text, &len);
    }
    if (s != MK_OK) {
        free(path);
        return mk_error(s, "%s: no provenance record (%s); was it written by mergekit-c?", out, PROVENANCE_FILE);
    }
    mk_json_limits lim = {16, len / 2 + 16};
    s = mk_json_parse(j, text, len, &lim, path);
    free(text);
    free(path);
    return s;
}

/* --resume after a run that had already finished: OUT is complete when its files match the
 * record; a marker left by a kill between the final rename and its removal is cleaned up. */
static mk_status resume_complete(merge_run *m)
{
    mk_json j;
    MK_TRY(load_record(m->out, &j));
    mk_status s = verify_recorded(m->out, &j);
    mk_json_free(&j);
    if (s != MK_OK) return mk_error_prefix(s, "--resume: %s exists but is not a complete output", m->out);
    char *marker = mk_path_join(m->out, MK_OUTDIR_MARKER);
    if (marker) unlink(marker);
    free(marker);
    if (!m->o->c.quiet) fprintf(stderr, "mergekit-c: %s is already complete; nothing to resume\n", m->out);
    return MK_OK;
}

/* --check: options come from the record, not the command line. */
static mk_status run_check(merge_run *m, const char *out)
{
    mk_json j;
    MK_TRY(load_record(out, &j));
    mk_status s = MK_OK;
    uint32_t opts = mk_json_get(&j, 0, "options"), rh = mk_json_get(&j, 0, "recipe_xxh128");
    if (opts) {
        uint32_t v;
        if ((v = mk_json_get(&j, opts, "out_shard_size")) && mk_json_at(&j, v)->is_uint) m->o->shard_size = mk_json_at(&j, v)->u;
        if ((v = mk_json_get(&j, opts, "random_seed")) && mk_json_at(&j, v)->is_uint) m->seed = mk_json_at(&j, v)->u;
        if ((v = mk_json_get(&j, opts, "allow_crimes"))) m->o->allow_crimes = mk_json_at(&j, v)->b;
        if ((v = mk_json_get(&j, opts, "out_dtype")) && mk_json_at(&j, v)->type == MK_JSON_STR)
            m->out_dtype = mk_dtype_from_user(mk_json_strv(&j, v));
        m->o->quantize = NULL;
        if ((v = mk_json_get(&j, opts, "quantize")) && mk_json_at(&j, v)->type == MK_JSON_STR) {
            m->o->quantize = m->quantize_rec = mk_strdup(mk_json_strv(&j, v));
            s = m->o->quantize ? mk_qopts_parse(m->o->quantize, &m->qo) : MK_ERR_NOMEM;
            if (s == MK_OK) s = mk_qopts_resolve(&m->qo, true);
        }
    }
    char hex[33];
    mk_hash128_hex(mk_hash128_bytes(m->r->text, m->r->text_len), hex);
    if (rh && strcmp(mk_json_strv(&j, rh), hex) != 0)
        s = mk_error(MK_ERR_MISMATCH, "%s: the recipe differs from the one recorded in %s/%s", m->r->path, out, RECIPE_COPY);
    if (s == MK_OK) s = verify_recorded(out, &j);
    if (s == MK_OK) s = run_merge(m, &j);
    mk_json_free(&j);
    return s;
}

/* Options that need checking or parsing, into the run (a usage error names the option). */
static mk_status check_opts(merge_run *m, merge_opts *o, const char *out)
{
    mk_status s = MK_OK;
    m->seed = m->r->has_seed ? m->r->seed : 0;
    m->out_dtype = MK_DTYPE_NONE;
    if (o->seed_str) {
        char *end;
        unsigned long long v = strtoull(o->seed_str, &end, 10);
        if (end == o->seed_str || *end || o->seed_str[0] == '-') s = mk_error(MK_ERR_USAGE, "--random-seed expects a non-negative integer, got '%s'", o->seed_str);
        m->seed = v;
    }
    if (s == MK_OK && o->out_dtype) {
        m->out_dtype = mk_dtype_from_user(o->out_dtype);
        if (m->out_dtype != MK_F32 && m->out_dtype != MK_F16 && m->out_dtype != MK_BF16)
            s = mk_error(MK_ERR_USAGE, "--out-dtype: '%s' is not bfloat16, float16 or float32", o->out_dtype);
    }
    if (s == MK_OK && o->on_nonfinite && strcmp(o->on_nonfinite, "error") != 0 && strcmp(o->on_nonfinite, "warn") != 0)
        s = mk_error(MK_ERR_USAGE, "--on-nonfinite expects error or warn, got '%s'", o->on_nonfinite);
    if (s == MK_OK && o->check && (o->dry_run || o->resume)) s = mk_error(MK_ERR_USAGE, "--check cannot be combined with --dry-run or --resume");
    o->level = MK_MKZ_LEVEL_DEFAULT;
    if (s == MK_OK && o->compress && o->compress[0]) {
        char *end;
        long v = strtol(o->compress, &end, 10);
        if (end == o->compress || *end || v < 1 || v > MK_MKZ_LEVEL_MAX)
            s = mk_error(MK_ERR_USAGE, "--compress=%s: the level is an integer from 1 to %d", o->compress, MK_MKZ_LEVEL_MAX);
        o->level = (int)v;
    }
    o->mkz = o->compress || mk_str_ends_with(out, ".mkz");
    bool gguf = mk_str_ends_with(out, ".gguf");
    if (s == MK_OK && o->out_type && !gguf)
        s = mk_error(MK_ERR_USAGE, "--out-type: only for an OUT ending in .gguf (a folder's dtype is --out-dtype)");
    if (s == MK_OK && gguf) s = mk_cli_gguf_type_check("--out-type", o->out_type ? o->out_type : "f16");
    if (s == MK_OK && gguf && (o->quantize || o->compress || o->check || o->resume))
        s = mk_error(MK_ERR_USAGE, "%s: not with an OUT ending in .gguf (its tensor types are --out-type)",
                     o->quantize ? "--quantize" : o->compress ? "--compress" : o->check ? "--check" : "--resume");
    if (s == MK_OK && o->mkz && o->resume) s = mk_error(MK_ERR_USAGE, "--resume is not supported for a .mkz output");
    if (s == MK_OK && o->check && o->quantize) s = mk_error(MK_ERR_USAGE, "--check takes --quantize from the record; do not give it");
    if (s == MK_OK && o->quantize) s = mk_qopts_parse(o->quantize, &m->qo);
    if (s == MK_OK && o->quantize) s = mk_qopts_resolve(&m->qo, true);
    if (s == MK_OK) s = mk_cli_parts_resolve(&o->parts, o->dry_run, !o->finalize && !o->dry_run && !o->check);
    if (s == MK_OK && o->parts.p.n && (o->check || o->mkz))
        s = mk_error(MK_ERR_USAGE, "--part: not with %s (a split output is a folder of safetensors shards)",
                     o->check ? "--check" : ".mkz / --compress");
    if (s == MK_OK && o->eval.text && (o->check || o->dry_run))
        s = mk_error(MK_ERR_USAGE, "--eval-text scores a merge's output; not with --check or --dry-run");
    if (s == MK_OK && o->hold == UINT64_MAX) {
        /* the parts of a cluster run may share a node: each the fixed default */
        o->hold = o->parts.p.n ? MK_EXEC_HOLD_DEFAULT : mk_exec_hold_auto();
        mk_info("--hold: %.0f MiB for the inputs held (%s)", (double)o->hold / 1048576.0,
                o->parts.p.n ? "a part of a split output" : "1/16 of the memory available, 64M to 1G");
    }
    return s;
}

/* --eval-text: OUT's perplexity and its KL divergence to each input model of the recipe. */
static mk_status eval_output(merge_run *m)
{
    const char *refs[MK_CLI_EVAL_MAX_REFS];
    size_t n = 0;
    for (size_t i = 0; i < m->n_refs; i++) {
        if (m->refs[i]->lora) {
            mk_warn("--eval-text: %s is a base with an adapter; it is not compared", m->refs[i]->text);
            continue;
        }
        if (n == MK_CLI_EVAL_MAX_REFS) {
            mk_warn("--eval-text: compared with the first %d input models only", MK_CLI_EVAL_MAX_REFS);
            break;
        }
        refs[n++] = m->refs[i]->path;
    }
    return mk_cli_eval(m->out, refs, n, &m->o->eval, &m->o->c, false);
}

/* OUT.gguf: the folder the merge would write, as a source for the GGUF writer: its tensors
 * (the plan's outputs), its config.json and its tokenizer files. */
typedef struct gguf_like {
    merge_run *m;
    char *config, *chat;
} gguf_like;

static mk_status like_aux_read(mk_source *s, const char *name, uint64_t cap, char **data, size_t *len)
{
    gguf_like *g = s->impl;
    const char *d = NULL;
    char *own = NULL;
    bool tok = false;
    (void)cap; /* what it holds was read under the folder output's limits */
    *len = 0;
    for (const char *const *f = mk_tokenizer_files; *f && !tok; f++) tok = strcmp(*f, name) == 0;
    if (strcmp(name, "config.json") == 0) d = g->config, *len = strlen(g->config);
    else if (tok && has_tokenizer(g->m)) MK_TRY(tok_file(g->m, g->chat, name, &d, len, &own));
    *data = own || !d ? own : mk_strndup(d, *len);
    return d && !*data ? MK_ERR_NOMEM : MK_OK;
}

static const mk_source_ops like_ops = {.aux_read = like_aux_read};

/* OUT ending in .gguf: the merged tensors streamed into it as `convert` writes the merged
 * folder (the same tensor types, metadata and tokenizer); no folder is written. */
static mk_status run_merge_gguf(merge_run *m)
{
    const char *out = m->gguf;
    MK_TRY(plan_merge(m, NULL));
    gguf_like gl = {m, NULL, NULL};
    mk_source like = {.ops = &like_ops, .path = m->plan.models[m->tok_donor].src->path, .kind = "merge", .n_tensors = m->plan.n,
                      .tensors = (mk_tensor_info *)m->plan.outs, .impl = &gl};
    mk_status s = config_text(m, &gl.config);
    if (s == MK_OK) s = pick_chat(m, &gl.chat);
    mk_cli_gguf_out *g = NULL;
    mk_consumer cons = {0};
    mk_cli_gguf_split x = {"merge", s == MK_OK ? job_key(m, true) : NULL, &m->o->parts, m->o->dry_run, m->o->finalize, m->o->argc, m->o->argv, &m->o->c, false}; /* --part, finalize, --dry-run --parts */
    if (s == MK_OK)
        s = mk_cli_gguf_out_open(&g, &like, m->o->shard_size, out, m->o->out_type ? m->o->out_type : "f16", m->o->force, m->o->allow_crimes, &x, &cons);
    mk_testpoint(); /* header written, nothing computed */
    double t0 = mk_now();
    mk_exec_stats es = {0};
    mk_merge_hash hj = {0}; /* no provenance record in a GGUF file: nothing hashed */
    if (!x.finished) s = compute(m, &cons, "merge", &hj, s, &es);
    if (s == MK_OK && !x.finished) s = mk_cli_gguf_out_commit(g, &m->o->c, out, mk_now() - t0);
    mk_cli_gguf_out_free(g);
    free(gl.config);
    free(gl.chat);
    return s;
}

static int merge_main(int argc, char **argv, const mk_parts_manifest *finalize)
{
    merge_opts o = {.shard_size = 5000000000ull, .pass_cache = MK_EXEC_KEEP_DEFAULT, .hold = UINT64_MAX, .eval = {NULL, 512, 0, 0}, .finalize = finalize, .argc = argc, .argv = argv};
    const mk_opt opts[] = {
        {"out-shard-size", 0, MK_OPT_SIZE, &o.shard_size, "SIZE", "maximum bytes of tensor data per shard (5e9, 500M, 2G)", "5e9"},
        {"dry-run", 'n', MK_OPT_FLAG, &o.dry_run, NULL, "validate and print the plan (tensors, shards, bytes, peak memory); write nothing", NULL},
        {"force", 'f', MK_OPT_FLAG, &o.force, NULL, "replace OUT if it exists (only once the new output is complete)", NULL},
        {"resume", 0, MK_OPT_FLAG, &o.resume, NULL, "continue an interrupted run, keeping shards recorded as complete", NULL},
        {"check", 0, MK_OPT_FLAG, &o.check, NULL, "re-derive OUT from its recorded inputs and compare every file hash", NULL},
        {"random-seed", 0, MK_OPT_STR, &o.seed_str, "N", "seed for random methods (overrides the recipe's random_seed)", "0"},
        {"allow-crimes", 0, MK_OPT_FLAG, &o.allow_crimes, NULL, "allow different architectures, and values that overflow the output dtype", NULL},
        {"out-dtype", 0, MK_OPT_STR, &o.out_dtype, "DTYPE", "output dtype (bfloat16, float16, float32); overrides the recipe", NULL},
        {"out-type", 0, MK_OPT_STR, &o.out_type, "T", "tensor type of an OUT ending in .gguf: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, tq1_0, tq2_0, or a k-quant mix q2_k ... q6_k, q4_k_m, iq4_nl (see 'convert --help')", "f16"},
        {"quantize", 0, MK_OPT_STR, &o.quantize, "SPEC", "quantize while merging: FORMAT[,setting...], e.g. nf4,double-quant or int4,group-size=64,scheme=asym (see 'quantize --help')", NULL},
        {"on-nonfinite", 0, MK_OPT_STR, &o.on_nonfinite, "error|warn", "input tensors holding NaN/Inf: stop, or report and continue", "warn"},
        {"chunk", 0, MK_OPT_U64, &o.chunk, "N", "elements per work chunk", "65536"},
        {"pass-cache", 0, MK_OPT_SIZE, &o.pass_cache, "SIZE", "memory for what methods that make several passes over a tensor keep between passes: masks, selections, means (0: compute them again each pass)", "16M"},
        {"hold", 0, MK_OPT_SIZE, &o.hold, "SIZE", "memory for the inputs of a tensor a method reads in several passes: read once, around the page cache, and held, and for the tensors read ahead of it (twice this at most; 0: read them again each pass)", "1/16 of the memory available, 64M to 1G; 64M with --part"},
        MK_DIRECT_IO_OPTS(o.c),
        {"compress", 0, MK_OPT_OPTSTR, &o.compress, "LEVEL", "write OUT as one .mkz container (also when OUT ends in .mkz); zstd level 1..22", "1"},
        MK_EVAL_OPTS(o.eval, "each input model"),
        {"report", 0, MK_OPT_STR, &o.report, "FILE", "an HTML page of the task vectors: norms, cosines, TIES sign conflicts (see 'report --help')", NULL},
        MK_PART_OPTS(o.parts),
        MK_COMMON_OPTS(o.c),
        MK_HUB_OPTS(o.c),
        MK_MERGEKIT_OPTS(o.mk, o.c),
        {0},
    };
    /* called as mergekit-yaml (a link to mergekit-c): its name and argument names */
    bool yaml = strcmp(argv[0], "mergekit-yaml") == 0;
    const mk_cmd_spec spec = {
        yaml ? "mergekit-yaml" : "merge", yaml ? "CONFIG_FILE OUT_PATH [options]" : "RECIPE.yaml OUT [options]",
        "Merge models by a mergekit YAML recipe, streaming tensors into sharded safetensors.",
        "Models are local folders (or .safetensors, PyTorch .bin or .mkz files), named in the recipe\n"
        "relative to the current directory. OUT is written as OUT.tmp and renamed when complete;\n"
        "nothing is left on failure. OUT gets config.json, tokenizer files, mergekit_config.yml,\n"
        "README.md and mergekit-c.json (input and output XXH3-128 hashes; see --check). With OUT\n"
        "ending in .mkz, or --compress, all of it goes into one lossless .mkz container instead\n"
        "(`unpack` restores the folder). With OUT ending in .gguf, the merged tensors stream into one\n"
        "llama.cpp GGUF file instead, the bytes `convert` makes of the merged folder (--out-type, default\n"
        "f16; no folder is written). mergekit-yaml's command line is taken as it is (mergekit-c\n"
        "installs a mergekit-yaml link): the options that change the output do what they do in\n"
        "mergekit, those that steer PyTorch are not needed (a note says why), --trust-remote-code is\n"
        "refused. On a cluster, --part I/N writes part I of N of OUT's shards into the shared OUT.tmp\n"
        "and 'mergekit-c finalize OUT' finishes it (--part slurm in a Slurm job array; mpirun with a\n"
        "make MPI=1 build; docs/cluster.md).",
        opts, 2, 2, 0};
    char *pos[2];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &o.c, true, &rc)) return rc;
    mk_status s = mk_cli_mergekit_check(opts, &o.mk, o.c.quiet);
    if (s != MK_OK) return mk_cli_fail(s);

    mk_recipe r;
    s = mk_recipe_load(pos[0], &r);
    if (s != MK_OK) {
        if (s == MK_ERR_USAGE) mk_error_prefix(s, "cannot read recipe");
        rc = mk_cli_fail(s);
        mk_recipe_free(&r);
        return rc;
    }
    merge_run m;
    memset(&m, 0, sizeof m);
    m.r = &r;
    m.out = pos[1];
    m.o = &o;
    s = mk_cli_mergekit_recipe(&o.mk, &r, o.c.quiet);
    if (s == MK_OK) s = check_opts(&m, &o, pos[1]);
    if (s == MK_OK && mk_str_ends_with(pos[1], ".gguf")) m.gguf = pos[1];
    if (s == MK_OK) s = o.check ? run_check(&m, pos[1]) : m.gguf && (!o.dry_run || o.parts.parts) ? run_merge_gguf(&m) : run_merge(&m, NULL);
    if (s == MK_OK && o.report) s = mk_cli_report_merge(&m.plan, o.report, &o.c);
    if (s == MK_OK && o.eval.text && !o.check && !o.dry_run && !o.parts.p.n) s = eval_output(&m);
    rc = s == MK_OK ? 0 : mk_cli_fail(s);
    merge_run_free(&m);
    mk_recipe_free(&r);
    return mk_cli_parts_after(&o.parts, rc, pos[1], &o.c);
}

int mk_cmd_merge(int argc, char **argv) { return merge_main(argc, argv, NULL); }

int mk_cmd_merge_finalize(int argc, char **argv, const mk_parts_manifest *m) { return merge_main(argc, argv, m); }
