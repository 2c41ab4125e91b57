/* kernel.h - helpers shared by the method kernels in merge/methods/.
 *
 * Owns: rounding to the compute dtype, order-preserving keys of floats, per-chunk partial
 * sums reduced in chunk order (so a whole-tensor statistic is the same number at any
 * thread count), and small per-chunk scratch buffers.
 *
 * How methods match mergekit: mergekit computes in the compute dtype (the recipe's
 * `dtype`, else the inputs' promoted dtype) and PyTorch rounds every elementwise result
 * to it; a reduction (sum, norm, dot) accumulates in f32 and rounds once. Kernels compute
 * each step in f32 and round with RD() exactly where PyTorch materialises a tensor, and
 * reduce in double before rounding; with a float32 compute dtype RD() is the identity.
 * Must not: do I/O, threading, or allocate per element.
 */
#ifndef MK_KERNEL_H
#define MK_KERNEL_H

#include "../method.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Round to the job's compute dtype (a no-op for float32). */
#define RD(x) mk_dtype_round(dt, (x))

/* An elementwise loop (no value carried from one iteration to the next) that should be
 * vectorised: each element gets exactly the same operations, so results do not change.
 * A hint: the fp16 and other rarely used instantiations call out to the dtype converters
 * and stay scalar, which clang would otherwise report as a failed transformation. */
#define MK_SIMD _Pragma("omp simd")
#ifdef __clang__
#pragma clang diagnostic ignored "-Wpass-failed"
#endif

/* A chunk kernel built twice, for the baseline x86-64 and for AVX2, the copy chosen when
 * the program starts (GCC's target_clones; the build runs with -ffp-contract=off and AVX2
 * alone has no FMA, so both copies make the same operations in the same order: wider
 * vectors, the same bits). MK_NO_CLONES builds the baseline alone (`make check` tests it),
 * and clang builds only the baseline, as for quant/qvec.h. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(MK_NO_CLONES)
#define MK_KCLONE __attribute__((target_clones("avx2", "default")))
#else
#define MK_KCLONE
#endif

/* Run f(dt, ...) with dt a compile-time constant for the common compute dtypes, so RD()
 * inlines to nothing (float32) or a few integer operations (bf16) and loops vectorise.
 * f must be `static inline MK_HOT` and take the dtype as its first argument. */
#define MK_HOT __attribute__((always_inline))
#define MK_DT_DISPATCH(dt, f, ...)                                                                                     \
    do {                                                                                                               \
        switch (dt) {                                                                                                  \
        case MK_F32: f(MK_F32, __VA_ARGS__); break;                                                                    \
        case MK_BF16: f(MK_BF16, __VA_ARGS__); break;                                                                  \
        default: f(dt, __VA_ARGS__); break;                                                                            \
        }                                                                                                              \
    } while (0)

/* How PyTorch (CPU) mixes a tensor of a 16-bit dtype with a scalar (a Python number or a
 * 0-dim float32 tensor), found by experiment against torch 2.x and relied on below:
 *   tensor * s, tensor / s      s stays float32:            RD(x * s)
 *   s * tensor (0-dim tensor s) s is first cast to the dtype: RD(RD(s) * x)
 *   Python s * tensor           as tensor * s
 *   tensor +- s, s +- tensor    s is first cast to the dtype
 *   Python s / tensor           reciprocal, then multiply:  RD(RD(1 / x) * s)
 *   comparisons, clamp bounds   s is first cast to the dtype */

/* Order-preserving uint32 key of |x| (NaN sorts above +Inf, as the bits say). */
static inline uint32_t mk_key_abs(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u & 0x7fffffffu;
}

/* Order-preserving uint32 key of a signed float (-Inf < ... < -0 < +0 < ... < +Inf).
 * -0 and +0 get different keys; callers that need them equal pass x + 0.0f. */
