/* test_mkz_rans.c - plane codec 2 of the .mkz container (static rANS, formats/mkz_rans.c):
 * round trips of every kind of plane, the exact bytes of one encoding (the same on every
 * code path: the AVX2 and the scalar builds must agree), and hostile encodings: every
 * truncation, every byte flipped, and forged fields, each refused or decoded without reading
 * outside the input (ASan in `make check`). */
#include "harness.h"
#include "../../core/mk_hash.h"
#include "../../formats/mkz.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PINNED_SIZE 42467
#define PINNED_HASH "ab6ce9c4a3a84aef40c3e7224feb2d68"

static uint64_t rs = 1;
static uint32_t rnd(void)
{
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rs >> 33);
}

/* An exponent-like plane: about a geometric spread of symbols around 120. */
static void skewed(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned k = 0;
        while (k < 30 && (rnd() & 3) != 0) k++;
        p[i] = (unsigned char)(125 - k + (rnd() & 1));
    }
}

static size_t roundtrip(const unsigned char *src, size_t n)
{
    size_t cap = mk_mkz_rans_bound(n);
    unsigned char *enc = malloc(cap), *dec = malloc(n + 1);
    size_t c = mk_mkz_rans_encode(src, n, enc, cap);
    CHECK_MSG(c > 0 && c <= cap, "n %zu: encoded %zu bytes, bound %zu", n, c, cap);
    if (c) {
        CHECK_OK(mk_mkz_rans_decode(enc, c, dec, n));
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < n; i++)
            if (dec[i] != src[i] && !bad++) first = i;
        CHECK_MSG(bad == 0, "n %zu: %zu symbols differ, first at %zu", n, bad, first);
        /* as a bf16 exponent plane, put together with a sign+mantissa plane as it decodes */
        unsigned char *sm = malloc(n), *el = malloc(2 * n);
        for (size_t i = 0; i < n; i++) sm[i] = (unsigned char)rnd();
        CHECK_OK(mk_mkz_rans_decode_fields(enc, c, sm, el, n));
        bad = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned want = (sm[i] & 0x7fu) | (unsigned)src[i] << 7 | (sm[i] & 0x80u) << 8;
            if ((el[2 * i] | (unsigned)el[2 * i + 1] << 8) != want && !bad++) first = i;
        }
        CHECK_MSG(bad == 0, "n %zu: %zu bf16 elements differ, first at %zu", n, bad, first);
        free(sm);
        free(el);
    }
    free(enc);
    free(dec);
    return c;
}

MK_TEST(mkz_rans_roundtrips)
{
    size_t sizes[] = {1, 2, 31, 32, 33, 63, 64, 65, 1000, 4096, 65536 + 7, 1 << 20};
    unsigned char *p = malloc(1 << 20);
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t n = sizes[k];
        skewed(p, n);
        roundtrip(p, n);
        for (size_t i = 0; i < n; i++) p[i] = (unsigned char)rnd(); /* every symbol, near 8 bits */
        roundtrip(p, n);
        memset(p, 0x3f, n); /* one symbol: frequency 2^12, no words */
        roundtrip(p, n);
        for (size_t i = 0; i < n; i++) p[i] = i % 977 ? 7 : (unsigned char)(i / 977); /* rare symbols at frequency 1 */
        roundtrip(p, n);
    }
    /* near the order-0 entropy on an exponent-like plane */
    size_t n = 1 << 20;
    skewed(p, n);
    double h = 0;
    size_t cnt[256] = {0};
    for (size_t i = 0; i < n; i++) cnt[p[i]]++;
    for (int s = 0; s < 256; s++)
        if (cnt[s]) h -= (double)cnt[s] * log2((double)cnt[s] / n);
    size_t c = roundtrip(p, n);
    CHECK_MSG(c * 8.0 < h * 1.005 + 8 * 700, "%zu bytes for %.0f bits of entropy", c, h);
    /* a plane that does not fit the capacity given is refused, not overrun */
    unsigned char small[100];
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)rnd();
    CHECK(mk_mkz_rans_encode(p, 4096, small, sizeof small) == 0);
    free(p);
}

/* The bytes of one encoding, pinned: a change of the coder, or a code path (AVX2, scalar) that
 * differs, changes them. */
MK_TEST(mkz_rans_bytes_are_pinned)
{
    size_t n = 100003;
    unsigned char *p = malloc(n), *enc = malloc(mk_mkz_rans_bound(n));
    rs = 42;
    skewed(p, n);
    size_t c = mk_mkz_rans_encode(p, n, enc, mk_mkz_rans_bound(n));
    mk_hash128 h = mk_hash128_bytes(enc, c);
    char hex[40];
    snprintf(hex, sizeof hex, "%016llx%016llx", (unsigned long long)h.hi, (unsigned long long)h.lo);
    CHECK_EQ_INT(c, PINNED_SIZE);
    CHECK_MSG(strcmp(hex, PINNED_HASH) == 0, "encoding hash %s, want %s", hex, PINNED_HASH);
    free(p);
    free(enc);
}

MK_TEST(mkz_rans_hostile_input)
{
    size_t n = 3000;
    unsigned char *p = malloc(n), *dec = malloc(n), *enc = malloc(mk_mkz_rans_bound(n));
    rs = 7;
    skewed(p, n);
    size_t c = mk_mkz_rans_encode(p, n, enc, mk_mkz_rans_bound(n));
    CHECK(c > 0);
    /* every truncation (into an exactly sized copy: ASan sees any read past it) */
    size_t accepted = 0;
    for (size_t len = 0; len < c; len++) {
        unsigned char *t = malloc(len ? len : 1);
        memcpy(t, enc, len);
        accepted += mk_mkz_rans_decode(t, len, dec, n) == MK_OK;
        unsigned char *el = malloc(2 * n);
        accepted += mk_mkz_rans_decode_fields(t, len, p, el, n) == MK_OK;
        free(el);
        free(t);
    }
    CHECK_MSG(accepted == 0, "%zu truncated encodings accepted", accepted);
    /* every byte flipped three ways: refused, or (a flip the checks cannot see) decoded within bounds */
    size_t refused = 0, tries = 0;
    for (size_t i = 0; i < c; i++) {
        static const unsigned char pats[] = {0x01, 0x80, 0xff};
        for (size_t q = 0; q < 3; q++) {
            enc[i] ^= pats[q];
            refused += mk_mkz_rans_decode(enc, c, dec, n) != MK_OK;
            tries++;
            enc[i] ^= pats[q];
        }
    }
    CHECK_MSG(refused * 10 > tries * 9, "only %zu of %zu flips refused", refused, tries);
    /* forged fields, each named */
    unsigned char *f = malloc(c);
    memcpy(f, enc, c);
    f[0] = 15;
    CHECK_ERR(mk_mkz_rans_decode(f, c, dec, n), MK_ERR_FORMAT, "precision");
    memcpy(f, enc, c);
    f[1 + 32] = 0xff; /* the first frequency: far too large */
    f[1 + 32 + 1] = 0x0f;
    CHECK_ERR(mk_mkz_rans_decode(f, c, dec, n), MK_ERR_FORMAT, "add up to more");
    CHECK_ERR(mk_mkz_rans_decode(enc, c - 1, dec, n), MK_ERR_FORMAT, "rANS plane damaged");
    CHECK_ERR(mk_mkz_rans_decode(enc, c, dec, n - 1), MK_ERR_FORMAT, "rANS plane damaged");
    free(f);
    free(p);
    free(dec);
    free(enc);
}
