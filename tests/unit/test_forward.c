/* test_forward.c - the forward pass against transformers' logits (tests/golden/forward/, made by
 * tools/gen-golden-forward.py): every family synth makes, RoPE scaling variants, sliding
 * windows, and NF4 / int4 models read through the dequantizing source. The models are made
 * again here with the recorded synth command (the mergekit-c binary of the build, MK_BIN),
 * checked against the recorded SHA-256 of their weights, edited and quantized as recorded.
 * Also the kernels against their plain references. */
#include "harness.h"

#include "../../core/mk_io.h"
#include "../../formats/model.h"
#include "../../model/config.h"
#include "../../nn/nn.h"
#include "../../nn/ops.h"
#include "../../quant/qsource.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* Logit tolerance against transformers in float32: both sum in f32 in different orders
 * (BLAS against torch's kernels); 2e-4 absolute + 2e-4 relative covers that with a margin
 * of about ten over what was measured, and a wrong rotation, scale or norm is off by 0.1+. */
#define LOGIT_ATOL 2e-4
#define LOGIT_RTOL 2e-4

static const char *root(void) { return getenv("MK_ROOT") ? getenv("MK_ROOT") : "."; }
static const char *bin(void) { return getenv("MK_BIN") ? getenv("MK_BIN") : "./mergekit-c"; }

static bool run_cmd(const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0) mk_test_fail(__FILE__, __LINE__, "command failed (%d): %s", rc, cmd);
    return rc == 0;
}

/* The shell command `mergekit-c ARGS... extra`, each argument single-quoted. */
static char *command(const cJSON *args, const char *sub, const char *in, const char *out)
{
    mk_buf b = {0};
    mk_buf_printf(&b, "'%s' %s", bin(), sub);
    if (in) mk_buf_printf(&b, " '%s'", in);
    mk_buf_printf(&b, " '%s'", out);
    const cJSON *a;
    bool first = true;
    cJSON_ArrayForEach(a, args) {
        if (first && strcmp(sub, "synth") == 0 && strcmp(a->valuestring, "synth") == 0) {
            first = false;
            continue;
        }
        first = false;
        mk_buf_printf(&b, " '%s'", a->valuestring);
    }
    mk_buf_puts(&b, " -q");
    return b.data;
}

/* Replace or add every member of `edits` in DIR/config.json. */
static bool edit_config(const char *dir, const cJSON *edits)
{
    char *path = mk_path_join(dir, "config.json"), *text = NULL;
    size_t len = 0;
    bool ok = path && mk_read_file(path, 1 << 20, &text, &len) == MK_OK;
    cJSON *cfg = ok ? cJSON_Parse(text) : NULL;
    const cJSON *e;
    cJSON_ArrayForEach(e, edits) {
        if (!cfg) break;
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, e->string);
        cJSON_AddItemToObject(cfg, e->string, cJSON_Duplicate(e, true));
    }
    char *out = cfg ? cJSON_Print(cfg) : NULL;
    ok = out && mk_write_file_atomic(path, out, strlen(out)) == MK_OK;
    free(out);
    cJSON_Delete(cfg);
    free(text);
    free(path);
    return ok;
}

static bool file_sha256(const char *path, char hex[65])
{
    char *cmd = mk_asprintf("sha256sum '%s'", path);
    FILE *p = cmd ? popen(cmd, "r") : NULL;
    free(cmd);
    bool ok = p && fscanf(p, "%64s", hex) == 1;
    if (p) pclose(p);
    return ok;
}

