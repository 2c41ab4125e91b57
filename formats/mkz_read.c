/* mkz_read.c - reading a .mkz container: input (pread or a memory image), header, footer
 * and index, byte planes, pooled zstd contexts, block decoding, and the walker that
 * decodes streams in order and checks their hashes. See mkz_int.h. */
#include "mkz_int.h"
#include "sniff.h"

#include "../core/mk_parallel.h"
#include "../core/mk_thread.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- input: a file read with pread, or a memory image -------------------------------------- */

mk_status mkz_in_read(mkz_in *in, uint64_t off, uint64_t len, void *dst)
{
    if (off > in->size || len > in->size - off)
        return mkz_damaged(in->what, "read of [%llu, +%llu) past the end of the file (%llu bytes; truncated?)",
                           (unsigned long long)off, (unsigned long long)len, (unsigned long long)in->size);
    __atomic_fetch_add(&in->bytes_read, len, __ATOMIC_RELAXED);
    if (in->mem) {
        memcpy(dst, in->mem + off, (size_t)len);
        return MK_OK;
    }
    uint8_t *p = dst;
    while (len) {
        ssize_t r = pread(in->fd, p, len > (1u << 30) ? (1u << 30) : (size_t)len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return mk_error(MK_ERR_IO, "%s: read failed: %s", in->what, strerror(errno));
        if (r == 0) return mkz_damaged(in->what, "file is shorter than it was when opened (truncated while reading?)");
        p += r;
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return MK_OK;
}

/* The index bytes, checked against the footer's XXH3-128, then parsed. */
static mk_status read_index(mkz_in *in, const disk_footer *f, const mk_mkz_limits *lim, mk_mkz_index *ix)
{
    uint8_t *ib = mk_malloc(f->index_size ? (size_t)f->index_size : 1);
    if (!ib) return MK_ERR_NOMEM;
    mk_status s = mkz_in_read(in, f->index_offset, f->index_size, ib);
    if (s == MK_OK) {
        mk_hash128 got = mk_hash128_bytes(ib, (size_t)f->index_size);
        if (got.hi != f->index_hash_hi || got.lo != f->index_hash_lo) {
            char a[33], b[33];
            mk_hash128_hex(got, a);
            mk_hash128_hex((mk_hash128){f->index_hash_hi, f->index_hash_lo}, b);
            s = mkz_damaged(in->what, "index damaged: XXH3-128 is %s, the footer records %s", a, b);
        }
    }
    if (s == MK_OK) s = mkz_parse_index(ib, f->index_size, f->version, in->size, f->index_offset, lim, in->what, ix);
    free(ib);
    return s;
}

/* A file without the magic number: when its start says what it is (JSON, text, a pickle...),
 * an error saying so; MK_OK when it looks like nothing known (a damaged container). */
static mk_status other_kind(mkz_in *in)
{
    unsigned char head[MK_SNIFF_BYTES];
    size_t n = in->size < sizeof head ? (size_t)in->size : sizeof head;
    if (n) MK_TRY(mkz_in_read(in, 0, n, head));
    char kind[160];
    const char *other = mk_sniff(head, n, in->size, false, kind, sizeof kind);
    return other ? mkz_damaged(in->what, "not a .mkz container (%s)", other) : MK_OK;
}

mk_status mkz_parse_container(mkz_in *in, const mk_mkz_limits *lim, mk_mkz_index *ix)
{
    const char *what = in->what;
    memset(ix, 0, sizeof *ix);
    if (in->size < MKZ_HEADER_SIZE + MKZ_FOOTER_SIZE) {
        MK_TRY(other_kind(in));
        return mkz_damaged(what, "%llu bytes, too short for a .mkz container", (unsigned long long)in->size);
    }
    disk_header h;
    disk_footer f;
    MK_TRY(mkz_in_read(in, 0, sizeof h, &h));
    MK_TRY(mkz_in_read(in, in->size - MKZ_FOOTER_SIZE, sizeof f, &f));
    mkz_le_header(&h);
    mkz_le_footer(&f);
    if (memcmp(h.magic, mkz_magic, sizeof mkz_magic) != 0) {
        MK_TRY(other_kind(in));
        return mkz_damaged(what, "not a .mkz container, or its header is damaged (bad magic number)");
    }
    if (h.version < MK_MKZ_VERSION || h.version > MK_MKZ_VERSION_RANS)
        return mkz_damaged(what, "header: format version %u, this build reads versions %u to %u (damaged, or newer than this build)",
                           h.version, MK_MKZ_VERSION, MK_MKZ_VERSION_RANS);
    if (h.flags) return mkz_damaged(what, "header damaged: unknown flags 0x%x", h.flags);
    if (memcmp(f.magic, mkz_end_magic, sizeof mkz_end_magic) != 0)
        return mkz_damaged(what, "footer damaged or file truncated (bad end marker)");
    if (f.version != h.version || f.flags)
        return mkz_damaged(what, "%s damaged: version %u, flags 0x%x (the header says version %u, flags 0)",
                           f.flags ? "footer" : "header or footer", f.version, f.flags, h.version);
    uint64_t room = in->size - MKZ_HEADER_SIZE - MKZ_FOOTER_SIZE;
    if (f.index_size > lim->max_index || f.index_size > room || f.index_offset != in->size - MKZ_FOOTER_SIZE - f.index_size)
        return mkz_damaged(what, "footer damaged or file truncated: index of %llu bytes at %llu in a %llu-byte file (limit %llu)",
                           (unsigned long long)f.index_size, (unsigned long long)f.index_offset,
                           (unsigned long long)in->size, (unsigned long long)lim->max_index);
    return read_index(in, &f, lim, ix);
}

mk_status mk_mkz_parse(const unsigned char *buf, size_t len, const mk_mkz_limits *lim, const char *what, mk_mkz_index *ix)
{
    mkz_in in = {-1, buf, len, what, 0, NULL};
    return mkz_parse_container(&in, lim ? lim : &MK_MKZ_LIMITS_DEFAULT, ix);
}

/* ---- byte planes ---------------------------------------------------------------------------- */

/* Element i's byte p goes to plane p (little-endian bytes: plane es-1 holds the sign and
 * the high exponent bits of a float). SSE2 (baseline on x86-64) does 16 elements a step;
 * the scalar loops are the reference and finish the tails. */
static void split_scalar(const uint8_t *in, unsigned np, size_t i, size_t n, uint8_t *out)
{
    for (; i < n; i++)
        for (unsigned p = 0; p < np; p++) out[p * n + i] = in[i * np + p];
}

static void merge_scalar(const uint8_t *const *pl, unsigned np, size_t i, size_t n, uint8_t *out)
{
    for (; i < n; i++)
        for (unsigned p = 0; p < np; p++) out[i * np + p] = pl[p][i];
}

#ifdef __SSE2__
#include <emmintrin.h>
#define LD(p) _mm_loadu_si128((const __m128i *)(const void *)(p))
#define ST(p, v) _mm_storeu_si128((__m128i *)(void *)(p), (v))

/* 32 bytes of 16-bit lanes -> their 16 low bytes and their 16 high bytes */
static inline void unzip8(__m128i x, __m128i y, __m128i *even, __m128i *odd)
{
    const __m128i m = _mm_set1_epi16(0x00ff);
    *even = _mm_packus_epi16(_mm_and_si128(x, m), _mm_and_si128(y, m));
    *odd = _mm_packus_epi16(_mm_srli_epi16(x, 8), _mm_srli_epi16(y, 8));
}
#endif

void mkz_planes_split(const uint8_t *in, unsigned np, size_t n, uint8_t *out)
{
    size_t i = 0;
#ifdef __SSE2__
    if (np == 2) {
        for (; i + 16 <= n; i += 16) {
            __m128i e, o;
            unzip8(LD(in + 2 * i), LD(in + 2 * i + 16), &e, &o);
            ST(out + i, e);
            ST(out + n + i, o);
        }
    } else if (np == 4) {
        for (; i + 16 <= n; i += 16) {
            __m128i e0, o0, e1, o1, p0, p1, p2, p3;
            unzip8(LD(in + 4 * i), LD(in + 4 * i + 16), &e0, &o0);      /* bytes 0,2 / 1,3 of elements 0..7 */
            unzip8(LD(in + 4 * i + 32), LD(in + 4 * i + 48), &e1, &o1); /* ... of elements 8..15 */
            unzip8(e0, e1, &p0, &p2);
            unzip8(o0, o1, &p1, &p3);
            ST(out + i, p0);
            ST(out + n + i, p1);
            ST(out + 2 * n + i, p2);
            ST(out + 3 * n + i, p3);
        }
    }
#endif
    split_scalar(in, np, i, n, out);
}

void mkz_planes_merge(const uint8_t *const *pl, unsigned np, size_t n, uint8_t *out)
{
    size_t i = 0;
#ifdef __SSE2__
    if (np == 2) {
        for (; i + 16 <= n; i += 16) {
            __m128i a = LD(pl[0] + i), b = LD(pl[1] + i);
            ST(out + 2 * i, _mm_unpacklo_epi8(a, b));
            ST(out + 2 * i + 16, _mm_unpackhi_epi8(a, b));
        }
    } else if (np == 4) {
        for (; i + 16 <= n; i += 16) {
            __m128i a = LD(pl[0] + i), b = LD(pl[1] + i), c = LD(pl[2] + i), d = LD(pl[3] + i);
            __m128i ab0 = _mm_unpacklo_epi8(a, b), ab1 = _mm_unpackhi_epi8(a, b);
            __m128i cd0 = _mm_unpacklo_epi8(c, d), cd1 = _mm_unpackhi_epi8(c, d);
            ST(out + 4 * i, _mm_unpacklo_epi16(ab0, cd0));
            ST(out + 4 * i + 16, _mm_unpackhi_epi16(ab0, cd0));
            ST(out + 4 * i + 32, _mm_unpacklo_epi16(ab1, cd1));
            ST(out + 4 * i + 48, _mm_unpackhi_epi16(ab1, cd1));
        }
    }
#endif
    merge_scalar(pl, np, i, n, out);
}

/* bf16 field planes (stream layout 1): plane 0 holds the sign and the 7 mantissa bits of each
 * element (sign << 7 | mantissa), plane 1 its 8-bit exponent, so that the exponent is coded
 * as one symbol and the noise-like bits stay together. */
static void fields_split_scalar(const uint8_t *in, size_t i, size_t n, uint8_t *out)
{
    for (; i < n; i++) {
        unsigned v = (unsigned)in[2 * i] | (unsigned)in[2 * i + 1] << 8;
        out[i] = (uint8_t)((v >> 8 & 0x80) | (v & 0x7f));
        out[n + i] = (uint8_t)(v >> 7);
    }
}

static void fields_merge_scalar(const uint8_t *sm, const uint8_t *ex, size_t i, size_t n, uint8_t *out)
{
    for (; i < n; i++) {
        out[2 * i] = (uint8_t)((sm[i] & 0x7f) | (ex[i] << 7 & 0x80));
        out[2 * i + 1] = (uint8_t)((sm[i] & 0x80) | ex[i] >> 1);
    }
}

void mkz_fields_split(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t i = 0;
#ifdef __SSE2__
    const __m128i m7f = _mm_set1_epi16(0x7f), m80 = _mm_set1_epi16(0x80), mff = _mm_set1_epi16(0xff);
    for (; i + 16 <= n; i += 16) {
        __m128i x = LD(in + 2 * i), y = LD(in + 2 * i + 16);
        __m128i sx = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(x, 8), m80), _mm_and_si128(x, m7f));
        __m128i sy = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(y, 8), m80), _mm_and_si128(y, m7f));
        __m128i ex = _mm_and_si128(_mm_srli_epi16(x, 7), mff), ey = _mm_and_si128(_mm_srli_epi16(y, 7), mff);
        ST(out + i, _mm_packus_epi16(sx, sy));
        ST(out + n + i, _mm_packus_epi16(ex, ey));
    }
