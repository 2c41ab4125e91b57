/* mx.h - compressed-tensors' 4-bit float (E2M1) and MX quantizers, bit for bit: NVFP4
 * (E2M1 codes in groups of 16, an FP8 E4M3 scale per group and an f32 global scale per
 * tensor), MXFP4 (E2M1 in groups of 32, E8M0 power-of-two scales) and MXFP8 (E4M3 in groups
 * of 32, E8M0 scales), as compressed-tensors 0.20.1 runs them on the CPU
 * (quantization/utils/helpers.py calculate_qparams and generate_gparam,
 * quantization/utils/mxfp_utils.py, quantization/utils/fp4_utils.py cast_to_fp4,
 * lifecycle/forward_helpers.py _quantize/_dequantize, compressors/nvfp4, mxfp4, mxfp8).
 *
 * Owns the rules, with the dtype each step runs in (wdt: the weight's dtype; values are
 * rounded to it after each operation, as torch does on the CPU):
 *   NVFP4 global scale  gs = f32(wdt(2688 * wdt(1 / max(absmax, tiny(wdt))))), 1 where that
 *                       is inf (torch evaluates scalar / tensor as the reciprocal times the scalar)
 *   NVFP4 group scale   s = e4m3(min(f32(gs * wdt(absmax_g / 6)), 448)), 0.125 where 0
 *   NVFP4 codes         e2m1(clamp(f32(x / f32(s / gs)), -6, 6))
 *   MX exponent         e = clamp(127 + log2(pow2(absmax_g)) - off, 0, 255), pow2 rounding
 *                       the dtype's bits up from mantissa .75 (round_to_power_2), off 2 for
 *                       E2M1 and 8 for E4M3; the scale wdt(2^(e - 127)), 1 (e = 127) where
 *                       that is 0 (f16)
 *   MX codes            e2m1 or e4m3 of clamp(wdt(x / scale), -max, max); e = 255 (scale inf)
 *                       gives codes 0 and is stored as 127 (mk_mx_stored_exp)
 *   E2M1 rounding       |q| <= .25 -> 0, < .75 -> .5, <= 1.25 -> 1, < 1.75 -> 1.5,
 *                       <= 2.5 -> 2, < 3.5 -> 3, <= 5 -> 4, else 6 (ties to the even code);
 *                       the sign bit (8) is set for q < 0, also when it rounds to 0
 *   decoding            bf16(value * f32(s / gs)) (NVFP4), bf16(value * bf16(2^(e-127))) (MX):
 *                       compressed-tensors decompresses every one of them to bf16
 * Must not: allocate, or know tensors or files.
 */
#ifndef MK_MX_H
#define MK_MX_H

#include "../core/mk_dtype.h"
#include "qerr.h"

#include <stddef.h>
#include <stdint.h>

/* E2M1 code (bit 3 sign, bits 0..2 the magnitude's index in 0, .5, 1, 1.5, 2, 3, 4, 6) of
 * q already clamped to [-6, 6], and its value. */
static inline uint8_t mk_e2m1_code(float q)
{
    float a = q < 0 ? -q : q;
    uint8_t i = (uint8_t)((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) + (a > 5.0f));
    return (uint8_t)(i | (q < 0 ? 8u : 0u));
}
float mk_e2m1_value(uint8_t code);

/* ---- NVFP4 ------------------------------------------------------------------------------ */
/* The global scale of a tensor whose largest |value| is absmax (exact in wdt). */
float mk_nvfp4_global_scale(mk_dtype wdt, float absmax);
/* The E4M3 code of a group's scale (absmax of its values). */
uint8_t mk_nvfp4_group_scale(mk_dtype wdt, float gs, float absmax);
/* Codes (one per byte, 0..15) of n values with group scale code s8; with err (else NULL),
 * the error sums of the decoding. */
void mk_nvfp4_quantize(const float *x, size_t n, float gs, uint8_t s8, uint8_t *codes, mk_qerr *err);
/* ng groups of `group` values at x: each group's scale code (scales[g], from its absmax) and
 * codes (one per byte), as mk_nvfp4_group_scale and mk_nvfp4_quantize give them group after
 * group, error sums included; groups of 16 take an AVX-512 or AVX2 path where the CPU has
 * it and mk_mx_simd_cap allows. */
void mk_nvfp4_quantize_groups(mk_dtype wdt, const float *x, size_t ng, size_t group, float gs, uint8_t *scales, uint8_t *codes, mk_qerr *err);
/* Decoded values of n codes. */
void mk_nvfp4_dequant(const uint8_t *codes, size_t n, float gs, uint8_t s8, float *out);

/* ---- MX --------------------------------------------------------------------------------- */
/* The E8M0 exponent of a group's scale for elements of `bits` (4: E2M1, 8: E4M3). */
uint8_t mk_mx_scale_exp(mk_dtype wdt, unsigned bits, float absmax);
/* Codes (E2M1 one per byte, or E4M3 bytes) of n values with exponent e. */
void mk_mx_quantize(mk_dtype wdt, unsigned bits, const float *x, size_t n, uint8_t e, uint8_t *codes, mk_qerr *err);
/* The same for a bf16 weight from its bf16 bit patterns (widened as they are loaded). */
void mk_mx_quantize_bf16(unsigned bits, const uint16_t *x, size_t n, uint8_t e, uint8_t *codes, mk_qerr *err);
/* The most the MX and NVFP4 kernels may use: 2 (the default) NVFP4's AVX-512 path where
 * the CPU has it, 1 the AVX2 paths where it has that, 0 the portable one (tests compare
 * them); returns the previous cap. */
int mk_mx_simd_cap(int level);
void mk_mx_dequant(unsigned bits, const uint8_t *codes, size_t n, uint8_t e, float *out);
/* The exponent stored for e: e = 255 is a scale of 2^128, inf in bf16 and f32 (a group max of
 * 1.75 * 2^127 or more), which makes every code 0; the library stores int32(log2(inf)) + 127,
 * which wraps to 127 on x86-64. */
static inline uint8_t mk_mx_stored_exp(uint8_t e) { return e == 255 ? 127 : e; }

/* Two E2M1 codes per byte, the first in the low nibble (pack_fp4_to_uint8); n even. */
void mk_fp4_pack(const uint8_t *codes, size_t n, uint8_t *bytes);
void mk_fp4_pack_ref(const uint8_t *codes, size_t n, uint8_t *bytes);

#endif
