/* qerr.h - the error sums a quantizer kernel reports for the values it just encoded:
 * sum of x^2, sum of (x - dequant(quant(x)))^2 and the largest |x - dequant(quant(x))|,
 * where dequant is exactly the consumer's own decoding. Sums are added in blocks of lanes
 * and then in double, in a fixed order for a given chunk, so they do not depend on threads.
 * Must not: depend on anything; kernels fill it, quant.h's consumer reduces it.
 */
#ifndef MK_QERR_H
#define MK_QERR_H

typedef struct mk_qerr {
    double sx2, se2;
    float maxe;
} mk_qerr;

#endif
