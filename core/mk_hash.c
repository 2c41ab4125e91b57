/* mk_hash.c - see mk_hash.h. Uses Debian's libxxhash. */
#include "mk_hash.h"
#include "mk_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

mk_status mk_hasher_update_fd(mk_hasher *h, int fd, const char *path, uint64_t off, uint64_t len, void *buf, size_t cap)
{
    mk_rfile f = {.fd = fd, .size = off + len, .path = (char *)path, .remote = NULL};
    while (len) {
        size_t n = len < cap ? (size_t)len : cap;
        MK_TRY(mk_rfile_read(&f, off, buf, n));
        mk_hasher_update(h, buf, n);
        off += n;
        len -= n;
    }
    return MK_OK;
}

/* Feed a whole file to fn in 8 MiB windows (one buffer, pread). */
static mk_status file_windows(const char *path, void (*fn)(void *ctx, const void *data, size_t len), void *ctx)
{
    mk_rfile f;
    MK_TRY(mk_rfile_open(&f, path));
    const size_t win = 8u << 20;
    void *buf = mk_malloc(win);
    mk_status s = buf ? MK_OK : MK_ERR_NOMEM;
    for (uint64_t off = 0; off < f.size && s == MK_OK; off += win) {
        size_t n = f.size - off < win ? (size_t)(f.size - off) : win;
        s = mk_rfile_read(&f, off, buf, n);
        if (s == MK_OK) fn(ctx, buf, n);
    }
    free(buf);
    mk_rfile_close(&f);
    return s;
}

static void xxh_window(void *ctx, const void *data, size_t len) { mk_hasher_update(ctx, data, len); }

mk_status mk_hash_file(const char *path, mk_hash128 *out)
{
    mk_hasher *h = mk_hasher_new();
    if (!h) return MK_ERR_NOMEM;
    mk_status s = file_windows(path, xxh_window, h);
    if (s == MK_OK) *out = mk_hasher_digest(h);
    mk_hasher_free(h);
    return s;
}

/* Bytes [0, allowed) of the files' total may be read now (pace: see mk_hash_files). */
static uint64_t pace_allowed(const mk_hash_pace *pace, uint64_t total)
{
    if (!pace) return UINT64_MAX;
    uint32_t ppm = __atomic_load_n(pace->ppm, __ATOMIC_ACQUIRE);
    if (ppm >= 1000000u) return UINT64_MAX;
    return (uint64_t)((double)total * ppm / 1e6) + pace->ahead;
}

/* The next window of the file least far through (by fraction of its size), or false when all
 * are done. */
static bool next_window(const mk_rfile *f, const uint64_t *done, size_t n, size_t *pick)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (done[i] >= f[i].size) continue;
        /* done[i] / size[i] < done[*pick] / size[*pick], without division */
        if (!any || (double)done[i] * (double)f[*pick].size < (double)done[*pick] * (double)f[i].size) *pick = i;
        any = true;
    }
    return any;
}

static mk_status hash_files_open(const char *const *paths, size_t n, mk_rfile *f, mk_hasher **h, uint64_t *total)
{
    for (size_t i = 0; i < n; i++) {
        MK_TRY(mk_rfile_open(&f[i], paths[i]));
        if (!(h[i] = mk_hasher_new())) return MK_ERR_NOMEM;
        *total += f[i].size;
    }
    return MK_OK;
}

mk_status mk_hash_files(const char *const *paths, size_t n, mk_hash128 *out, const mk_hash_pace *pace)
{
    const size_t win = 8u << 20;
    mk_rfile *f = mk_calloc(n ? n : 1, sizeof *f);
    mk_hasher **h = mk_calloc(n ? n : 1, sizeof *h);
    uint64_t *done = mk_calloc(n ? n : 1, sizeof *done), total = 0, got = 0;
    void *buf = mk_malloc(win);
    for (size_t i = 0; f && i < n; i++) f[i].fd = -1;
    mk_status s = f && h && done && buf ? hash_files_open(paths, n, f, h, &total) : MK_ERR_NOMEM;
    size_t i = 0;
    while (s == MK_OK && next_window(f, done, n, &i)) {
        size_t len = f[i].size - done[i] < win ? (size_t)(f[i].size - done[i]) : win;
        while (got + len > pace_allowed(pace, total)) {
            struct timespec ts = {0, 2000000}; /* 2 ms: the merge moves on a tensor at a time */
            nanosleep(&ts, NULL);
        }
        s = mk_rfile_read(&f[i], done[i], buf, len);
        if (s == MK_OK) mk_hasher_update(h[i], buf, len);
        done[i] += len;
        got += len;
    }
    for (size_t k = 0; k < n && s == MK_OK; k++) out[k] = mk_hasher_digest(h[k]);
    for (size_t k = 0; f && h && k < n; k++) {
        if (f[k].fd >= 0) mk_rfile_close(&f[k]);
        mk_hasher_free(h[k]);
    }
    free(f);
    free(h);
    free(done);
    free(buf);
    return s;
}

/* ---- SHA-256 (FIPS 180-4, section 6.2) --------------------------------------------------- */

/* FIPS 180-4 4.2.2: the first 32 bits of the fractional parts of the cube roots of the
 * first 64 primes */
static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static inline uint32_t ror32(uint32_t x, unsigned n) { return x >> n | x << (32 - n); }

static void sha256_block(uint32_t h[8], const unsigned char *p)
{
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 | (uint32_t)p[4 * t + 2] << 8 | p[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = ror32(w[t - 15], 7) ^ ror32(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = ror32(w[t - 2], 17) ^ ror32(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t t1 = k + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) + sha256_k[t] + w[t];
        uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

void mk_sha256_init(mk_sha256 *s)
{
    /* FIPS 180-4 5.3.3 */
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->len = 0;
    s->fill = 0;
}

void mk_sha256_update(mk_sha256 *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    s->len += len;
    if (s->fill) {
        size_t take = 64 - s->fill < len ? 64 - s->fill : len;
        memcpy(s->buf + s->fill, p, take);
        s->fill += take;
        p += take;
        len -= take;
        if (s->fill < 64) return;
        sha256_block(s->h, s->buf);
        s->fill = 0;
    }
    for (; len >= 64; p += 64, len -= 64) sha256_block(s->h, p);
    memcpy(s->buf, p, len);
    s->fill = len;
}

void mk_sha256_hex(mk_sha256 *s, char out[65])
{
    uint64_t bits = s->len * 8; /* FIPS 180-4 5.1.1: message length in bits, big-endian, mod 2^64 */
    unsigned char pad[72] = {0x80};
    size_t npad = (s->fill < 56 ? 56 : 120) - s->fill;
    for (int i = 0; i < 8; i++) pad[npad + i] = (unsigned char)(bits >> (56 - 8 * i));
    mk_sha256_update(s, pad, npad + 8);
    for (int i = 0; i < 8; i++) snprintf(out + 8 * i, 9, "%08x", (unsigned)s->h[i]);
}

static void sha_window(void *ctx, const void *data, size_t len) { mk_sha256_update(ctx, data, len); }

mk_status mk_sha256_file(const char *path, char out[65])
{
    mk_sha256 s;
    mk_sha256_init(&s);
    MK_TRY(file_windows(path, sha_window, &s));
    mk_sha256_hex(&s, out);
    return MK_OK;
}
