/* test_tokenizer.c - nn/tokenizer against Hugging Face tokenizers (tests/golden/tokenizer/,
 * made by tools/gen-golden-tokenizer.py): the same ids for every hard string and every
 * tokenizer, with and without special tokens, the same decoded text, and decode(encode(x))
 * == x wherever tokenizers round-trips. Then the Unicode pieces, and the refusals. */
#include "harness.h"

#include "../../core/mk_core.h"
#include "../../core/mk_io.h"
#include "../../core/mk_json.h"
#include "../../nn/tokenizer.h"
#include "../../nn/unicode.h"

#include <stdlib.h>

static char *golden_path(const char *name)
{
    const char *root = getenv("MK_ROOT") ? getenv("MK_ROOT") : ".";
    return mk_asprintf("%s/tests/golden/tokenizer/%s", root, name);
}

static mk_tokenizer *load_golden(const char *name)
{
    char *file = mk_asprintf("%s.json", name), *path = golden_path(file);
    char *data = NULL;
    size_t len = 0;
    mk_tokenizer *t = NULL;
    if (mk_read_file(path, MK_TOK_MAX_JSON, &data, &len) != MK_OK || mk_tokenizer_load(data, len, path, &t) != MK_OK)
        mk_test_fail(__FILE__, __LINE__, "%s: %s", path, mk_errmsg());
    free(data);
    free(file);
    free(path);
    return t;
}

static size_t unhex(const char *h, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned v;
        sscanf(h + i, "%2x", &v);
        out[k++] = (char)v;
    }
    return k;
}

/* The ids of a JSON array node; returns how many (at most cap). */
static size_t json_ids(const mk_json *j, uint32_t arr, int32_t *out, size_t cap)
{
    size_t n = 0;
    for (uint32_t c = mk_json_at(j, arr)->first; c && n < cap; c = mk_json_at(j, c)->next)
        out[n++] = (int32_t)mk_json_at(j, c)->u;
    return n;
}

static uint32_t nth(const mk_json *j, uint32_t arr, size_t i)
{
    uint32_t c = mk_json_at(j, arr)->first;
    while (c && i--) c = mk_json_at(j, c)->next;
    return c;
}

/* first difference of two id lists, as "at [k]: got X, want Y (n got, m want)" */
static void ids_mismatch(const char *tok, size_t si, const char *what, const int32_t *got, size_t ng, const int32_t *want,
                         size_t nw)
{
    size_t k = 0;
    while (k < ng && k < nw && got[k] == want[k]) k++;
    if (k == ng && k == nw) return;
    mk_test_fail(__FILE__, __LINE__, "%s, string %zu, %s: first difference at [%zu]: got %ld, want %ld (%zu ids, want %zu)",
                 tok, si, what, k, k < ng ? (long)got[k] : -1L, k < nw ? (long)want[k] : -1L, ng, nw);
}

typedef struct golden_cases {
    char *data;
    mk_json j;
    uint32_t strings, toks, pieces;
    size_t ns;
} golden_cases;

static bool cases_open(golden_cases *g)
{
    memset(g, 0, sizeof *g);
    char *path = golden_path("cases.json");
    size_t len = 0;
    mk_json_limits lim = {16, 1u << 22};
    bool ok = mk_read_file(path, 16u << 20, &g->data, &len) == MK_OK && mk_json_parse(&g->j, g->data, len, &lim, path) == MK_OK;
    if (!ok) mk_test_fail(__FILE__, __LINE__, "%s: %s", path, mk_errmsg());
    free(path);
    if (!ok) return false;
    g->strings = mk_json_get(&g->j, 0, "strings");
    g->toks = mk_json_get(&g->j, 0, "tokenizers");
    g->pieces = mk_json_get(&g->j, 0, "pieces");
    CHECK(g->strings && g->toks && g->pieces && mk_json_at(&g->j, g->toks)->count >= 14);
    g->ns = g->strings ? mk_json_at(&g->j, g->strings)->count : 0;
    return g->strings && g->toks && g->pieces;
}

static void cases_close(golden_cases *g)
{
    mk_json_free(&g->j);
    free(g->data);
}

/* string si of the corpus (bytes, from hex) */
static char *case_text(golden_cases *g, size_t si, size_t *tl)
{
    uint32_t sn = nth(&g->j, g->strings, si);
    size_t hl = mk_json_at(&g->j, sn)->str_len;
    char *text = malloc(hl / 2 + 1);
    *tl = unhex(mk_json_strv(&g->j, sn), hl, text);
    return text;
}

