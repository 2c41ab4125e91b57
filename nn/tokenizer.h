/* tokenizer.h - Hugging Face tokenizers (tokenizer.json) in C: text to token ids and back,
 * giving the ids that the `tokenizers` library gives for encode(text) with
 * add_special_tokens=True (or False).
 *
 * Supported, in the families that ship tokenizer.json (GPT-2, Llama 2/3, Mistral, Qwen2,
 * Gemma, SmolLM, and what `mergekit-c synth` writes):
 *   models         BPE (merges as "a b" strings or [a, b] pairs; byte_fallback, unk_token,
 *                  fuse_unk, ignore_merges), WordLevel
 *   normalizers    NFC, NFD, Prepend, Replace (string pattern), Strip, Sequence
 *   pre-tokenizers ByteLevel, Split with the GPT-2, Llama-3 or Qwen2 regex (recognised and
 *                  run by hand-written scanners, no regex engine) or a string pattern,
 *                  Digits, Whitespace, WhitespaceSplit, Metaspace, Sequence
 *   post           TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel, Sequence
 *   decoders       ByteLevel, Metaspace, Replace (string), ByteFallback, Fuse, Strip, Sequence
 *   added tokens   matched before normalization (normalized=false) or after it, with
 *                  single_word, lstrip and rstrip as tokenizers does
 * Anything else is refused at load with one line naming the key and what was found.
 * `truncation` and `padding` are ignored, as transformers does for a call without them.
 *
 * Text is bytes: ill-formed UTF-8 is read as Python's bytes.decode(errors='replace') reads
 * it (each maximal ill-formed subpart becomes U+FFFD), then tokenized.
 *
 * A loaded tokenizer is immutable: encode and decode may run on several threads at once.
 * Must not: include anything but core/, print, or exit.
 */
#ifndef MK_TOKENIZER_H
#define MK_TOKENIZER_H

#include "../core/mk_core.h"

typedef struct mk_tokenizer mk_tokenizer;

/* Limits on what a tokenizer.json may declare (the largest real ones: Gemma's 256k vocab
 * and 17 MB file). */
#define MK_TOK_MAX_JSON ((size_t)256 << 20)
#define MK_TOK_MAX_VOCAB (1u << 22)
#define MK_TOK_MAX_MERGES (1u << 22)
#define MK_TOK_MAX_TOKEN_BYTES 4096u
#define MK_TOK_MAX_ADDED (1u << 20)
#define MK_TOK_MAX_STAGES 32u

/* Parse tokenizer.json text json[0..len). `what` names it in messages. */
mk_status mk_tokenizer_load(const char *json, size_t len, const char *what, mk_tokenizer **out);
/* Read bos_token / eos_token (a string or {"content": ...}) from tokenizer_config.json text;
 * names that are not tokens of t are an error. */
mk_status mk_tokenizer_load_config(mk_tokenizer *t, const char *json, size_t len, const char *what);
void mk_tokenizer_free(mk_tokenizer *t);

/* text[0..len) -> *ids (malloc'd, *n of them; NULL when 0). add_special: the
 * post-processor's BOS/EOS-style tokens, as add_special_tokens=True. */
mk_status mk_tokenizer_encode(const mk_tokenizer *t, const char *text, size_t len, bool add_special, int32_t **ids,
                              size_t *n);
/* ids -> text (malloc'd, NUL-terminated, *len bytes without the NUL). skip_special drops
 * special added tokens. An id outside the vocabulary is an error. */
mk_status mk_tokenizer_decode(const mk_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **text,
                              size_t *len);

/* The pieces the model sees for text[0..len) after the normalizers and pre-tokenizers, with
 * no added-token matching: what tokenizers' normalizer.normalize_str followed by
 * pre_tokenizer.pre_tokenize_str gives (for tests and `tokenize --pieces`). fn may stop the
 * walk by returning an error. */
typedef mk_status (*mk_tok_piece_fn)(void *ctx, const char *piece, size_t len);
mk_status mk_tokenizer_pretokenize(const mk_tokenizer *t, const char *text, size_t len, mk_tok_piece_fn fn, void *ctx);

/* Number of ids (model vocabulary and added tokens): valid ids are [0, vocab_size). */
size_t mk_tokenizer_vocab_size(const mk_tokenizer *t);
/* The token string of id (not NUL-terminated; *len bytes), or NULL when out of range. */
const char *mk_tokenizer_token(const mk_tokenizer *t, int32_t id, size_t *len);
/* The id of a token string, or -1. */
int32_t mk_tokenizer_id(const mk_tokenizer *t, const char *tok, size_t len);
/* BOS / EOS ids from tokenizer_config.json (mk_tokenizer_load_config), else the post-
 * processor's first / last special token; -1 when unknown. */
int32_t mk_tokenizer_bos(const mk_tokenizer *t);
int32_t mk_tokenizer_eos(const mk_tokenizer *t);
bool mk_tokenizer_is_special(const mk_tokenizer *t, int32_t id);
/* The model's unk_token id; -1 when it has none (byte-level BPE and byte fallback never
 * need one). */
int32_t mk_tokenizer_unk(const mk_tokenizer *t);
/* One line: model, pre-tokenizer, normalizer ("BPE, byte-level, llama3 split, ..."). */
const char *mk_tokenizer_describe(const mk_tokenizer *t);

#endif
