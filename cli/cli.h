/* cli.h - shared pieces of the command-line front end: common options, error reporting
 * (the only place that prints errors and chooses exit codes), progress display, and the
 * command entry points.
 */
#ifndef MK_CLI_H
#define MK_CLI_H

#include "../core/mk_core.h"
#include "../core/mk_tensor.h"
#include "../formats/parts.h"
#include "args.h"

#include <stdio.h>

typedef struct mk_common {
    int verbose;
    bool quiet;
    long threads;
    bool json;
    bool verify_cache;
    const char *direct_io; /* --direct-io: auto, always or off (NULL: auto) */
} mk_common;

#define MK_COMMON_OPTS(c)                                                                                     \
    {"quiet", 'q', MK_OPT_FLAG, &(c).quiet, NULL, "errors only: no progress, no warnings", NULL},            \
    {"verbose", 'v', MK_OPT_COUNT, &(c).verbose, NULL, "more detail; -vv for debug output", NULL},           \
    {"threads", 'j', MK_OPT_INT, &(c).threads, "N", "worker threads", "all cores"},                           \
    {"json", 0, MK_OPT_FLAG, &(c).json, NULL, "print a machine-readable summary on stdout", NULL}

/* Commands that read models: Hugging Face ids resolve in the local cache (core/mk_hub.h). */
#define MK_HUB_OPTS(c)                                                                                        \
    {"verify-cache", 0, MK_OPT_FLAG, &(c).verify_cache, NULL,                                                 \
     "models may be Hugging Face ids (org/name[/subfolder][@revision]) read from the local cache "        \
     "(HF_HUB_CACHE, HF_HOME); this checks the sha256 of every blob they resolve to (reads them whole)", NULL}

/* Commands that stream tensors read once around the page cache (core/mk_dstream.h). */
#define MK_DIRECT_IO_OPTS(c)                                                                                  \
    {"direct-io", 0, MK_OPT_STR, &(c).direct_io, "auto|always|off",                                          \
     "tensors read once: auto reads what the page cache lacks with O_DIRECT (the rest as usual), always "  \
     "reads all of it with O_DIRECT, off reads through the page cache (which then keeps the model)", "auto"}

/* mergekit-yaml's command line (mergekit 0.1.5, options.py MergeOptions), which merge takes
 * too: the options that change the output behave as mergekit's; those that only steer PyTorch
 * are accepted with a note saying why they are not needed (their help text); the dangerous
 * one is refused. MK_OPT_BOOL fields: 1 for --x, -1 for --no-x, 0 when not given. */
typedef struct mk_mergekit_opts {
    int copy_tokenizer, write_model_card, safe_serialization, trust_remote_code, unsafe_truncate_embeddings;
    int cuda, low_cpu_memory, lazy_unpickle, read_to_gpu, multi_gpu, clone_tensors, async_write;
    bool gpu_rich, no_allow_crimes, no_quiet;
    const char *device, *transformers_cache, *lora_merge_cache, *lora_merge_dtype;
    long write_threads;
} mk_mergekit_opts;

