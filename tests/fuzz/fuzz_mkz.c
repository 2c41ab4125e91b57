/* fuzz_mkz.c - the .mkz container on arbitrary file images: structure (header, footer,
 * index), then every block, stream and file checksum and the zstd frames behind them.
 * Checksums would stop almost every mutation at the first check, so the target re-seals
 * them as a forger would (the index hash in the footer, then every block hash in the
 * index), letting mutations reach the index rules and the zstd/plane decoding. Delta
 * containers (version 2) are read against a made-up base whose tensors are a fixed pattern;
 * the target re-seals the base hashes in the delta records too, so that mutations reach
 * the transforms. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../core/mk_hash.h"
#include "../../formats/mkz.h"

#include <stdlib.h>
#include <string.h>

/* docs/mkz-format.md: footer 48 bytes (index offset, size, hash lo, hi), index header 64,
 * stream records 128, block records 64 with the hash at 56 */
static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static void wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* The made-up base: byte i of delta record d's tensor. */
static uint8_t base_byte(size_t d, uint64_t i) { return (uint8_t)(i * 131 + d * 7 + (i >> 9)); }

static mk_status base_read(void *ctx, size_t d, uint64_t off, uint64_t len, void *dst)
{
    (void)ctx;
    uint8_t *p = dst;
    for (uint64_t i = 0; i < len; i++) p[i] = base_byte(d, off + i);
    return MK_OK;
}

static mk_hash128 base_hash(size_t d, uint64_t n)
{
    mk_hasher *h = mk_hasher_new();
    uint8_t buf[4096];
    for (uint64_t off = 0; h && off < n; off += sizeof buf) {
        uint64_t len = n - off < sizeof buf ? n - off : sizeof buf;
        base_read(NULL, d, off, len, buf);
        mk_hasher_update(h, buf, (size_t)len);
    }
    mk_hash128 r = h ? mk_hasher_digest(h) : (mk_hash128){0, 0};
    mk_hasher_free(h);
    return r;
}

static void reseal_index(uint8_t *img, size_t size)
{
    if (size < 64) return;
    uint64_t off = rd64(img + size - 48), len = rd64(img + size - 40);
    if (off > size || len > size - off) return;
    mk_hash128 h = mk_hash128_bytes(img + off, (size_t)len);
    wr64(img + size - 32, h.lo);
    wr64(img + size - 24, h.hi);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    /* small limits: the fuzzer explores shapes, not allocation sizes (byte streams declare
     * 4 MiB blocks) */
    mk_mkz_limits lim = {1u << 20, 8u << 20, 256};
    uint8_t *img = malloc(size ? size : 1);
    if (!img) return 0;
    memcpy(img, data, size);
    reseal_index(img, size);
    mk_mkz_index ix;
    if (mk_mkz_parse(img, size, &lim, "fuzz.mkz", &ix) == MK_OK) {
        /* what a reader relies on next: every block lies inside the image, before the index */
        for (size_t b = 0; b < ix.n_blocks; b++)
            if (ix.blocks[b].offset > ix.index_offset || ix.blocks[b].csize > ix.index_offset - ix.blocks[b].offset)
                __builtin_trap();
        uint8_t *rec = img + ix.index_offset + 64 + ix.n_streams * 128;
        for (size_t b = 0; b < ix.n_blocks; b++)
            wr64(rec + b * 64 + 56, mk_hash64(img + ix.blocks[b].offset, ix.blocks[b].csize));
        /* delta records (24 bytes: stream, reserved, base hash lo, hi) follow the model list */
        uint8_t *drec = rec + ix.n_blocks * 64 + ix.n_files * 48 + (ix.n_parts + ix.n_model) * 4;
        for (size_t d = 0; d < ix.n_delta; d++) {
            uint64_t n = ix.streams[ix.delta[d].stream].raw_size;
            if (n > (4u << 20)) continue; /* left wrong: the hash check refuses it */
            mk_hash128 h = base_hash(d, n);
            wr64(drec + d * 24 + 8, h.lo);
            wr64(drec + d * 24 + 16, h.hi);
        }
        mk_mkz_index_free(&ix);
        reseal_index(img, size);
        mk_mkz_verify_buffer_base(img, size, &lim, "fuzz.mkz", base_read, NULL);
    }
    free(img);
    return 0;
}
