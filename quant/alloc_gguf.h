/* alloc_gguf.h - the GGUF side of a size budget (`convert MODEL OUT.gguf --target-bpw B`):
 * which llama.cpp types may be candidates, the type each takes on a matrix (llama-quantize's
 * fallback where a row is not whole blocks), and each candidate's stored bits and error on
 * each matrix, measured by the type's own encode and decode round trip (the encoder convert
 * writes with: the importance-weighted one where an imatrix gives the matrix importances and
 * the type's quantizer takes them). The choice itself is mk_alloc_solve (alloc.h).
 * Error: the sum over the matrix of (x - q)^2, or, with importances, of imp[column] times it.
 * Sums run over fixed 65536-value row chunks, added in chunk order: the same numbers at any
 * thread count.
 * Must not: know tensor names or files; cli/ plans the tensors and writes the file.
 */
#ifndef MK_ALLOC_GGUF_H
#define MK_ALLOC_GGUF_H

#include "../core/mk_core.h"
#include "../core/mk_tensor.h"

#define MK_ALLOC_GGUF_MAX_TYPES 14
extern const char mk_alloc_gguf_default_types[]; /* "q2_k,q3_k,q4_k,q5_k,q6_k,q8_0,f16" */

/* "q4_k,q6_k,f16,...": ggml types convert writes (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0,
 * q5_1, q2_k ... q6_k, iq4_nl; case-insensitive); NULL: the default. A usage error names a
 * bad, repeated or unknown entry (opt: the option's name). */
mk_status mk_alloc_gguf_types_parse(const char *opt, const char *spec, uint32_t *types, size_t *n);

/* Whether the type's llama.cpp quantizer takes importances (llama-quantize --imatrix): every
 * type convert writes but f32, f16, bf16, q8_0 and the ternary ones. */
bool mk_alloc_gguf_weighted(uint32_t type);

typedef struct mk_alloc_gguf_mat {
    size_t src;           /* the source tensor */
    uint64_t rows, cols;
    const float *imp;     /* [cols]: the imatrix's importances (NULL: none) */
    bool weigh_error;     /* err weighted by imp (else err = se2) */
} mk_alloc_gguf_mat;

/* type[m * k + j]: the ggml type matrix m takes as candidate j (UINT32_MAX: none). For each:
 * bits[m * k + j] (stored bits; -1 for none), se2 (sum of squared error) and err (the
 * objective), decoded from the bytes the encoder writes (weighted by m->imp where the type
 * takes importances). Candidates of one matrix with the same type are measured once. */
mk_status mk_alloc_gguf_measure(mk_source *src, const mk_alloc_gguf_mat *m, size_t n, const uint32_t *type, size_t k, double *bits,
                                double *se2, double *err);

#endif