#define MK_MERGEKIT_HEADING "mergekit-yaml options (mergekit 0.1.5's command line, in any order)"
#define MK_NOT_NEEDED_GPU "not needed: mergekit-c computes on the CPU, streaming row chunks over every core"
#define MK_MERGEKIT_OPTS(mo, c)                                                                                        \
    {"-", 0, MK_OPT_SECTION, NULL, NULL, MK_MERGEKIT_HEADING, NULL},                                                  \
    {"copy-tokenizer", 0, MK_OPT_BOOL, &(mo).copy_tokenizer, NULL,                                                     \
     "copy the tokenizer and generation files of the base model (else the first) into OUT", "copy"},                  \
    {"write-model-card", 0, MK_OPT_BOOL, &(mo).write_model_card, NULL, "write README.md and mergekit_config.yml into OUT", \
     "write"},                                                                                                         \
    {"safe-serialization", 0, MK_OPT_BOOL, &(mo).safe_serialization, NULL,                                             \
     "write safetensors (--no-safe-serialization is accepted with a warning: pickles are never written)", "on"},       \
    {"no-allow-crimes", 0, MK_OPT_FLAG, &(mo).no_allow_crimes, NULL, "the default: one architecture", NULL},          \
    {"unsafe-truncate-embeddings", 0, MK_OPT_BOOL, &(mo).unsafe_truncate_embeddings, NULL,                             \
     "not needed: mergekit-c always keeps the vocabulary rows every model has (with a warning)", NULL},               \
    {"num-threads", 0, MK_OPT_INT, &(c).threads, "N", "worker threads (= --threads, -j)", "all cores"},                 \
    {"no-quiet", 0, MK_OPT_FLAG, &(mo).no_quiet, NULL, "the default: progress and warnings", NULL},                    \
    {"trust-remote-code", 0, MK_OPT_BOOL, &(mo).trust_remote_code, NULL,                                               \
     "refused: mergekit-c never runs code from a model repository (it reads config.json and weights as data)", NULL},  \
    {"lora-merge-dtype", 0, MK_OPT_STR, &(mo).lora_merge_dtype, "DTYPE",                                               \
     "refused with a recipe that names an adapter (adapters are merged as PEFT does, in the base model's dtype)", NULL}, \
    {"cuda", 0, MK_OPT_BOOL, &(mo).cuda, NULL, MK_NOT_NEEDED_GPU, NULL},                                               \
    {"device", 0, MK_OPT_STR, &(mo).device, "DEVICE", MK_NOT_NEEDED_GPU, NULL},                                        \
    {"gpu-rich", 0, MK_OPT_FLAG, &(mo).gpu_rich, NULL, MK_NOT_NEEDED_GPU, NULL},                                       \
    {"read-to-gpu", 0, MK_OPT_BOOL, &(mo).read_to_gpu, NULL, MK_NOT_NEEDED_GPU, NULL},                                 \
    {"multi-gpu", 0, MK_OPT_BOOL, &(mo).multi_gpu, NULL, MK_NOT_NEEDED_GPU, NULL},                                     \
    {"low-cpu-memory", 0, MK_OPT_BOOL, &(mo).low_cpu_memory, NULL,                                                     \
     "not needed: memory stays a few row chunks per thread whatever the model size (--dry-run estimates it)", NULL},  \
    {"lazy-unpickle", 0, MK_OPT_BOOL, &(mo).lazy_unpickle, NULL,                                                       \
     "not needed: mergekit-c never unpickles; it reads safetensors tensor by tensor", NULL},                           \
    {"clone-tensors", 0, MK_OPT_BOOL, &(mo).clone_tensors, NULL,                                                       \
     "not needed: each output tensor is written from its own buffer, so a layer may appear twice", NULL},             \
    {"async-write", 0, MK_OPT_BOOL, &(mo).async_write, NULL,                                                           \
     "not needed: shards are written as their tensors complete, beside the computation", NULL},                       \
    {"write-threads", 0, MK_OPT_INT, &(mo).write_threads, "N",                                                         \
     "not needed: shards are written as their tensors complete, beside the computation", NULL},                       \
    {"transformers-cache", 0, MK_OPT_STR, &(mo).transformers_cache, "DIR",                                             \
     "not needed: models are local paths, or Hugging Face ids read from the cache (HF_HUB_CACHE, HF_HOME)", NULL},       \
    {"lora-merge-cache", 0, MK_OPT_STR, &(mo).lora_merge_cache, "DIR",                                                 \
     "not needed: adapters (model+adapter in a recipe) are merged on the fly as tensors are read; nothing is cached", \
     NULL}

struct mk_recipe;
/* After parsing: the refusal of --trust-remote-code (exit 2 with the reason), and a note on
 * stderr (unless quiet) for each option given that is not needed (its help text says why).
 * opts is the command's option table (its mergekit section is read). */
mk_status mk_cli_mergekit_check(const mk_opt *opts, const mk_mergekit_opts *mo, bool quiet);
/* Once the recipe is read: --lora-merge-dtype is refused when it names an adapter. */
mk_status mk_cli_mergekit_recipe(const mk_mergekit_opts *mo, const struct mk_recipe *r, bool quiet);

/* Apply -q/-v/--threads. */
void mk_cli_common(const mk_common *c);
/* Start a command: parse argv against spec, apply the common options, and for commands that
 * write (writes = true) catch SIGINT/SIGTERM so partial outputs are cleaned up. Returns false
 * when the command must stop now with *exit_code (0 after --help, 2 after a usage error). */
