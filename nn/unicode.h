/* unicode.h - the Unicode facts tokenizers need: UTF-8 decoding with the replacement
 * rules of Python and Rust (each maximal ill-formed subpart becomes one U+FFFD, Unicode
 * 15 section 3.9), character classes for the hand-written pre-tokenizer scanners, and
 * canonical normalization (NFC, NFD).
 *
 * The class and normalization data are generated from Python's unicodedata by
 * tools/gen-unicode-tables.py into unicode_tables.c and unicode_norm.c.
 * Must not: allocate except through the mk_buf it is given, or know any tokenizer.
 */
#ifndef MK_UNICODE_H
#define MK_UNICODE_H

#include "../core/mk_core.h"

/* Class byte: bits 0-2 a general-category group, bit 3 White_Space, bit 4 Join_Control,
 * bit 5 the symbols (gc So) that are Other_Alphabetic (circled and squared Latin letters). */
enum {
    MK_UNI_OTHER = 0,
    MK_UNI_L = 1,  /* Lu Ll Lt Lm Lo */
    MK_UNI_M = 2,  /* Mn Mc Me */
    MK_UNI_ND = 3,
    MK_UNI_NL = 4,
    MK_UNI_NO = 5,
    MK_UNI_PC = 6, /* connector punctuation ('_') */
};
#define MK_UNI_GROUP 7u
#define MK_UNI_WS 8u
#define MK_UNI_JOIN 16u
#define MK_UNI_ALPHA_SO 32u

typedef struct mk_uni_decomp {
    uint32_t cp;
    uint16_t off; /* into mk_uni_decomp_pool: the full canonical decomposition */
    uint8_t len;
} mk_uni_decomp;

typedef struct mk_uni_comp {
    uint64_t pair; /* first << 21 | second */
    uint32_t cp;   /* the primary composite */
} mk_uni_comp;

#define MK_UNI_TABLE_END 0x40000u
#define MK_UNI_SHIFT 7
extern const uint16_t mk_uni_class_stage1[MK_UNI_TABLE_END >> MK_UNI_SHIFT];
extern const uint8_t mk_uni_class_stage2[];
extern const uint16_t mk_uni_ccc_stage1[MK_UNI_TABLE_END >> MK_UNI_SHIFT];
extern const uint8_t mk_uni_ccc_stage2[];
extern const uint32_t mk_uni_decomp_pool[];
extern const mk_uni_decomp mk_uni_decomps[];
extern const size_t mk_uni_n_decomps;
extern const mk_uni_comp mk_uni_comps[];
extern const size_t mk_uni_n_comps;

static inline unsigned mk_uni_class(uint32_t cp)
{
    if (cp < MK_UNI_TABLE_END)
        return mk_uni_class_stage2[(size_t)mk_uni_class_stage1[cp >> MK_UNI_SHIFT] << MK_UNI_SHIFT |
                                   (cp & ((1u << MK_UNI_SHIFT) - 1))];
    return cp >= 0xE0100 && cp <= 0xE01EF ? MK_UNI_M : MK_UNI_OTHER; /* variation selectors 17-256 */
}
static inline unsigned mk_uni_ccc(uint32_t cp)
{
    if (cp >= MK_UNI_TABLE_END) return 0;
    return mk_uni_ccc_stage2[(size_t)mk_uni_ccc_stage1[cp >> MK_UNI_SHIFT] << MK_UNI_SHIFT |
                             (cp & ((1u << MK_UNI_SHIFT) - 1))];
}
static inline bool mk_uni_is_letter(uint32_t cp) { return (mk_uni_class(cp) & MK_UNI_GROUP) == MK_UNI_L; }
/* \p{N}: Nd, Nl, No (also Rust's char::is_numeric) */
static inline bool mk_uni_is_number(uint32_t cp)
{
    unsigned g = mk_uni_class(cp) & MK_UNI_GROUP;
    return g >= MK_UNI_ND && g <= MK_UNI_NO;
}
/* \s of Oniguruma and Rust: the White_Space property */
static inline bool mk_uni_is_space(uint32_t cp) { return (mk_uni_class(cp) & MK_UNI_WS) != 0; }
/* \w of Rust's regex crate: Alphabetic (L, Nl, Other_Alphabetic: marks and a few symbols),
 * M, Nd, Pc, Join_Control. */
static inline bool mk_uni_is_word(uint32_t cp)
{
    unsigned c = mk_uni_class(cp), g = c & MK_UNI_GROUP;
    return g == MK_UNI_L || g == MK_UNI_M || g == MK_UNI_ND || g == MK_UNI_NL || g == MK_UNI_PC ||
           (c & (MK_UNI_JOIN | MK_UNI_ALPHA_SO));
}

/* ---- UTF-8 -------------------------------------------------------------------------- */
/* Length of the well-formed sequence at p[0..n) (1-4) with its code point, or 0 when the
 * bytes there are ill-formed; *bad is then the length of the maximal ill-formed subpart
 * (what one U+FFFD replaces). n must be > 0. */
size_t mk_utf8_next(const unsigned char *p, size_t n, uint32_t *cp, size_t *bad);
/* Decode a code point of a string known to be valid UTF-8; returns its length. */
static inline size_t mk_utf8_get(const unsigned char *p, uint32_t *cp)
{
    unsigned c = p[0];
    if (c < 0x80) { *cp = c; return 1; }
    if (c < 0xE0) { *cp = (c & 0x1Fu) << 6 | (p[1] & 0x3Fu); return 2; }
    if (c < 0xF0) { *cp = (c & 0x0Fu) << 12 | (p[1] & 0x3Fu) << 6 | (p[2] & 0x3Fu); return 3; }
    *cp = (c & 0x07u) << 18 | (p[1] & 0x3Fu) << 12 | (p[2] & 0x3Fu) << 6 | (p[3] & 0x3Fu);
    return 4;
}
static inline size_t mk_utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }
size_t mk_utf8_put(uint32_t cp, char out[4]);
/* Whether s[0..n) is well-formed UTF-8. */
bool mk_utf8_valid(const char *s, size_t n);
/* Append s[0..n) to out with every maximal ill-formed subpart replaced by U+FFFD (as
 * Python's bytes.decode(errors='replace') and Rust's String::from_utf8_lossy). */
void mk_utf8_lossy(mk_buf *out, const char *s, size_t n);

/* ---- normalization (valid UTF-8 in, appended to out) ---------------------------------- */
void mk_uni_nfd(mk_buf *out, const char *s, size_t n);
void mk_uni_nfc(mk_buf *out, const char *s, size_t n);

#endif