#endif
    fields_split_scalar(in, i, n, out);
}

void mkz_fields_merge(const uint8_t *sm, const uint8_t *ex, size_t n, uint8_t *out)
{
    size_t i = 0;
#ifdef __SSE2__
    const __m128i z = _mm_setzero_si128(), m7f = _mm_set1_epi16(0x7f), m80 = _mm_set1_epi16(0x80);
    for (; i + 16 <= n; i += 16) {
        __m128i s = LD(sm + i), e = LD(ex + i);
        for (int h = 0; h < 2; h++) {
            __m128i s16 = h ? _mm_unpackhi_epi8(s, z) : _mm_unpacklo_epi8(s, z);
            __m128i e16 = h ? _mm_unpackhi_epi8(e, z) : _mm_unpacklo_epi8(e, z);
            __m128i v = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(s16, m80), 8),
                                     _mm_or_si128(_mm_slli_epi16(e16, 7), _mm_and_si128(s16, m7f)));
            ST(out + 2 * i + 16 * h, v);
        }
    }
#endif
    fields_merge_scalar(sm, ex, i, n, out);
}

void mkz_fields_from_bytes(const uint8_t *lo, const uint8_t *hi, size_t n, uint8_t *sm, uint8_t *ex)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t l = lo[i], h = hi[i];
        sm[i] = (uint8_t)((h & 0x80) | (l & 0x7f));
        ex[i] = (uint8_t)(h << 1 | l >> 7);
    }
}

