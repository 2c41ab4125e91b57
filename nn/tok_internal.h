/* tok_internal.h - the parts of a loaded tokenizer, shared by the files of nn/tok_*.c:
 * tok_load.c (tokenizer.json -> these structures), tok_model.c (vocabulary, BPE and
 * WordLevel), tok_pretok.c (pre-tokenizer scanners), tokenizer.c (the encode pipeline,
 * decoders, public API). Not for use outside nn/.
 */
#ifndef MK_TOK_INTERNAL_H
#define MK_TOK_INTERNAL_H

#include "tokenizer.h"

/* ---- vocabulary: token strings <-> ids 0..n-1, an open-addressing hash ---------------- */
typedef struct tok_vocab {
    uint32_t n, ids_cap;
    uint32_t *off, *len; /* token i is strs[off[i] .. off[i]+len[i]) */
    char *strs;
    size_t strs_len, strs_cap;
    uint32_t *slots;     /* id + 1, 0 = empty */
    size_t mask;         /* slots has mask + 1 entries, a power of two */
    int32_t ascii[128];  /* id of each one-byte token, or -1 (a fast path for BPE's first step) */
} tok_vocab;

mk_status tok_vocab_init(tok_vocab *v, uint32_t n_expected);
/* Append token id v->n; false when the string is already present (*dup = its id). */
mk_status tok_vocab_add(tok_vocab *v, const char *s, size_t len, bool *dup, uint32_t *dup_id);
int32_t tok_vocab_find(const tok_vocab *v, const char *s, size_t len);
void tok_vocab_free(tok_vocab *v);

/* ---- models ------------------------------------------------------------------------- */
typedef enum tok_model_kind { TOK_MODEL_BPE, TOK_MODEL_WORDLEVEL } tok_model_kind;

typedef struct tok_merges {
    uint64_t *keys;   /* (left id + 1) << 32 | (right id + 1); 0 = empty */
    uint32_t *rank, *out;
    size_t mask;
    size_t n;
} tok_merges;

typedef struct tok_model {
    tok_model_kind kind;
    tok_vocab vocab;
    tok_merges merges;
    char *unk;          /* unk_token, or NULL */
    int32_t unk_id;     /* -1 when unk is NULL or not in the vocabulary */
    bool byte_fallback, fuse_unk, ignore_merges;
    int32_t byte_id[256]; /* "<0xNN>" tokens for byte_fallback, -1 when absent */
} tok_model;

/* Scratch for one encode call (tokenizer.c owns it; tok_model.c grows it). */
typedef struct tok_scratch {
    struct tok_sym *sym;
    size_t sym_cap;
    struct tok_heap_item *heap;
    size_t heap_cap;
} tok_scratch;
void tok_scratch_free(tok_scratch *s);

typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;
mk_status tok_ids_push(tok_ids *ids, int32_t id);

/* Tokens of one pre-tokenized piece (valid UTF-8) appended to ids. */
mk_status tok_model_encode(const tok_model *m, tok_scratch *sc, const char *s, size_t n, tok_ids *ids);
mk_status tok_merges_add(tok_merges *g, uint32_t a, uint32_t b, uint32_t rank, uint32_t out);
mk_status tok_merges_init(tok_merges *g, size_t n_expected);
void tok_model_free(tok_model *m);

/* ---- normalizers, pre-tokenizers, decoders: flat lists (Sequences are flattened) ----- */
typedef enum tok_norm_kind { NORM_NFC, NORM_NFD, NORM_PREPEND, NORM_REPLACE, NORM_STRIP } tok_norm_kind;
typedef struct tok_norm {
    tok_norm_kind kind;
    char *a, *b;        /* Prepend: a; Replace: a -> b */
    size_t alen, blen;
    bool left, right;   /* Strip */
} tok_norm;

typedef enum tok_split_behavior {
    SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS
} tok_split_behavior;

