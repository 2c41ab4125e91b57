/* imatrix.h - llama.cpp's importance matrices (llama-imatrix's GGUF output, general.type
 * "imatrix"): for each matrix NAME (a GGUF tensor name) the F32 tensors NAME.in_sum2 ([cols,
 * nmat]: per input column, the sum over tokens of the squared activation) and NAME.counts
 * ([1, nmat]: the tokens summed), and the metadata imatrix.datasets (strings),
 * imatrix.chunk_count and imatrix.chunk_size (u32).
 *
 * Reader rules: the GGUF rules of gguf.h; every .in_sum2 has its .counts and the reverse, both
 * F32, counts one per matrix with in_sum2 a whole multiple of them; sums finite and >= 0;
 * counts finite, >= 0 and at most MK_IMATRIX_MAX_COUNT; names at most MK_GGUF_MAX_NAME.
 * Each error names the file and the tensor. The importance of a column (what llama-quantize
 * hands the quantizers): in_sum2 / round(count), or 1 where the count is 0.
 * Must not: know tensor types, run models or quantize.
 */
#ifndef MK_IMATRIX_H
#define MK_IMATRIX_H

#include "../core/mk_core.h"

#include <stdint.h>

#define MK_IMATRIX_MAX_BYTES (1ull << 32)   /* a file read whole */
#define MK_IMATRIX_MAX_COUNT 1e15           /* tokens a matrix saw */

typedef struct mk_imatrix_entry {
    char *name;      /* the matrix's name (without .in_sum2) */
    uint64_t cols;   /* values a matrix (ne0 of in_sum2) */
    uint64_t nmat;   /* matrices (experts); 1 for a plain linear weight */
    float *imp;      /* [nmat * cols] importance */
} mk_imatrix_entry;

typedef struct mk_imatrix {
    mk_imatrix_entry *e;
    size_t n;
    uint32_t chunk_count, chunk_size;
} mk_imatrix;

/* Parse an imatrix GGUF image of len bytes (the whole file); what names it in errors. The
 * fuzz entry point. */
mk_status mk_imatrix_parse(const unsigned char *buf, size_t len, const char *what, mk_imatrix *m);
mk_status mk_imatrix_read(const char *path, mk_imatrix *m);
/* What a writer has gathered for one matrix: per column the sum over tokens of the squared
 * input activation, and the tokens summed. */
typedef struct mk_imatrix_stat {
    const char *name; /* the matrix's GGUF name */
    uint64_t cols;
    const double *sum2; /* [cols] */
    double count;
} mk_imatrix_stat;

/* Write stats as llama-imatrix's GGUF (F32 NAME.in_sum2 [cols, 1] and NAME.counts [1, 1];
 * general.type, imatrix.datasets, chunk_count, chunk_size) to out, atomically (out must not
 * exist unless force). */
mk_status mk_imatrix_write(const char *out, const mk_imatrix_stat *st, size_t n, const char *const *datasets, size_t n_datasets,
                           uint32_t chunk_count, uint32_t chunk_size, bool force);
/* the entry for matrix name, or NULL */
const mk_imatrix_entry *mk_imatrix_find(const mk_imatrix *m, const char *name);
void mk_imatrix_free(mk_imatrix *m);

#endif
