/* fuzz_torchbin.c - the PyTorch checkpoint reader (zip structure, restricted pickle machine,
 * legacy stream, tensor views) on arbitrary file images; every tensor it accepts is then
 * gathered, and a read outside the image traps.
 *
 * The zip container checks a CRC-32 over the pickle, which would stop almost every mutation
 * of it, so inputs starting with 'Z' are wrapped the way torch.save would store them:
 * 'Z', eight u16 storage sizes, then the bytes of archive/data.pkl; the target writes a zip
 * archive with that pickle (its CRC computed), archive/version, archive/byteorder and
 * archive/data/0 .. archive/data/7 of those sizes. Other inputs are whole files. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../core/mk_hash.h"
#include "../../formats/torchbin.h"

#include <stdlib.h>
#include <string.h>

typedef struct image {
    const uint8_t *p;
    size_t n;
} image;

static mk_status mem_read(void *ctx, uint64_t off, void *dst, size_t len)
{
    const image *m = ctx;
    if (off > m->n || len > m->n - off) __builtin_trap(); /* the reader must check first */
    memcpy(dst, m->p + off, len);
    return MK_OK;
}

typedef struct zbuf {
    uint8_t *b;
    size_t n;
} zbuf;

static void put(zbuf *z, const void *p, size_t n)
{
    memcpy(z->b + z->n, p, n);
    z->n += n;
}
static void le(zbuf *z, uint64_t v, int k)
{
    for (int i = 0; i < k; i++) z->b[z->n++] = (uint8_t)(v >> (8 * i));
}

/* A stored-entry zip (APPNOTE 4.3.7, 4.3.12, 4.3.16) of n entries. */
static void write_zip(zbuf *z, const char *const *names, const uint8_t *const *data, const size_t *len, int n)
{
    size_t off[16];
    for (int k = 0; k < n; k++) {
        off[k] = z->n;
        size_t nl = strlen(names[k]);
        le(z, 0x04034b50, 4), le(z, 20, 2), le(z, 0, 2), le(z, 0, 2), le(z, 0, 4);
        le(z, mk_crc32(0, data[k], len[k]), 4), le(z, len[k], 4), le(z, len[k], 4), le(z, nl, 2), le(z, 0, 2);
        put(z, names[k], nl);
        put(z, data[k], len[k]);
    }
    size_t cd = z->n;
    for (int k = 0; k < n; k++) {
        size_t nl = strlen(names[k]);
        le(z, 0x02014b50, 4), le(z, 20, 2), le(z, 20, 2), le(z, 0, 2), le(z, 0, 2), le(z, 0, 4);
        le(z, mk_crc32(0, data[k], len[k]), 4), le(z, len[k], 4), le(z, len[k], 4), le(z, nl, 2);
        le(z, 0, 2), le(z, 0, 2), le(z, 0, 2), le(z, 0, 2), le(z, 0, 4), le(z, off[k], 4);
        put(z, names[k], nl);
    }
    size_t cd_len = z->n - cd;
    le(z, 0x06054b50, 4), le(z, 0, 2), le(z, 0, 2), le(z, (uint64_t)n, 2), le(z, (uint64_t)n, 2);
    le(z, cd_len, 4), le(z, cd, 4), le(z, 0, 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    image m = {data, size};
    zbuf z = {0};
    if (size >= 17 && data[0] == 'Z') {
        static const char *const names[11] = {"archive/data.pkl", "archive/version", "archive/byteorder",
                                              "archive/data/0",   "archive/data/1",  "archive/data/2",
                                              "archive/data/3",   "archive/data/4",  "archive/data/5",
                                              "archive/data/6",   "archive/data/7"};
        static uint8_t store[8 * 65535u]; /* the storages' bytes: any pattern */
        if (!store[0])
            for (size_t i = 0; i < sizeof store; i++) store[i] = (uint8_t)(i * 37 + 11);
        const uint8_t *parts[11];
        size_t len[11], total = size + 22; /* the pickle, the records below, the end record */
        parts[0] = data + 17, len[0] = size - 17;
        parts[1] = (const uint8_t *)"3\n", len[1] = 2;
        parts[2] = (const uint8_t *)"little", len[2] = 6;
        for (int k = 0; k < 8; k++) {
            parts[3 + k] = store + (size_t)k * 65535u;
            len[3 + k] = (size_t)data[1 + 2 * k] | (size_t)data[2 + 2 * k] << 8;
        }
        for (int k = 0; k < 11; k++) total += (k ? len[k] : 0) + 30 + 46 + 2 * strlen(names[k]);
        if (!(z.b = malloc(total))) return 0;
        write_zip(&z, names, parts, len, 11);
        m.p = z.b;
        m.n = z.n;
    }
    mk_tb_input in = {mem_read, &m, m.n};
    mk_tb_file f;
    if (mk_tb_parse(&in, "fuzz.bin", &f) == MK_OK) {
        for (size_t i = 0; i < f.n; i++) {
            const mk_tensor_info *t = &f.t[i];
            /* what a reader relies on next: the bytes of every view lie in the file */
            if (t->nbytes > m.n) __builtin_trap();
            if (f.v[i].contiguous && (t->offset > m.n || t->nbytes > m.n - t->offset)) __builtin_trap();
            uint8_t *buf = malloc(t->nbytes ? (size_t)t->nbytes : 1);
            if (buf && mk_tb_gather(&in, t, &f.v[i], buf) != MK_OK) __builtin_trap();
            free(buf);
        }
        mk_tb_file_free(&f);
    }
    free(z.b);
    return 0;
}
