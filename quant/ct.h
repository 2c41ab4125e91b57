/* ct.h - the compressed-tensors quantizers, bit for bit: integer weights ("pack-quantized",
 * 4 or 8 bits, symmetric or with zero points, per group or per channel) and FP8 weights
 * ("float-quantized", E4M3; our E5M2 variant follows the same rules), plus packing and
 * dequantizers.
 *
 * Owns: the rules of reference/quantization-formats.md 4.1, 4.2, 5 and 8 as
 * compressed-tensors 0.20.1 runs them (quantization/utils/helpers.py calculate_qparams,
 * lifecycle/forward_helpers.py _quantize/_dequantize, compressors/pack_quantized). Its
 * arithmetic happens in the weight's own dtype: every division, addition and product is
 * computed in f32 and rounded to that dtype (bf16, f16 or f32), as torch does on the
 * CPU, so a value may be rounded twice (e.g. bf16(x / scale), then to an integer or to FP8).
 * Scales of zero become that dtype's epsilon. Values are clamped before the final cast.
 * Each kernel has a plain reference (`_ref`) and a fast version tested against it.
 * Must not: allocate (except the one-time FP8 lookup tables), or know tensors or files.
 */
#ifndef MK_CT_H
#define MK_CT_H

#include "../core/mk_dtype.h"
#include "qerr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* x rounded to the arithmetic dtype t (BF16, F16 or F32), as f32. Finite x. */
float mk_ct_round(mk_dtype t, float x);
/* torch.finfo(t).eps: the replacement for a zero scale. */
float mk_ct_eps(mk_dtype t);

typedef struct mk_ct_int {
    unsigned bits;   /* 4 or 8 */
    bool asym;       /* zero points (weights.symmetric = false) */
    mk_dtype wdtype; /* arithmetic dtype = the weight's = the scale's */
} mk_ct_int;

static inline int mk_ct_qmin(const mk_ct_int *a) { return -(1 << (a->bits - 1)); }
static inline int mk_ct_qmax(const mk_ct_int *a) { return (1 << (a->bits - 1)) - 1; }

/* Scale and zero point of one group (n values; min/max observer + calculate_qparams). */
void mk_ct_int_qparams(const mk_ct_int *a, const float *x, size_t n, float *scale, int32_t *zp);
/* Codes of one group: clamp(round(dt(dt(x / scale) + zp)), qmin, qmax). */
void mk_ct_int_codes_ref(const mk_ct_int *a, const float *x, size_t n, float scale, int32_t zp, int8_t *q);
/* The same codes; with err (else NULL), also adds the error sums of mk_ct_int_dequant. */
void mk_ct_int_codes(const mk_ct_int *a, const float *x, size_t n, float scale, int32_t zp, int8_t *q, mk_qerr *err);
/* A row of cols values in groups of `group` (which divides cols): mk_ct_int_qparams then
 * mk_ct_int_codes of each group, scales[g] and zps[g] its parameters, the same bytes and
 * error sums. */
void mk_ct_int_row(const mk_ct_int *a, const float *x, size_t cols, size_t group, float *scales, int32_t *zps, int8_t *q, mk_qerr *err);
/* The same from the bf16 bit patterns of a weight whose wdtype is BF16 (converted as they
 * are loaded). */
void mk_ct_int_row_bf16(const mk_ct_int *a, const uint16_t *x, size_t cols, size_t group, float *scales, int32_t *zps, int8_t *q,
                        mk_qerr *err);
/* The same row packed (mk_ct_pack_row into words[cols * bits / 32]) in one pass, bf16 weights:
 * the scales, zero points, words and error sums of mk_ct_int_row_bf16 then mk_ct_pack_row
 * (the _ref), which it is where no vector pass fits (codes: cols bytes of scratch for that). */
void mk_ct_int_row_bf16_packed(const mk_ct_int *a, const uint16_t *x, size_t cols, size_t group, float *scales, int32_t *zps,
                               uint32_t *words, int8_t *codes, mk_qerr *err);
void mk_ct_int_row_bf16_packed_ref(const mk_ct_int *a, const uint16_t *x, size_t cols, size_t group, float *scales, int32_t *zps,
                                   uint32_t *words, int8_t *codes, mk_qerr *err);
/* Tests: the widest pass mk_ct_int_row_bf16_packed may take (2: AVX-512VL, 1: AVX2, 0: the
 * reference); returns the cap before. */
