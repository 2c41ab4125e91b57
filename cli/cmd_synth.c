/* cmd_synth.c - `mergekit-c synth OUT`: random checkpoints shaped like real ones, and
 * seeded "finetunes" of them (model/synth.h makes the values and side files; this file
 * opens the output and wires them). */
#include "cli.h"

#include "../formats/output.h"
#include "../model/synth.h"

#include <stdio.h>
#include <string.h>

typedef struct synth_cli {
    mk_common c;
    mk_synth_opts m;
    const char *finetune_of;
    uint64_t shard_size;
    double delta, density;
    bool force;
} synth_cli;

/* Seal and commit OUT; with --json, the summary of what was written (path, tensors, bytes,
 * every file with its size and XXH3-128) into *json. */
static mk_status finish(mk_output *w, const char *out, const mk_tensor_info *t, size_t n, const synth_cli *o, mk_buf *json)
{
    MK_TRY(mk_output_seal(w));
    MK_TRY(mk_output_commit(w));
    if (!o->c.json) return MK_OK;
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += t[i].nbytes;
    mk_buf_puts(json, "{\"path\": ");
    mk_buf_json_str(json, out);
    mk_buf_printf(json, ", \"tensors\": %zu, \"bytes\": %llu, \"files\": [", n, (unsigned long long)bytes);
    bool first = true;
    mk_cli_json_files(json, w->k->out_files, w->k->n_out_files, &first, "  ");
    mk_cli_json_files(json, w->files, w->n_files, &first, "  ");
    mk_buf_puts(json, "\n]}\n");
    return json->failed ? MK_ERR_NOMEM : MK_OK;
}

/* A new model: its tensors through the plain consumer into OUT, then its side files. */
static mk_status synth_base(const char *out, synth_cli *o, mk_buf *json)
{
    mk_synth_model m;
    MK_TRY(mk_synth_plan(&o->m, &m));
    mk_output w = {0};
    mk_consumer cons = {0};
    mk_output_opts oo = {.shard_size = o->shard_size, .force = o->force};
    mk_status s = mk_output_begin(&w, out, &oo, m.t, m.n);
    if (s == MK_OK) s = mk_consumer_plain(&cons, w.k, m.t, m.n, false);
    mk_progress prog;
    mk_progress_init(&prog, "synth", &o->c);
    if (s == MK_OK) s = mk_synth_generate(&m, &cons, mk_progress_cb, &prog);
    mk_progress_end(&prog);
    for (size_t i = 0; i < m.n_files && s == MK_OK; i++)
        s = mk_output_file(&w, m.files[i].name, m.files[i].text, strlen(m.files[i].text));
    if (s == MK_OK) s = finish(&w, out, m.t, m.n, o, json);
    if (cons.ops) cons.ops->close(&cons);
    mk_output_close(&w);
    mk_synth_model_free(&m);
    return s;
}

static mk_status synth_finetune(const char *out, synth_cli *o, mk_buf *json)
{
    MK_TRY(mk_synth_finetune_check(o->delta, o->density));
    mk_source *base = NULL;
    MK_TRY(mk_cli_open_model(o->finetune_of, &base));
    mk_output w = {0};
    mk_consumer cons = {0};
    mk_output_opts oo = {.shard_size = o->shard_size, .force = o->force};
    mk_status s = mk_output_begin(&w, out, &oo, base->tensors, base->n_tensors);
    if (s == MK_OK) s = mk_consumer_plain(&cons, w.k, base->tensors, base->n_tensors, false);
    mk_progress prog;
    mk_progress_init(&prog, "synth", &o->c);
    if (s == MK_OK) s = mk_synth_finetune(base, o->delta, o->density, o->m.seed, &cons, mk_progress_cb, &prog);
    mk_progress_end(&prog);
    /* the base's side files, but not its model card */
    static const char *const skip[] = {"README.md", NULL};
    if (s == MK_OK) s = mk_output_copy_aux(&w, base, skip);
    if (s == MK_OK) s = finish(&w, out, base->tensors, base->n_tensors, o, json);
    if (cons.ops) cons.ops->close(&cons);
    mk_output_close(&w);
    mk_source_close(base);
    return s;
}

