/* qsource.h - reading quantized checkpoints: recognise the layouts quant.h writes (and the
 * same layouts written by transformers + bitsandbytes and by compressed-tensors), check
 * every stored tensor against them, and present the model as its dequantized self.
 *
 * The wrapped source lists the logical tensors: each quantized weight once, as F32 values
 * computed exactly as the consumer's own dequantizer does (bitsandbytes: code x absmax in
 * f32, the nested absmax decoded with the stored nested_quant_map; compressed-tensors:
 * (q - zero point) x scale rounded to the scale's dtype), and every other tensor as it is.
 * Auxiliary tensors (absmax, SCB, scales, shapes, JSON blobs) are not listed.
 *
 * Each layout is recognised, checked and decoded by its family of the format table
 * (qformat.h); this reader only walks the stored tensors and lists the result.
 * Every stored tensor is hostile: dtypes, shapes and byte counts are checked against the
 * JSON blob or the config before use, with overflow-checked arithmetic; a mismatch is an
 * error naming the tensor, what was expected and what was found.
 * Must not: know the container (it reads through mk_source) or write anything.
 */
#ifndef MK_QSOURCE_H
#define MK_QSOURCE_H

#include "../core/mk_tensor.h"

typedef struct mk_qinfo {
    bool quantized;
    char format[16];        /* "nf4", "fp4", "int8", "int4", "fp8", "fp8-e5m2", "int2"... */
    const char *layout;     /* "bitsandbytes" or "compressed-tensors" */
    unsigned bits;
    uint64_t block;         /* values per absmax, or columns per scale; 0 = none */
    const char *block_word; /* how the layout calls it: "block", "group" */
    bool per_channel;       /* one scale per row */
    bool per_tensor;        /* one scale per tensor */
    bool double_quant, asym;
    size_t n_quantized;     /* quantized weights */
    uint64_t q_numel;       /* their elements */
    uint64_t q_bytes;       /* their stored bytes (codes, scales, maps, blobs) */
    mk_dtype dtype;         /* dtype of the quantized weights before quantization */
    /* Also for a plain checkpoint (then the sums over its tensors): */
    uint64_t params;        /* parameters of the model the checkpoint holds: each quantized
                               weight by its logical shape, every other listed tensor by its
                               elements (what the dequantizing view lists) */
    uint64_t stored_bytes;  /* bytes of every tensor stored in the checkpoint */
} mk_qinfo;

/* Recognise and validate; info->quantized = false (and MK_OK) for a plain checkpoint. */
mk_status mk_qsource_probe(mk_source *inner, mk_qinfo *info);
/* The dequantizing view of `inner`; on success it owns `inner`. For a plain checkpoint
 * *out = inner. */
mk_status mk_qsource_open(mk_source *inner, mk_source **out, mk_qinfo *info);
/* The dtype logical tensor i had before quantization (its own dtype when not quantized). */
mk_dtype mk_qsource_orig_dtype(const mk_source *s, size_t i);
/* "nf4 (bitsandbytes, block 64, double quant)" */
const char *mk_qinfo_describe(const mk_qinfo *q, char buf[160]);

#endif