/* Logits of tokens [2, seq] through the forward pass of the model at `path`. */
static float *our_logits(const char *path, const int32_t *tok, size_t nseq, size_t seq, size_t *vocab)
{
    mk_source *raw = NULL, *src = NULL;
    mk_qinfo qi;
    mk_model_config cfg;
    mk_nn_model *m = NULL;
    float *hidden = NULL, *logits = NULL;
    mk_status s = mk_model_open(path, &raw);
    if (s == MK_OK) s = mk_qsource_open(raw, &src, &qi);
    else raw = NULL;
    if (s != MK_OK) mk_source_close(raw);
    if (s == MK_OK) s = mk_model_config_of_source(src, &cfg);
    if (s == MK_OK) s = mk_nn_open(src, &cfg, &m);
    if (s == MK_OK) {
        *vocab = mk_nn_vocab(m);
        hidden = malloc(nseq * seq * mk_nn_hidden(m) * sizeof(float));
        logits = malloc(nseq * seq * *vocab * sizeof(float));
        s = hidden && logits ? mk_nn_forward(m, tok, nseq, seq, hidden) : MK_ERR_NOMEM;
    }
    if (s == MK_OK) s = mk_nn_logits(m, hidden, nseq * seq, logits);
    if (s != MK_OK) {
        mk_test_fail(__FILE__, __LINE__, "%s: %s", path, mk_errmsg());
        free(logits);
        logits = NULL;
    }
    free(hidden);
    mk_nn_close(m);
    if (src) mk_model_config_free(&cfg);
    mk_source_close(src);
    return logits;
}

MK_TEST(forward_matches_transformers)
{
    char gpath[1200], mpath[1024];
    snprintf(gpath, sizeof gpath, "%s/tests/golden/forward/logits.safetensors", root());
    snprintf(mpath, sizeof mpath, "%s/tests/golden/forward/MANIFEST.json", root());
    char *mtext = NULL;
    size_t mlen = 0;
    mk_source *gold = NULL;
    if (mk_read_file(mpath, 1 << 20, &mtext, &mlen) != MK_OK || mk_model_open(gpath, &gold) != MK_OK) {
        mk_test_fail(__FILE__, __LINE__, "cannot read the forward goldens: %s", mk_errmsg());
        free(mtext);
        return;
    }
    cJSON *man = cJSON_Parse(mtext);
    long ti = mk_source_find(gold, "tokens");
    CHECK(man && ti >= 0);
    size_t seq = (size_t)gold->tensors[ti].shape[1], nseq = (size_t)gold->tensors[ti].shape[0];
    int32_t *tok = malloc(nseq * seq * sizeof *tok);
    CHECK(gold->ops->read(gold, (size_t)ti, 0, nseq * seq * 4, tok) == MK_OK);
    int cases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(man, "cases")) {
        char dir[1024], want_sha[65] = "", got_sha[65] = "";
        snprintf(dir, sizeof dir, "%s/fwd-%s", mk_test_tmpdir(), c->string);
        char *cmd = command(cJSON_GetObjectItem(c, "synth"), "synth", NULL, dir);
        bool ok = run_cmd(cmd);
        free(cmd);
        snprintf(gpath, sizeof gpath, "%s/model.safetensors", dir);
        snprintf(want_sha, sizeof want_sha, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(c, "weights_sha256")));
        if (ok && (!file_sha256(gpath, got_sha) || strcmp(got_sha, want_sha) != 0)) {
            mk_test_fail(__FILE__, __LINE__, "%s: synth made weights %s, the goldens were made from %s", c->string, got_sha,
                         want_sha);
            continue;
        }
        ok = ok && edit_config(dir, cJSON_GetObjectItem(c, "config_edits"));
        const cJSON *q = cJSON_GetObjectItem(c, "quantize");
        char path[1100];
        snprintf(path, sizeof path, "%s", dir);
        if (ok && cJSON_IsArray(q)) {
            snprintf(path, sizeof path, "%s-q", dir);
            cmd = command(q, "quantize", dir, path);
            ok = run_cmd(cmd);
            free(cmd);
        }
        size_t vocab = 0;
        float *got = ok ? our_logits(path, tok, nseq, seq, &vocab) : NULL;
        long gi = mk_source_find(gold, c->string);
        if (got && gi >= 0 && gold->tensors[gi].numel == nseq * seq * vocab) {
            float *want = malloc(gold->tensors[gi].nbytes);
            CHECK(gold->ops->read(gold, (size_t)gi, 0, gold->tensors[gi].nbytes, want) == MK_OK);
            CHECK_CLOSE(c->string, got, want, nseq * seq * vocab, LOGIT_ATOL, LOGIT_RTOL);
            free(want);
            cases++;
        } else if (got) {
            mk_test_fail(__FILE__, __LINE__, "%s: golden logits missing or of another size", c->string);
        }
        free(got);
    }
    CHECK_MSG(cases >= 16, "only %d cases compared", cases);
    free(tok);
    cJSON_Delete(man);
    free(mtext);
    mk_source_close(gold);
}
