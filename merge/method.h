/* method.h - the merge-method table and the interface between a method and the executor.
 *
 * One table drives the family: each entry has a name, its parameters with defaults, a
 * plan-time check and a run function. A method sees one output tensor at a time as a
 * job: its inputs are presented chunk by chunk (whole rows, as f32) through job->pass,
 * which runs a pure kernel over every chunk in parallel and, when asked, hands the
 * kernel's output chunk to the consumer. Methods that need a whole-tensor statistic
 * (a norm, a top-k threshold) make one or more passes that only gather per-chunk
 * results, reduce them in chunk order (deterministic at any thread count), then make the
 * emitting pass. Methods never allocate per element, never do I/O, never thread.
 *
 * Must not: know file formats, tensor names beyond the job's, or output layout.
 */
#ifndef MK_METHOD_H
#define MK_METHOD_H

#include "../core/mk_core.h"
#include "../core/mk_dtype.h"
#include "../core/mk_rng.h"

#include <sys/mman.h>

#define MK_MAX_PARAMS 8

typedef enum mk_param_scope {
    MK_PS_GLOBAL = 0, /* one value per tensor (read with the output tensor's name) */
    MK_PS_MODEL,      /* one value per non-base input (read with that input's tensor name);
                         the base gets none (mergekit's NON_BASE scope) */
    MK_PS_INPUT,      /* one value per input, the base included (mergekit's INPUT scope) */
} mk_param_scope;

/* The values a parameter accepts; every value written in a recipe (each entry of a
 * gradient, each conditional's value) and every value it resolves to must be in it.
 * Zero-initialised: any finite number. */
typedef struct mk_param_range {
    double lo, hi;
    unsigned flags; /* MK_PR_* */
} mk_param_range;

enum {
    MK_PR_LO = 1u << 0,       /* value >= lo (> lo with MK_PR_LO_OPEN) */
    MK_PR_HI = 1u << 1,       /* value <= hi */
    MK_PR_LO_OPEN = 1u << 2,
    MK_PR_INT = 1u << 3,      /* an integer */
    MK_PR_MERGEKIT = 1u << 4, /* mergekit 0.1.5 refuses the values outside as well; without it the
                                 rule is mergekit-c's: mergekit accepts them but they mean nothing
                                 (it clamps density to [0, 1], a negative threshold matches all) */
};

#define MK_PR_ANY {0, 0, 0}
#define MK_PR_UNIT {0, 1, MK_PR_LO | MK_PR_HI}              /* [0, 1] */
#define MK_PR_NONNEG {0, 0, MK_PR_LO}                       /* >= 0 */
#define MK_PR_POSITIVE {0, 0, MK_PR_LO | MK_PR_LO_OPEN}     /* > 0 */

typedef struct mk_param_def {
    const char *name;
    mk_param_scope scope;
    double def;
    bool required;  /* no default: must be given (per-model ones: except for the base) */
    bool boolean;   /* true/false (or 1/0): mergekit's pydantic bool refuses anything else */
    const char *help;
    mk_param_range range;
} mk_param_def;

/* Values of one chunk: rows [row0, row0+nrows) of the output tensor, flattened. */
typedef struct mk_chunk {
    uint64_t index;          /* chunk number, 0..n_chunks-1 */
    uint64_t elem0, n;       /* element range in the flattened output tensor */
    uint64_t row0, nrows;
    const float *const *in;  /* in[k][0..n): input k's values for these elements */
    float *out;              /* [n] the kernel's result (for emitting passes) */
    struct mk_chunk_tmp *tmp; /* the thread's scratch for this pass (kernel.h mk_chunk_scratch) */
} mk_chunk;

/* Scratch memory of one thread for one pass: grown on demand, reused by every chunk the
 * thread computes, freed when the pass ends, so kernels need not allocate per chunk. Mapped
 * pages of its own, not the heap: freed blocks of this size would raise malloc's mapping
 * threshold and stay in the heap (a larger peak resident size). */
typedef struct mk_chunk_tmp {
    void *p;
    size_t cap;
} mk_chunk_tmp;

/* Room for `bytes` (its old contents are not kept); false when memory is short. */
static inline bool mk_chunk_tmp_grow(mk_chunk_tmp *t, size_t bytes)
{
    if (bytes <= t->cap) return true;
    if (t->p) munmap(t->p, t->cap);
    t->p = NULL;
    t->cap = 0;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    t->p = p;
    t->cap = bytes;
    return true;
}

static inline void mk_chunk_tmp_free(mk_chunk_tmp *t)
{
    if (t->p) munmap(t->p, t->cap);
    t->p = NULL;
    t->cap = 0;
}

typedef struct mk_merge_job mk_merge_job;
typedef mk_status (*mk_chunk_fn)(const mk_merge_job *job, const mk_chunk *ch, void *user);

