/* test_torchbin.c - the PyTorch checkpoint reader: every golden checkpoint torch.save wrote
 * (tests/golden/torchbin, tools/gen-golden-torchbin.py) reads as exactly the tensors
 * torch.load makes of it, bit for bit, through row chunks that cut views anywhere; and the
 * restricted pickle machine on hand-made legacy streams: what it accepts, what it refuses
 * (globals, opcodes, bounds), and that nothing is amplified. */
#include "harness.h"

#include "../../core/mk_io.h"
#include "../../formats/model.h"
#include "../../formats/safetensors.h"
#include "../../formats/torchbin.h"

#include <stdlib.h>

static const char *root(void) { return getenv("MK_ROOT") ? getenv("MK_ROOT") : "."; }

/* GOT (any model path) holds the same tensors as WANT (safetensors), byte for byte, read in
 * chunks of `chunk` elements. Reports the first differing element. */
static void same_tensors(const char *got_path, const char *want_path, uint64_t chunk)
{
    mk_source *got = NULL, *want = NULL;
    CHECK_OK(mk_model_open(got_path, &got));
    CHECK_OK(mk_safetensors_open(want_path, &want));
    if (!got || !want) goto done;
    CHECK_MSG(got->n_tensors == want->n_tensors, "%s: %zu tensors, %s has %zu", got_path, got->n_tensors, want_path,
              want->n_tensors);
    for (size_t i = 0; i < want->n_tensors; i++) {
        const mk_tensor_info *w = &want->tensors[i];
        long gi = mk_source_find(got, w->name);
        if (gi < 0) {
            mk_test_fail(__FILE__, __LINE__, "%s: no tensor %s", got_path, w->name);
            continue;
        }
        const mk_tensor_info *g = &got->tensors[gi];
        CHECK_MSG(g->dtype == w->dtype && mk_shape_eq(g, w), "%s: tensor %s is %s, want %s", got_path, w->name,
                  mk_dtype_name(g->dtype), mk_dtype_name(w->dtype));
        if (g->dtype != w->dtype || !mk_shape_eq(g, w)) continue;
        unsigned es = mk_dtype_size(w->dtype);
        uint8_t *a = malloc(w->nbytes + 1), *b = malloc(w->nbytes + 1);
        CHECK_OK(want->ops->read(want, i, 0, w->nbytes, b));
        for (uint64_t e = 0; e < w->numel; e += chunk) {
            uint64_t n = w->numel - e < chunk ? w->numel - e : chunk;
            CHECK_OK(got->ops->read(got, (size_t)gi, e * es, n * es, a + e * es));
        }
        for (uint64_t e = 0; e < w->numel; e++)
            if (memcmp(a + e * es, b + e * es, es) != 0) {
                mk_test_fail(__FILE__, __LINE__, "%s: tensor %s differs first at element %llu (of %llu)", got_path, w->name,
                             (unsigned long long)e, (unsigned long long)w->numel);
                break;
            }
        free(a);
        free(b);
    }
done:
    mk_source_close(got);
    mk_source_close(want);
}

MK_TEST(torchbin_golden_bit_exact)
{
    static const char *const cases[][2] = {
        {"zip", "zip/"},          {"zip64", "zip64/"},  {"legacy", "legacy/"},  {"sharded", "sharded/"},
        {"module", "module/pytorch_model.bin"}, {"params", "params/params.pth"}, {"proto4", "proto4/model.pt"},
    };
    char got[512], want[512];
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        snprintf(got, sizeof got, "%s/tests/golden/torchbin/%s", root(), cases[c][1]);
        snprintf(want, sizeof want, "%s/tests/golden/torchbin/%s/expected.safetensors", root(), cases[c][0]);
        /* whole tensors, then chunks that cut rows and views at odd places */
        same_tensors(got, want, UINT64_MAX);
        same_tensors(got, want, 3);
        same_tensors(got, want, 1);
    }
}