bool mk_cli_begin(const mk_cmd_spec *spec, int argc, char **argv, char **pos, size_t *npos, const mk_common *c,
                  bool writes, int *exit_code);
/* Print "mergekit-c: error: <detail>" and return the exit code for s. */
int mk_cli_fail(mk_status s);

/* Progress on stderr: a bar on a terminal, one line per item at -v otherwise. The callback
 * takes items done/total and bytes done/total; bytes_total = 0 when only items are counted
 * (then the bar shows items and items/s). */
typedef struct mk_progress {
    const char *what;   /* "merge", "quantize" */
    bool tty, enabled, per_item;
    double t0, last;
} mk_progress;
void mk_progress_init(mk_progress *p, const char *what, const mk_common *c);
void mk_progress_cb(void *ctx, size_t done, size_t total, uint64_t bytes_done, uint64_t bytes_total, const char *name);
void mk_progress_end(mk_progress *p);

/* OUT (and OUT.tmp) must not be an input file, lie inside an input folder, or contain an
 * input (--force would delete it). NULL entries are skipped. */
mk_status mk_cli_check_output(const char *out, const char *const *inputs, size_t n);

/* A model (folder or file) IN as the llama.cpp GGUF file OUT with tensors of type TYPE_S (a
 * --type name of convert), atomically (cmd_convert.c; merge's OUT.gguf uses it too).
 * general.name is NAME, or IN's folder name when NULL. mk_cli_gguf_type_check: whether
 * TYPE_S is such a name (a usage error naming OPT otherwise). */
mk_status mk_cli_convert_gguf(mk_common *c, const char *in, const char *out, const char *type_s, bool force, const char *name);
mk_status mk_cli_gguf_type_check(const char *opt, const char *type_s);
/* The same GGUF file made in one pass from tensors computed elsewhere: LIKE stands for the
 * folder they would make (its tensors in order, as the consumer's logical tensors; config.json
 * and tokenizer files through aux_read; general.name is OUT's name less .gguf), declared in
 * the order a folder of SHARD_SIZE safetensors shards of them lists them. open declares everything and sizes OUT.tmp; CONS then
 * takes the values (any order, several threads); commit renames it to OUT and reports; free
 * removes OUT.tmp unless committed. */
typedef struct mk_cli_gguf_out mk_cli_gguf_out;
/* A GGUF file split between processes (docs/cluster.md): what the command's --part, --parts
 * (with --dry-run) and finalize ask for. Every part sizes the one file OUT.gguf.tmp/OUT.gguf,
 * writes its header and only its own tensors (split by bytes); finalize checks the parts'
 * records and the file and renames it. */
typedef struct mk_cli_gguf_split {
    const char *command;               /* the manifest's command, which finalize replays */
    char *key;                         /* the command's own plan text (recipe, options), or NULL (convert);
                                        * allocated: mk_cli_gguf_out_open frees it (NULL there: no memory) */
    const struct mk_cli_parts *parts;  /* p: this part; parts: --parts N */
    bool dry_run;                      /* print the tensors (or, with --parts, the split); write nothing */
    const mk_parts_manifest *finalize; /* finalize: the parts' manifest */
    int argc;
    char **argv;                       /* the command line the manifest records */
    const mk_common *c;
    bool finished;                     /* out: nothing to compute (a dry run, a finalize, a part already
                                        * complete); then commit is not called */
} mk_cli_gguf_split;
/* X: NULL, or what the command asks (a split when X->parts has a part or X has finalize or
 * dry_run; a part's CONS gets only its tensors, the others read as done). */
mk_status mk_cli_gguf_out_open(mk_cli_gguf_out **g, mk_source *like, uint64_t shard_size, const char *out, const char *type_s,
                               bool force, bool allow_overflow, mk_cli_gguf_split *x, mk_consumer *cons);
mk_status mk_cli_gguf_out_commit(mk_cli_gguf_out *g, const mk_common *c, const char *out, double secs);
void mk_cli_gguf_out_free(mk_cli_gguf_out *g);