int mk_cmd_synth(int argc, char **argv)
{
    synth_cli o = {.m = {.hidden = 256, .layers = 4, .heads = 8, .kv_heads = 0, .intermediate = 0, .vocab = 1000,
                         .max_pos = 2048, .dtype = "bfloat16", .arch = "llama", .seed = 1, .std = 0.02},
                   .shard_size = 5000000000ull, .delta = 0.01, .density = 1.0};
    const mk_opt opts[] = {
        {"hidden", 0, MK_OPT_INT, &o.m.hidden, "N", "hidden size", "256"},
        {"layers", 0, MK_OPT_INT, &o.m.layers, "N", "number of layers", "4"},
        {"heads", 0, MK_OPT_INT, &o.m.heads, "N", "attention heads", "8"},
        {"kv-heads", 0, MK_OPT_INT, &o.m.kv_heads, "N", "key/value heads (grouped-query attention)", "heads"},
        {"intermediate", 0, MK_OPT_INT, &o.m.intermediate, "N", "MLP size", "8/3 x hidden, rounded up to 16"},
        {"vocab", 0, MK_OPT_INT, &o.m.vocab, "N", "vocabulary size", "1000"},
        {"max-position", 0, MK_OPT_INT, &o.m.max_pos, "N", "max_position_embeddings in config.json", "2048"},
        {"arch", 0, MK_OPT_STR, &o.m.arch, "NAME",
         "llama, mistral, qwen2 (q/k/v biases), qwen3 (q/k norms), gemma, gemma2 (tied), phi3 (fused q/k/v and "
         "gate/up), gpt2 (tied, unprefixed names)",
         "llama"},
        {"dtype", 0, MK_OPT_STR, &o.m.dtype, "DTYPE", "bfloat16, float16, float32 or float8_e4m3fn (fp8: use --std 4 or so, as per-tensor scaled weights)", "bfloat16"},
        {"tie", 0, MK_OPT_FLAG, &o.m.tie, NULL, "tie lm_head to the embeddings (no lm_head tensor)", NULL},
        {"std", 0, MK_OPT_DOUBLE, &o.m.std, "X", "typical standard deviation of weight matrices", "0.02"},
        {"seed", 0, MK_OPT_U64, &o.m.seed, "N", "random seed", "1"},
        {"finetune-of", 0, MK_OPT_STR, &o.finetune_of, "BASE", "write a finetune of BASE instead of a new model", NULL},
        {"delta", 0, MK_OPT_DOUBLE, &o.delta, "D", "finetune noise, as a fraction of each tensor's RMS", "0.01"},
        {"density", 0, MK_OPT_DOUBLE, &o.density, "P", "fraction of weights the finetune changes", "1"},
        {"out-shard-size", 0, MK_OPT_SIZE, &o.shard_size, "SIZE", "maximum bytes per shard", "5e9"},
        {"force", 'f', MK_OPT_FLAG, &o.force, NULL, "replace OUT if it exists", NULL},
        MK_COMMON_OPTS(o.c),
        MK_HUB_OPTS(o.c),
        {0},
    };
    const mk_cmd_spec spec = {"synth", "OUT [options]",
                              "Write a random Llama-shaped checkpoint (config.json, safetensors, tokenizer), or with\n"
                              "--finetune-of a seeded \"finetune\" of an existing one: base + noise on a fraction of weights.",
                              "The same options give the same bytes on every machine and at any thread count.", opts, 1, 1, 0};
    char *pos[1];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &o.c, true, &rc)) return rc;
    mk_buf json = {0};
    mk_status s = o.finetune_of ? synth_finetune(pos[0], &o, &json) : synth_base(pos[0], &o, &json);
    if (s != MK_OK) {
        mk_buf_free(&json);
        return mk_cli_fail(s);
    }
    if (!o.c.quiet) fprintf(stderr, "mergekit-c: wrote %s\n", pos[0]);
    if (o.c.json) fputs(json.data, stdout);
    mk_buf_free(&json);
    return 0;
}