void mkz_fields_to_bytes(const uint8_t *sm, const uint8_t *ex, size_t n, uint8_t *lo, uint8_t *hi)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t s = sm[i], e = ex[i];
        lo[i] = (uint8_t)((s & 0x7f) | (e << 7 & 0x80));
        hi[i] = (uint8_t)((s & 0x80) | e >> 1);
    }
}

/* ---- buffers and pooled contexts ------------------------------------------------------------- */

mk_status mkz_grow(uint8_t **p, size_t *cap, size_t need)
{
    if (*cap >= need) return MK_OK;
    uint8_t *n = mk_realloc(*p, need ? need : 1);
    if (!n) return MK_ERR_NOMEM;
    *p = n;
    *cap = need;
    return MK_OK;
}

void mkz_pool_init(mkz_pool *p, void (*destroy)(void *))
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    p->destroy = destroy;
}

void *mkz_pool_get(mkz_pool *p)
{
    pthread_mutex_lock(&p->mu);
    void *o = p->n ? p->v[--p->n] : NULL;
    pthread_mutex_unlock(&p->mu);
    return o;
}

void mkz_pool_return(mkz_pool *p, void *o)
{
    if (!o) return;
    pthread_mutex_lock(&p->mu);
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 8;
        void **nv = realloc(p->v, cap * sizeof *nv);
        if (nv) {
            p->v = nv;
            p->cap = cap;
        }
    }
    if (p->n < p->cap) {
        p->v[p->n++] = o;
        o = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    if (o) p->destroy(o);
}

