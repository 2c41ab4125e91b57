/* data.h - training data: a text file (continued pretraining: the whole file one document)
 * or JSONL, one object a line, {"text": ...} or {"prompt": ..., "response": ...} (supervised
 * finetuning), tokenized with the model's tokenizer (BOS as its post-processor adds it, EOS
 * after each document when the tokenizer has one), concatenated and packed into rows of
 * `seq` tokens; the last row is padded with tokens of weight 0. Each token carries the loss
 * weight of predicting it: 1, or prompt_weight for the tokens of a prompt.
 * The order of rows: a permutation per epoch drawn from (seed, epoch), so step s of any run
 * with the same data and options reads the same rows (resume needs nothing else).
 * Must not: print. Input is hostile: a line that is not such an object is an error naming it.
 */
#ifndef MK_TRAIN_DATA_H
#define MK_TRAIN_DATA_H

#include "../nn/tokenizer.h"

typedef struct mk_train_data {
    int32_t *tok;        /* [n_rows * seq] */
    float *w;            /* [n_rows * seq] loss weight of each token as a target */
    size_t n_rows, seq;
    uint64_t n_tokens;   /* tokens before padding */
    size_t n_docs;
    size_t *perm;         /* the order of the epoch perm_epoch (mk_train_data_row) */
    uint64_t perm_epoch;
} mk_train_data;

/* Tokenize text[0..len) (from `what`, for messages; JSONL when jsonl). Empty data, or a
 * broken line (by its number), is MK_ERR_FORMAT. */
mk_status mk_train_data_load(const char *what, const char *text, size_t len, bool jsonl, const mk_tokenizer *tk, size_t seq,
                             double prompt_weight, mk_train_data *out);
void mk_train_data_free(mk_train_data *d);

/* The row that global position k (0, 1, ... over all epochs) of the shuffled order reads. */
mk_status mk_train_data_row(mk_train_data *d, uint64_t seed, uint64_t k, size_t *row);

#endif