struct mk_merge_job {
    const char *name;        /* output tensor name */
    uint64_t numel, rows, cols;
    int ndim;                /* shape of the output tensor (rows x cols is its 2-D view) */
    const int64_t *shape;
    size_t n_in;             /* inputs that have this tensor */
    int base;                /* index of the base model among the inputs, or -1 */
    double g[MK_MAX_PARAMS]; /* global parameters, in the method's parameter order */
    const double (*m)[MK_MAX_PARAMS]; /* m[k][p]: per-model parameter p of input k */
    const bool (*m_set)[MK_MAX_PARAMS]; /* whether m[k][p] was given (else default) */
    uint64_t n_chunks;
    uint64_t chunk_rows;     /* rows of every chunk but the last (0: unknown; nothing is kept
                                between passes then, see mk_chunk_bits in methods/kernel.h) */
    uint64_t keep_bytes;     /* memory a method may keep from one pass to the next (masks,
                                selections; merge --pass-cache); 0: none, all recomputed */
    mk_rng rng;              /* keyed by (seed, output tensor name) */
    bool is_embed;           /* embedding / lm_head (some methods treat them apart) */
    /* mergekit computes in this dtype (the recipe's dtype, else the inputs' own) and
     * materialises weights in it; methods that want its rounding of parameters use it. */
    mk_dtype compute_dtype;
    /* Run fn over every chunk, in parallel. With emit, each chunk's out[] goes to the
     * consumer. The first error (lowest chunk) stops the pass. */
    mk_status (*pass)(const mk_merge_job *job, mk_chunk_fn fn, void *user, bool emit);
    /* As pass, but chunks below `kept` are computed from what the method kept of them in
     * earlier passes: their in is NULL and no input is read for them. In a tensor's first
     * pass every chunk gets its inputs (they are scanned for NaN and Inf then). */
    mk_status (*pass_kept)(const mk_merge_job *job, mk_chunk_fn fn, void *user, bool emit, uint64_t kept);
    void *exec; /* the executor's private state */
};

enum {
    MK_M_RESULT_F32 = 1u << 0, /* mergekit returns float32 whatever the compute dtype, so
                                  without out_dtype the output tensor is F32 */
};

/* What a method does with base_model (mergekit's InputContract.base). */
typedef enum mk_base_policy {
    MK_BASE_IGNORED = 0, /* the base is an ordinary input (linear, karcher, passthrough) */
    MK_BASE_OPTIONAL,    /* used when given (nuslerp, multislerp) */
    MK_BASE_REQUIRED,    /* task-vector methods, slerp, model_stock, ... */
} mk_base_policy;

/* What happens to an optional tensor (lm_head) that only some inputs have
 * (mergekit's OptionalTensorPolicy). */
typedef enum mk_missing_policy {
    MK_MISSING_ERROR = 0,       /* merge the inputs that have it; the input rules still apply */
    MK_MISSING_SINGLETON,       /* only one input has it: copy it */
    MK_MISSING_BASE_SINGLETON,  /* only the base has it: copy it */
    MK_MISSING_BASE_OR_SKIP,    /* too few inputs: copy the base if it alone has it, else drop */
} mk_missing_policy;

typedef struct mk_method {
    const char *name;
    const char *summary;
    const mk_param_def *params; /* terminated by an entry with name == NULL */
    unsigned flags;
    mk_base_policy base;
    /* Input counts per tensor (0 = no limit), counting the base unless IGNORED makes it
     * an ordinary input; non-base counts only when the base policy is not IGNORED. */
    unsigned min_inputs, max_inputs, min_non_base, max_non_base;
    mk_missing_policy missing;
    /* Plan-time validation of one output tensor (parameter ranges, method rules beyond
     * the input counts above). job->pass is NULL here. MK_ERR_RECIPE with a message
     * naming the tensor. May be NULL. */
    mk_status (*check)(const mk_merge_job *job);
    /* Compute the tensor. */
    mk_status (*run)(const mk_merge_job *job);
    /* Optional: true when the output is exactly input 0 (the executor then copies raw
     * bytes, keeping integer and exotic dtypes exact). */
    bool (*is_identity)(const mk_merge_job *job);
    /* Optional: true when run makes a single pass over the tensor (the executor then streams
     * its inputs around the page cache, core/mk_dstream.h). A hint only: a second pass reads
     * through the page cache. NULL: several passes may be made. */
    bool (*one_pass)(const mk_merge_job *job);
} mk_method;

/* mk_method.one_pass of a method whose run always makes a single pass. */
bool mk_method_one_pass(const mk_merge_job *job);

/* All methods mergekit ships, NULL-terminated. */
extern const mk_method *const mk_methods[];
const mk_method *mk_method_find(const char *name);
/* Index of parameter `name` in m->params, or -1. */
int mk_method_param(const mk_method *m, const char *name);
size_t mk_method_nparams(const mk_method *m);
/* Is `name` a parameter of any method (so a recipe written for another method)? */
bool mk_param_known_anywhere(const char *name);
/* Whether d accepts v (its range; 0 or 1 for booleans). */
bool mk_param_ok(const mk_param_def *d, double v);
/* What d accepts, for messages and `methods`: "[0, 1]", "> 0", "an integer in [0, 1000]",
 * "true or false", "any number". */
const char *mk_param_allowed(const mk_param_def *d, char buf[96]);
/* Whether mergekit 0.1.5 refuses the values d refuses too (else the rule is mergekit-c's). */
bool mk_param_rule_is_mergekit(const mk_param_def *d);

/* Index of the k-th non-base input (inputs in recipe order, the base skipped). */
static inline size_t mk_job_nonbase(const mk_merge_job *job, size_t k)
{
    return (job->base >= 0 && k >= (size_t)job->base) ? k + 1 : k;
}
static inline size_t mk_job_n_nonbase(const mk_merge_job *job)
{
    return job->n_in - (job->base >= 0 ? 1 : 0);
}

#endif
