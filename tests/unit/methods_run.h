/* methods_run.h - run a merge method on in-memory tensors for unit tests: a stand-in for
 * the executor that hands out whole-row chunks sequentially, in a chosen order, so tests
 * can check that results do not depend on the order chunks are processed in (as with
 * threads) and check statistics of random methods on large tensors.
 */
#ifndef MK_METHODS_RUN_H
#define MK_METHODS_RUN_H

#include "../../merge/method.h"

typedef struct mt_run {
    const char *method;
    const char *name;        /* tensor name (keys the random generator) */
    uint64_t rows, cols;
    size_t n_in;
    int base;                /* input index of the base, -1 = none */
    const float *const *in;  /* [n_in][rows * cols] */
    /* parameters by name; per-model ones apply to every non-base input unless m_val */
    const char *g_names[MK_MAX_PARAMS];
    double g_vals[MK_MAX_PARAMS];
    const char *m_names[MK_MAX_PARAMS];
    double m_vals[MK_MAX_PARAMS][8]; /* [param][input] */
    mk_dtype dtype;          /* compute dtype; 0 = F32 */
    uint64_t seed;
    uint64_t chunk_rows;     /* 0 = 7 */
    uint64_t keep_bytes;     /* the job's keep_bytes: 0 = 16 MiB (the executor's default), UINT64_MAX = 0 */
    int order;               /* 0 forward, 1 reverse, 2 odd chunks first */
    struct mt_counts *counts; /* optional: what the run did */
} mt_run;

typedef struct mt_counts {
    unsigned passes;         /* passes over the tensor */
    uint64_t chunks_no_input; /* chunks computed with no input read (pass_kept) */
} mt_counts;

/* Run it; out has rows * cols values. */
mk_status mt_run_method(const mt_run *r, float *out);

#endif