void mkz_pool_free(mkz_pool *p)
{
    for (size_t i = 0; i < p->n; i++) p->destroy(p->v[i]);
    free(p->v);
    pthread_mutex_destroy(&p->mu);
}

void mkz_dctx_destroy(void *o)
{
    mkz_dctx *c = o;
    if (!c) return;
    ZSTD_freeDCtx(c->dc);
    free(c->rt);
    free(c->pay);
    free(c->planes);
    free(c->base);
    free(c);
}

/* ---- delta blocks ------------------------------------------------------------------------- */

void mkz_xform(unsigned t, bool inverse, unsigned es, uint8_t *x, const uint8_t *b, size_t n)
{
    if (t == MKZ_XFORM_XOR) {
        for (size_t i = 0; i < n; i++) x[i] ^= b[i];
        return;
    }
    if (t != MKZ_XFORM_SUB) return;
    /* little-endian elements of es bytes, wrapping: x - b forward, x + b back */
#define SUB_LOOP(T, LE, HOST)                                                              \
    for (size_t i = 0; i + sizeof(T) <= n; i += sizeof(T)) {                                \
        T u, v;                                                                            \
        memcpy(&u, x + i, sizeof u);                                                       \
        memcpy(&v, b + i, sizeof v);                                                       \
        u = (T)(inverse ? HOST(u) + HOST(v) : HOST(u) - HOST(v));                          \
        u = LE(u);                                                                         \
        memcpy(x + i, &u, sizeof u);                                                       \
    }
    switch (es) {
    case 1: SUB_LOOP(uint8_t, (uint8_t), (uint8_t)) break;
    case 2: SUB_LOOP(uint16_t, htole16, le16toh) break;
    case 4: SUB_LOOP(uint32_t, htole32, le32toh) break;
    default: SUB_LOOP(uint64_t, htole64, le64toh) break;
    }
#undef SUB_LOOP
}

mk_status mkz_base_hash(mk_mkz_base_read_fn read, void *ctx, size_t d, uint64_t raw_size, mk_hash128 *out)
{
    const uint64_t piece = 8u << 20;
    uint8_t *buf = mk_malloc((size_t)(raw_size < piece ? (raw_size ? raw_size : 1) : piece));
    mk_hasher *h = mk_hasher_new();
    mk_status s = buf && h ? MK_OK : MK_ERR_NOMEM;
    for (uint64_t off = 0; off < raw_size && s == MK_OK; off += piece) {
        uint64_t len = raw_size - off < piece ? raw_size - off : piece;
        s = read(ctx, d, off, len, buf);
        if (s == MK_OK) mk_hasher_update(h, buf, (size_t)len);
    }
    if (s == MK_OK) *out = mk_hasher_digest(h);
    mk_hasher_free(h);
    free(buf);
    return s;
}

