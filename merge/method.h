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

#define MK_MAX_PARAMS 8

typedef enum mk_param_scope {
    MK_PS_GLOBAL = 0, /* one value per tensor (read with the output tensor's name) */
    MK_PS_MODEL,      /* one value per input model (read with that input's tensor name) */
} mk_param_scope;

typedef struct mk_param_def {
    const char *name;
    mk_param_scope scope;
    double def;
    bool required;  /* no default: must be given (per-model ones: except for the base) */
    bool boolean;   /* shown as true/false */
    const char *help;
} mk_param_def;

/* Values of one chunk: rows [row0, row0+nrows) of the output tensor, flattened. */
typedef struct mk_chunk {
    uint64_t index;          /* chunk number, 0..n_chunks-1 */
    uint64_t elem0, n;       /* element range in the flattened output tensor */
    uint64_t row0, nrows;
    const float *const *in;  /* in[k][0..n): input k's values for these elements */
    float *out;              /* [n] the kernel's result (for emitting passes) */
} mk_chunk;

typedef struct mk_merge_job mk_merge_job;
typedef mk_status (*mk_chunk_fn)(const mk_merge_job *job, const mk_chunk *ch, void *user);

struct mk_merge_job {
    const char *name;        /* output tensor name */
    uint64_t numel, rows, cols;
    size_t n_in;             /* inputs that have this tensor */
    int base;                /* index of the base model among the inputs, or -1 */
    double g[MK_MAX_PARAMS]; /* global parameters, in the method's parameter order */
    const double (*m)[MK_MAX_PARAMS]; /* m[k][p]: per-model parameter p of input k */
    const bool (*m_set)[MK_MAX_PARAMS]; /* whether m[k][p] was given (else default) */
    uint64_t n_chunks;
    mk_rng rng;              /* keyed by (seed, output tensor name) */
    bool is_embed;           /* embedding / lm_head (some methods treat them apart) */
    /* mergekit computes in this dtype (the recipe's dtype, else the inputs' own) and
     * materialises weights in it; methods that want its rounding of parameters use it. */
    mk_dtype compute_dtype;
    /* Run fn over every chunk, in parallel. With emit, each chunk's out[] goes to the
     * consumer. The first error (lowest chunk) stops the pass. */
    mk_status (*pass)(const mk_merge_job *job, mk_chunk_fn fn, void *user, bool emit);
    void *exec; /* the executor's private state */
};

enum {
    MK_M_NEEDS_BASE = 1u << 0,  /* base_model is required */
    MK_M_SINGLE = 1u << 1,      /* exactly one input (passthrough) */
};

typedef struct mk_method {
    const char *name;
    const char *summary;
    const mk_param_def *params; /* terminated by an entry with name == NULL */
    unsigned flags;
    /* Plan-time validation of one output tensor (input count, base, parameter ranges).
     * job->pass is NULL here. MK_ERR_RECIPE with a message naming the tensor. */
    mk_status (*check)(const mk_merge_job *job);
    /* Compute the tensor; NULL for methods mergekit has that we do not implement yet. */
    mk_status (*run)(const mk_merge_job *job);
    /* Optional: true when the output is exactly input 0 (the executor then copies raw
     * bytes, keeping integer and exotic dtypes exact). */
    bool (*is_identity)(const mk_merge_job *job);
} mk_method;

/* All methods mergekit ships (implemented ones have run != NULL), NULL-terminated. */
extern const mk_method *const mk_methods[];
const mk_method *mk_method_find(const char *name);
/* Index of parameter `name` in m->params, or -1. */
int mk_method_param(const mk_method *m, const char *name);
size_t mk_method_nparams(const mk_method *m);
/* Is `name` a parameter of any method (so a recipe written for another method)? */
bool mk_param_known_anywhere(const char *name);

/* Helpers for kernels. */
static inline double mk_job_w(const mk_merge_job *job, size_t k, int p) { return job->m[k][p]; }

#endif