MK_TEST(torchbin_golden_views)
{
    char p[512];
    snprintf(p, sizeof p, "%s/tests/golden/torchbin/zip/", root());
    mk_source *s = NULL;
    CHECK_OK(mk_model_open(p, &s));
    if (!s) return;
    CHECK_STR(s->kind, "pytorch");
    /* tied: one storage, two names, the same bytes in the file */
    long e = mk_source_find(s, "model.embed_tokens.weight"), h = mk_source_find(s, "lm_head.weight");
    CHECK(e >= 0 && h >= 0 && s->tensors[e].offset == s->tensors[h].offset);
    /* rows 2..6 of a [12, 10] f16 tensor: contiguous, 2 x 10 elements into its storage */
    long up = mk_source_find(s, "model.layers.0.mlp.up_proj.weight"), gate = mk_source_find(s, "model.layers.0.mlp.gate_proj.weight");
    CHECK(up >= 0 && gate >= 0 && s->tensors[up].offset == s->tensors[gate].offset - 3 * 2 + 2 * 10 * 2);
    mk_source_close(s);
}

/* ---- hand-made legacy streams --------------------------------------------------------------- */

typedef struct img {
    uint8_t *b;
    size_t n, cap;
} img;

static void put(img *m, const void *p, size_t n)
{
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2;
        m->b = realloc(m->b, m->cap);
    }
    memcpy(m->b + m->n, p, n);
    m->n += n;
}
#define PUTS(m, lit) put(m, lit, sizeof lit - 1)

/* The three header pickles of _legacy_save, then `obj` (a whole pickle), then the key list
 * ["0"] and storage "0": `numel` elements of 4 bytes, values 0, 1, 2 ... as u32 (numel < 0:
 * an empty key list and no storage). */
