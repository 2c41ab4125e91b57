/* mk_json.c - see mk_json.h */
#include "mk_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    mk_json *j;
    const unsigned char *p, *end, *start;
    const mk_json_limits *lim;
    const char *what;
    mk_status err;
} parser;

static mk_status perr(parser *ps, const char *msg)
{
    if (ps->err == MK_OK)
        ps->err = mk_error(MK_ERR_FORMAT, "%s: invalid JSON at byte %zu: %s", ps->what,
                           (size_t)(ps->p - ps->start), msg);
    return ps->err;
}

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static uint32_t new_node(parser *ps, mk_json_type type)
{
    mk_json *j = ps->j;
    if (j->n >= ps->lim->max_nodes || j->n >= UINT32_MAX) {
        perr(ps, "too many values");
        return 0;
    }
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 64;
        mk_json_node *nn = realloc(j->nodes, cap * sizeof *nn);
        if (!nn) {
            ps->err = mk_error(MK_ERR_NOMEM, "%s: out of memory parsing JSON", ps->what);
            return 0;
        }
        j->nodes = nn;
        j->cap = cap;
    }
    memset(&j->nodes[j->n], 0, sizeof j->nodes[0]);
    j->nodes[j->n].type = type;
    j->nodes[j->n].pos = (uint32_t)(ps->p - ps->start);
    return (uint32_t)j->n++;
}

static bool strs_put(parser *ps, const void *d, size_t n)
{
    mk_json *j = ps->j;
    if (j->strs_len + n + 1 > j->strs_cap) {
        size_t cap = j->strs_cap ? j->strs_cap : 256;
        while (cap < j->strs_len + n + 1) cap *= 2;
        if (cap > UINT32_MAX) {
            perr(ps, "strings too long");
            return false;
        }
        char *s = realloc(j->strs, cap);
        if (!s) {
            ps->err = mk_error(MK_ERR_NOMEM, "%s: out of memory parsing JSON", ps->what);
            return false;
        }
        j->strs = s;
        j->strs_cap = cap;
    }
    memcpy(j->strs + j->strs_len, d, n);
    j->strs_len += n;
    return true;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_hex4(parser *ps, unsigned *out)
{
    if (ps->end - ps->p < 4) return false;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(ps->p[i]);
        if (h < 0) return false;
        v = v << 4 | (unsigned)h;
    }
    ps->p += 4;
    *out = v;
    return true;
}

static size_t utf8_encode(unsigned cp, unsigned char out[4])
{
    if (cp < 0x80) { out[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { out[0] = (unsigned char)(0xC0 | cp >> 6); out[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12); out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F)); return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18); out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F)); out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at p (Unicode 15, table 3-7), or 0. */
static size_t utf8_valid(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    else if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) { n = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) n = 3;
    else if (c == 0xED) { n = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) n = 3;
    else if (c == 0xF0) { n = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    else if (c == 0xF4) { n = 4; hi = 0x8F; }
    else return 0;
    if ((size_t)(end - p) < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

bool mk_utf8_check(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        size_t k = utf8_valid(p, end);
        if (!k) return false;
        p += k;
    }
    return true;
}

/* Parses a string at ps->p (which is at '"'); returns its offset in strs. */
static bool parse_string(parser *ps, uint32_t *off, uint32_t *len, bool *has_nul)
{
    ps->p++;
    size_t start = ps->j->strs_len;
    *has_nul = false;
    for (;;) {
        if (ps->p >= ps->end) return perr(ps, "unterminated string"), false;
        unsigned char c = *ps->p;
        if (c == '"') {
            ps->p++;
            break;
        }
        if (c < 0x20) return perr(ps, "control character in string"), false;
        if (c == '\\') {
            ps->p++;
            if (ps->p >= ps->end) return perr(ps, "unterminated escape"), false;
            unsigned char e = *ps->p++;
            char ch;
            switch (e) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                unsigned cp;
                if (!read_hex4(ps, &cp)) return perr(ps, "bad \\u escape"), false;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
                        return perr(ps, "lone surrogate in \\u escape"), false;
                    ps->p += 2;
                    if (!read_hex4(ps, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                        return perr(ps, "bad surrogate pair"), false;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return perr(ps, "lone surrogate in \\u escape"), false;
                }
                if (cp == 0) *has_nul = true;
                unsigned char u8[4];
                if (!strs_put(ps, u8, utf8_encode(cp, u8))) return false;
                continue;
            }
            default: return perr(ps, "bad escape"), false;
            }
            if (!strs_put(ps, &ch, 1)) return false;
            continue;
        }
        /* copy a run of plain bytes, validating UTF-8 */
        const unsigned char *run = ps->p;
        while (ps->p < ps->end && *ps->p != '"' && *ps->p != '\\' && *ps->p >= 0x20) {
            size_t n = utf8_valid(ps->p, ps->end);
            if (!n) return perr(ps, "invalid UTF-8"), false;
            ps->p += n;
        }
        if (!strs_put(ps, run, (size_t)(ps->p - run))) return false;
    }
    size_t n = ps->j->strs_len - start;
    if (!strs_put(ps, "", 1)) return false; /* NUL terminator */
    *off = (uint32_t)start;
    *len = (uint32_t)n;
    return true;
}

