/* quant.h - post-training quantization of checkpoints: the format table and its settings,
 * which tensors are quantized, the stored tensors each quantized weight becomes (in the
 * layouts that transformers + bitsandbytes and compressed-tensors / vLLM load), the
 * `quantization_config` for config.json, the quantizing consumer with its per-tensor error
 * statistics, and a driver that streams a source through any consumer.
 *
 * One table drives the family (quant/formats.c): a row per format (name, summary, bits,
 * default block or group size, the layouts it is written in, its documented error bound),
 * and behind each layout a family of functions (quant/qformat.h, one file per layout
 * ecosystem: fmt_bnb.c, fmt_ct.c) that checks the settings, plans the stored tensors,
 * encodes rows, writes the quantization_config and decodes the layout again. Option parsing, help, --list-formats
 * and the tests read the table; nothing outside the table's files asks which format it is.
 * What each format stores: docs/quantization.md, "What is written".
 *
 * Everything that is not quantized (embeddings, lm_head, norms, biases, 1-D tensors, and
 * what --skip names) is written unchanged.
 * Memory: chunk buffers per thread, plus per weight what its format keeps for the end
 * (bitsandbytes double quant: the block absmax, n / 64 floats) and small per-chunk
 * statistics records.
 * Must not: read files or know the container format; cli/ wires sources and sinks.
 */
#ifndef MK_QUANT_H
#define MK_QUANT_H

#include "../model/arch.h"

/* ---- the format table ------------------------------------------------------------------- */

/* What a format does in one layout: its settings, plan, encoder, config text and decoder
 * (quant/qformat.h). Opaque outside quant/. */
typedef struct mk_qfamily mk_qfamily;

#define MK_QFORMAT_MAX_LAYOUTS 4

typedef struct mk_qformat {
    const char *name;       /* "nf4": --format, --quantize, inspect */
    const char *summary;    /* one line for the help and --list-formats */
    unsigned bits;          /* bits per code */
    int variant;            /* the family's own choice (bitsandbytes 4-bit code table, E5M2) */
    unsigned block;         /* default values per absmax, where the layout has blocks */
    long group;             /* default columns per scale, where the layout groups columns
                               (0: one scale per row) */
    /* Documented: the relative RMSE of N(0, 1) weights (a [64, 512] bf16 matrix) at the
     * default settings stays below this in every layout; a unit test holds every row to it. */
    double max_rel_rmse;
    const char *loaders;    /* who loads it, when not what the family says; else NULL */
    const mk_qfamily *layouts[MK_QFORMAT_MAX_LAYOUTS]; /* [0] is the default; NULL after the last */
} mk_qformat;

/* Every format, in help order; terminated by an entry with name == NULL. */
extern const mk_qformat mk_qformats[];
size_t mk_qformat_count(void);
const mk_qformat *mk_qformat_find(const char *name);
/* The same, or a usage error "WHAT: unknown format 'x' (did you mean 'y'?) (formats: ...)". */
mk_status mk_qformat_lookup(const char *name, const char *what, const mk_qformat **out);
/* "nf4, fp4, int8, int4, fp8 or fp8-e5m2" into buf (`last`: " or ", ", "...). */
const char *mk_qformat_names(char *buf, size_t len, const char *last);
size_t mk_qformat_nlayouts(const mk_qformat *f);
/* The layout's name as --target takes it ("bitsandbytes", "compressed-tensors"). */
const char *mk_qfamily_layout(const mk_qfamily *fam);
/* Who loads format f written in layout fam ("transformers + bitsandbytes (load_in_4bit)"). */
const char *mk_qformat_loaders(const mk_qformat *f, const mk_qfamily *fam);

typedef enum mk_qmethod { MK_QM_RTN = 0, MK_QM_SEARCH } mk_qmethod;

typedef struct mk_qopts {
    const mk_qformat *fmt;
    const char *target;     /* the layout asked for (a layout name or alias); NULL = the default */
    const mk_qfamily *fam;  /* set by mk_qopts_resolve: the format in that layout */
    mk_qmethod method;
    unsigned block;         /* values per absmax (bitsandbytes 4-bit); 0 = default */
    bool double_quant;      /* nested 8-bit absmax (bitsandbytes 4-bit) */
    long group;             /* columns per scale; -1 = the format's default; 0 = per channel */
    bool asym;              /* zero points */
    bool per_tensor;        /* one scale per tensor instead of one per row */
    const char *skip;       /* comma-separated patterns: keep matching tensors unquantized */
    const char *include;    /* comma-separated patterns: quantize matching tensors that
                               would be kept (2-D float weights only) */
    const char *compute_dtype; /* bnb_4bit_compute_dtype; NULL = the weights' dtype */
} mk_qopts;