/* convert --target-bpw (cli/convert_alloc.c): a llama.cpp type per matrix under a size budget. */
typedef struct mk_cli_bpw_opts {
    double target;
    const char *types;       /* --types; NULL: mk_alloc_gguf_default_types */
    const char *sensitivity; /* "weight" or "imatrix" */
    const char *imatrix;     /* --imatrix FILE, or NULL */
} mk_cli_bpw_opts;
typedef struct mk_cli_bpw_mat {
    const char *name;        /* the GGUF name */
    size_t src;              /* the source tensor */
    uint64_t rows, cols;
    const float *imp;        /* the imatrix's importances, or NULL */
    bool fixed;              /* the output matrix: keeps `type` */
    uint32_t type;           /* in: the fixed type; out: the chosen one */
} mk_cli_bpw_mat;
typedef struct mk_cli_bpw_result {
    double bpw, objective;
    uint32_t main_type;      /* the type holding the most elements */
    char *json;              /* with --json: the allocation as a JSON object (allocated), else NULL */
} mk_cli_bpw_result;
mk_status mk_cli_convert_alloc(const mk_cli_bpw_opts *o, const mk_common *c, mk_source *src, mk_cli_bpw_mat *m, size_t n,
                               mk_cli_bpw_result *res);
struct mk_gguf_w;
/* mergekit-c.quantize.{target_bpw, bpw, types, sensitivity, objective} */
void mk_cli_convert_alloc_metadata(struct mk_gguf_w *w, const mk_cli_bpw_opts *o, const mk_cli_bpw_result *res);

/* Append the files of an output as JSON objects {"name", "size", "xxh128"}, comma-separated
 * (a comma first unless *first), one per line with `indent`. */
void mk_cli_json_files(mk_buf *b, const mk_out_file *f, size_t n, bool *first, const char *indent);

/* A model named on the command line: a Hugging Face id becomes its cached folder (the
 * string lives until exit); a local path stays as it is. mk_cli_begin does this for the
 * positionals its spec marks (model_pos). */
mk_status mk_cli_resolve_model(char **arg);
/* Open every input path named on a command line or in a recipe (any format); a Hugging
 * Face model id opens its cached snapshot (mk_hub_resolve). */
mk_status mk_cli_open_model(const char *path, mk_source **out);
/* The same, with a GGUF file's block-quantized tensors read dequantized (f32), for the
 * commands that take its weights as values: merge, lora, quantize. */
mk_status mk_cli_open_model_values(const char *path, mk_source **out);

struct mk_tokenizer;
/* A model's tokenizer: tokenizer.json, and tokenizer_config.json for the BOS/EOS names. */
mk_status mk_cli_open_tokenizer(mk_source *src, const char *path, struct mk_tokenizer **t);

struct mk_qplan;
/* The quantization report: per tensor and total bits per weight, relative RMSE, SQNR, max
 * abs error and sizes on stderr (unless -q); with json, the same on stdout. */
/* With html, also the HTML page of 'report' (cmd_report.c) into that file. */
mk_status mk_cli_quant_report(const struct mk_qplan *p, mk_consumer *cons, const mk_common *c, double secs, bool json,
                              const char *html);

/* quantize --target-bpw: a format per weight under a size budget (cli/quant_alloc.c). */
typedef struct mk_cli_alloc_opts {
    double target_bpw;
    const char *formats;     /* --formats; NULL: the default candidates */
    const char *sensitivity; /* "weight", "imatrix", "fisher" (the user's kld too) or "kld-probe" */
    const char *text;        /* fisher, kld-probe: the text the model runs on */
    long ctx, chunks;        /* fisher, kld-probe: window length and windows (0: 512 x 16 for fisher, 128 x 2 for kld-probe) */
    const char *skip;
    uint64_t shard_size, chunk;
    bool force, dry_run;
    const char *imatrix;     /* --sensitivity imatrix: llama-imatrix's GGUF file */
    mk_part part;            /* --part I/N (n == 0: the whole output) */
    const mk_parts_manifest *finalize; /* finalize: the parts' manifest, else NULL */
    int argc;
    char **argv;             /* the command line a part's manifest records */
} mk_cli_alloc_opts;
mk_status mk_cli_quant_alloc(const mk_cli_alloc_opts *a, const mk_common *c, const char *in, const char *out);
/* A split quantize output (--part I/N, finalize): the plan's hash (quantization_config qc, the
 * shard size, the input's file sizes, the stored tensors t[n]); a part's manifest (man) and
 * whether it is already complete (*done); finalize's plan must be the parts'. */