static bool parse_number(parser *ps, mk_json_node *nd)
{
    const unsigned char *s = ps->p;
    bool neg = false, frac = false, ex = false;
    if (ps->p < ps->end && *ps->p == '-') {
        neg = true;
        ps->p++;
    }
    if (ps->p >= ps->end) return perr(ps, "bad number"), false;
    if (*ps->p == '0') {
        ps->p++;
    } else if (*ps->p >= '1' && *ps->p <= '9') {
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    } else {
        return perr(ps, "bad number"), false;
    }
    if (ps->p < ps->end && *ps->p == '.') {
        frac = true;
        ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return perr(ps, "bad number"), false;
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ex = true;
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return perr(ps, "bad number"), false;
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    }
    size_t n = (size_t)(ps->p - s);
    if (n > 512) return perr(ps, "number too long"), false;
    char tmp[520];
    memcpy(tmp, s, n);
    tmp[n] = 0;
    nd->d = strtod(tmp, NULL);
    if (!neg && !frac && !ex) {
        uint64_t v = 0;
        bool ok = true;
        for (size_t i = 0; i < n && ok; i++)
            ok = mk_mul_u64(v, 10, &v) && mk_add_u64(v, (uint64_t)(tmp[i] - '0'), &v);
        nd->is_uint = ok;
        nd->u = ok ? v : 0;
    }
    return true;
}

static bool match_lit(parser *ps, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0) return false;
    ps->p += n;
    return true;
}

static uint32_t parse_value(parser *ps, unsigned depth);

static bool parse_container(parser *ps, uint32_t self, bool is_obj, unsigned depth)
{
    ps->p++; /* '[' or '{' */
    uint32_t last = 0, count = 0;
    skip_ws(ps);
    char close = is_obj ? '}' : ']';
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return true;
    }
    for (;;) {
        uint32_t key = 0, key_len = 0;
        bool key_nul = false;
        skip_ws(ps);
        if (is_obj) {
            if (ps->p >= ps->end || *ps->p != '"') return perr(ps, "expected a string key"), false;
            if (!parse_string(ps, &key, &key_len, &key_nul)) return false;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') return perr(ps, "expected ':'"), false;
            ps->p++;
        }
        uint32_t child = parse_value(ps, depth + 1);
        if (!child) return false;
        mk_json_node *c = &ps->j->nodes[child];
        if (is_obj) {
            c->key = key;
            c->key_len = key_len;
            if (key_nul) c->has_nul = true;
        }
        if (last) ps->j->nodes[last].next = child;
        else ps->j->nodes[self].first = child;
        last = child;
        count++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            break;
        }
        return perr(ps, is_obj ? "expected ',' or '}'" : "expected ',' or ']'"), false;
    }
    ps->j->nodes[self].count = count;
    return true;
}