static void check_decode(const char *name, size_t si, const char *what, const char *got, size_t gl, const char *want,
                         size_t wl)
{
    if (gl != wl || (gl && memcmp(got, want, gl)))
        mk_test_fail(__FILE__, __LINE__, "%s, string %zu: decode%s gives \"%.*s\", want \"%.*s\"", name, si, what, (int)gl, got,
                     (int)wl, want);
}

MK_TEST(tokenizer_golden_ids_and_text)
{
    golden_cases g;
    if (!cases_open(&g)) return;
    const mk_json *j = &g.j;
    size_t checked = 0, roundtrips = 0, decodes = 0;
    int32_t *want = malloc(sizeof *want * 100000);
    for (uint32_t tk = mk_json_at(j, g.toks)->first; tk; tk = mk_json_at(j, tk)->next) {
        const char *name = mk_json_key(j, tk);
        mk_tokenizer *t = load_golden(name);
        if (!t) continue;
        uint32_t ids = mk_json_get(j, tk, "ids"), plain = mk_json_get(j, tk, "ids_plain"), dec = mk_json_get(j, tk, "decoded"),
                 dec_skip = mk_json_get(j, tk, "decoded_skip"), rt = mk_json_get(j, tk, "roundtrip"),
                 sp = mk_json_get(j, tk, "specials");
        size_t npre = mk_json_at(j, mk_json_at(j, sp)->first)->u, npost = mk_json_at(j, nth(j, sp, 1))->u;
        for (size_t si = 0; si < g.ns; si++) {
            size_t tl;
            char *text = case_text(&g, si, &tl);
            mk_buf lossy = {0};
            mk_utf8_lossy(&lossy, text, tl);
            size_t nw = json_ids(j, nth(j, ids, si), want, 100000);
            for (int special = 1; special >= 0; special--) {
                int32_t *got = NULL;
                size_t ng = 0;
                mk_status s = mk_tokenizer_encode(t, text, tl, special, &got, &ng);
                CHECK_MSG(s == MK_OK, "%s, string %zu: %s", name, si, mk_errmsg());
                if (special) {
                    ids_mismatch(name, si, "with special tokens", got, ng, want, nw);
                } else {
                    uint32_t pn = nth(j, plain, si);
                    if (mk_json_at(j, pn)->type == MK_JSON_ARR) {
                        int32_t *w2 = malloc(sizeof *w2 * 100000);
                        size_t n2 = json_ids(j, pn, w2, 100000);
                        ids_mismatch(name, si, "without special tokens", got, ng, w2, n2);
                        free(w2);
                    } else if (nw >= npre + npost) {
                        ids_mismatch(name, si, "without special tokens", got, ng, want + npre, nw - npre - npost);
                    }
                }
                if (!special && mk_json_at(j, nth(j, rt, si))->u) {
                    /* tokenizers round-trips this string: so must we (ill-formed bytes read
                     * as U+FFFD) */
                    char *out = NULL;
                    size_t ol = 0;
                    CHECK_OK(mk_tokenizer_decode(t, got, ng, false, &out, &ol));
                    if (out) check_decode(name, si, "(encode(x))", out, ol, lossy.data ? lossy.data : "", lossy.len);
                    roundtrips++;
                    free(out);
                }
                free(got);
                checked++;
            }
            /* decode the golden ids, with and without the special tokens; null = the text
             * itself, or the same as without skipping */
            char *d0 = NULL, *d1 = NULL;
            size_t l0 = 0, l1 = 0;
            CHECK_OK(mk_tokenizer_decode(t, want, nw, false, &d0, &l0));
            CHECK_OK(mk_tokenizer_decode(t, want, nw, true, &d1, &l1));
            uint32_t dn = nth(j, dec, si), dsn = nth(j, dec_skip, si);
            const char *w0 = mk_json_at(j, dn)->type == MK_JSON_STR ? mk_json_strv(j, dn) : lossy.data ? lossy.data : "";
            size_t wl0 = mk_json_at(j, dn)->type == MK_JSON_STR ? mk_json_at(j, dn)->str_len : lossy.len;
            const char *w1 = mk_json_at(j, dsn)->type == MK_JSON_STR ? mk_json_strv(j, dsn) : w0;
            size_t wl1 = mk_json_at(j, dsn)->type == MK_JSON_STR ? mk_json_at(j, dsn)->str_len : wl0;
            if (d0 && d1) {
                check_decode(name, si, "", d0, l0, w0, wl0);
                check_decode(name, si, " (skip special)", d1, l1, w1, wl1);
                decodes += 2;
            }
            free(d0);
            free(d1);
            mk_buf_free(&lossy);
            free(text);
        }
        mk_tokenizer_free(t);
    }
    CHECK_MSG(checked >= 14 * 150 * 2, "only %zu encodings checked", checked);
    CHECK_MSG(roundtrips >= 1000, "only %zu round trips checked", roundtrips);
    CHECK_MSG(decodes >= 14 * 150 * 2, "only %zu decodes checked", decodes);
    free(want);
    cases_close(&g);
}

