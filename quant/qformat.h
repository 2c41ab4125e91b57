/* qformat.h - what a quantization format does, as one table of functions per layout family
 * (internal to quant/). A row of the format table (formats.c) names, per layout, the family
 * that writes it; the family holds all the behaviour: its settings, the stored tensors of a
 * weight, the row encoder the consumer calls, the quantization_config text, and the decoder
 * that recognises the layout in a checkpoint. The generic code (quant.c, qconsumer.c,
 * qstream.c, qsource.c) calls these and never asks which format it has.
 *
 * Families: fmt_bnb.c (bitsandbytes 4-bit NF4/FP4 with double quant, LLM.int8) and fmt_ct.c
 * (compressed-tensors pack-quantized integers, float-quantized FP8). The bit-exact kernels
 * they call are bnb.c, ct.c and search.c.
 * Must not: be included outside quant/ (and the tests).
 */
#ifndef MK_QFORMAT_H
#define MK_QFORMAT_H

#include "qsource.h"
#include "quant.h"

#include "../core/mk_json.h"

typedef struct mk_qcons mk_qcons;
typedef struct mk_qdec mk_qdec;
typedef struct mk_qcfg mk_qcfg;

struct mk_qfamily {
    const char *layout;     /* "bitsandbytes": what --target names and inspect shows */
    const char *alias;      /* another name --target takes ("bnb"), or NULL */
    const char *loaders;    /* "transformers + bitsandbytes (load_in_4bit)" */
    const char *card;       /* the model card's line on loading the output */
    const char *main_suffix; /* the stored tensor with the codes is module + this (".weight") */
    unsigned settings;      /* MK_QS_* it takes (MK_QS_TARGET is added for formats with
                               several layouts) */
    bool per_row;           /* always one scale per row: --group-size 0 just says so */

    /* ---- options (after the generic checks of which settings apply) ---- */
    /* Defaults and ranges of its settings; `streaming`: values arrive once (a merge). */
    mk_status (*resolve)(mk_qopts *o, bool streaming);
    /* ", block 64, double quant": the settings as mk_qopts_describe shows them. */
    void (*describe)(const mk_qopts *o, char *buf, size_t len);

    /* ---- plan ---- */
    /* Weight i is a 2-D float matrix the generic rules quantize: NULL to quantize it, or
     * why it is kept. With `warned` non-NULL it says so in a warning naming the weight
     * (at most 8 times, counting in *warned); planning calls it first with NULL, and again
     * for the warnings only when the plan quantizes something, so a plan refused for
     * quantizing nothing prints its one error line alone. May set t[i].group. */
    const char *(*select)(mk_qplan *p, size_t i, size_t *warned);
    /* Optional, with select: the setting that kept the weights select kept (t[i].kept_for_shape)
     * and a value that keeps none, from the widths of those and of the quantized weights.
     * none: no weight was quantized ("--group-size 7 divides the columns of no weight (128,
     * 352); --group-size 32 divides them all"); else some were ("--group-size 128 does not
     * divide their columns (576); --group-size 64 divides the columns of every weight"). */
    void (*kept_note)(const mk_qplan *p, bool none, char *buf, size_t len);
    /* Its stored tensors, in file order, with mk_qplan_add_out; `module` is the name
     * without ".weight". */
    mk_status (*stored)(mk_qplan *p, size_t i, const char *module);
    /* The quantization_config object (see mk_qplan_config_json). */
    void (*config_json)(const mk_qplan *p, mk_buf *b);
    /* Optional pass before the layout, for mk_qtensor.offset: floats of scratch it needs
     * for weight i (0: none wanted), the rows (disjoint ranges from several threads), and
     * the offset from the scratch. */
    uint64_t (*offset_scratch)(const mk_qplan *p, size_t i);
    void (*offset_rows)(const mk_qplan *p, size_t i, float *scratch, uint64_t e0, const float *x, uint64_t n);
    float (*offset_end)(const mk_qplan *p, size_t i, const float *scratch);