/* The base tensor of stream k is at hand and is the one the container was packed against
 * (its XXH3-128 is checked on first use). */
static mk_status base_ready(mkz_in *in, const mk_mkz_index *ix, uint32_t k)
{
    const mk_mkz_stream *S = &ix->streams[k];
    mkz_base *b = in->base;
    if (!b || !b->read)
        return mk_error(MK_ERR_IO, "%s: tensor %s is stored as a delta against base %s, %s", in->what, S->name,
                        ix->base_hint ? ix->base_hint : "?",
                        b && b->missing ? b->missing : "which was not given (--base BASE or MK_DELTA_BASE=BASE)");
    pthread_mutex_lock(&b->mu);
    mk_status s = MK_OK;
    if (!b->checked[S->delta]) {
        mk_hash128 got;
        s = mkz_base_hash(b->read, b->ctx, S->delta, S->raw_size, &got);
        if (s == MK_OK && !mk_hash128_eq(got, ix->delta[S->delta].base_hash)) {
            char x[33], y[33];
            mk_hash128_hex(got, x);
            mk_hash128_hex(ix->delta[S->delta].base_hash, y);
            s = mk_error(MK_ERR_FORMAT, "%s: tensor %s: the base's XXH3-128 is %s, the container was packed against %s (wrong base)",
                         in->what, S->name, x, y);
        }
        if (s == MK_OK) b->checked[S->delta] = 1;
    }
    pthread_mutex_unlock(&b->mu);
    return s;
}

/* ---- block decoding ------------------------------------------------------------------------- */

/* Plane p of block j (cs stored bytes at src): one zstd frame of exactly pr bytes, or one
 * rANS plane (codec 2) of exactly pr symbols, into dst. sm (a rANS bf16 exponent plane only):
 * its sign+mantissa plane, and dst gets the elements (mkz_rans_decode_fields). */
static mk_status plane_decode(mkz_in *in, const mk_mkz_index *ix, uint32_t k, uint32_t j, unsigned p, mkz_dctx *c,
                              const uint8_t *src, uint32_t cs, uint64_t pr, const uint8_t *sm, uint8_t *dst)
{
    char lab[400];
    if (ix->blocks[ix->streams[k].first_block + j].method[p] == MKZ_METHOD_RANS) {
        if (!c->rt && !(c->rt = mk_malloc(sizeof *c->rt))) return MK_ERR_NOMEM;
        const char *why = NULL;
        mk_status st = sm ? mkz_rans_decode_fields(src, cs, sm, dst, (size_t)pr, c->rt, &why)
                          : mkz_rans_decode(src, cs, dst, (size_t)pr, c->rt, &why);
        if (st != MK_OK)
            return mkz_damaged(in->what, "%s: block %u plane %u: the rANS plane is damaged (%s)",
                               mkz_stream_label(ix, k, lab, sizeof lab), j, p, why);
        return MK_OK;
    }
    unsigned long long fcs = ZSTD_getFrameContentSize(src, cs);
    size_t fsz = ZSTD_findFrameCompressedSize(src, cs);
    if (fcs != pr || ZSTD_isError(fsz) || fsz != cs)
        return mkz_damaged(in->what, "%s: block %u plane %u: the zstd frame declares %llu bytes in %zu, expected %llu in %u",
                           mkz_stream_label(ix, k, lab, sizeof lab), j, p, fcs, ZSTD_isError(fsz) ? 0 : fsz,
                           (unsigned long long)pr, cs);
    size_t r = ZSTD_decompressDCtx(c->dc, dst, (size_t)pr, src, cs);
    if (ZSTD_isError(r) || r != pr)
        return mkz_damaged(in->what, "%s: block %u plane %u does not decompress (%s)", mkz_stream_label(ix, k, lab, sizeof lab),
                           j, p, ZSTD_isError(r) ? ZSTD_getErrorName(r) : "wrong size");
    return MK_OK;
}

/* Stored bytes checked against the block's XXH3-64 first, then each zstd frame must be one
 * frame of exactly the plane size. */