static uint32_t parse_value(parser *ps, unsigned depth)
{
    if (depth > ps->lim->max_depth) return perr(ps, "nesting too deep"), 0;
    skip_ws(ps);
    if (ps->p >= ps->end) return perr(ps, "unexpected end of input"), 0;
    unsigned char c = *ps->p;
    uint32_t self;
    switch (c) {
    case '{':
    case '[':
        self = new_node(ps, c == '{' ? MK_JSON_OBJ : MK_JSON_ARR);
        if (!self && ps->err) return 0;
        if (!parse_container(ps, self, c == '{', depth)) return 0;
        return self;
    case '"': {
        self = new_node(ps, MK_JSON_STR);
        if (ps->err) return 0;
        uint32_t off, len;
        bool nul;
        if (!parse_string(ps, &off, &len, &nul)) return 0;
        ps->j->nodes[self].str = off;
        ps->j->nodes[self].str_len = len;
        ps->j->nodes[self].has_nul = nul;
        return self;
    }
    case 't':
    case 'f':
    case 'n':
        self = new_node(ps, c == 'n' ? MK_JSON_NULL : MK_JSON_BOOL);
        if (ps->err) return 0;
        if (match_lit(ps, "true")) ps->j->nodes[self].b = true;
        else if (!match_lit(ps, "false") && !match_lit(ps, "null")) return perr(ps, "unexpected literal"), 0;
        return self;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            self = new_node(ps, MK_JSON_NUM);
            if (ps->err) return 0;
            mk_json_node tmp = ps->j->nodes[self];
            if (!parse_number(ps, &tmp)) return 0;
            ps->j->nodes[self] = tmp;
            return self;
        }
        return perr(ps, "unexpected character"), 0;
    }
}

mk_status mk_json_parse(mk_json *j, const char *buf, size_t len, const mk_json_limits *lim, const char *what)
{
    memset(j, 0, sizeof *j);
    parser ps = {j, (const unsigned char *)buf, (const unsigned char *)buf + len, (const unsigned char *)buf, lim, what,
                 MK_OK};
    if (len > UINT32_MAX) return mk_error(MK_ERR_FORMAT, "%s: JSON text too large", what);
    /* node 0 is the root; parse_value uses 0 as "failed", so reserve a slot by
     * parsing into index 0 only when it is the first node created */
    uint32_t root = parse_value(&ps, 0);
    if (ps.err != MK_OK) {
        mk_json_free(j);
        return ps.err;
    }
    (void)root; /* the first node created is always nodes[0] */
    skip_ws(&ps);
    if (ps.p != ps.end) {
        perr(&ps, "trailing characters after the JSON value");
        mk_json_free(j);
        return ps.err;
    }
    return MK_OK;
}

void mk_json_free(mk_json *j)
{
    if (!j) return;
    free(j->nodes);
    free(j->strs);
    memset(j, 0, sizeof *j);
}

uint32_t mk_json_get(const mk_json *j, uint32_t obj, const char *key)
{
    if (j->nodes[obj].type != MK_JSON_OBJ) return 0;
    size_t kl = strlen(key);
    for (uint32_t c = j->nodes[obj].first; c; c = j->nodes[c].next)
        if (j->nodes[c].key_len == kl && memcmp(j->strs + j->nodes[c].key, key, kl) == 0) return c;
    return 0;
}

static int cmp_keys(const void *a, const void *b, void *ctx)
{
    const mk_json *j = ctx;
    const mk_json_node *x = &j->nodes[*(const uint32_t *)a], *y = &j->nodes[*(const uint32_t *)b];
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(j->strs + x->key, j->strs + y->key, n);
    if (c) return c;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

uint32_t mk_json_dup_key(const mk_json *j, uint32_t obj)
{
    uint32_t n = j->nodes[obj].count;
    if (n < 2) return 0;
    uint32_t *ix = malloc(n * sizeof *ix);
    if (!ix) return 0;
    uint32_t k = 0;
    for (uint32_t c = j->nodes[obj].first; c; c = j->nodes[c].next) ix[k++] = c;
    qsort_r(ix, n, sizeof *ix, cmp_keys, (void *)j);
    uint32_t dup = 0;
    for (uint32_t i = 1; i < n && !dup; i++)
        if (cmp_keys(&ix[i - 1], &ix[i], (void *)j) == 0) dup = ix[i];
    free(ix);
    return dup;
}

const char *mk_json_type_name(mk_json_type t)
{
    static const char *const names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)t < 6 ? names[t] : "?";
}