    /* ---- encoding (the consumer's per-tensor work; x is checked finite and rounded to
     * the weight's dtype) ---- */
    /* Element alignment of chunk starts for weight i; NULL = 1 (whole rows only). */
    uint64_t (*align)(const mk_qplan *p, size_t i);
    /* Private state of weight i until its end (NULL hook: none). */
    mk_status (*begin)(mk_qcons *q, size_t i, void **state);
    void (*state_free)(void *state);
    /* One chunk of whole rows [e0, e0 + n): write its bytes at their final offsets and
     * record its error sums (mk_qc_add_rec). Runs on several threads for disjoint chunks. */
    mk_status (*rows)(mk_qcons *q, size_t i, uint64_t e0, const float *x, size_t n);
    /* Instead of rows (which is then NULL): rows of f32 values, or (bf16) of the bf16 bit
     * patterns of a BF16 weight, widened in the kernels' loops (the same bytes and sums);
     * bf16_ok (NULL: always) says whether weight i may take bf16. Checked finite either way. */
    mk_status (*rows_x)(mk_qcons *q, size_t i, uint64_t e0, const void *x, size_t n, bool bf16);
    bool (*bf16_ok)(const mk_qplan *p, size_t i);
    /* What needs the whole tensor (maps, shapes, blobs); NULL when nothing does. */
    mk_status (*end)(mk_qcons *q, size_t i);
    /* Optional prepass: whether weight i wants it, each chunk, and its end. */
    bool (*wants_prepass)(const mk_qplan *p, size_t i);
    mk_status (*observe)(mk_qcons *q, size_t i, uint64_t e0, const float *x, size_t n);
    mk_status (*observe_end)(mk_qcons *q, size_t i);

    /* ---- decoding (dequantize, inspect; every stored tensor is hostile) ---- */
    /* Optional: what config.json's quantization_config says (q: its node), into c. */
    mk_status (*read_config)(const mk_source *in, const mk_json *j, uint32_t q, mk_qcfg *c);
    /* Whether stored tensor i marks a weight of this layout: *main = the inner index of
     * the tensor that carries its codes (-1: not), module name into mod[MK_QMOD_MAX]. */
    mk_status (*recognise)(const mk_source *in, size_t i, char *mod, long *main);
    /* Find and check the weight's other stored tensors and fill d (main, fam and aux[]
     * are -1 but for main; shape, dtypes and settings are the family's to fill). */
    mk_status (*parse)(mk_source *in, const char *mod, size_t i, const mk_qcfg *c, mk_qdec *d);
    /* What the checkpoint looks like, from weight d: first (the first quantized weight,
     * whose format, layout, bits and dtype are already set): block and the flags; every
     * weight: what the first alone cannot tell. */
    void (*info)(const mk_qdec *d, const mk_qcfg *c, bool first, mk_qinfo *info);
    /* Values [e0, e0 + n) of the weight as f32, exactly as the library decodes them. */
    mk_status (*decode)(mk_source *in, const mk_qdec *d, uint64_t e0, size_t n, float *out);
    /* Optional: the logical name of the weight whose codes are stored tensor `stored`
     * (allocated); NULL hook: the name less main_suffix, plus ".weight". */
    char *(*logical_name)(const char *stored);
};

/* Decode-only families that are not rows of the format table (ggml_fmt.c: GGUF blocks). */
extern const mk_qfamily mk_qfam_gguf;

/* The distinct families of the table, in table order (a family serves several rows). */
size_t mk_qfamilies(const mk_qfamily **out, size_t cap);
#define MK_QFAMILIES_MAX 16
/* Whether format f is written in layout fam; the first row that is, with this variant and
 * bits (0: any), or NULL (a decoder names what it read by its row). */
bool mk_qformat_has(const mk_qformat *f, const mk_qfamily *fam);
const mk_qformat *mk_qformat_of(const mk_qfamily *fam, int variant, unsigned bits);

/* ---- plan helpers (quant.c) ---------------------------------------------------------------- */
/* Append stored tensor `name` (owned; NULL = out of memory) to p->out. */
mk_status mk_qplan_add_out(mk_qplan *p, char *name, mk_dtype dt, int ndim, const int64_t *shape);
#define MK_QSHAPE(...) ((const int64_t[]){__VA_ARGS__})
/* The JSON list (2-space indented at the top level) of the Linear modules the loader must
 * leave alone: lm_head unless quantized, and every other kept matrix that is not an
 * embedding. Returns true when that is just ["lm_head"], the loaders' default. */
bool mk_qplan_module_list(const mk_qplan *p, mk_buf *b);
/* fmt_ct.c, for mixed precision (alloc.c): whether weights of family fam can be a config
 * group of a compressed-tensors checkpoint, and that checkpoint's quantization_config: group
 * k holds plans[k]'s weight settings with targets[k] (a JSON list text of module names);
 * "format" is the groups' one format or "mixed-precision"; "ignore" from view's weights. */
bool mk_ct_can_mix(const mk_qfamily *fam);
void mk_ct_mixed_config(const mk_qplan *const *plans, const char *const *targets, size_t np, const mk_qplan *view, mk_buf *b);
static inline int64_t mk_qcdiv(uint64_t a, uint64_t b) { return (int64_t)((a + b - 1) / b); }

