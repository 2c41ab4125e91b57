/* gguf.h - llama.cpp's GGUF files (versions 2 and 3) as a tensor source.
 *
 * Reader rules (reference/formats-security-compression.md; llama.cpp's gguf.cpp and its
 * CVE history: count, length and offset overflows): magic "GGUF", version 2 or 3 (a
 * byte-swapped version is a big-endian file, refused); tensor and KV counts bounded and
 * never more than the bytes left could hold; keys and strings bounded; booleans 0 or 1;
 * arrays of a known element type, not nested, counts checked against the bytes left;
 * duplicate keys and tensor names refused; general.alignment a u32 power of two;
 * tensors 1 to 4 dimensions, each at least 1, products and byte sizes overflow-checked;
 * types ggml defines and that we decode; the first dimension a whole number of blocks;
 * offsets aligned, inside the file and not overlapping.
 *
 * As a source: llama.cpp tensor names become Hugging Face names for the architectures
 * model/gguf_names.h knows (Q/K rows of llama-family attention read back in their Hugging
 * Face order), config.json and tokenizer.json are made from the metadata. Plain tensors
 * (F32, F16, BF16, F64, integers) are listed as they are; a block-quantized one is
 * listed as U8 [rows, bytes per row] named "NAME@TYPE" ("model.norm.weight@Q4_K"), which
 * quant/qsource.h presents dequantized as NAME.
 * Must not: decode blocks (quant/ggml.h does) or write anything.
 */
#ifndef MK_GGUF_H
#define MK_GGUF_H

#include "../core/mk_tensor.h"

#define MK_GGUF_MAX_HEADER (1ull << 30)   /* bytes of metadata and tensor infos read */
#define MK_GGUF_MAX_TENSORS (1u << 20)
#define MK_GGUF_MAX_KV (1u << 20)
#define MK_GGUF_MAX_KEY 65535u            /* gguf.cpp's limit on key length */
#define MK_GGUF_MAX_STRING (64u << 20)
#define MK_GGUF_MAX_NAME 64u              /* GGML_MAX_NAME, the terminating NUL included */
#define MK_GGUF_MAX_ALIGN (1u << 20)

/* KV value types (gguf.h enum gguf_type) */
enum {
    MK_GGUF_U8, MK_GGUF_I8, MK_GGUF_U16, MK_GGUF_I16, MK_GGUF_U32, MK_GGUF_I32, MK_GGUF_F32, MK_GGUF_BOOL,
    MK_GGUF_STRING, MK_GGUF_ARRAY, MK_GGUF_U64, MK_GGUF_I64, MK_GGUF_F64, MK_GGUF_TYPE_COUNT
};

typedef struct mk_gguf_kv {
    char *key;
    uint32_t type;   /* MK_GGUF_* */
    uint32_t atype;  /* element type of an array */
    uint64_t n;      /* array elements, or string bytes */
    uint64_t off;    /* where the value (array: its first element) starts in the image */
} mk_gguf_kv;

typedef struct mk_gguf_tensor {
    char *name;
    uint32_t ndim;
    uint64_t ne[4];  /* ne[0] is the innermost (contiguous) dimension */
    uint32_t type;   /* enum ggml_type */
    uint64_t offset; /* relative to the data section */
    uint64_t nbytes;
} mk_gguf_tensor;

typedef struct mk_gguf {
    uint32_t version;
    uint64_t n_kv, n_tensors;
    mk_gguf_kv *kv;
    mk_gguf_tensor *t;
    uint64_t alignment;
    uint64_t data_offset;   /* absolute */
    uint64_t need;          /* set when the header runs past the bytes given: bytes wanted */
    const unsigned char *img; /* the image parsed (borrowed) */
    size_t img_len;
} mk_gguf;

/* Validate the header of a GGUF image: buf holds the first len bytes of a file of
 * file_size bytes. When the header needs more than len bytes (and the file has them),
 * returns MK_ERR_FORMAT with g->need set. The fuzz entry point. g borrows buf. */
mk_status mk_gguf_parse(const unsigned char *buf, size_t len, uint64_t file_size, const char *what, mk_gguf *g);
void mk_gguf_free(mk_gguf *g);

/* ---- metadata (from a parse whose image is still alive) ---- */
const mk_gguf_kv *mk_gguf_find(const mk_gguf *g, const char *key);
/* An integer (any integer type or bool) / a float (f32, f64 or integer) / a string
 * (NUL-terminated copy into buf, truncated to cap): false when absent or another type. */
bool mk_gguf_get_int(const mk_gguf *g, const char *key, int64_t *v);
bool mk_gguf_get_float(const mk_gguf *g, const char *key, double *v);
bool mk_gguf_get_str(const mk_gguf *g, const char *key, char *buf, size_t cap);
/* The strings of an array of strings, in order: start with *pos = kv->off; each call gives
 * one (a pointer into the image and its length, not NUL-terminated) and advances *pos. */
void mk_gguf_next_str(const mk_gguf *g, uint64_t *pos, const char **s, uint64_t *len);
/* Element i of an array of integers. */
bool mk_gguf_arr_int(const mk_gguf *g, const mk_gguf_kv *kv, uint64_t i, int64_t *v);
const char *mk_gguf_type_name(uint32_t t);
/* tokenizer.json text made from tokenizer.ggml.* (gguf_tok.c); *out = NULL when the file
 * has no vocabulary this can convert (byte-level BPE "gpt2" with a known pre-tokenizer, and
 * SentencePiece "llama", are converted). */
mk_status mk_gguf_tokenizer_json(const mk_gguf *g, char **out);

/* ---- as a source ---- */
bool mk_gguf_probe(const char *path);
mk_status mk_gguf_open(const char *path, mk_source **out);
/* The parsed header behind a source mk_gguf_open made, else NULL (inspect shows it). */
const mk_gguf *mk_gguf_of_source(const mk_source *s);

#endif
