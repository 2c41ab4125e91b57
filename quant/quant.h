/* quant.h - post-training quantization of checkpoints: the format table, which tensors
 * are quantized, the stored tensors each quantized weight becomes (in the layouts that
 * transformers + bitsandbytes and compressed-tensors / vLLM load), the
 * `quantization_config` for config.json, the quantizing consumer with its per-tensor error
 * statistics, and a driver that streams a source through any consumer.
 *
 * A quantized weight P.weight (2-D, row-major [rows, cols]) becomes:
 *   nf4/fp4  P.weight U8 [(n+1)/2, 1], P.weight.absmax F32 [ceil(n/block)] (U8 with
 *            double quant, plus P.weight.nested_absmax F32 and P.weight.nested_quant_map
 *            F32 [256]), P.weight.quant_map F32 [16], P.weight.quant_state.bitsandbytes__nf4
 *            U8 (the JSON blob); reference/quantization-formats.md 1.6
 *   int8     P.weight I8 [rows, cols], P.SCB F32 [rows], P.weight_format U8 [] (= 0); ref. 2
 *   int4 (and int8 with target compressed-tensors)  P.weight_packed I32 [rows, ceil(cols *
 *            bits / 32)], P.weight_scale [rows, groups] in the weight dtype, P.weight_shape
 *            I64 [2], with zero points P.weight_zero_point I32 [ceil(rows * bits / 32),
 *            groups]; ref. 5
 *   fp8      P.weight F8_E4M3 (or F8_E5M2) [rows, cols], P.weight_scale [rows, 1] (or [1])
 *            in the weight dtype; ref. 4.2
 * Everything else (embeddings, lm_head, norms, biases, 1-D tensors, and what --skip names)
 * is written unchanged.
 *
 * Memory: chunk buffers per thread, plus per weight its block absmax with double quant
 * (n / 64 floats) and small per-chunk statistics records.
 * Must not: read files or know the container format; cli/ wires sources and sinks.
 */
#ifndef MK_QUANT_H
#define MK_QUANT_H

#include "../model/arch.h"

typedef enum mk_qfmt { MK_QF_NF4 = 0, MK_QF_FP4, MK_QF_INT8, MK_QF_INT4, MK_QF_FP8, MK_QF_FP8_E5M2, MK_QF_COUNT } mk_qfmt;
typedef enum mk_qtarget { MK_QT_DEFAULT = 0, MK_QT_BNB, MK_QT_CT } mk_qtarget;
typedef enum mk_qmethod { MK_QM_RTN = 0, MK_QM_SEARCH } mk_qmethod;

/* The format table: drives option parsing, help text and tests. */
typedef struct mk_qformat_info {
    const char *name;
    const char *summary;
    unsigned bits;
    mk_qtarget target;      /* the default */
    bool allow_bnb, allow_ct;
} mk_qformat_info;
extern const mk_qformat_info MK_QFORMATS[MK_QF_COUNT];
/* Format by name ("nf4", "fp8-e5m2", ...); -1 when unknown. */
int mk_qformat_find(const char *name);

typedef struct mk_qopts {
    mk_qfmt fmt;
    mk_qtarget target;
    mk_qmethod method;
    unsigned block;         /* nf4/fp4 block size; 0 = 64 */
    bool double_quant;      /* nf4/fp4: nested 8-bit absmax */
    long group;             /* compressed-tensors int: columns per scale; -1 = default
                               (128 for int4, per channel for int8); 0 = per channel */
    bool asym;              /* compressed-tensors int: zero points */
    bool per_tensor;        /* fp8: one scale per tensor instead of one per row */
    const char *skip;       /* comma-separated patterns: keep matching tensors unquantized */
    const char *include;    /* comma-separated patterns: quantize matching tensors that
                               would be kept (2-D float weights only) */
    const char *compute_dtype; /* bnb_4bit_compute_dtype; NULL = the weights' dtype */
} mk_qopts;

/* Check the combination and fill defaults; a usage error names the option. `streaming`
 * refuses what needs a whole tensor before its first value can be written (fp8 with
 * --per-tensor inside a merge). */
mk_status mk_qopts_resolve(mk_qopts *o, bool streaming);
/* Parse "FORMAT[,key=value...]" (merge --quantize): keys double-quant, block-size,
 * group-size, scheme=sym|asym, target=bnb|compressed-tensors, method=rtn|search,
 * per-tensor. `spec` must outlive o. */
mk_status mk_qopts_parse(const char *spec, mk_qopts *o);
/* "nf4, block 64, double quant" into buf. */
const char *mk_qopts_describe(const mk_qopts *o, char buf[160]);

/* ---- plan: which tensor becomes what -------------------------------------------------- */
typedef enum mk_qkind { MK_QK_KEEP = 0, MK_QK_BNB4, MK_QK_BNB8, MK_QK_CT_INT, MK_QK_CT_FP8 } mk_qkind;