/* ---- the consumer's services to a family (qconsumer.c) -------------------------------------- */
/* Scratch slots: a buffer per thread and slot, reused across chunks. */
enum { MK_QSCR_CODES, MK_QSCR_AUX, MK_QSCR_XH, MK_QSCR_SCALES, MK_QSCR_ZP, MK_QSCR_BYTES, MK_QSCR_ROUND, MK_QSCR_N };
const mk_qplan *mk_qc_plan(const mk_qcons *q);
/* This thread's buffer of at least `bytes` in `slot` (NULL and an error when out of memory);
 * per thread of mk_parallel_chunks (mk_thread_index). */
void *mk_qc_scratch(mk_qcons *q, int slot, size_t bytes);
/* Bytes [off, off + len) of stored tensor `out` (an index into p->out). */
mk_status mk_qc_put(mk_qcons *q, size_t out, uint64_t off, const void *data, uint64_t len);
/* The error sums of the chunk that starts at element e0 (reduced in element order at the end). */
mk_status mk_qc_add_rec(mk_qcons *q, size_t i, uint64_t e0, double sx2, double se2, float maxe);
/* The squared error of weight i is known only as a whole, and its max error only as a
 * bound (double quant without a prepass): they replace what the chunks recorded. */
void mk_qc_set_error(mk_qcons *q, size_t i, double se2, float maxe_bound);
/* The family's state of weight i (from its begin), and a lock for updating it from chunks. */
void *mk_qc_state(mk_qcons *q, size_t i);
void mk_qc_lock(mk_qcons *q, size_t i);
void mk_qc_unlock(mk_qcons *q, size_t i);

/* ---- the decoder's view of one quantized weight (qsource.c) --------------------------------- */
#define MK_QMOD_MAX 1024
#define MK_QDEC_AUX 5

/* What config.json's quantization_config says about the weights (compressed-tensors'
 * config_groups; zero values when it says nothing). */
struct mk_qcfg {
    int bits;               /* num_bits; 0 = not said */
    bool is_float, sym;
    long group;             /* group_size; -1 = null */
    char strategy[16];
};

struct mk_qdec {
    const mk_qfamily *fam;
    const mk_qformat *fmt;  /* the row it reads as (bits, variant, name) */
    size_t main;            /* inner index of the tensor with the codes */
    long aux[MK_QDEC_AUX];  /* inner indices of the family's other stored tensors; -1 absent */
    long extra[2];          /* stored tensors of the weight it does not read (input_scale) */
    mk_dtype orig;          /* the dtype before quantization; MK_DTYPE_NONE: the model's */
    uint64_t rows, cols, numel;
    int ndim;
    int64_t shape[MK_MAX_DIMS]; /* the logical shape */
    /* the settings as stored */
    unsigned block;         /* values per absmax */
    uint64_t group, ngroups; /* columns per scale, scales per row (0: one per tensor) */
    bool dq, asym;
    float offset;           /* double quant: nested offset */
    mk_dtype sdtype;        /* scale dtype = the arithmetic dtype of the decoding */
};

/* Inner index of `mod` + `suffix`, or -1. */
long mk_qdec_find(const mk_source *in, const char *mod, const char *suffix);
/* Stored tensor i is dtype dt with this shape, or an error naming it and `what`. */
mk_status mk_qdec_expect(const mk_source *in, long i, mk_dtype dt, int ndim, const int64_t *shape, const char *what);
/* All of stored tensor i (at most cap bytes; one byte more allocated), or bytes
 * [off, off + len) of it. Allocated. */
mk_status mk_qdec_read_all(mk_source *in, size_t i, uint64_t cap, void **out);
mk_status mk_qdec_read(mk_source *in, size_t i, uint64_t off, uint64_t len, void **buf);
static inline bool mk_qdec_is_float(mk_dtype d) { return d == MK_F32 || d == MK_F16 || d == MK_BF16; }
/* The weight is 2-D [rows, cols]. */
static inline void mk_qdec_shape2(mk_qdec *d, uint64_t rows, uint64_t cols)
{
    d->rows = rows;
    d->cols = cols;
    d->numel = rows * cols;
    d->ndim = 2;
    d->shape[0] = (int64_t)rows;
    d->shape[1] = (int64_t)cols;
}
/* Strip `suffix` from the end of `name` into mod[MK_QMOD_MAX]: false when it does not end so. */
bool mk_qdec_module(const char *name, const char *suffix, char *mod);

/* ---- for the tests -------------------------------------------------------------------------- */
/* fmt_bnb.c: the bitsandbytes JSON blob of weight i with its double-quant offset, padded
 * with spaces to `len` bytes (JSON allows trailing white space). Allocated. */
char *mk_qplan_final_json(const mk_qplan *p, size_t i, float offset, size_t len);

#endif
