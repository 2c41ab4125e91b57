/* main.c - the command table and dispatch. `mergekit-c RECIPE OUT` is `merge`; the
 * program installed as `quantize` runs the quantize command. */
#include "cli.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"merge", mk_cmd_merge, "merge models by a mergekit YAML recipe (also: mergekit-c RECIPE OUT)"},
    {"synth", mk_cmd_synth, "write a random Llama-shaped checkpoint, or a \"finetune\" of one"},
    {"inspect", mk_cmd_inspect, "list a model's tensors, dtypes, shapes and sizes; validates the files"},
    {"compare", mk_cmd_compare, "compare two checkpoints tensor by tensor, with tolerances"},
    {"quantize", mk_cmd_quantize, "quantize to nf4, fp4, int8, int4 or fp8 in bitsandbytes / compressed-tensors layouts"},
    {"dequantize", mk_cmd_dequantize, "turn a quantized checkpoint back into plain safetensors"},
    {"methods", mk_cmd_methods, "list merge methods, their parameters and defaults"},
    {"lora", mk_cmd_lora, "PEFT LoRA adapters: apply, extract (from a finetune), combine"},
    {"eval", mk_cmd_eval, "perplexity on a text, and KL divergence to reference models (merge parents, unquantized)"},
    {"estimate", mk_cmd_estimate, "memory to serve a model, or to finetune it fully or with LoRA / QLoRA"},
    {"pack", mk_cmd_pack, "pack a model folder into a lossless compressed .mkz container"},
    {"unpack", mk_cmd_unpack, "restore the files of a .mkz container, byte for byte"},
    {"verify", mk_cmd_verify, "check every checksum of a .mkz container"},
    {"tokenize", mk_cmd_tokenize, "text to token ids (or back) with a model's tokenizer.json"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void top_help(FILE *f)
{
    fprintf(f,
            "mergekit-c %s - merge, stack and quantize open-weight LLM checkpoints, streaming, on the CPU\n\n"
            "usage: mergekit-c RECIPE.yaml OUT [options]     merge by a mergekit recipe\n"
            "       mergekit-c COMMAND [args] [options]\n\ncommands:\n",
            MK_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'mergekit-c COMMAND --help' shows a command's options.\n"
               "Exit codes: 0 success, 1 runtime or I/O failure, 2 usage or recipe error.\n");
}

static void report_testpoints(void) { fprintf(stderr, "mergekit-c: test points: %ld\n", mk_testpoint_count()); }

int main(int argc, char **argv)
{
    /* test hook: MK_TEST_KILL_AT=N kills the process at its N-th write step (see mk_testpoint) */
    const char *kill_at = getenv("MK_TEST_KILL_AT");
    if (kill_at) mk_testpoint_arm(strtol(kill_at, NULL, 10));
    if (getenv("MK_TEST_POINTS")) atexit(report_testpoints);
    /* over a file-size limit, let write() fail with EFBIG (reported, cleaned up) instead of
     * being killed by SIGXFSZ */
    signal(SIGXFSZ, SIG_IGN);
    const char *prog = strrchr(argv[0], '/');
    prog = prog ? prog + 1 : argv[0];
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(prog, commands[i].name) == 0 && strcmp(prog, "merge") != 0) return commands[i].fn(argc, argv);
    if (argc < 2) {
        top_help(stderr);
        return 2;
    }
    const char *a = argv[1];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0) {
        top_help(stdout);
        return 0;
    }
    if (strcmp(a, "--version") == 0 || strcmp(a, "version") == 0) {
        printf("mergekit-c %s\n", MK_VERSION);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(a, commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
    if (mk_str_ends_with(a, ".yaml") || mk_str_ends_with(a, ".yml") || strchr(a, '/') || strchr(a, '.')) {
        argv[0] = "merge";
        return mk_cmd_merge(argc, argv);
    }
    const char *names[N_COMMANDS];
    for (size_t i = 0; i < N_COMMANDS; i++) names[i] = commands[i].name;
    const char *hint = mk_did_you_mean(a, names, N_COMMANDS);
    if (hint) fprintf(stderr, "mergekit-c: error: unknown command '%s' (did you mean '%s'?)\n", a, hint);
    else fprintf(stderr, "mergekit-c: error: unknown command '%s' (see 'mergekit-c --help')\n", a);
    return 2;
}
