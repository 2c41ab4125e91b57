/* tok_pretok.c - pre-tokenizers: the Split regexes of GPT-2, Llama-3 and Qwen2 as
 * hand-written scanners (no regex engine: each alternative of the pattern is one branch,
 * tried in the pattern's order, with the backtracking the regex would do spelled out),
 * and ByteLevel, Digits, Whitespace, WhitespaceSplit, Metaspace, Split on a string.
 *
 * Each stage splits a piece into segments (matches and the gaps between them), applies
 * the split behaviour of tokenizers' NormalizedString::split (Removed, Isolated,
 * MergedWithPrevious, MergedWithNext, Contiguous; `invert` swaps matches and gaps) and
 * passes each non-empty result to the next stage, depth-first. */
#include "tok_internal.h"

#include "unicode.h"

#include <string.h>

/* ---- ByteLevel's byte <-> char map (GPT-2's bytes_to_unicode) --------------------------- */

/* Printable bytes 0x21..0x7E, 0xA1..0xAC, 0xAE..0xFF stand for themselves; the other 68
 * bytes, in order, become U+0100..U+0143. */
uint32_t tok_byte_char(unsigned char b)
{
    if (b <= 0x20) return 0x100u + b;
    if (b >= 0x7F && b <= 0xA0) return 0x100u + 33 + (b - 0x7Fu);
    if (b == 0xAD) return 0x100u + 33 + 34;
    return b;
}

int tok_char_byte(uint32_t cp)
{
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return (int)cp;
    if (cp >= 0x100 && cp <= 0x120) return (int)(cp - 0x100);
    if (cp >= 0x121 && cp <= 0x142) return (int)(cp - 0x121 + 0x7F);
    if (cp == 0x143) return 0xAD;
    return -1;
}

/* ---- character classes --------------------------------------------------------------- */

static inline uint32_t cp_at(const unsigned char *s, size_t i, size_t *len)
{
    uint32_t cp;
    *len = mk_utf8_get(s + i, &cp);
    return cp;
}

enum { C_OTHER, C_L, C_N, C_S };
static inline int cclass(uint32_t cp)
{
    unsigned c = mk_uni_class(cp), g = c & MK_UNI_GROUP;
    if (g == MK_UNI_L) return C_L;
    if (g >= MK_UNI_ND && g <= MK_UNI_NO) return C_N;
    if (c & MK_UNI_WS) return C_S;
    return C_OTHER;
}

/* end of the run of characters of class `want` starting at i (at most `max` of them) */
static size_t run_class(const unsigned char *s, size_t n, size_t i, int want, size_t max)
{
    size_t count = 0;
    while (i < n && count < max) {
        size_t l;
        uint32_t cp = cp_at(s, i, &l);
        if (cclass(cp) != want) break;
        i += l;
        count++;
    }
    return i;
}

/* \s+(?!\S) | \s+ at i (a whitespace character): the run, less its last character when a
 * non-space follows and the run has two or more characters */
