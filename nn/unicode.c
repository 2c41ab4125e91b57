/* unicode.c - see unicode.h */
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

size_t mk_utf8_next(const unsigned char *p, size_t n, uint32_t *cp, size_t *bad)
{
    unsigned c = p[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    *bad = 1;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    /* Unicode table 3-7: well-formed byte sequences */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) len = 3;
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else return 0;
    /* the maximal subpart: the lead byte and the continuation bytes that could still
     * belong to a well-formed sequence */
    if (n < 2 || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++) {
        if (i >= n || p[i] < 0x80 || p[i] > 0xBF) {
            *bad = i;
            return 0;
        }
    }
    mk_utf8_get(p, cp);
    return len;
}

size_t mk_utf8_put(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool mk_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t bad, k = mk_utf8_next(p + i, n - i, &cp, &bad);
        if (!k) return false;
        i += k;
    }
    return true;
}

void mk_utf8_lossy(mk_buf *out, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        uint32_t cp;
        size_t bad, k = p[i] < 0x80 ? 1 : mk_utf8_next(p + i, n - i, &cp, &bad);
        if (k) {
            i += k;
            continue;
        }
        mk_buf_put(out, s + run, i - run);
        mk_buf_put(out, "\xEF\xBF\xBD", 3);
        i += bad;
        run = i;
    }
    mk_buf_put(out, s + run, n - run);
}

/* ---- normalization ------------------------------------------------------------------- */

/* Hangul syllables: Unicode 15 section 3.12 */
enum { S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7, L_COUNT = 19, V_COUNT = 21,
       T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT, S_COUNT = L_COUNT * N_COUNT };

static const mk_uni_decomp *find_decomp(uint32_t cp)
{
    size_t lo = 0, hi = mk_uni_n_decomps;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (mk_uni_decomps[mid].cp < cp) lo = mid + 1;
        else hi = mid;
    }
    return lo < mk_uni_n_decomps && mk_uni_decomps[lo].cp == cp ? &mk_uni_decomps[lo] : NULL;
}

static uint32_t compose(uint32_t a, uint32_t b)
{
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE && b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    uint64_t key = (uint64_t)a << 21 | b;
    size_t lo = 0, hi = mk_uni_n_comps;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (mk_uni_comps[mid].pair < key) lo = mid + 1;
        else hi = mid;
    }
    return lo < mk_uni_n_comps && mk_uni_comps[lo].pair == key ? mk_uni_comps[lo].cp : 0;
}

typedef struct cps {
    uint32_t *v;
    size_t n, cap;
    bool failed;
} cps;

static void cps_push(cps *c, uint32_t cp)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        uint32_t *v = realloc(c->v, cap * sizeof *v);
        if (!v) {
            c->failed = true;
            return;
        }
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = cp;
}

/* Full canonical decomposition of valid UTF-8, in canonical order. */
static void decompose(cps *c, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n && !c->failed;) {
        uint32_t cp;
        i += mk_utf8_get(p + i, &cp);
        if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
            uint32_t si = cp - S_BASE;
            cps_push(c, L_BASE + si / N_COUNT);
            cps_push(c, V_BASE + si % N_COUNT / T_COUNT);
            if (si % T_COUNT) cps_push(c, T_BASE + si % T_COUNT);
            continue;
        }
        const mk_uni_decomp *d = cp < 0xC0 ? NULL : find_decomp(cp);
        if (!d) {
            cps_push(c, cp);
            continue;
        }
        for (unsigned k = 0; k < d->len; k++) cps_push(c, mk_uni_decomp_pool[d->off + k]);
    }
    /* canonical ordering: a stable sort of each run of non-starters by combining class */
    for (size_t i = 1; i < c->n; i++) {
        unsigned cc = mk_uni_ccc(c->v[i]);
        if (!cc) continue;
        uint32_t x = c->v[i];
        size_t j = i;
        while (j > 0) {
            unsigned pc = mk_uni_ccc(c->v[j - 1]);
            if (pc <= cc) break;
            c->v[j] = c->v[j - 1];
            j--;
        }
        c->v[j] = x;
    }
}

static void emit(mk_buf *out, const cps *c)
{
    if (c->failed) {
        out->failed = true;
        return;
    }
    char u[4];
    for (size_t i = 0; i < c->n; i++) mk_buf_put(out, u, mk_utf8_put(c->v[i], u));
}

/* Whether every byte is below `lead`: text below U+00C0 (lead 0xC3) has no decomposition;
 * text below U+0300 (lead 0xCC) is also unchanged by composition (it holds no mark). */
static bool all_below(const char *s, size_t n, unsigned char lead)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= lead) return false;
    return true;
}

void mk_uni_nfd(mk_buf *out, const char *s, size_t n)
{
    if (all_below(s, n, 0xC3)) {
        mk_buf_put(out, s, n);
        return;
    }
    cps c = {0};
    decompose(&c, s, n);
    emit(out, &c);
    free(c.v);
}

void mk_uni_nfc(mk_buf *out, const char *s, size_t n)
{
    if (all_below(s, n, 0xCC)) {
        mk_buf_put(out, s, n);
        return;
    }
    cps c = {0};
    decompose(&c, s, n);
    /* canonical composition (Unicode 15 section 3.11, D117) */
    size_t w = 0;
    long starter = -1;
    for (size_t i = 0; i < c.n && !c.failed; i++) {
        uint32_t ch = c.v[i];
        unsigned cc = mk_uni_ccc(ch);
        if (starter >= 0) {
            bool adjacent = w - 1 == (size_t)starter;
            unsigned last = adjacent ? 0 : mk_uni_ccc(c.v[w - 1]);
            if (adjacent || (last != 0 && last < cc)) {
                uint32_t k = compose(c.v[starter], ch);
                if (k) {
                    c.v[starter] = k;
                    continue;
                }
            }
        }
        if (cc == 0) starter = (long)w;
        c.v[w++] = ch;
    }
    c.n = w;
    emit(out, &c);
    free(c.v);
}