static inline uint32_t mk_key_f32(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static inline float mk_key_f32_value(uint32_t k)
{
    uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Python's int(x) for a finite non-negative double (truncation toward zero). */
static inline uint64_t mk_trunc_u64(double x) { return x <= 0 ? 0 : (uint64_t)x; }

/* Per-chunk partial sums: width values per chunk, each chunk writes its own row, the
 * reduction adds rows in chunk order. */
typedef struct mk_partials {
    uint64_t n_chunks;
    size_t width;
    double *v; /* [n_chunks][width] */
} mk_partials;

static inline mk_status mk_partials_init(mk_partials *p, uint64_t n_chunks, size_t width)
{
    p->n_chunks = n_chunks;
    p->width = width;
    size_t n;
    if (!mk_mul_size((size_t)n_chunks, width, &n)) return mk_error(MK_ERR_NOMEM, "partial sums: size overflow");
    p->v = mk_calloc(n ? n : 1, sizeof *p->v);
    return p->v ? MK_OK : MK_ERR_NOMEM;
}

static inline double *mk_partials_row(const mk_partials *p, uint64_t chunk) { return p->v + chunk * p->width; }

/* out[j] = sum over chunks (in chunk order) of row[j]. */
static inline void mk_partials_sum(const mk_partials *p, double *out)
{
    for (size_t j = 0; j < p->width; j++) out[j] = 0;
    for (uint64_t c = 0; c < p->n_chunks; c++) {
        const double *r = mk_partials_row(p, c);
        for (size_t j = 0; j < p->width; j++) out[j] += r[j];
    }
}

static inline void mk_partials_free(mk_partials *p)
{
    free(p->v);
    p->v = NULL;
}

/* Sums over a chunk in 8 double lanes (element i goes to lane i % 8, lanes added in
 * order at the end): the same association on every compiler and thread count, and
 * vectorisable, unlike one running sum. */
#define MK_LANES 8
static inline double mk_lanes_total(const double *l)
{
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* sum of x[i]^2 */
static inline MK_HOT double mk_sum_sq(const float *x, uint64_t n)
{
    double l[MK_LANES] = {0};
    uint64_t i = 0;
    for (; i + MK_LANES <= n; i += MK_LANES) MK_SIMD for (int j = 0; j < MK_LANES; j++) l[j] += (double)x[i + j] * (double)x[i + j];
    for (int j = 0; i < n; i++, j++) l[j] += (double)x[i] * (double)x[i];
    return mk_lanes_total(l);
}

/* sum of |x[i]|, and of |x[i]| where keep[i]. The 8 lanes are two vectors of 4 doubles
 * (GCC and clang vector extensions: elementwise IEEE operations, so each lane adds what the
 * scalar loop would, in the same order); the loop vectoriser left the lanes in memory. */
typedef double mk_v4d_ __attribute__((vector_size(32)));
typedef float mk_v4f_ __attribute__((vector_size(16)));
typedef uint8_t mk_v4b_ __attribute__((vector_size(4)));
typedef uint64_t mk_v4u_ __attribute__((vector_size(32)));
static inline MK_HOT void mk_sum_abs_kept(const float *x, const uint8_t *keep, uint64_t n, double *all, double *kept)
{
    double a[MK_LANES], k[MK_LANES];
    mk_v4d_ a0 = {0}, a1 = {0}, k0 = {0}, k1 = {0};
    const mk_v4u_ nosign = {~0ull >> 1, ~0ull >> 1, ~0ull >> 1, ~0ull >> 1};
    uint64_t i = 0;
    for (; i + MK_LANES <= n; i += MK_LANES) {
        mk_v4f_ f0, f1;
        mk_v4b_ b0, b1;
        memcpy(&f0, x + i, sizeof f0);
        memcpy(&f1, x + i + 4, sizeof f1);
        memcpy(&b0, keep + i, sizeof b0);
        memcpy(&b1, keep + i + 4, sizeof b1);
        /* fabs((double)x): the conversion, then the sign bit cleared */
        const mk_v4d_ v0 = (mk_v4d_)((mk_v4u_)__builtin_convertvector(f0, mk_v4d_) & nosign);
        const mk_v4d_ v1 = (mk_v4d_)((mk_v4u_)__builtin_convertvector(f1, mk_v4d_) & nosign);
        a0 += v0;
        a1 += v1;
        k0 += v0 * __builtin_convertvector(b0, mk_v4d_); /* keep is 0 or 1: exact */
        k1 += v1 * __builtin_convertvector(b1, mk_v4d_);
    }
    memcpy(a, &a0, sizeof a0);
    memcpy(a + 4, &a1, sizeof a1);
    memcpy(k, &k0, sizeof k0);
    memcpy(k + 4, &k1, sizeof k1);
    for (int j = 0; i < n; i++, j++) {
        double v = fabs((double)x[i]);
        a[j] += v;
        k[j] += v * (double)keep[i];
    }
    *all = mk_lanes_total(a);
    *kept = mk_lanes_total(k);
}

/* A reduction PyTorch does in f32 and stores in the compute dtype: the double sum
 * rounded to f32, then to dt. */
static inline float mk_reduced(mk_dtype dt, double sum) { return mk_dtype_round(dt, (float)sum); }

/* Uniforms of elements [e0, e0 + n) of one (key, stream), as mk_rng_uniform gives them,
 * several Philox blocks at a time; words must hold n + 8 values. */
static inline void mk_uniforms(mk_rng key, uint64_t stream, uint64_t e0, uint64_t n, float *u, uint32_t *words)
{
    if (!n) return;
    uint64_t b0 = e0 >> 2, nb = ((e0 + n - 1) >> 2) - b0 + 1;
    mk_rng_blocks(key, stream, b0, (size_t)nb, words);
    const uint32_t *w = words + (e0 - 4 * b0);
    MK_SIMD for (uint64_t i = 0; i < n; i++) u[i] = (float)(w[i] >> 8) * 0x1p-24f;
}

/* Sizes of the pieces carved from a chunk's scratch are rounded up to 64 bytes. */
static inline size_t mk_tmp_round(size_t b) { return (b + 63) & ~(size_t)63; }

/* The thread's scratch for this chunk, with room for n pieces of sz[i] bytes each (carve
 * them in order, each at a multiple of 64 bytes: mk_tmp_round); its contents are not kept
 * from one chunk to the next. NULL when memory is short. */
static inline void *mk_chunk_scratch(const mk_chunk *ch, const size_t *sz, size_t n)
{
    size_t total = 64;
    for (size_t i = 0; i < n; i++) total += mk_tmp_round(sz[i]);
    /* mapped pages are aligned to more than 64 bytes */
    return mk_chunk_tmp_grow(ch->tmp, total) ? ch->tmp->p : NULL;
}

/* Up to this many inputs per tensor (stack arrays in kernels). */
#define MK_KMAX 64

static inline mk_status mk_check_inputs_max(const mk_merge_job *job, const char *method)
{
    if (job->n_in > MK_KMAX)
        return mk_error(MK_ERR_UNSUPPORTED, "tensor %s: %s takes at most %d models, %zu given", job->name, method,
                        MK_KMAX, job->n_in);
    return MK_OK;
}

/* Output = input k as it is (methods that return one of their inputs unchanged). */
static mk_status mk_copy_chunk_(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    (void)job;
    memcpy(ch->out, ch->in[*(const size_t *)user], (size_t)ch->n * sizeof(float));
    return MK_OK;
}
static inline mk_status mk_emit_input(const mk_merge_job *job, size_t k) { return job->pass(job, mk_copy_chunk_, &k, true); }

/* Output = zeros. */
static mk_status mk_zero_chunk_(const mk_merge_job *job, const mk_chunk *ch, void *user)
{
    (void)job;
    (void)user;
    memset(ch->out, 0, (size_t)ch->n * sizeof(float));
    return MK_OK;
}
static inline mk_status mk_emit_zeros(const mk_merge_job *job) { return job->pass(job, mk_zero_chunk_, NULL, true); }

/* Per-chunk bit sets kept from one pass to a later one (a method's random masks or
 * selections), so that pass reads them instead of drawing or selecting again. Bounded: the
 * first chunks whose bits fit in the job's keep_bytes are kept, the others computed again
 * in every pass (the same bits either way, so the output does not depend on the cap).
 * Slots are per chunk, so threads working on different chunks never share a byte; a
 * chunk's bits are read only in a pass after the one that stored them. */

typedef struct mk_chunk_bits {
    uint64_t slot;   /* bytes per (chunk, stream) */
    uint64_t n_kept; /* chunks 0 .. n_kept-1 are kept */
    size_t streams;
    uint8_t *bits;   /* [n_kept][streams][slot] */
    uint8_t *have;   /* [n_kept] 1 once the chunk's bits are stored */
} mk_chunk_bits;

/* Keep `streams` bits per element, capped at `cap` bytes; none when the job does not say
 * how big its chunks are (or memory is short: everything is then computed again). */
static inline void mk_chunk_bits_init(mk_chunk_bits *b, const mk_merge_job *job, size_t streams, uint64_t cap)
{
    memset(b, 0, sizeof *b);
    if (!job->chunk_rows || !job->cols || !streams || !job->n_chunks || job->chunk_rows > UINT32_MAX ||
        job->cols > UINT32_MAX)
        return;
    b->slot = (job->chunk_rows * job->cols + 7) / 8;
    b->streams = streams;
    uint64_t per = b->slot * streams;
    b->n_kept = cap / per < job->n_chunks ? cap / per : job->n_chunks;
    if (!b->n_kept) return;
    b->bits = malloc((size_t)(b->n_kept * per));
    b->have = calloc((size_t)b->n_kept, 1);
    if (!b->bits || !b->have) {
        free(b->bits);
        free(b->have);
        memset(b, 0, sizeof *b);
    }
}

static inline void mk_chunk_bits_free(mk_chunk_bits *b)
{
    free(b->bits);
    free(b->have);
    memset(b, 0, sizeof *b);
}

/* The slot of (chunk, stream), or NULL when the chunk is past the cap. */
static inline uint8_t *mk_chunk_bits_at(const mk_chunk_bits *b, uint64_t chunk, size_t stream)
{
    return chunk < b->n_kept ? b->bits + (chunk * b->streams + stream) * b->slot : NULL;
}

static inline bool mk_chunk_bits_have(const mk_chunk_bits *b, uint64_t chunk) { return chunk < b->n_kept && b->have[chunk]; }
static inline void mk_chunk_bits_stored(mk_chunk_bits *b, uint64_t chunk)
{
    if (chunk < b->n_kept) b->have[chunk] = 1;
}

/* flags[0..n) (each 0 or 1) <-> bits, element i in bit i % 8 of byte i / 8 */
static inline void mk_bits_pack(const uint8_t *flags, uint64_t n, uint8_t *bits)
{
    uint64_t j = 0;
    for (; 8 * j + 8 <= n; j++) {
        const uint8_t *f = flags + 8 * j;
        bits[j] = (uint8_t)(f[0] | f[1] << 1 | f[2] << 2 | f[3] << 3 | f[4] << 4 | f[5] << 5 | f[6] << 6 | f[7] << 7);
    }
    if (8 * j < n) {
        uint8_t v = 0;
        for (uint64_t i = 8 * j; i < n; i++) v |= (uint8_t)(flags[i] << (i - 8 * j));
        bits[j] = v;
    }
}

static inline void mk_bits_unpack(const uint8_t *bits, uint64_t n, uint8_t *flags)
{
    uint64_t j = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* eight flags a step: byte t of the copies of bits[j] keeps bit t, and adding 0x7f
     * moves "nonzero" into that byte's top bit (no byte carries into the next) */
    for (; 8 * j + 8 <= n; j++) {
        uint64_t x = ((uint64_t)bits[j] * 0x0101010101010101ull) & 0x8040201008040201ull;
        x = ((x + 0x7f7f7f7f7f7f7f7full) >> 7) & 0x0101010101010101ull;
        memcpy(flags + 8 * j, &x, 8);
    }
#endif
    for (uint64_t i = 8 * j; i < n; i++) flags[i] = (bits[i >> 3] >> (i & 7)) & 1;
}

#endif