mk_status mkz_block_decode(mkz_in *in, const mk_mkz_index *ix, uint32_t k, uint32_t j, mkz_dctx *c, uint8_t *out)
{
    const mk_mkz_stream *S = &ix->streams[k];
    const mk_mkz_block *B = &ix->blocks[S->first_block + j];
    char lab[400];
    if (!c->dc && !(c->dc = ZSTD_createDCtx())) return mk_error(MK_ERR_NOMEM, "out of memory for a zstd context");
    const uint8_t *pay;
    if (in->mem && B->offset <= in->size && B->csize <= in->size - B->offset) {
        pay = in->mem + B->offset;
        __atomic_fetch_add(&in->bytes_read, B->csize, __ATOMIC_RELAXED);
    } else {
        MK_TRY(mkz_grow(&c->pay, &c->pay_cap, B->csize));
        MK_TRY(mkz_in_read(in, B->offset, B->csize, c->pay));
        pay = c->pay;
    }
    if (mk_hash64(pay, B->csize) != B->hash)
        return mkz_damaged(in->what, "%s: block %u of %u is damaged (checksum mismatch at bytes %llu..%llu)",
                           mkz_stream_label(ix, k, lab, sizeof lab), j, S->n_blocks, (unsigned long long)B->offset,
                           (unsigned long long)(B->offset + B->csize));
    uint64_t pr = mkz_plane_raw(S, j), n = mkz_blk_elems(S, j);
    const uint8_t *pl[MKZ_MAX_PLANES];
    if (S->n_planes > 1) MK_TRY(mkz_grow(&c->planes, &c->planes_cap, (size_t)(pr * S->n_planes)));
    uint64_t at = 0;
    /* bf16 fields whose exponent plane is rANS: the elements are put together as it decodes */
    bool fused = S->layout == MKZ_LAYOUT_FIELDS && S->n_planes == 2 && B->method[1] == MKZ_METHOD_RANS;
    for (unsigned p = 0; p < S->n_planes; p++) {
        const uint8_t *src = pay + at;
        uint32_t cs = B->plane_csize[p];
        at += cs;
        if (B->method[p] == MKZ_METHOD_STORED) {
            pl[p] = src;
            continue;
        }
        bool whole = S->n_planes == 1 || (fused && p == 1);
        uint8_t *dst = whole ? out : c->planes + p * pr;
        MK_TRY(plane_decode(in, ix, k, j, p, c, src, cs, pr, fused && p == 1 ? pl[0] : NULL, dst));
        pl[p] = dst;
    }
    if (S->layout == MKZ_LAYOUT_FIELDS && S->n_planes == 2) {
        if (!fused) mkz_fields_merge(pl[0], pl[1], (size_t)n, out);
    } else if (S->n_planes > 1) {
        if (S->layout == MKZ_LAYOUT_FIELDS) { /* f32: the top two planes back to bytes, in the buffer */
            unsigned a = S->n_planes - 2, b = S->n_planes - 1;
            uint8_t *lo = c->planes + a * pr, *hi = c->planes + b * pr;
            mkz_fields_to_bytes(pl[a], pl[b], (size_t)n, lo, hi);
            pl[a] = lo;
            pl[b] = hi;
        }
        mkz_planes_merge(pl, S->n_planes, (size_t)n, out);
    }
    else if (pl[0] != out) memcpy(out, pl[0], (size_t)pr);
    if (B->transform == MKZ_XFORM_NONE) return MK_OK;
    uint64_t raw = n * S->es;
    MK_TRY(base_ready(in, ix, k));
    MK_TRY(mkz_grow(&c->base, &c->base_cap, (size_t)raw));
    MK_TRY(in->base->read(in->base->ctx, S->delta, (uint64_t)j * S->block_elems * S->es, raw, c->base));
    mkz_xform(B->transform, true, S->es, out, c->base, (size_t)raw);
    return MK_OK;
}

/* ---- walking streams in order: verify, unpack, read-back ------------------------------------ */

void mkz_walker_free(mkz_walker *w)
{
    if (!w->in) return;
    for (size_t q = 0; q < w->nb && w->buf; q++) free(w->buf[q]);
    free(w->buf);
    free(w->cap);
    free(w->ents);
    mkz_pool_free(&w->dctx);
    memset(w, 0, sizeof *w);
}

mk_status mkz_walker_init(mkz_walker *w, mkz_in *in, mk_mkz_index *ix, bool compute)
{
    memset(w, 0, sizeof *w);
    mkz_pool_init(&w->dctx, mkz_dctx_destroy);
    w->in = in;
    w->ix = ix;
    w->compute = compute;
    int nthr = mk_threads_get();
    /* one thread: each block is hashed (and written) while it is still in the cache */
    w->nb = (size_t)(nthr < 2 ? 1 : 2 * nthr);
    w->buf = mk_calloc(w->nb, sizeof *w->buf);
    w->cap = mk_calloc(w->nb, sizeof *w->cap);
    w->ents = mk_calloc(w->nb, sizeof *w->ents);
    if (!w->buf || !w->cap || !w->ents) {
        mkz_walker_free(w);
        return MK_ERR_NOMEM;
    }
    for (size_t k = 0; k < ix->n_streams; k++) w->bytes_total += ix->streams[k].raw_size;
    w->items_total = ix->n_streams;
    return MK_OK;
}

