/* fuzz_tokenizer.c - tokenizer.json loading (nn/tokenizer.h); when a file loads, encode and
 * decode hard strings and the input's own bytes, and decode ids taken from the input. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../nn/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static const char *const texts[] = {
    "",
    " Hello  world!\n\n\tIt's 12345 o'clock, DON'T 'LL ",
    "<s>a</s> <|endoftext|><mask> x",
    "\xE6\x97\xA5\xE6\x9C\xAC e\xCC\x81 \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 \xE2\x96\x81\xE2\x96\x81",
};
/* ill-formed UTF-8 and a NUL inside */
static const char hostile[] = "\xFF\xC3 \xED\xA0\x80 \xF4\x90\x80\x80 \x00 end";

static void round_trip(const mk_tokenizer *t, const char *s, size_t n)
{
    for (int special = 0; special <= 1; special++) {
        int32_t *ids = NULL;
        size_t k = 0;
        if (mk_tokenizer_encode(t, s, n, special, &ids, &k) == MK_OK) {
            char *out = NULL;
            size_t ol;
            if (mk_tokenizer_decode(t, ids, k, special, &out, &ol) == MK_OK) free(out);
        }
        free(ids);
    }
}

static mk_status count_piece(void *ctx, const char *piece, size_t len)
{
    (void)piece;
    *(size_t *)ctx += len;
    return MK_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    mk_tokenizer *t = NULL;
    if (mk_tokenizer_load((const char *)data, size, "fuzz/tokenizer.json", &t) != MK_OK) return 0;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        round_trip(t, texts[i], strlen(texts[i]));
        size_t total = 0;
        (void)mk_tokenizer_pretokenize(t, texts[i], strlen(texts[i]), count_piece, &total);
    }
    round_trip(t, hostile, sizeof hostile - 1);
    round_trip(t, (const char *)data, size < 512 ? size : 512);
    /* ids from the input's bytes, some out of range */
    size_t v = mk_tokenizer_vocab_size(t), n = size / 4 < 64 ? size / 4 : 64;
    int32_t ids[64];
    for (size_t i = 0; i < n; i++) {
        uint32_t x;
        memcpy(&x, data + 4 * i, 4);
        ids[i] = (int32_t)(v ? x % (v + 2) : x % 4);
    }
    char *out = NULL;
    size_t ol;
    if (mk_tokenizer_decode(t, ids, n, false, &out, &ol) == MK_OK) free(out);
    (void)mk_tokenizer_bos(t);
    size_t len;
    (void)mk_tokenizer_token(t, 0, &len);
    mk_tokenizer_free(t);
    return 0;
}
