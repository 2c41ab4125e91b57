/* mk_hash.c - see mk_hash.h. Uses Debian's libxxhash. */
#include "mk_hash.h"
#include "mk_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

uint64_t mk_hash64(const void *data, size_t len) { return XXH3_64bits(data, len); }

uint32_t mk_crc32(uint32_t crc, const void *data, size_t len)
{
    /* four bits at a time: table[i] = CRC register after shifting nibble i through */
    static const uint32_t table[16] = {0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4,
                                       0x4db26158, 0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
                                       0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c};
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc = table[(crc ^ p[i]) & 15] ^ (crc >> 4);
        crc = table[(crc ^ (p[i] >> 4)) & 15] ^ (crc >> 4);
    }
    return ~crc;
}
uint64_t mk_hash64_str(const char *s) { return XXH3_64bits(s, strlen(s)); }

mk_hash128 mk_hash128_bytes(const void *data, size_t len)
{
    XXH128_hash_t h = XXH3_128bits(data, len);
    return (mk_hash128){h.high64, h.low64};
}

void mk_hash128_hex(mk_hash128 h, char out[33])
{
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.hi, (unsigned long long)h.lo);
}

bool mk_hash128_parse(const char *hex, mk_hash128 *out)
{
    if (strlen(hex) != 32) return false;
    uint64_t v[2] = {0, 0};
    for (int i = 0; i < 32; i++) {
        char c = hex[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        v[i / 16] = v[i / 16] << 4 | (uint64_t)d;
    }
    out->hi = v[0];
    out->lo = v[1];
    return true;
}

struct mk_hasher {
    XXH3_state_t *st;
};

mk_hasher *mk_hasher_new(void)
{
    mk_hasher *h = mk_malloc(sizeof *h);
    if (!h) return NULL;
    h->st = XXH3_createState();
    if (!h->st) {
        free(h);
        mk_error(MK_ERR_NOMEM, "out of memory for a hash state");
        return NULL;
    }
    XXH3_128bits_reset(h->st);
    return h;
}

void mk_hasher_update(mk_hasher *h, const void *data, size_t len) { XXH3_128bits_update(h->st, data, len); }

mk_hash128 mk_hasher_digest(const mk_hasher *h)
{
    XXH128_hash_t r = XXH3_128bits_digest(h->st);
    return (mk_hash128){r.high64, r.low64};
}

void mk_hasher_free(mk_hasher *h)
{
    if (!h) return;
    XXH3_freeState(h->st);
    free(h);
}

mk_status mk_hash_file(const char *path, mk_hash128 *out)
{
    mk_rfile f;
    MK_TRY(mk_rfile_open(&f, path));
    const size_t win = 8u << 20;
    void *buf = mk_malloc(win);
    mk_hasher *h = buf ? mk_hasher_new() : NULL;
    mk_status s = h ? MK_OK : MK_ERR_NOMEM;
    for (uint64_t off = 0; off < f.size && s == MK_OK; off += win) {
        size_t n = f.size - off < win ? (size_t)(f.size - off) : win;
        s = mk_rfile_read(&f, off, buf, n);
        if (s == MK_OK) mk_hasher_update(h, buf, n);
    }
    if (s == MK_OK) *out = mk_hasher_digest(h);
    mk_hasher_free(h);
    free(buf);
    mk_rfile_close(&f);
    return s;
}