static mk_status stream_hash_done(mkz_walker *w, uint32_t k, mk_hasher *sh)
{
    mk_mkz_stream *S = &w->ix->streams[k];
    mk_hash128 got = mk_hasher_digest(sh);
    if (w->compute) S->hash = got;
    else if (!mk_hash128_eq(got, S->hash)) {
        char a[33], b[33], lab[400];
        mk_hash128_hex(got, a);
        mk_hash128_hex(S->hash, b);
        return mkz_damaged(w->in->what, "%s: XXH3-128 of its bytes is %s, the index records %s",
                           mkz_stream_label(w->ix, k, lab, sizeof lab), a, b);
    }
    w->items_done++;
    w->bytes_done += S->raw_size;
    if (w->progress) {
        char lab[400];
        w->progress(w->pctx, w->items_done, w->items_total, w->bytes_done, w->bytes_total,
                    mkz_stream_label(w->ix, k, lab, sizeof lab));
    }
    return MK_OK;
}

/* One batch of blocks, decoded in parallel: entry q into buf[q]. */
typedef struct walk_batch {
    mkz_walker *w;
    const uint32_t *list;
} walk_batch;

static mk_status decode_entry(void *ctx, uint64_t q, void *tls)
{
    walk_batch *b = ctx;
    mkz_walker *w = b->w;
    uint32_t k = b->list[w->ents[q].si], j = w->ents[q].j;
    MK_TRY(mkz_grow(&w->buf[q], &w->cap[q], (size_t)mkz_blk_raw(&w->ix->streams[k], j)));
    return mkz_block_decode(w->in, w->ix, k, j, tls, w->buf[q]);
}

static void *decode_tls_new(void *ctx)
{
    mkz_walker *w = ((walk_batch *)ctx)->w;
    mkz_dctx *c = mkz_pool_get(&w->dctx);
    if (!c && !(c = mk_calloc(1, sizeof *c))) return NULL;
    c->home = &w->dctx;
    return c;
}

static void decode_tls_free(void *tls)
{
    mkz_dctx *c = tls;
    mkz_pool_return(c->home, c);
}

/* Fill w->ents with the next blocks of list[n] from (*ci, *cj) on; their count. */
static size_t next_batch(mkz_walker *w, const uint32_t *list, size_t n, size_t *ci, uint32_t *cj)
{
    size_t m = 0;
    while (m < w->nb && *ci < n) {
        if (*cj < w->ix->streams[list[*ci]].n_blocks) {
            w->ents[m].si = (uint32_t)*ci;
            w->ents[m++].j = (*cj)++;
        } else {
            (*ci)++;
            *cj = 0;
        }
    }
    return m;
}

/* Feed data to hashers a and b (NULL: none) alike, in pieces that stay in the cache between
 * the two: one read of a block from memory, not two. */
static void hash_both(mk_hasher *a, mk_hasher *b, const uint8_t *data, size_t len)
{
    const size_t piece = 64u << 10;
    for (size_t off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        mk_hasher_update(a, data + off, n);
        if (b) mk_hasher_update(b, data + off, n);
    }
}

/* Decode streams list[n] in order, batches of blocks in parallel; check (or compute) each
 * stream's hash; feed every byte in order to the file hasher fh and to fn (both optional). */