static void legacy(img *m, const char *obj, size_t objlen, int numel)
{
    m->n = 0;
    PUTS(m, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
    PUTS(m, "\x80\x02M\xe9\x03.");
    PUTS(m, "\x80\x02}.");
    put(m, obj, objlen);
    if (numel < 0) {
        PUTS(m, "\x80\x02].");
        return;
    }
    PUTS(m, "\x80\x02](X\x01\x00\x00\x00" "0" "e.");
    uint8_t cnt[8];
    for (int i = 0; i < 8; i++) cnt[i] = (uint8_t)((uint64_t)numel >> (8 * i));
    put(m, cnt, 8);
    for (uint32_t i = 0; i < (uint32_t)numel; i++) put(m, &i, 4);
}

static mk_status mem_read(void *ctx, uint64_t off, void *dst, size_t len)
{
    const img *m = ctx;
    if (off > m->n || len > m->n - off) return mk_error(MK_ERR_IO, "read past the image");
    memcpy(dst, m->b + off, len);
    return MK_OK;
}

static mk_status parse(img *m, mk_tb_file *f)
{
    mk_tb_input in = {mem_read, m, m->n};
    return mk_tb_parse(&in, "t.bin", f);
}

/* A pickle: PROTO 2, the caller's body, STOP. */
#define PK(body) "\x80\x02" body "."
/* {'w': tensor of FloatStorage '0' (numel 6), offset OFF, size SIZE, stride STRIDE} */
#define REBUILD(off, size, stride)                                                                                   \
    "ccollections\nOrderedDict\n)R" "X\x01\x00\x00\x00w" "ctorch._utils\n_rebuild_tensor_v2\n"                   \
    "((X\x07\x00\x00\x00storage" "ctorch\nFloatStorage\n" "X\x01\x00\x00\x00" "0" "X\x03\x00\x00\x00" "cpu"        \
    "K\x06NtQ" off size stride "\x89" "ccollections\nOrderedDict\n)Rt" "R" "s"

MK_TEST(torchbin_legacy_views)
{
    img m = {0};
    mk_tb_file f;
    /* a [2, 3] view at offset 0, row-major */
    static const char ok[] = PK(REBUILD("K\x00", "K\x02K\x03\x86", "K\x03K\x01\x86"));
    legacy(&m, ok, sizeof ok - 1, 6);
    CHECK_OK(parse(&m, &f));
    CHECK(f.legacy && f.n == 1 && f.v[0].contiguous && f.t[0].dtype == MK_F32 && f.t[0].numel == 6);
    mk_tb_file_free(&f);
    /* its transpose: [3, 2] with strides (1, 3) reads as 0 3 1 4 2 5 */
    static const char tr[] = PK(REBUILD("K\x00", "K\x03K\x02\x86", "K\x01K\x03\x86"));
    legacy(&m, tr, sizeof tr - 1, 6);
    CHECK_OK(parse(&m, &f));
    if (f.n == 1) {
        uint32_t v[6];
        mk_tb_input in = {mem_read, &m, m.n};
        CHECK(!f.v[0].contiguous);
        CHECK_OK(mk_tb_gather(&in, &f.t[0], &f.v[0], v));
        static const uint32_t want[6] = {0, 3, 1, 4, 2, 5};
        for (int i = 0; i < 6; i++) CHECK_MSG(v[i] == want[i], "element %d: got %u, want %u", i, v[i], want[i]);
    }
    mk_tb_file_free(&f);
    /* offset 4 + 3 elements runs past the 6-element storage */
    static const char past[] = PK(REBUILD("K\x04", "K\x03\x85", "K\x01\x85"));
    legacy(&m, past, sizeof past - 1, 6);
    CHECK_ERR(parse(&m, &f), MK_ERR_FORMAT,
              "tensor w: float32 elements from storage offset 4 with strides reach past the end of storage '0' (24 bytes)");
    /* stride 0: an expanded view (elements overlap) */
    static const char bc[] = PK(REBUILD("K\x00", "K\x04\x85", "K\x00\x85"));
    legacy(&m, bc, sizeof bc - 1, 6);
    CHECK_ERR(parse(&m, &f), MK_ERR_UNSUPPORTED, "its strides make elements overlap");
    /* the storage in the file is shorter than the pickle says */
    legacy(&m, ok, sizeof ok - 1, 6);
    m.n -= 4;
    CHECK_ERR(parse(&m, &f), MK_ERR_FORMAT, "storage '0' needs 24 bytes");
    /* its element count disagrees */
    legacy(&m, ok, sizeof ok - 1, 5);
    CHECK_ERR(parse(&m, &f), MK_ERR_FORMAT, "holds 5 elements, the pickle says 6");
    /* cut inside the object pickle */
    legacy(&m, ok, sizeof ok - 1, 6);
    m.n = 40;
    CHECK_ERR(parse(&m, &f), MK_ERR_FORMAT, "(file truncated?)");
    /* bytes after the last storage */
    legacy(&m, ok, sizeof ok - 1, 6);
    PUTS(&m, "xyz");
    CHECK_ERR(parse(&m, &f), MK_ERR_FORMAT, "3 bytes after the last storage");
    free(m.b);
}

/* The legacy stream is read as far as its pickles need: here an OrderedDict whose
 * attributes (BUILD) hold a 1.5 MiB string, past the first 1 MiB read. */
MK_TEST(torchbin_legacy_long_pickle)
{
    img m = {0}, obj = {0};
    mk_tb_file f;
    static const char head[] = "\x80\x02" REBUILD("K\x00", "K\x06\x85", "K\x01\x85");
    put(&obj, head, sizeof head - 1);
    PUTS(&obj, "}X\x09\x00\x00\x00_metadataX");
    uint32_t len = 3u << 19;
    put(&obj, &len, 4);
    char *big = calloc(len, 1);
    memset(big, 'a', len);
    put(&obj, big, len);
    PUTS(&obj, "sb.");
    legacy(&m, (const char *)obj.b, obj.n, 6);
    CHECK_OK(parse(&m, &f));
    CHECK(f.n == 1 && f.t[0].numel == 6 && f.v[0].base == m.n - 24);
    mk_tb_file_free(&f);
    free(big);
    free(obj.b);
    free(m.b);
}

MK_TEST(torchbin_refusals)
{
    img m = {0};
    mk_tb_file f;
    static const struct {
        const char *body;
        size_t len;
        const char *want;
    } cases[] = {
#define C(body, want) {body, sizeof body - 1, want}
        C(PK("cposix\nsystem\nX\x05\x00\x00\x00touch\x85R"), "byte 27: refused pickle global 'posix.system' (GLOBAL)"),
        C(PK("cbuiltins\neval\n"), "refused pickle global 'builtins.eval'"),
        /* STACK_GLOBAL of strings kept in the memo: the same allowlist */
        C(PK("X\x02\x00\x00\x00osq\x00X\x06\x00\x00\x00systemq\x01h\x00h\x01\x93"),
          "refused pickle global 'os.system' (STACK_GLOBAL)"),
        C(PK("ccollections\nOrderedDict\n)\x81"), "refused pickle opcode NEWOBJ (0x81) of collections.OrderedDict"),
        C(PK("(cos\nsystem\no"), "refused pickle global 'os.system'"),
        C(PK("(i"), "refused pickle opcode INST (0x69)"),
        C(PK("\x82\x01"), "refused pickle opcode EXT1 (0x82)"),
        C(PK("ctorch\nFloatStorage\n)R"), "REDUCE calls torch.FloatStorage, which is not a function mergekit-c allows"),
        C(PK("}}b"), "BUILD on a dict"),
        C(PK("N"), "holds None, not a state dict"),
        C(PK("}X\x01\x00\x00\x00" "aK\x01s"), "entry a is an int, not a tensor"),
        C(PK("X\x05\x00\x00\x00otherN\x86Q"), "persistent id is a tuple of 2 items"),
        C(PK("\x80\x07"), "pickle protocol 7"),
        C(PK("h\x05"), "memo index 5 was never stored"),
        C(PK("a"), "APPEND on an empty stack"),
        C(PK("\x01"), "0x01 is not a pickle opcode"),
#undef C
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        legacy(&m, cases[c].body, cases[c].len, -1);
        mk_status s = parse(&m, &f);
        CHECK_MSG(s != MK_OK && strstr(mk_errmsg(), cases[c].want), "case %zu: got \"%s\", want \"%s\"", c,
                  s ? mk_errmsg() : "ok", cases[c].want);
        if (s == MK_OK) mk_tb_file_free(&f);
    }
    free(m.b);
}

MK_TEST(torchbin_bombs)
{
    img m = {0};
    mk_tb_file f;
    char body[8192];
    size_t n = 0;
    /* lists nested 100 deep */
    memcpy(body + n, "\x80\x02", 2), n += 2;
    for (int i = 0; i < 100; i++) body[n++] = ']';
    for (int i = 0; i < 99; i++) body[n++] = 'a';
    body[n++] = '.';
    legacy(&m, body, n, -1);
    CHECK_ERR(parse(&m, &f), MK_ERR_FORMAT, "containers nested deeper than 64");
    /* 5000 MARKs */
    n = 0;
    memcpy(body + n, "\x80\x02", 2), n += 2;
    for (int i = 0; i < 5000; i++) body[n++] = '(';
    body[n++] = '.';
    legacy(&m, body, n, -1);
    CHECK_ERR(parse(&m, &f), MK_ERR_FORMAT, "MARKs nested deeper than 4096");
    /* a billion laughs: 9 levels of lists holding 10 memo references to the level below
     * (10^9 elements if expanded); refused as not a state dict, in microseconds */
    n = 0;
    memcpy(body + n, "\x80\x02]q\x00", 5), n += 5;
    for (int lv = 1; lv <= 9; lv++) {
        body[n++] = ']';
        body[n++] = '(';
        for (int k = 0; k < 10; k++) body[n++] = 'h', body[n++] = (char)(lv - 1);
        body[n++] = 'e';
        body[n++] = 'q', body[n++] = (char)lv;
    }
    body[n++] = '.';
    legacy(&m, body, n, -1);
    double t0 = mk_now();
    CHECK_ERR(parse(&m, &f), MK_ERR_FORMAT, "holds a list, not a state dict");
    CHECK_MSG(mk_now() - t0 < 1.0, "the billion laughs took %.2f s", mk_now() - t0);
    free(m.b);
}

MK_TEST(torchbin_not_a_checkpoint)
{
    img m = {0};
    mk_tb_file f;
    m.n = 0;
    PUTS(&m, "hello world");
    CHECK_ERR(parse(&m, &f), MK_ERR_FORMAT, "not a PyTorch checkpoint (text: 'hello world')");
    m.n = 0;
    PUTS(&m, "\x80\x02K\x01.");
    CHECK_ERR(parse(&m, &f), MK_ERR_FORMAT, "not torch's magic number");
    m.n = 0;
    PUTS(&m, "PK\3\4                              ");
    CHECK_ERR(parse(&m, &f), MK_ERR_FORMAT, "no zip end-of-central-directory record");
    free(m.b);
}