int mk_ct_simd_cap(int level);
/* Decompressed values: dt((q - zp) * scale). */
void mk_ct_int_dequant(const mk_ct_int *a, const int8_t *q, size_t n, float scale, int32_t zp, float *out);

/* Dense LSB-first packing of one row (pack_to_int32): element i of the row sits at bit
 * i * bits of the row's words, stored as q + 2^(bits-1); words[ceil(n * bits / 32)],
 * padding bits zero. bits must divide 32. */
void mk_ct_pack_row(unsigned bits, const int8_t *q, size_t n, uint32_t *words);
void mk_ct_pack_row_ref(unsigned bits, const int8_t *q, size_t n, uint32_t *words);
void mk_ct_unpack_row(unsigned bits, const uint32_t *words, size_t n, int8_t *q);
/* Zero points packed along rows (pack_to_int32 with packed_dim=0): `nr` <= 32/bits rows
 * of `ng` zero points each (zp[r * ng + g]) -> one row of ng words. */
void mk_ct_pack_zp(unsigned bits, const int32_t *zp, size_t nr, size_t ng, uint32_t *words);
/* Zero point of row r (within its word) and group g from one packed word row. */
static inline int32_t mk_ct_unpack_zp(unsigned bits, const uint32_t *words, size_t r_in_word, size_t g)
{
    uint32_t v = (words[g] >> (r_in_word * bits)) & ((1u << bits) - 1u);
    return (int32_t)v - (1 << (bits - 1));
}

/* ---- FP8 -------------------------------------------------------------------------- */
typedef struct mk_ct_fp8 {
    bool e5m2;       /* F8_E5M2 instead of F8_E4M3 */
    mk_dtype wdtype;
} mk_ct_fp8;

/* max |x| over n values. */
float mk_ct_absmax(const float *x, size_t n);
/* Largest finite value: 448 (E4M3) or 57344 (E5M2). */
static inline float mk_ct_fp8_max(const mk_ct_fp8 *a) { return a->e5m2 ? 57344.0f : 448.0f; }
/* dt(absmax / max), or eps when that is 0. */
float mk_ct_fp8_scale(const mk_ct_fp8 *a, float absmax);
/* Codes: f8(clamp(dt(x / scale), -max, max)), round to nearest even. */
void mk_ct_fp8_quantize_ref(const mk_ct_fp8 *a, const float *x, size_t n, float scale, uint8_t *q);
/* The same codes; with err (else NULL), also adds the error sums of mk_ct_fp8_dequant. */
void mk_ct_fp8_quantize(const mk_ct_fp8 *a, const float *x, size_t n, float scale, uint8_t *q, mk_qerr *err);
/* mk_ct_absmax and mk_ct_fp8_quantize of a BF16 weight's bf16 bit patterns (widened as they
 * are loaded). */
float mk_ct_absmax_bf16(const uint16_t *x, size_t n);
void mk_ct_fp8_quantize_bf16(const mk_ct_fp8 *a, const uint16_t *x, size_t n, float scale, uint8_t *q, mk_qerr *err);
/* A row of a BF16 weight from its bf16 bit patterns (widened as they are loaded): codes as
 * mk_ct_fp8_quantize with mk_ct_fp8_scale(mk_ct_absmax(row)), which it returns. */
float mk_ct_fp8_row_bf16(const mk_ct_fp8 *a, const uint16_t *x, size_t n, uint8_t *q, mk_qerr *err);
/* dt(f8 value * scale). */
void mk_ct_fp8_dequant(const mk_ct_fp8 *a, const uint8_t *q, size_t n, float scale, float *out);

#ifdef MK_QVEC_H
/* compressed-tensors' code of 8 values, as floats: x / scale (rounded to bf16 for bf16 weights),
 * plus the zero point (rounded again), clamped to [lo, hi] and rounded to an integer. The
 * vector form of mk_ct_int_codes_ref; include qvec.h before this header to get it. */
MK_VINLINE mk_vf mk_ct_vcode(mk_vf xv, mk_vf vs, mk_vf vz, mk_vf lo, mk_vf hi, bool bf, bool asym)
{
    mk_vf s = xv / vs;
    if (bf) s = mk_vf_round_bf16(s);
    if (asym) {
        s = s + vz;
        if (bf) s = mk_vf_round_bf16(s);
    }
    return mk_vf_rint_small(mk_vf_min(mk_vf_max(s, lo), hi));
}
#endif

#endif