mk_status mk_cli_quant_split(const char *qc, uint64_t shard_size, mk_source *src, const mk_tensor_info *t, size_t n, const char *out,
                             mk_part part, const mk_parts_manifest *finalize, int argc, char **argv, mk_parts_manifest *man, bool *done);
/* config.json with quantization_config qc (allocated; taken, NULL: out of memory) and the
 * tokenizer files of a quantized output (quantize, quantize --target-bpw). */
struct mk_output;
mk_status mk_cli_quant_config_files(mk_source *src, struct mk_output *o, char *qc, const char *in_path);
/* --sensitivity kld (cli/quant_kld.c): t's sensitivities and errors from the KL divergence
 * each group of weights causes in probe format `probe` (its checkpoint: probe_dir). */
struct mk_alloc_table;
mk_status mk_cli_alloc_kld(mk_source *src, const char *probe_dir, struct mk_alloc_table *t, size_t probe, const char *text,
                           size_t ctx, size_t chunks, const mk_common *cm);

/* --sensitivity fisher (cli/quant_kld.c): half the expected Fisher diagonal per token of src's
 * weights on `chunks` windows of `ctx` tokens of `text` (*F: allocated, one f32 per trained
 * parameter); wt[i] (per tensor of src, zeroed by the caller) points at tensor i's. */
#define MK_CLI_FISHER_SEED 0x5eed
mk_status mk_cli_alloc_fisher(mk_source *src, const char *text, size_t ctx, size_t chunks, const mk_common *cm, float **F,
                              const float **wt);

/* Perplexity and KL divergence (eval, merge --eval-text, quantize --eval-text). */
#define MK_CLI_EVAL_MAX_REFS 8
/* --eval-text, --eval-ctx, --eval-chunks of a command that writes a model; `to` names what the
 * KL divergence is measured to. */
#define MK_EVAL_OPTS(e, to)                                                                                   \
    {"eval-text", 0, MK_OPT_STR, &(e).text, "FILE", "at the end, perplexity of OUT on FILE and its KL divergence to " to " (see 'eval --help')", NULL}, \
    {"eval-ctx", 0, MK_OPT_INT, &(e).ctx, "N", "window length of --eval-text, in tokens", "512"},           \
    {"eval-chunks", 0, MK_OPT_INT, &(e).chunks, "N", "windows --eval-text scores", "all"}
typedef struct mk_cli_eval_opts {
    const char *text;      /* the file to score */
    long ctx, chunks, batch;
} mk_cli_eval_opts;
/* Score MODEL on o->text, with KL divergence to each of refs[n_refs] (same vocabulary), and
 * print the report: on stdout (JSON with c->json) when `own` (the eval command), else on
 * stderr after another command's output. */
mk_status mk_cli_eval(const char *model, const char *const *refs, size_t n_refs, const mk_cli_eval_opts *o,
                      const mk_common *c, bool own);
/* A text file as token ids with the BOS a window starts with (-1: none), as eval reads it. */
mk_status mk_cli_tokenize_file(const struct mk_tokenizer *t, const char *file, int32_t **ids, size_t *n, int32_t *bos);

/* The command table (main.c): help, dispatch, man pages, completion and the test loops
 * read it. */
typedef struct mk_cli_command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
    const char *const *subs; /* subcommand names (lora), NULL-terminated; or NULL */
} mk_cli_command;
extern const mk_cli_command mk_cli_commands[];
extern const size_t mk_cli_n_commands;

/* Programs installed as links to mergekit-c, and the command each runs (argv[0] selects). */
typedef struct mk_cli_alias {
    const char *prog, *command;
} mk_cli_alias;
extern const mk_cli_alias mk_cli_aliases[]; /* terminated by {NULL} */

/* `mergekit-c help ...` (doc.c): the top help, a command's help, the machine-readable
 * command list (--commands), man pages (--man-pages, --man PAGE) and shell completion
 * (--completion bash|zsh), all generated from the tables. */
int mk_cli_help(int argc, char **argv);
void mk_cli_top_help(FILE *f);

