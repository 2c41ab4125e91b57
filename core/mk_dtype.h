/* mk_dtype.h - the dtype traits table and exact conversions to and from f32.
 *
 * Owns: every element type we read or write, by its safetensors name, with its size and
 * row converters. Help text, header parsing and test loops all iterate MK_DTYPES.
 * Rounding: float narrowing is round-to-nearest, ties-to-even; NaN and Inf are kept
 * where the target format has them (F8_E4M3 has no Inf: out-of-range values become NaN,
 * as PyTorch's non-saturating cast does); integer targets round to nearest even and
 * saturate, NaN -> 0.
 * Must not: allocate, or know about tensors or files.
 */
#ifndef MK_DTYPE_H
#define MK_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum mk_dtype {
    MK_F64 = 0,
    MK_F32,
    MK_F16,
    MK_BF16,
    MK_F8_E4M3,
    MK_F8_E5M2,
    MK_I64,
    MK_I32,
    MK_I16,
    MK_I8,
    MK_U8,
    MK_U16,
    MK_U32,
    MK_U64,
    MK_BOOL,
    MK_DTYPE_COUNT,
    MK_DTYPE_NONE = -1
} mk_dtype;

typedef struct mk_dtype_traits {
    const char *name;       /* safetensors header name, e.g. "BF16" */
    const char *torch_name; /* "bfloat16"; used for config.json torch_dtype and recipes */
    unsigned size;          /* bytes per element */
    bool is_float;
    /* Convert n elements; src/dst need no alignment. */
    void (*to_f32)(const void *src, float *dst, size_t n);
    void (*from_f32)(const float *src, void *dst, size_t n);
} mk_dtype_traits;

extern const mk_dtype_traits MK_DTYPES[MK_DTYPE_COUNT];

static inline const mk_dtype_traits *mk_dtype_info(mk_dtype t) { return &MK_DTYPES[t]; }
static inline unsigned mk_dtype_size(mk_dtype t) { return MK_DTYPES[t].size; }
static inline const char *mk_dtype_name(mk_dtype t)
{
    return (t >= 0 && t < MK_DTYPE_COUNT) ? MK_DTYPES[t].name : "NONE";
}

/* Exact safetensors name ("BF16") -> dtype, or MK_DTYPE_NONE. Case-sensitive. */
mk_dtype mk_dtype_from_name(const char *name);
/* Recipe / CLI names: "bfloat16", "torch.bfloat16", "bf16", "float16", "fp16", "f16",
 * "float32", "fp32", "f32", "float64" ... -> dtype, or MK_DTYPE_NONE. */
mk_dtype mk_dtype_from_user(const char *name);

/* Largest finite value of a float dtype (F16: 65504, F8_E4M3: 448, ...). */
double mk_dtype_max_finite(mk_dtype t);

/* Scalar conversions (the reference bytes; row converters use these). */
uint16_t mk_f32_to_f16(float f);
float mk_f16_to_f32(uint16_t h);
uint16_t mk_f32_to_bf16(float f);
float mk_bf16_to_f32(uint16_t h);
uint8_t mk_f32_to_e4m3(float f);
float mk_e4m3_to_f32(uint8_t v);
uint8_t mk_f32_to_e5m2(float f);
float mk_e5m2_to_f32(uint8_t v);

/* x rounded to the nearest value of float dtype t (ties to even) and returned as f32:
 * what a framework that computes in t (bf16, fp16) stores after each operation. F32 and
 * wider types return x unchanged. */
static inline float mk_dtype_round(mk_dtype t, float x)
{
    if (t == MK_BF16) {
        union { float f; uint32_t u; } v = {x};
        if ((v.u & 0x7fffffffu) > 0x7f800000u) return x; /* NaN stays NaN */
        v.u += 0x7fffu + ((v.u >> 16) & 1u);
        v.u &= 0xffff0000u;
        return v.f;
    }
    if (t == MK_F16) return mk_f16_to_f32(mk_f32_to_f16(x));
    return x;
}
/* The same over n values in place. */
void mk_dtype_round_f32(mk_dtype t, float *v, size_t n);

/* Count of values in src (f32) that are finite but become non-finite in dtype `t`;
 * *first receives the index of the first one. Used to refuse overflowing narrowing. */
size_t mk_dtype_count_overflow(mk_dtype t, const float *src, size_t n, size_t *first);
/* from_f32 of n values into dst, returning mk_dtype_count_overflow's count (and *first);
 * for BF16 and F16 the overflow test rides on the conversion, one pass over src. */
size_t mk_dtype_from_f32_checked(mk_dtype t, const float *src, void *dst, size_t n, size_t *first);

/* dst[0, n) as f32 from n raw elements of dtype t (of 4 bytes or fewer) that fill dst's last
 * n * size(t) bytes: a read straight into the destination, converted there (no second
 * buffer). Wider dtypes are not supported (they do not fit). */
void mk_dtype_to_f32_inplace(mk_dtype t, float *dst, size_t n);

/* Count of NaN/Inf values among n raw elements of dtype t (0 for integer dtypes);
 * *first receives the index of the first one. */
size_t mk_dtype_count_nonfinite(mk_dtype t, const void *src, size_t n, size_t *first);

#endif