static mk_status walk_streams(mkz_walker *w, const uint32_t *list, size_t n, mk_hasher *fh, mkz_walk_fn fn, void *ctx)
{
    mk_mkz_index *ix = w->ix;
    size_t ci = 0, hs = 0;
    uint32_t cj = 0;
    mk_hasher *sh = n ? mk_hasher_new() : NULL;
    if (n && !sh) return MK_ERR_NOMEM;
    mk_status s = MK_OK;
    walk_batch batch = {w, list};
    while (s == MK_OK) {
        size_t m = next_batch(w, list, n, &ci, &cj);
        if (m == 0) break;
        s = mk_parallel_chunks(m, decode_entry, &batch, decode_tls_new, decode_tls_free);
        /* in order: the hashes, then the caller */
        for (size_t q = 0; q < m && s == MK_OK; q++) {
            while (hs < w->ents[q].si && s == MK_OK) {
                s = stream_hash_done(w, list[hs++], sh);
                mk_hasher_free(sh);
                if (!(sh = mk_hasher_new())) s = MK_ERR_NOMEM;
            }
            if (s != MK_OK) break;
            uint32_t k = list[w->ents[q].si];
            size_t len = (size_t)mkz_blk_raw(&ix->streams[k], w->ents[q].j);
            hash_both(sh, fh, w->buf[q], len);
            if (fn) s = fn(ctx, w->buf[q], len);
        }
        if (s == MK_OK && mk_interrupted()) s = mk_error(MK_ERR_IO, "interrupted");
    }
    while (s == MK_OK && hs < n) {
        s = stream_hash_done(w, list[hs++], sh);
        mk_hasher_free(sh);
        sh = NULL;
        if (s == MK_OK && hs < n && !(sh = mk_hasher_new())) s = MK_ERR_NOMEM;
    }
    mk_hasher_free(sh);
    return s;
}

mk_status mkz_walk_file(mkz_walker *w, uint32_t f, mkz_walk_fn fn, void *ctx)
{
    mk_mkz_file *F = &w->ix->files[f];
    mk_hasher *fh = mk_hasher_new();
    if (!fh) return MK_ERR_NOMEM;
    mk_status s = walk_streams(w, w->ix->parts + F->first_part, F->n_parts, fh, fn, ctx);
    if (s == MK_OK) {
        mk_hash128 got = mk_hasher_digest(fh);
        if (w->compute) F->hash = got;
        else if (!mk_hash128_eq(got, F->hash)) {
            char a[33], b[33];
            mk_hash128_hex(got, a);
            mk_hash128_hex(F->hash, b);
            s = mkz_damaged(w->in->what, "file %s: XXH3-128 of its bytes is %s, the index records %s", F->name, a, b);
        }
    }
    mk_hasher_free(fh);
    return s;
}

mk_status mkz_walk_all(mkz_walker *w, mk_status (*open_file)(void *ctx, uint32_t f), mkz_walk_fn fn,
                       mk_status (*close_file)(void *ctx, uint32_t f), void *ctx)
{
    mk_mkz_index *ix = w->ix;
    for (uint32_t f = 0; f < ix->n_files; f++) {
        if (open_file) MK_TRY(open_file(ctx, f));
        mk_status s = mkz_walk_file(w, f, fn, ctx);
        if (close_file) {
            mk_status c = close_file(ctx, f);
            if (s == MK_OK) s = c;
        }
        MK_TRY(s);
    }
    size_t n = 0;
    uint32_t *loose = mk_calloc(ix->n_streams ? ix->n_streams : 1, sizeof *loose);
    if (!loose) return MK_ERR_NOMEM;
    for (size_t k = 0; k < ix->n_streams; k++)
        if (ix->streams[k].file == MKZ_NO_FILE) loose[n++] = (uint32_t)k;
    mk_status s = walk_streams(w, loose, n, NULL, NULL, NULL);
    free(loose);
    return s;
}

mk_status mk_mkz_verify_buffer_base(const unsigned char *buf, size_t len, const mk_mkz_limits *lim, const char *what,
                                    mk_mkz_base_read_fn read, void *ctx)
{
    mkz_base base = {read, ctx, NULL, PTHREAD_MUTEX_INITIALIZER, NULL};
    mkz_in in = {-1, buf, len, what, 0, &base};
    mk_mkz_index ix;
    MK_TRY(mkz_parse_container(&in, lim ? lim : &MK_MKZ_LIMITS_DEFAULT, &ix));
    base.checked = mk_calloc(ix.n_delta ? ix.n_delta : 1, 1);
    mkz_walker w;
    mk_status s = base.checked ? mkz_walker_init(&w, &in, &ix, false) : MK_ERR_NOMEM;
    if (s == MK_OK) {
        s = mkz_walk_all(&w, NULL, NULL, NULL, NULL);
        mkz_walker_free(&w);
    }
    free(base.checked);
    mk_mkz_index_free(&ix);
    return s;
}

mk_status mk_mkz_verify_buffer(const unsigned char *buf, size_t len, const mk_mkz_limits *lim, const char *what)
{
    return mk_mkz_verify_buffer_base(buf, len, lim, what, NULL, NULL);
}