static size_t whitespace_tail(const unsigned char *s, size_t n, size_t i, size_t *newline_end)
{
    size_t k = i, count = 0, last = i;
    *newline_end = 0;
    while (k < n) {
        size_t l;
        uint32_t cp = cp_at(s, k, &l);
        if (!mk_uni_is_space(cp)) break;
        if (cp == '\r' || cp == '\n') *newline_end = k + l;
        last = k;
        k += l;
        count++;
    }
    if (k == n) return n;
    return count >= 2 ? last : k;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Every character is matched by one alternative, so a match always starts at i. */
static size_t scan_gpt2(const unsigned char *s, size_t n, size_t i)
{
    if (s[i] == '\'' && i + 1 < n) {
        unsigned char c = s[i + 1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd') return i + 2;
        if (i + 2 < n && ((c == 'r' && s[i + 2] == 'e') || (c == 'v' && s[i + 2] == 'e') || (c == 'l' && s[i + 2] == 'l')))
            return i + 3;
    }
    size_t j = s[i] == ' ' && i + 1 < n ? i + 1 : i, l;
    int c = cclass(cp_at(s, j, &l));
    if (c != C_S) return run_class(s, n, j, c, SIZE_MAX);
    size_t nl;
    return whitespace_tail(s, n, i, &nl);
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d): case-insensitive, and U+017F (long s) folds to s */
static size_t contraction_ci(const unsigned char *s, size_t n, size_t i)
{
    if (s[i] != '\'' || i + 1 >= n) return 0;
    size_t l;
    uint32_t c = cp_at(s, i + 1, &l);
    if (c == 0x17F) return i + 1 + l;
    c |= 0x20;
    if (c == 's' || c == 't' || c == 'm' || c == 'd') return i + 2;
    if (i + 2 < n) {
        unsigned d = s[i + 2] | 0x20u;
        if (((c == 'r' || c == 'v') && d == 'e') || (c == 'l' && d == 'l')) return i + 3;
    }
    return 0;
}

/* Llama-3 (max_digits 3) and Qwen2 (max_digits 1):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *   \s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t scan_llama3(const unsigned char *s, size_t n, size_t i, size_t max_digits)
{
    size_t e = contraction_ci(s, n, i);
    if (e) return e;
    size_t l0;
    uint32_t c0 = cp_at(s, i, &l0);
    int k0 = cclass(c0);
    if (k0 == C_L) return run_class(s, n, i, C_L, SIZE_MAX);
    if (k0 != C_N && c0 != '\r' && c0 != '\n' && i + l0 < n) {
        size_t l1;
        if (cclass(cp_at(s, i + l0, &l1)) == C_L) return run_class(s, n, i + l0, C_L, SIZE_MAX);
    }
    if (k0 == C_N) return run_class(s, n, i, C_N, max_digits);
    size_t j = c0 == ' ' && i + 1 < n ? i + 1 : i, l;
    if (cclass(cp_at(s, j, &l)) == C_OTHER) {
        size_t k = run_class(s, n, j, C_OTHER, SIZE_MAX);
        while (k < n && (s[k] == '\r' || s[k] == '\n')) k++;
        return k;
    }
    /* c0 is whitespace */
    size_t nl, end = whitespace_tail(s, n, i, &nl);
    return nl ? nl : end;
}

/* Whitespace: \w+|[^\w\s]+ (Rust regex classes), searched from i */
static bool find_word_or_punct(const unsigned char *s, size_t n, size_t i, size_t *ms, size_t *me)
{
    size_t l;
    while (i < n) {
        uint32_t cp = cp_at(s, i, &l);
        if (!mk_uni_is_space(cp)) break;
        i += l;
    }
    if (i >= n) return false;
    *ms = i;
    bool word = mk_uni_is_word(cp_at(s, i, &l));
    while (i < n) {
        uint32_t cp = cp_at(s, i, &l);
        bool w = mk_uni_is_word(cp);
        if (w != word || (!w && mk_uni_is_space(cp))) break;
        i += l;
    }
    *me = i;
    return true;
}

/* ---- segments and split behaviours ------------------------------------------------------ */

typedef struct splitter {
    tok_pipe *p;
    size_t next_stage;
    const char *s;
    bool first;
    tok_split_behavior behavior;
    bool invert;
    bool have;      /* a pending segment */
    size_t ps, pe;  /* its bounds */
    bool pm;        /* whether it is a match */
    bool prev_match;
    mk_status err;
} splitter;

static void out_piece(splitter *sp, size_t a, size_t b)
{
    if (sp->err || a == b) return;
    sp->err = tok_pretok_run(sp->p, sp->next_stage, sp->s + a, b - a, sp->first && a == 0);
}

static void segment(splitter *sp, size_t a, size_t b, bool match)
{
    if (sp->invert) match = !match;
    switch (sp->behavior) {
    case SPLIT_ISOLATED: out_piece(sp, a, b); break;
    case SPLIT_REMOVED:
        if (!match) out_piece(sp, a, b);
        break;
    case SPLIT_CONTIGUOUS:
        if (sp->have && sp->pm == match) {
            sp->pe = b;
        } else {
            if (sp->have) out_piece(sp, sp->ps, sp->pe);
            sp->have = true, sp->ps = a, sp->pe = b, sp->pm = match;
        }
        break;
    case SPLIT_MERGED_PREV:
        if (match && !sp->prev_match && sp->have) {
            sp->pe = b;
        } else {
            if (sp->have) out_piece(sp, sp->ps, sp->pe);
            sp->have = true, sp->ps = a, sp->pe = b;
        }
        sp->prev_match = match;
        break;
    case SPLIT_MERGED_NEXT:
        /* a match joins the segment after it when that one is not a match */
        if (sp->have) {
            if (!match) {
                out_piece(sp, sp->ps, b);
                sp->have = false;
                return;
            }
            out_piece(sp, sp->ps, sp->pe);
            sp->have = false;
        }
        if (match) sp->have = true, sp->ps = a, sp->pe = b;
        else out_piece(sp, a, b);
        break;
    }
}

static void segments_end(splitter *sp)
{
    if (sp->have) out_piece(sp, sp->ps, sp->pe);
    sp->have = false;
}

/* the next match at or after i: [*ms, *me), never empty */
static bool find_match(const tok_pretok *pt, const unsigned char *s, size_t n, size_t i, size_t *ms, size_t *me)
{
    if (i >= n) return false;
    size_t l;
    switch (pt->kind) {
    case PT_BYTELEVEL:
    case PT_SPLIT_GPT2: *ms = i, *me = scan_gpt2(s, n, i); return true;
    case PT_SPLIT_LLAMA3: *ms = i, *me = scan_llama3(s, n, i, 3); return true;
    case PT_SPLIT_QWEN2: *ms = i, *me = scan_llama3(s, n, i, 1); return true;
    case PT_WHITESPACE: return find_word_or_punct(s, n, i, ms, me);
    case PT_SPLIT_STRING: {
        if (!pt->pattern_len) return false;
        const void *hit = memmem(s + i, n - i, pt->pattern, pt->pattern_len);
        if (!hit) return false;
        *ms = (size_t)((const unsigned char *)hit - s);
        *me = *ms + pt->pattern_len;
        return true;
    }
    case PT_DIGITS:
    case PT_WHITESPACE_SPLIT:
    case PT_METASPACE:
        for (; i < n; i += l) {
            uint32_t cp = cp_at(s, i, &l);
            bool hit = pt->kind == PT_DIGITS ? mk_uni_is_number(cp)
                       : pt->kind == PT_WHITESPACE_SPLIT ? mk_uni_is_space(cp)
                                                         : cp == pt->replacement;
            if (hit) {
                *ms = i, *me = i + l;
                return true;
            }
        }
        return false;
    default: return false;
    }
}

static mk_status split_piece(tok_pipe *p, size_t k, const tok_pretok *pt, tok_split_behavior behavior, bool invert,
                             const char *s, size_t n, bool first)
{
    splitter sp = {p, k + 1, s, first, behavior, invert, false, 0, 0, false, false, MK_OK};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, ms, me;
    while (!sp.err && find_match(pt, u, n, i, &ms, &me)) {
        if (ms > i) segment(&sp, i, ms, false);
        segment(&sp, ms, me, true);
        i = me;
    }
    if (!sp.err && i < n) segment(&sp, i, n, false);
    if (!sp.err) segments_end(&sp);
    return sp.err;
}

/* ---- ByteLevel and Metaspace: they rewrite the piece ------------------------------------ */

static mk_status byte_level(tok_pipe *p, size_t k, const tok_pretok *pt, const char *s, size_t n, bool first)
{
    mk_buf *pre = &p->bufs[2 * k], *map = &p->bufs[2 * k + 1];
    if (pt->add_prefix_space && !(n > 0 && s[0] == ' ')) {
        pre->len = 0;
        mk_buf_put(pre, " ", 1);
        mk_buf_put(pre, s, n);
        if (pre->failed) return mk_error(MK_ERR_NOMEM, "out of memory pre-tokenizing");
        s = pre->data;
        n = pre->len;
    }
    /* each byte becomes the char that stands for it (1 or 2 bytes of UTF-8) */
    size_t i = 0, ms, me;
    const unsigned char *u = (const unsigned char *)s;
    for (;;) {
        size_t a, b;
        if (pt->use_regex) {
            if (!find_match(pt, u, n, i, &ms, &me)) break;
            a = ms, b = me;
        } else {
            if (i >= n) break;
            a = 0, b = n;
        }
        map->len = 0;
        for (size_t j = a; j < b; j++) {
            char c[4];
            mk_buf_put(map, c, mk_utf8_put(tok_byte_char(u[j]), c));
        }
        if (map->failed) return mk_error(MK_ERR_NOMEM, "out of memory pre-tokenizing");
        MK_TRY(tok_pretok_run(p, k + 1, map->data, map->len, first && a == 0));
        i = b;
    }
    return MK_OK;
}

static mk_status metaspace(tok_pipe *p, size_t k, const tok_pretok *pt, const char *s, size_t n, bool first)
{
    mk_buf *b = &p->bufs[2 * k];
    b->len = 0;
    bool starts = n >= pt->rep_len && memcmp(s, pt->rep, pt->rep_len) == 0;
    /* a leading space is replaced too, so it counts as a leading replacement */
    if (n > 0 && s[0] == ' ') starts = true;
    if (!starts && (pt->prepend == PREPEND_ALWAYS || (pt->prepend == PREPEND_FIRST && first)))
        mk_buf_put(b, pt->rep, pt->rep_len);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != ' ') continue;
        mk_buf_put(b, s + run, i - run);
        mk_buf_put(b, pt->rep, pt->rep_len);
        run = i + 1;
    }
    mk_buf_put(b, s + run, n - run);
    if (b->failed) return mk_error(MK_ERR_NOMEM, "out of memory pre-tokenizing");
    if (!pt->split) return tok_pretok_run(p, k + 1, b->data, b->len, first);
    return split_piece(p, k, pt, SPLIT_MERGED_NEXT, false, b->data, b->len, first);
}

mk_status tok_pretok_run(tok_pipe *p, size_t k, const char *s, size_t n, bool first)
{
    if (n == 0) return MK_OK;
    if (k == p->t->n_pre) return p->piece(p, s, n);
    const tok_pretok *pt = &p->t->pre[k];
    switch (pt->kind) {
    case PT_BYTELEVEL: return byte_level(p, k, pt, s, n, first);
    case PT_METASPACE: return metaspace(p, k, pt, s, n, first);
    case PT_DIGITS: return split_piece(p, k, pt, pt->individual ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS, false, s, n, first);
    case PT_WHITESPACE: return split_piece(p, k, pt, SPLIT_REMOVED, true, s, n, first);
    case PT_WHITESPACE_SPLIT: return split_piece(p, k, pt, SPLIT_REMOVED, false, s, n, first);
    default: return split_piece(p, k, pt, pt->behavior, pt->invert, s, n, first);
    }
}