int mk_cmd_merge(int argc, char **argv);
int mk_cmd_finalize(int argc, char **argv);

/* ---- split outputs (cmd_finalize.c; docs/cluster.md) ----------------------------------------- */
typedef struct mk_cli_parts {
    const char *part; /* --part I/N|slurm */
    long parts;       /* --parts N (with --dry-run) */
    mk_part p;        /* resolved: p.n == 0 for the whole output */
    bool mpi;         /* the part is this MPI rank's (make MPI=1, under mpirun) */
} mk_cli_parts;
#define MK_PART_OPTS(x)                                                                                        \
    {"part", 0, MK_OPT_STR, &(x).part, "I/N|slurm",                                                           \
     "write only part I of N of OUT into the shared OUT.tmp (one per cluster task), then 'mergekit-c finalize OUT'; " \
     "slurm: this job array task's part (docs/cluster.md)", NULL},                                            \
    {"parts", 0, MK_OPT_INT, &(x).parts, "N", "with --dry-run: how OUT's shards split between N parts (bytes balanced)", NULL}
struct mk_output_split;
/* --part/--parts checked and resolved; with `mpi`, under mpirun (make MPI=1) without --part,
 * this rank's part. */
mk_status mk_cli_parts_resolve(mk_cli_parts *x, bool dry_run, bool mpi);
/* The manifest a part records in OUT.tmp: this command line, the working directory, the plan. */
mk_status mk_cli_parts_manifest(mk_parts_manifest *m, const char *command, int argc, char **argv, const char *plan, unsigned n);
/* --dry-run --parts N: each part's shards (unit "shard"; a GGUF file's "tensor" regions) and bytes. */
void mk_cli_parts_print(const struct mk_output_split *sp, unsigned n, bool json, const char *unit);
/* The sizes of src's files, appended to a plan's hash text. */
void mk_cli_parts_hash_inputs(mk_buf *b, const mk_source *src);
/* After this process's part (exit code rc): under MPI every rank's outcome goes to rank 0, which
 * names the failed parts or finalizes OUT; the job's exit code. Otherwise rc. */
int mk_cli_parts_after(const mk_cli_parts *x, int rc, const char *out, const mk_common *c);
/* The finalize step of `command`, run by `mergekit-c finalize` with the manifest's command line. */
int mk_cmd_merge_finalize(int argc, char **argv, const mk_parts_manifest *m);
int mk_cmd_quantize_finalize(int argc, char **argv, const mk_parts_manifest *m);
int mk_cmd_convert_finalize(int argc, char **argv, const mk_parts_manifest *m);
int mk_cmd_eval(int argc, char **argv);
int mk_cmd_imatrix(int argc, char **argv);
int mk_cmd_finetune(int argc, char **argv);
int mk_cmd_synth(int argc, char **argv);
int mk_cmd_inspect(int argc, char **argv);
int mk_cmd_compare(int argc, char **argv);
int mk_cmd_quantize(int argc, char **argv);
int mk_cmd_dequantize(int argc, char **argv);
int mk_cmd_convert(int argc, char **argv);
int mk_cmd_methods(int argc, char **argv);
int mk_cmd_lora(int argc, char **argv);
int mk_cmd_estimate(int argc, char **argv);
int mk_cmd_pack(int argc, char **argv);
int mk_cmd_unpack(int argc, char **argv);
int mk_cmd_verify(int argc, char **argv);
int mk_cmd_tokenize(int argc, char **argv);
int mk_cmd_report(int argc, char **argv);

/* cmd_report.c: the HTML report pages that merge --report and quantize --report write at the
 * end of a run (see 'report --help'). */
struct mk_plan;
/* The merge's page (--report of merge): refused when nothing was planned. */
mk_status mk_cli_report_merge(const struct mk_plan *p, const char *file, const mk_common *c);
mk_status mk_cli_report_quant(const struct mk_qplan *p, mk_consumer *cons, const char *file);
mk_status mk_cli_report_quant_ref(const char *path, const char *ref, const char *file);
int mk_cmd_moe(int argc, char **argv);

/* A base model with a PEFT adapter merged in on the fly (recipes' `base+adapter`). */
mk_status mk_cli_open_lora(const char *base_path, const char *adapter_path, mk_source **out);

#endif
