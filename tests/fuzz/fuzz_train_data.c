/* fuzz_train_data.c - finetune's training data (train/data.h): the input as JSONL and as plain
 * text, tokenized with a small word-level tokenizer, packed into rows of a few lengths, and
 * the seeded order of the rows drawn over two epochs. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../train/data.h"

#include <stdlib.h>
#include <string.h>

static const char tok_json[] =
    "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true, \"normalized\": false},"
    " {\"id\": 1, \"content\": \"<s>\", \"special\": true, \"normalized\": false},"
    " {\"id\": 2, \"content\": \"</s>\", \"special\": true, \"normalized\": false}],"
    " \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"post_processor\": null, \"decoder\": null,"
    " \"model\": {\"type\": \"WordLevel\", \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2,"
    " \"a\": 3, \"b\": 4, \"text\": 5, \"prompt\": 6, \"response\": 7}}}";
static const char cfg_json[] = "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    static mk_tokenizer *t;
    if (!t && (mk_tokenizer_load(tok_json, sizeof tok_json - 1, "fuzz/tokenizer.json", &t) != MK_OK ||
               mk_tokenizer_load_config(t, cfg_json, sizeof cfg_json - 1, "fuzz/tokenizer_config.json") != MK_OK))
        abort();
    static const size_t seqs[] = {2, 3, 16};
    for (int jsonl = 0; jsonl <= 1; jsonl++)
        for (size_t k = 0; k < sizeof seqs / sizeof seqs[0]; k++) {
            mk_train_data d;
            if (mk_train_data_load("fuzz/data", (const char *)data, size, jsonl, t, seqs[k], 0.25, &d) != MK_OK) continue;
            if (d.n_rows == 0 || d.n_tokens < 2 || d.n_tokens > d.n_rows * d.seq) abort();
            for (uint64_t i = 0; i < 2 * d.n_rows && i < 64; i++) {
                size_t row;
                if (mk_train_data_row(&d, 7, i, &row) != MK_OK || row >= d.n_rows) abort();
            }
            for (size_t i = 0; i < d.n_rows * d.seq; i++)
                if (d.tok[i] < 0 || (size_t)d.tok[i] >= mk_tokenizer_vocab_size(t) || !(d.w[i] >= 0 && d.w[i] <= 1)) abort();
            mk_train_data_free(&d);
        }
    return 0;
}
