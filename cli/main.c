/* main.c - the command table and dispatch. `mergekit-c RECIPE OUT` is `merge`; a link
 * named `quantize` runs the quantize command and one named `mergekit-yaml` the merge
 * (mergekit's command line; argv[0] selects). */
#include "cli.h"

#include "../core/mk_hubfetch.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const lora_subs[] = {"apply", "extract", "combine", NULL};

const mk_cli_command mk_cli_commands[] = {
    {"merge", mk_cmd_merge, "merge models by a mergekit YAML recipe (also: mergekit-c RECIPE OUT, mergekit-yaml RECIPE OUT)", NULL},
    {"synth", mk_cmd_synth, "write a random Llama-shaped checkpoint, or a \"finetune\" of one", NULL},
    {"inspect", mk_cmd_inspect, "list a model's tensors, dtypes, shapes and sizes; validates the files", NULL},
    {"compare", mk_cmd_compare, "compare two checkpoints tensor by tensor, with tolerances", NULL},
    {"quantize", mk_cmd_quantize, "quantize to nf4, fp4, int8, int4 or fp8 in bitsandbytes / compressed-tensors layouts, or a format per weight within a bits-per-weight budget", NULL},
    {"dequantize", mk_cmd_dequantize, "turn a quantized checkpoint back into plain safetensors", NULL},
    {"convert", mk_cmd_convert, "write a model as a llama.cpp GGUF file (f32, f16, bf16, q8_0, q4_0 ... q5_1, tq1_0, tq2_0, k-quant mixes q2_k ... q6_k, iq4_nl)", NULL},
    {"methods", mk_cmd_methods, "list merge methods, their parameters and defaults", NULL},
    {"lora", mk_cmd_lora, "PEFT LoRA adapters: apply, extract (from a finetune), combine", lora_subs},
    {"imatrix", mk_cmd_imatrix, "llama.cpp's importance matrix of a model on a text (for convert --imatrix)", NULL},
    {"eval", mk_cmd_eval, "perplexity on a text, and KL divergence to reference models (merge parents, unquantized)", NULL},
    {"finetune", mk_cmd_finetune, "finetuning on the CPU, full or LoRA: continued pretraining or supervised data, AdamW, checkpoints", NULL},
    {"estimate", mk_cmd_estimate, "memory to serve a model, or to finetune it fully or with LoRA / QLoRA", NULL},
    {"pack", mk_cmd_pack, "pack a model folder into a lossless compressed .mkz container", NULL},
    {"unpack", mk_cmd_unpack, "restore the files of a .mkz container, byte for byte", NULL},
    {"verify", mk_cmd_verify, "check every checksum of a .mkz container", NULL},
    {"moe", mk_cmd_moe, "mixture-of-experts upcycling by a mergekit-moe config (Mixtral, Qwen2-MoE, Qwen3-MoE)", NULL},
    {"finalize", mk_cmd_finalize, "finish an output written in parts (--part I/N, Slurm arrays, mpirun): index, side files, rename", NULL},
    {"tokenize", mk_cmd_tokenize, "text to token ids (or back) with a model's tokenizer.json", NULL},
    {"report", mk_cmd_report, "one self-contained HTML page with plots about a merge, a quantized model or an eval run", NULL},
};
const size_t mk_cli_n_commands = sizeof mk_cli_commands / sizeof mk_cli_commands[0];

const mk_cli_alias mk_cli_aliases[] = {
    {"quantize", "quantize"},
    {"mergekit-yaml", "merge"},
    {NULL, NULL},
};

void mk_cli_top_help(FILE *f)
{
    fprintf(f,
            "mergekit-c %s - merge, stack and quantize open-weight LLM checkpoints, streaming, on the CPU\n\n"
            "usage: mergekit-c RECIPE.yaml OUT [options]     merge by a mergekit recipe\n"
            "       mergekit-c COMMAND [args] [options]\n\ncommands:\n",
            MK_VERSION);
    for (size_t i = 0; i < mk_cli_n_commands; i++) fprintf(f, "  %-10s %s\n", mk_cli_commands[i].name, mk_cli_commands[i].summary);
    fprintf(f, "\n'mergekit-c COMMAND --help' shows a command's options.\n"
               "Installed as mergekit-yaml, it takes mergekit-yaml's command line (see 'mergekit-yaml --help').\n"
               "Models are local folders or files, or Hugging Face ids (org/name[/subfolder][@revision]) read\n"
               "from the local cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), or\n"
               "fetched from the Hub into it by the byte ranges a run reads (not with HF_HUB_OFFLINE=1).\n"
               "Exit codes: 0 success, 1 runtime or I/O failure, 2 usage or recipe error.\n");
}

static void report_testpoints(void) { fprintf(stderr, "mergekit-c: test points: %ld\n", mk_testpoint_count()); }

static const mk_cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < mk_cli_n_commands; i++)
        if (strcmp(name, mk_cli_commands[i].name) == 0) return &mk_cli_commands[i];
    return NULL;
}

int main(int argc, char **argv)
{
    /* test hook: MK_TEST_KILL_AT=N kills the process at its N-th write step (see mk_testpoint) */
    const char *kill_at = getenv("MK_TEST_KILL_AT");
    if (kill_at) mk_testpoint_arm(strtol(kill_at, NULL, 10));
    if (getenv("MK_TEST_POINTS")) atexit(report_testpoints);
    /* over a file-size limit, let write() fail with EFBIG (reported, cleaned up) instead of
     * being killed by SIGXFSZ */
    signal(SIGXFSZ, SIG_IGN);
    /* files of models fetched from the Hub are read through the fetcher */
    mk_hub_fetch_install();
    const char *prog = strrchr(argv[0], '/');
    prog = prog ? prog + 1 : argv[0];
    for (const mk_cli_alias *al = mk_cli_aliases; al->prog; al++)
        if (strcmp(prog, al->prog) == 0) {
            argv[0] = (char *)al->prog; /* the command sees the name it was called by */
            return find_command(al->command)->fn(argc, argv);
        }
    if (argc < 2) {
        mk_cli_top_help(stderr);
        return 2;
    }
    const char *a = argv[1];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0) return mk_cli_help(argc - 1, argv + 1);
    if (strcmp(a, "--version") == 0 || strcmp(a, "version") == 0) {
#ifdef MK_MPI
        printf("mergekit-c %s (Open MPI: mpirun ranks write the parts of an output)\n", MK_VERSION);
#else
        printf("mergekit-c %s\n", MK_VERSION);
#endif
        return 0;
    }
    const mk_cli_command *c = find_command(a);
    if (c) return c->fn(argc - 1, argv + 1);
    if (mk_str_ends_with(a, ".yaml") || mk_str_ends_with(a, ".yml") || strchr(a, '/') || strchr(a, '.')) {
        argv[0] = "merge";
        return mk_cmd_merge(argc, argv);
    }
    const char *names[sizeof mk_cli_commands / sizeof mk_cli_commands[0]];
    for (size_t i = 0; i < mk_cli_n_commands; i++) names[i] = mk_cli_commands[i].name;
    const char *hint = mk_did_you_mean(a, names, mk_cli_n_commands);
    if (hint) fprintf(stderr, "mergekit-c: error: unknown command '%s' (did you mean '%s'?)\n", a, hint);
    else fprintf(stderr, "mergekit-c: error: unknown command '%s' (see 'mergekit-c --help')\n", a);
    return 2;
}