typedef enum tok_pretok_kind {
    PT_BYTELEVEL,        /* optional prefix space, optional GPT-2 split, bytes -> chars */
    PT_SPLIT_GPT2,       /* Split with the GPT-2 regex */
    PT_SPLIT_LLAMA3,     /* Split with the Llama-3 regex (\p{N}{1,3}) */
    PT_SPLIT_QWEN2,      /* Split with the Qwen2 regex (\p{N}) */
    PT_SPLIT_STRING,     /* Split with a literal string */
    PT_DIGITS,
    PT_WHITESPACE,       /* \w+|[^\w\s]+ kept, the rest removed */
    PT_WHITESPACE_SPLIT, /* split on White_Space, removed */
    PT_METASPACE,
    PT_COUNT
} tok_pretok_kind;

typedef enum tok_prepend { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } tok_prepend;

typedef struct tok_pretok {
    tok_pretok_kind kind;
    tok_split_behavior behavior;
    bool invert;
    bool add_prefix_space, use_regex; /* ByteLevel */
    bool individual;                  /* Digits */
    uint32_t replacement;             /* Metaspace */
    char rep[4];
    size_t rep_len;
    tok_prepend prepend;
    bool split;
    char *pattern;                    /* Split string */
    size_t pattern_len;
} tok_pretok;

typedef enum tok_dec_kind { DEC_BYTELEVEL, DEC_METASPACE, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP } tok_dec_kind;
typedef struct tok_dec {
    tok_dec_kind kind;
    char *a, *b;        /* Replace a -> b */
    size_t alen, blen;
    uint32_t ch;        /* Metaspace replacement, Strip content */
    tok_prepend prepend;
    size_t start, stop; /* Strip */
} tok_dec;

typedef struct tok_added {
    uint32_t id;
    char *content;      /* as declared */
    size_t len;
    char *norm;         /* normalized content (normalized tokens with a normalizer), else NULL */
    size_t norm_len;
    bool single_word, lstrip, rstrip, normalized, special;
} tok_added;

/* Leftmost-longest matcher over a set of added tokens (candidates bucketed by first byte,
 * longest first). */
typedef struct tok_matcher {
    uint32_t *cand;      /* indexes into added[], grouped by first byte */
    uint32_t start[257]; /* cand[start[b] .. start[b+1]) begin with byte b */
    size_t n;
} tok_matcher;

struct mk_tokenizer {
    tok_model model;
    tok_norm *norm;
    size_t n_norm;
    tok_pretok *pre;
    size_t n_pre;
    tok_dec *dec;
    size_t n_dec;
    bool has_decoder;
    tok_added *added;
    size_t n_added;
    tok_matcher raw_match, norm_match;
    int32_t *added_of_id; /* index into added[] per id (-1 none), vocab_size entries */
    size_t vocab_size;
    /* post-processor: ids around the sequence when add_special */
    int32_t *prefix, *suffix;
    size_t n_prefix, n_suffix;
    int32_t bos, eos;
    char describe[256];
};

/* Normalize s[0..n) (valid UTF-8) through the normalizer list into out. */
void tok_normalize(const mk_tokenizer *t, const char *s, size_t n, mk_buf *out);

/* ---- pre-tokenization: a pipeline of stages, run depth-first per piece ----------------- */
typedef struct tok_pipe tok_pipe;
/* Called with each final piece (valid UTF-8). */
typedef mk_status (*tok_piece_fn)(tok_pipe *p, const char *s, size_t n);
struct tok_pipe {
    const mk_tokenizer *t;
    mk_buf *bufs;        /* one scratch buffer per stage (n_pre of them) */
    tok_piece_fn piece;
    void *ctx;
};
/* Run stages k.. on piece s[0..n); `first`: the piece starts at offset 0 of the input
 * (Metaspace's prepend_scheme "first"). */
mk_status tok_pretok_run(tok_pipe *p, size_t k, const char *s, size_t n, bool first);
/* The GPT-2 byte -> char map of the ByteLevel pre-tokenizer and decoder (U+0021..U+0143). */
uint32_t tok_byte_char(unsigned char b);
/* Inverse: the byte of a ByteLevel char, or -1. */
int tok_char_byte(uint32_t cp);

#endif