typedef struct piece_list {
    mk_buf text;
    size_t n, len[4096];
} piece_list;

static mk_status collect_piece(void *ctx, const char *piece, size_t len)
{
    piece_list *p = ctx;
    if (p->n < 4096) p->len[p->n++] = len;
    mk_buf_put(&p->text, piece, len);
    return MK_OK;
}

/* The normalizer and pre-tokenizer alone, piece by piece: the scanners of the Split regexes
 * and the other pre-tokenizers on strings made to sit on their edges. */
MK_TEST(tokenizer_golden_pieces)
{
    golden_cases g;
    if (!cases_open(&g)) return;
    const mk_json *j = &g.j;
    size_t checked = 0;
    for (uint32_t tk = mk_json_at(j, g.pieces)->first; tk; tk = mk_json_at(j, tk)->next) {
        const char *name = mk_json_key(j, tk);
        mk_tokenizer *t = load_golden(name);
        if (!t) continue;
        for (size_t si = 0; si < g.ns; si++) {
            size_t tl;
            char *text = case_text(&g, si, &tl);
            piece_list *p = calloc(1, sizeof *p);
            CHECK_OK(mk_tokenizer_pretokenize(t, text, tl, collect_piece, p));
            uint32_t want = nth(j, tk, si);
            size_t k = 0, off = 0;
            bool same = mk_json_at(j, want)->count == p->n;
            for (uint32_t c = mk_json_at(j, want)->first; c && same; c = mk_json_at(j, c)->next, k++) {
                size_t wl = mk_json_at(j, c)->str_len;
                same = p->len[k] == wl && memcmp(p->text.data + off, mk_json_strv(j, c), wl) == 0;
                off += wl;
            }
            if (!same) {
                mk_buf_put(&p->text, "", 1);
                mk_test_fail(__FILE__, __LINE__, "%s, string %zu: %zu pieces \"%s\" differ from tokenizers' %u (from piece %zu)",
                             name, si, p->n, p->text.data, mk_json_at(j, want)->count, k ? k - 1 : 0);
            }
            checked++;
            mk_buf_free(&p->text);
            free(p);
            free(text);
        }
        mk_tokenizer_free(t);
    }
    CHECK_MSG(checked >= 10 * 150, "only %zu strings checked", checked);
    cases_close(&g);
}

/* ---- Unicode ------------------------------------------------------------------------------ */

static void check_nfc(const char *in, const char *want, bool nfd)
{
    mk_buf b = {0};
    if (nfd) mk_uni_nfd(&b, in, strlen(in));
    else mk_uni_nfc(&b, in, strlen(in));
    mk_buf_put(&b, "", 1);
    CHECK_STR(b.data, want);
    mk_buf_free(&b);
}

MK_TEST(tokenizer_unicode_normalization)
{
    check_nfc("e\xCC\x81", "\xC3\xA9", false);                           /* e + acute -> é */
    check_nfc("\xC3\xA9", "e\xCC\x81", true);                            /* é -> e + acute */
    check_nfc("o\xCC\x82\xCC\xA3", "\xE1\xBB\x99", false);               /* o + circumflex + dot below -> ộ */
    check_nfc("o\xCC\xA3\xCC\x82", "\xE1\xBB\x99", false);               /* the marks in the other order */
    check_nfc("\xE2\x84\xAB", "\xC3\x85", false);                        /* Angstrom sign (singleton) -> Å */
    check_nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "\xEA\xB0\x81", false); /* Hangul L V T -> 각 */
    check_nfc("\xEA\xB0\x81", "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", true);
    check_nfc("\xCC\x81" "a", "\xCC\x81" "a", false);                    /* a leading mark stays */
    check_nfc("plain ascii", "plain ascii", false);
    CHECK(mk_uni_is_letter(0x4E2D) && mk_uni_is_letter('a') && !mk_uni_is_letter('1'));
    CHECK(mk_uni_is_number(0x0663) && mk_uni_is_number(0x216B) && mk_uni_is_number(0xBD));
    CHECK(mk_uni_is_space(0x3000) && mk_uni_is_space(0x85) && !mk_uni_is_space(0x1C) && !mk_uni_is_space(0x200B));
    CHECK(mk_uni_is_word('_') && mk_uni_is_word(0x301) && !mk_uni_is_word('-'));
}

