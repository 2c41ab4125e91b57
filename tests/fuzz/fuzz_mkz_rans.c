/* fuzz_mkz_rans.c - the .mkz entropy decoder (plane codec 2, static rANS: formats/mkz_rans.c)
 * on arbitrary bytes, and its round trip. The first 3 bytes give the plane's symbol count n
 * (little-endian, below 2^24; at most 16 x the input, so that a run stays short); the rest is
 * decoded as an encoded plane of n symbols, which must either be refused (MK_ERR_FORMAT with a
 * message) or decode within bounds. Then the rest, taken as a plane of symbols, must encode
 * within mk_mkz_rans_bound and decode back to itself. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../formats/mkz.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    if (size < 3) return 0;
    size_t n = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16;
    const uint8_t *body = data + 3;
    size_t len = size - 3;
    if (n > 16 * (len + 64)) n = 16 * (len + 64);
    /* an exactly sized copy: a read past it is a sanitizer report */
    uint8_t *in = malloc(len ? len : 1), *out = malloc(n ? n : 1);
    if (!in || !out) __builtin_trap();
    memcpy(in, body, len);
    if (n) {
        mk_status s = mk_mkz_rans_decode(in, len, out, n);
        if (s != MK_OK && (s != MK_ERR_FORMAT || !mk_errmsg()[0])) __builtin_trap();
        mk_error_clear();
        /* the same plane as a bf16 exponent plane (the input's bytes as sign+mantissa):
         * accepted exactly when the plain decode is, and then the same exponents */
        uint8_t *sm = malloc(n), *el = malloc(2 * n);
        if (!sm || !el) __builtin_trap();
        for (size_t i = 0; i < n; i++) sm[i] = len ? body[i % len] : 0;
        mk_status sf = mk_mkz_rans_decode_fields(in, len, sm, el, n);
        if (sf != s) __builtin_trap();
        for (size_t i = 0; sf == MK_OK && i < n; i++)
            if ((uint8_t)(el[2 * i] >> 7 | el[2 * i + 1] << 1) != out[i] || (el[2 * i] & 0x7f) != (sm[i] & 0x7f) ||
                (el[2 * i + 1] & 0x80) != (sm[i] & 0x80))
                __builtin_trap();
        mk_error_clear();
        free(sm);
        free(el);
    }
    if (len) {
        size_t cap = mk_mkz_rans_bound(len);
        uint8_t *enc = malloc(cap), *back = malloc(len);
        if (!enc || !back) __builtin_trap();
        size_t c = mk_mkz_rans_encode(in, len, enc, cap);
        if (c == 0 || c > cap) __builtin_trap();
        if (mk_mkz_rans_decode(enc, c, back, len) != MK_OK || memcmp(back, in, len) != 0) __builtin_trap();
        free(enc);
        free(back);
    }
    free(in);
    free(out);
    return 0;
}