/* Unset settings for format f. */
void mk_qopts_init(mk_qopts *o, const mk_qformat *f);
/* Pick the layout, check that every setting given applies to the format in it (a usage
 * error names the option and the formats it applies to), and fill defaults. `streaming`
 * refuses what needs a whole tensor before its first value can be written (a merge). */
mk_status mk_qopts_resolve(mk_qopts *o, bool streaming);
/* Parse "FORMAT[,key[=value]...]" (merge --quantize); the keys are the settings below.
 * `spec` must outlive o. */
mk_status mk_qopts_parse(const char *spec, mk_qopts *o);
/* "nf4 (bitsandbytes, block 64, double quant)" into buf (resolved options). */
const char *mk_qopts_describe(const mk_qopts *o, char buf[160]);
/* The settings part alone: "block 64, double quant". */
const char *mk_qopts_settings(const mk_qopts *o, char buf[160]);
/* Bits per weight of a reference weight (bf16 [4096, 4096]) stored with resolved options
 * o: codes, scales, maps, shapes and blobs, as the layout itself sizes them. */
mk_status mk_qopts_bits_per_weight(const mk_qopts *o, double *bpw);

/* ---- settings: the options of quantize and the keys of merge --quantize -------------------- */
enum {
    MK_QS_BLOCK = 1u << 0,
    MK_QS_DOUBLE_QUANT = 1u << 1,
    MK_QS_GROUP = 1u << 2,
    MK_QS_SCHEME = 1u << 3,
    MK_QS_METHOD = 1u << 4,
    MK_QS_PER_TENSOR = 1u << 5,
    MK_QS_TARGET = 1u << 6, /* taken by every format written in more than one layout */
};

typedef struct mk_qsetting {
    const char *key;        /* "block-size": --block-size, and the --quantize key */
    const char *metavar;    /* "N"; NULL for a flag */
    const char *help;       /* what it does (the formats it applies to are added) */
    const char *what;       /* how a usage error names it: "--scheme asym" */
    unsigned bit;           /* MK_QS_* */
    /* Whether o sets it (away from its unset value). */
    bool (*given)(const mk_qopts *o);
    /* Set it from text (NULL for a flag); errors are prefixed with `who`. */
    mk_status (*set)(mk_qopts *o, const char *val, const char *who);
    /* Its value in resolved options, for the defaults in the help; NULL for a flag. */
    const char *(*show)(const mk_qopts *o, char buf[48]);
} mk_qsetting;

/* Terminated by an entry with key == NULL. */
extern const mk_qsetting mk_qsettings[];
const mk_qsetting *mk_qsetting_find(const char *key);
/* The formats that take it: "nf4, fp4", "int8 (compressed-tensors), int4". */
const char *mk_qsetting_formats(const mk_qsetting *s, char *buf, size_t len);
/* Its default: "64", or "128 for int4, 0 for int8" where formats differ; NULL for a flag. */
const char *mk_qsetting_default(const mk_qsetting *s, char *buf, size_t len);
/* Whether format f in layout fam takes it. */
bool mk_qsetting_applies(const mk_qsetting *s, const mk_qformat *f, const mk_qfamily *fam);
/* Set `key` (NULL value for a flag). */
mk_status mk_qopts_set(mk_qopts *o, const char *key, const char *val, const char *who);

/* ---- plan: which tensor becomes what -------------------------------------------------- */
typedef struct mk_qtensor {
    bool quantized;
    const char *kept_why;   /* for a kept 2-D weight: "embedding", "lm_head", "--skip", ... */
    bool kept_for_shape;    /* kept by the format's rule on its shape (kept_why is its reason) */
    mk_role role;           /* what the tensor is (model/arch.h) */
    mk_dtype wdtype;        /* the logical tensor's dtype: arithmetic dtype and bnb "dtype" */
    uint64_t rows, cols, numel;
    uint64_t group;         /* columns per scale, for the formats that group columns */
    size_t out0, nout;      /* its stored tensors: out[out0 .. out0 + nout) */
    /* A number of the whole weight its layout depends on (bitsandbytes double quant: the
     * absmax mean, which sets the length of the JSON blob), when known before the layout. */
    bool has_offset;
    float offset;
    char *json;             /* the JSON blob stored with the weight, in layouts that have one
                               (bitsandbytes 4-bit quant_state); padded when !has_offset */
    const float *imp;       /* --method search: each column's importance (an imatrix's mean
                               squared input activation; borrowed), or NULL: the data-free proxy */
} mk_qtensor;