MK_TEST(tokenizer_utf8_replacement)
{
    /* each maximal ill-formed subpart is one U+FFFD (Python's errors='replace') */
    static const struct {
        const char *in, *want;
    } c[] = {
        {"a\xFF" "b", "a\xEF\xBF\xBD" "b"},
        {"\xE2\x82", "\xEF\xBF\xBD"},                                  /* truncated 3-byte sequence: one */
        {"\xF0\x9F\x98" "x", "\xEF\xBF\xBD" "x"},
        {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},      /* a surrogate: three */
        {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"},                      /* overlong: two */
        {"\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"ok \xC3\xA9", "ok \xC3\xA9"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        mk_buf b = {0};
        mk_utf8_lossy(&b, c[i].in, strlen(c[i].in));
        mk_buf_put(&b, "", 1);
        CHECK_STR(b.data, c[i].want);
        mk_buf_free(&b);
    }
}

/* ---- a tokenizer written here, for behaviour the goldens do not pin down ----------------- */

static mk_tokenizer *load_text(const char *json)
{
    mk_tokenizer *t = NULL;
    if (mk_tokenizer_load(json, strlen(json), "test.json", &t) != MK_OK)
        mk_test_fail(__FILE__, __LINE__, "load: %s", mk_errmsg());
    return t;
}

#define TINY_BPE(extra_model, extra_top)                                                                     \
    "{\"version\": \"1.0\", " extra_top "\"model\": {\"type\": \"BPE\", " extra_model                          \
    "\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"c\": 3, \"abc\": 4, \"<unk>\": 5, \"bc\": 6}, "                \
    "\"merges\": [\"a b\", \"ab c\", \"b c\"]}}"

MK_TEST(tokenizer_bpe_merges_and_api)
{
    mk_tokenizer *t = load_text(TINY_BPE("\"unk_token\": \"<unk>\", \"fuse_unk\": true, ", ""));
    if (!t) return;
    int32_t *ids = NULL;
    size_t n = 0;
    /* "abcab": ab (rank 0) twice, then ab+c (rank 1) -> [abc, ab]; "xy" fuses into one unk */
    CHECK_OK(mk_tokenizer_encode(t, "abcabxyc", 8, true, &ids, &n));
    int32_t want[] = {4, 2, 5, 3};
    CHECK_EQ_INT(n, 4);
    for (size_t i = 0; i < n && i < 4; i++) CHECK_EQ_INT(ids[i], want[i]);
    free(ids);
    CHECK_EQ_INT(mk_tokenizer_vocab_size(t), 7);
    CHECK_EQ_INT(mk_tokenizer_id(t, "abc", 3), 4);
    CHECK_EQ_INT(mk_tokenizer_id(t, "zz", 2), -1);
    size_t len;
    const char *s = mk_tokenizer_token(t, 6, &len);
    CHECK(s && len == 2 && memcmp(s, "bc", 2) == 0);
    CHECK(mk_tokenizer_token(t, 7, &len) == NULL);
    char *text = NULL;
    int32_t bad_id = 99;
    CHECK_ERR(mk_tokenizer_decode(t, &bad_id, 1, false, &text, &len), MK_ERR_USAGE, "out of range");
    int32_t some[] = {4, 1};
    CHECK_OK(mk_tokenizer_decode(t, some, 2, false, &text, &len));
    CHECK_STR(text, "abc b"); /* no decoder: tokens joined by spaces, as tokenizers does */
    free(text);
    mk_tokenizer_free(t);

    /* without unk_token, unknown characters are dropped (tokenizers does the same) */
    t = load_text(TINY_BPE("", ""));
    if (!t) return;
    CHECK_OK(mk_tokenizer_encode(t, "xaby", 4, true, &ids, &n));
    CHECK_EQ_INT(n, 1);
    if (n) CHECK_EQ_INT(ids[0], 2);
    free(ids);
    mk_tokenizer_free(t);
    mk_tokenizer_free(NULL);
}

/* More distinct pieces than a short text's cache has slots (84 one-byte pieces, 84 bytes):
 * the cache stops filling at half, so lookups always end. */
MK_TEST(tokenizer_piece_cache_fills_up)
{
    mk_tokenizer *t = load_golden("bpe-gpt2");
    if (!t) return;
    const char *letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", *punct = "!\"#$%&()*+,-./:;=?@[\\]^_`{|}~";
    char text[128];
    size_t n = 0;
    for (size_t i = 0; letters[i] && n + 2 < sizeof text; i++) {
        text[n++] = letters[i];
        text[n++] = punct[i % strlen(punct)];
    }
    for (int round = 0; round < 2; round++) {
        int32_t *ids = NULL;
        size_t k = 0;
        CHECK_OK(mk_tokenizer_encode(t, text, n, false, &ids, &k));
        CHECK(k >= n / 2);
        char *out = NULL;
        size_t ol = 0;
        CHECK_OK(mk_tokenizer_decode(t, ids, k, false, &out, &ol));
        CHECK(out && ol == n && memcmp(out, text, n) == 0);
        free(out);
        free(ids);
    }
    mk_tokenizer_free(t);
}

MK_TEST(tokenizer_config_bos_eos)
{
    mk_tokenizer *t = load_golden("spm-llama2");
    if (!t) return;
    CHECK_EQ_INT(mk_tokenizer_bos(t), 1); /* from the template */
    CHECK_EQ_INT(mk_tokenizer_eos(t), -1);
    const char cfg[] = "{\"bos_token\": \"<s>\", \"eos_token\": {\"content\": \"</s>\", \"lstrip\": false}}";
    CHECK_OK(mk_tokenizer_load_config(t, cfg, sizeof cfg - 1, "tokenizer_config.json"));
    CHECK_EQ_INT(mk_tokenizer_eos(t), 2);
    CHECK(mk_tokenizer_is_special(t, 2) && !mk_tokenizer_is_special(t, 300));
    const char bad[] = "{\"eos_token\": \"<nope>\"}";
    CHECK_ERR(mk_tokenizer_load_config(t, bad, sizeof bad - 1, "tokenizer_config.json"), MK_ERR_FORMAT, "eos_token");
    mk_tokenizer_free(t);
}

/* ---- refusals: one line naming the key and what was wrong ---------------------------------- */

MK_TEST(tokenizer_rejects_bad_files)
{
    static const struct {
        const char *json, *needle;
        mk_status status;
    } c[] = {
        {"[]", "expected an object", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\"", "invalid JSON", MK_ERR_FORMAT},
        {"{\"version\": \"2.0\", \"model\": {}}", "version", MK_ERR_FORMAT},
        {"{}", "missing 'model'", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "model: type 'Unigram' is not supported", MK_ERR_UNSUPPORTED},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": [], \"merges\": []}}", "model.vocab: expected object, found array",
         MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}", "id 0 given to both",
         MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 5}, \"merges\": []}}", "id 5 out of range",
         MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}", "non-negative integer", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0.5}, \"merges\": []}}", "non-negative integer", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"a\": 1}, \"merges\": []}}", "listed twice", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a c\"]}}",
         "model.merges[0]: 'c' is not in the vocabulary", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}",
         "model.merges[0]: 'ab' is not in the vocabulary", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a  a\"]}}", "not two tokens", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}", "model.merges[0]: expected",
         MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}}", "found number", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"aa\": 1}, \"merges\": [[\"a\", \"a\"], \"a a\"]}}",
         "model.merges[1]: mixes", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"dropout\": 0.1}}", "model.dropout",
         MK_ERR_UNSUPPORTED},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"continuing_subword_prefix\": \"##\"}}",
         "continuing_subword_prefix", MK_ERR_UNSUPPORTED},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\xff\": 0}, \"merges\": []}}", "invalid UTF-8", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 7, \"content\": \"<x>\"}]}",
         "added_tokens[0]: '<x>' has id 7, but tokenizers gives it id 1", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1, \"content\": \"<x>\"}, "
         "{\"id\": 1, \"content\": \"<y>\"}]}",
         "added_tokens[1]: '<y>' has id 1", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 3, \"content\": \"a\"}]}",
         "'a' has id 3, but tokenizers gives it id 0", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1, \"content\": \"\"}]}",
         "added_tokens[0]: empty content", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": \"1\", \"content\": \"x\"}]}",
         "added_tokens[0].id: expected number, found string", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1, \"content\": \"x\", "
         "\"special\": \"yes\"}]}",
         "added_tokens[0].special: expected boolean", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
         "{\"Regex\": \"\\\\w+\"}, \"behavior\": \"Isolated\", \"invert\": false}}",
         "pre_tokenizer.pattern.Regex: '\\w+' is not a known split pattern", MK_ERR_UNSUPPORTED},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
         "{\"String\": \" \"}, \"behavior\": \"Sideways\", \"invert\": false}}",
         "unknown behavior 'Sideways'", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}}",
         "pre_tokenizer: type 'BertPreTokenizer' is not supported", MK_ERR_UNSUPPORTED},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Sequence\", "
         "\"pretokenizers\": [{\"type\": \"Digits\"}, {\"kind\": \"x\"}]}}",
         "pre_tokenizer.pretokenizers[1]: missing 'type'", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"NFKC\"}}",
         "normalizer: type 'NFKC' is not supported (supported: NFC, NFD", MK_ERR_UNSUPPORTED},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"Replace\", \"pattern\": "
         "{\"Regex\": \" +\"}, \"content\": \" \"}}",
         "a Regex pattern is not supported", MK_ERR_UNSUPPORTED},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Metaspace\", "
         "\"replacement\": \"ab\"}}",
         "'replacement' must be one character", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": \"TemplateProcessing\", "
         "\"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], "
         "\"special_tokens\": {}}}",
         "special token '<s>' is not in special_tokens", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": \"TemplateProcessing\", "
         "\"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], "
         "\"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [9], \"tokens\": [\"<s>\"]}}}}",
         "token id 9 out of range", MK_ERR_FORMAT},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"decoder\": {\"type\": \"CTC\"}}",
         "decoder: type 'CTC' is not supported", MK_ERR_UNSUPPORTED},
        {"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"model\": {}}", "key 'model' appears twice",
         MK_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        mk_tokenizer *t = (mk_tokenizer *)1;
        mk_status s = mk_tokenizer_load(c[i].json, strlen(c[i].json), "bad.json", &t);
        if (s != c[i].status || !strstr(mk_errmsg(), c[i].needle) || strncmp(mk_errmsg(), "bad.json: ", 10) != 0 ||
            strchr(mk_errmsg(), '\n') || t != NULL)
            mk_test_fail(__FILE__, __LINE__, "case %zu: got status %d \"%s\", want %d containing \"%s\"", i, (int)s,
                         s ? mk_errmsg() : "(loaded)", (int)c[i].status, c[i].needle);
        if (s == MK_OK) mk_tokenizer_free(t);
    }
    /* deep nesting and a Sequence bomb */
    mk_buf b = {0};
    mk_buf_puts(&b, "{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"normalizer\": ");
    for (int i = 0; i < 12; i++) mk_buf_puts(&b, "{\"type\": \"Sequence\", \"normalizers\": [");
    mk_buf_puts(&b, "{\"type\": \"NFC\"}");
    for (int i = 0; i < 12; i++) mk_buf_puts(&b, "]}");
    mk_buf_puts(&b, "}");
    mk_tokenizer *t = NULL;
    CHECK_ERR(mk_tokenizer_load(b.data, b.len, "deep.json", &t), MK_ERR_FORMAT, "nested more than");
    mk_buf_free(&b);
    mk_buf_puts(&b, "{\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": "
                    "\"Sequence\", \"pretokenizers\": [");
    for (int i = 0; i < 40; i++) mk_buf_puts(&b, i ? ", {\"type\": \"Whitespace\"}" : "{\"type\": \"Whitespace\"}");
    mk_buf_puts(&b, "]}}");
    CHECK_ERR(mk_tokenizer_load(b.data, b.len, "many.json", &t), MK_ERR_FORMAT, "more than 32 steps");
    mk_buf_free(&b);
    mk_buf_puts(&b, "[");
    for (int i = 0; i < 100; i++) mk_buf_puts(&b, "[");
    CHECK_ERR(mk_tokenizer_load(b.data, b.len, "nest.json", &t), MK_ERR_FORMAT, "nesting too deep");
    mk_buf_free(&b);
}