typedef struct mk_qtensor {
    mk_qkind kind;
    const char *kept_why;   /* for a kept 2-D weight: "embedding", "lm_head", "--skip", ... */
    mk_role role;           /* what the tensor is (model/arch.h) */
    mk_dtype wdtype;        /* the logical tensor's dtype: arithmetic dtype and bnb "dtype" */
    uint64_t rows, cols, numel;
    uint64_t group;         /* ct int: columns per scale (cols for per channel) */
    size_t out0, nout;      /* its stored tensors: out[out0 .. out0 + nout) */
    bool has_offset;        /* double quant: absmax mean known before the layout */
    float offset;
    char *json;             /* bnb 4-bit: the quant_state blob (padded when !has_offset) */
} mk_qtensor;

typedef struct mk_qplan {
    mk_qopts o;
    size_t n;               /* logical tensors */
    mk_tensor_info *in;     /* [n] copies; names borrowed from the caller */
    mk_qtensor *t;          /* [n] */
    size_t n_out;
    mk_tensor_info *out;    /* stored tensors, in order; names owned */
    size_t n_quantized;
    uint64_t q_numel;       /* elements of the quantized weights */
    uint64_t in_bytes;      /* all logical tensors as given */
    uint64_t out_bytes;     /* all stored tensors */
    mk_name_index index;    /* logical name -> index */
} mk_qplan;

/* Decide each tensor's kind (warns about weights kept for their shape). `arch` names the
 * tensors' roles (NULL: the automatic rules). */
mk_status mk_qplan_init(mk_qplan *p, const mk_qopts *o, const mk_arch *arch, const mk_tensor_info *in, size_t n);
/* Double quant: the logical tensors whose absmax mean should be known before the layout
 * (for an exact-length JSON blob); set it with mk_qplan_set_offset. */
bool mk_qplan_wants_offset(const mk_qplan *p, size_t i);
void mk_qplan_set_offset(mk_qplan *p, size_t i, float offset);
/* Build the stored tensor list (after the offsets that are known are set). */
mk_status mk_qplan_layout(mk_qplan *p);
/* Internal to quant/: the bitsandbytes JSON blob of tensor i with its double-quant
 * offset, padded with spaces to `len` bytes (JSON allows trailing white space) when the
 * offset was not known at layout time. Allocated. */
char *mk_qplan_final_json(const mk_qplan *p, size_t i, float offset, size_t len);
/* The quantization_config object for config.json (2-space indented, keys sorted, as
 * transformers and compressed-tensors write it). Allocated. */
char *mk_qplan_config_json(const mk_qplan *p);
void mk_qplan_free(mk_qplan *p);
/* Python's repr() of a float (shortest round-trip digits; "0.0123", "1e-05", "2.0"). */
const char *mk_fmt_pyfloat(double v, char buf[40]);

/* ---- the quantizing consumer ---------------------------------------------------------- */
typedef struct mk_qstats {
    bool quantized, done;
    uint64_t numel;
    uint64_t in_bytes, out_bytes;   /* logical tensor as given / its stored tensors */
    double sum_x2, sum_e2;          /* sum of squares of the weights and of the errors */
    double max_err;                 /* largest |x - dequant(quant(x))| */
    bool max_err_bound;             /* an upper bound (double quant inside a merge) */
} mk_qstats;

/* Logical tensor i of `p` is written as its stored tensors into `sink` (already begun
 * with p->out). values_exact: the values arrive exactly representable in each tensor's
 * dtype (read from a source of that dtype); otherwise they are rounded to it first, and
 * a finite value that overflows it is an error unless allow_overflow. */
mk_status mk_quant_consumer(mk_consumer *c, mk_sink *sink, const mk_qplan *p, bool values_exact, bool allow_overflow);
/* An optional first pass over tensor i, for what needs the whole tensor before its first
 * code (fp8 --per-tensor scale; exact statistics with double quant). */
bool mk_quant_wants_prepass(mk_consumer *c, size_t i);
mk_status mk_quant_observe(mk_consumer *c, size_t i, uint64_t elem0, const float *v, uint64_t n);
mk_status mk_quant_observe_end(mk_consumer *c, size_t i);
const mk_qstats *mk_quant_stats(mk_consumer *c, size_t i);

/* ---- streaming a source through a consumer ------------------------------------------------ */
typedef struct mk_qstream_opts {
    uint64_t chunk_elems;   /* 0 = 256 Ki elements */
    /* Called after each tensor from the calling thread. May be NULL. */
    void (*progress)(void *ctx, size_t done, size_t total, uint64_t bytes_done, uint64_t bytes_total, const char *name);
    void *progress_ctx;
    bool quant;             /* the consumer is mk_quant_consumer: run its prepasses */
} mk_qstream_opts;

/* Logical tensor i (info logical[i]) is source tensor src_idx[i] (same element count):
 * begin, [prepass,] rows in chunks of whole rows (OpenMP over chunks), end; raw copy when
 * the consumer allows it. Chunk boundaries depend only on shapes, never on threads. */
mk_status mk_qstream_run(mk_source *src, const size_t *src_idx, const mk_tensor_info *logical, size_t n, mk_consumer *c,
                         const mk_qstream_opts *o);
/* Double quant offsets for every tensor of p that wants one, read from the source
 * (quantize: an extra pass over those weights so the JSON blob has its exact length). */
mk_status mk_qstream_offsets(mk_source *src, const size_t *src_idx, mk_qplan *p, uint64_t chunk_elems);

#endif