typedef struct mk_qplan {
    mk_qopts o;
    size_t n;               /* logical tensors */
    mk_tensor_info *in;     /* [n] copies; names borrowed from the caller */
    mk_qtensor *t;          /* [n] */
    size_t n_out, out_cap;
    mk_tensor_info *out;    /* stored tensors, in order; names owned */
    size_t n_quantized;
    size_t n_weights;       /* 2-D float weight matrices (what could be quantized) */
    size_t n_kept_shape;    /* ... of them kept by the format's rule on their shape */
    uint64_t q_numel;       /* elements of the quantized weights */
    uint64_t in_bytes;      /* all logical tensors as given */
    uint64_t out_bytes;     /* all stored tensors */
    mk_name_index index;    /* logical name -> index */
} mk_qplan;

/* Decide which tensors are quantized. `o` is resolved; `arch` names the tensors' roles (NULL:
 * the automatic rules). When some weights are quantized, those kept for their shape are
 * warned about (the first 8 by name) and a summary says how many were kept and which setting would
 * quantize them all ("--group-size 64 divides the columns of every weight"). */
mk_status mk_qplan_init(mk_qplan *p, const mk_qopts *o, const mk_arch *arch, const mk_tensor_info *in, size_t n);
/* A plan that quantizes no tensor is a usage error naming the format, its settings and why
 * ("int4 (compressed-tensors, group 7, ...) quantizes no weight: --group-size 7 divides the
 * columns of no weight (128, 352); --group-size 32 divides them all"): what would be written
 * is no quantized checkpoint, and no reader (ours included) would take it for one. */
mk_status mk_qplan_check(const mk_qplan *p);
/* The logical tensors whose offset (see mk_qtensor) should be known before the layout;
 * mk_qstream_offsets finds them, or set one with mk_qplan_set_offset. */
bool mk_qplan_wants_offset(const mk_qplan *p, size_t i);
void mk_qplan_set_offset(mk_qplan *p, size_t i, float offset);
/* Build the stored tensor list (after the offsets that are known are set). */
mk_status mk_qplan_layout(mk_qplan *p);
/* The quantization_config object for config.json (2-space indented, keys sorted, as
 * transformers and compressed-tensors write it). Allocated. */
char *mk_qplan_config_json(const mk_qplan *p);
/* The model card's line on how to load the output. */
const char *mk_qplan_load_hint(const mk_qplan *p);
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
 * a finite value that overflows it is an error unless allow_overflow. The consumer offers
 * the prepass of mk_consumer_ops where its format wants the whole tensor before the first
 * code (fp8 per-tensor scale; exact statistics with double quant), and works without it
 * where the settings allow (a merge does not run it). */
mk_status mk_quant_consumer(mk_consumer *c, mk_sink *sink, const mk_qplan *p, bool values_exact, bool allow_overflow);
const mk_qstats *mk_quant_stats(mk_consumer *c, size_t i);

/* ---- streaming a source through a consumer ------------------------------------------------ */
typedef struct mk_qstream_opts {
    uint64_t chunk_elems;   /* 0 = 256 Ki elements */
    /* Called after each tensor from the calling thread. May be NULL. */
    void (*progress)(void *ctx, size_t done, size_t total, uint64_t bytes_done, uint64_t bytes_total, const char *name);
    void *progress_ctx;
} mk_qstream_opts;

/* Logical tensor i (info logical[i]) is source tensor src_idx[i] (same element count):
 * begin, [the consumer's prepass,] rows in chunks of whole rows (OpenMP over chunks), end;
 * raw copy when the consumer allows it. Chunk boundaries depend only on shapes, never on
 * threads. */
mk_status mk_qstream_run(mk_source *src, const size_t *src_idx, const mk_tensor_info *logical, size_t n, mk_consumer *c,
                         const mk_qstream_opts *o);
/* The offsets of every tensor of p that wants one, read from the source (quantize: an
 * extra pass over those weights so the layout has its exact sizes). */
mk_status mk_qstream_offsets(mk_source *src, const size_t *src_idx, mk_qplan *p, uint64_t chunk_elems);

#endif
