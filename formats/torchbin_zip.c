/* torchbin_zip.c - the zip container torch.save writes (caffe2/serialize/
 * inline_container.cc, through miniz): stored entries with their data aligned by padding
 * in the local extra field, a data descriptor after each entry (flag bit 3: the local
 * header's sizes are 0, the central directory has them), and always a Zip64 end record.
 * Layouts are APPNOTE.TXT 6.3.x (section numbers below). Only what we need is read, and
 * every count, size and offset is checked against the file first.
 */
#include "torchbin_int.h"

#include "../core/mk_hash.h"

#include <stdlib.h>
#include <string.h>

#define SIG_LOCAL 0x04034b50u  /* 4.3.7 */
#define SIG_CENTRAL 0x02014b50u /* 4.3.12 */
#define SIG_EOCD 0x06054b50u    /* 4.3.16 */
#define SIG_EOCD64 0x06064b50u  /* 4.3.14 */
#define SIG_LOC64 0x07064b50u   /* 4.3.15 */
#define LOCAL_LEN 30u
#define CENTRAL_LEN 46u
#define EOCD_LEN 22u
#define EOCD64_LEN 56u
#define LOC64_LEN 20u
#define MAX_NAME 4096u

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--) x = x << 8 | p[i];
    return x;
}

static mk_status rd(const mk_tb_input *in, const char *what, uint64_t off, void *dst, size_t len)
{
    if (off > in->size || len > in->size - off)
        return mk_error(MK_ERR_FORMAT, "%s: zip structure at byte %llu runs past the end of the file", what,
                        (unsigned long long)off);
    return in->read(in->ctx, off, dst, len);
}

/* 4.4.17: a relative path with '/' separators; we refuse anything that could name a
 * place outside the archive's own folder, or be read two ways. */
static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || s[0] == '/' || memchr(s, '\\', n) || memchr(s, 0, n)) return false;
    if (n >= 2 && s[1] == ':') return false;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '/') continue;
        size_t len = i - start;
        /* an empty part is allowed only as a trailing '/' (a folder entry) */
        if (len == 0 && i != n) return false;
        if ((len == 1 && s[start] == '.') || (len == 2 && s[start] == '.' && s[start + 1] == '.')) return false;
        start = i + 1;
    }
    return true;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const tb_zentry *)a)->name, ((const tb_zentry *)b)->name);
}

static int cmp_off(const void *a, const void *b)
{
    const tb_zentry *x = *(tb_zentry *const *)a, *y = *(tb_zentry *const *)b;
    return x->local_off < y->local_off ? -1 : x->local_off > y->local_off;
}

/* The end records: where the central directory is and how many entries it holds. */
static mk_status find_cdir(const mk_tb_input *in, const char *what, uint64_t *cd_off, uint64_t *cd_size, uint64_t *count,
                           uint64_t *cd_end_limit)
{
    uint64_t size = in->size;
    if (size < EOCD_LEN) return mk_error(MK_ERR_FORMAT, "%s: %llu bytes, too short for a zip archive", what, (unsigned long long)size);
    size_t tail = (size_t)(size < EOCD_LEN + 65535u ? size : EOCD_LEN + 65535u);
    uint8_t *buf = mk_malloc(tail);
    if (!buf) return MK_ERR_NOMEM;
    mk_status s = rd(in, what, size - tail, buf, tail);
    long at = -1;
    /* the last record whose comment length reaches exactly to the end of the file */
    for (long i = (long)tail - (long)EOCD_LEN; s == MK_OK && i >= 0; i--)
        if (le(buf + i, 4) == SIG_EOCD && (size_t)i + EOCD_LEN + le(buf + i + 20, 2) == tail) {
            at = i;
            break;
        }
    if (s == MK_OK && at < 0)
        s = mk_error(MK_ERR_FORMAT, "%s: no zip end-of-central-directory record (file truncated?)", what);
    uint8_t e[EOCD_LEN];
    if (s == MK_OK) memcpy(e, buf + at, EOCD_LEN);
    free(buf);
    MK_TRY(s);
    uint64_t eocd = size - tail + (uint64_t)at;
    if (le(e + 4, 2) != 0 || le(e + 6, 2) != 0 || le(e + 8, 2) != le(e + 10, 2))
        return mk_error(MK_ERR_FORMAT, "%s: a zip archive split over several disks is not supported", what);
    *count = le(e + 10, 2);
    *cd_size = le(e + 12, 4);
    *cd_off = le(e + 16, 4);
    *cd_end_limit = eocd;
    /* 4.3.15: a Zip64 locator right before the end record (torch always writes one) */
    if (eocd >= LOC64_LEN) {
        uint8_t l[LOC64_LEN], r[EOCD64_LEN];
        MK_TRY(rd(in, what, eocd - LOC64_LEN, l, LOC64_LEN));
        if (le(l, 4) == SIG_LOC64) {
            uint64_t off = le(l + 8, 8);
            if (le(l + 4, 4) != 0 || le(l + 16, 4) != 1)
                return mk_error(MK_ERR_FORMAT, "%s: a zip archive split over several disks is not supported", what);
            if (off > eocd - LOC64_LEN || eocd - LOC64_LEN - off < EOCD64_LEN)
                return mk_error(MK_ERR_FORMAT, "%s: Zip64 end record offset %llu is not before its locator", what,
                                (unsigned long long)off);
            MK_TRY(rd(in, what, off, r, EOCD64_LEN));
            if (le(r, 4) != SIG_EOCD64)
                return mk_error(MK_ERR_FORMAT, "%s: no Zip64 end record at byte %llu", what, (unsigned long long)off);
            if (le(r + 16, 4) != 0 || le(r + 20, 4) != 0 || le(r + 24, 8) != le(r + 32, 8))
                return mk_error(MK_ERR_FORMAT, "%s: a zip archive split over several disks is not supported", what);
            uint64_t c64 = le(r + 32, 8), sz64 = le(r + 40, 8), off64 = le(r + 48, 8);
            /* the 32-bit fields are either the same values or saturated (4.4.1.4) */
            if ((*count != 0xffff && *count != c64) || (*cd_size != 0xffffffffu && *cd_size != sz64) ||
                (*cd_off != 0xffffffffu && *cd_off != off64))
                return mk_error(MK_ERR_FORMAT, "%s: the zip end record and the Zip64 end record disagree", what);
            *count = c64;
            *cd_size = sz64;
            *cd_off = off64;
            *cd_end_limit = off;
        }
    }
    if (*cd_off > *cd_end_limit || *cd_size != *cd_end_limit - *cd_off)
        return mk_error(MK_ERR_FORMAT, "%s: central directory [%llu, +%llu) does not end where the end record starts (%llu)",
                        what, (unsigned long long)*cd_off, (unsigned long long)*cd_size, (unsigned long long)*cd_end_limit);
    if (*cd_size > MK_TB_MAX_CDIR)
        return mk_error(MK_ERR_FORMAT, "%s: central directory of %llu bytes (over the %llu-byte limit)", what,
                        (unsigned long long)*cd_size, (unsigned long long)MK_TB_MAX_CDIR);
    if (*count > MK_TB_MAX_ENTRIES || *count > *cd_size / CENTRAL_LEN)
        return mk_error(MK_ERR_FORMAT, "%s: %llu zip entries in a central directory of %llu bytes", what,
                        (unsigned long long)*count, (unsigned long long)*cd_size);
    return MK_OK;
}

/* 4.5.3: the Zip64 extended information field carries, in this order, each of the sizes
 * and the offset whose 32-bit field is saturated. */
static mk_status zip64_extra(const uint8_t *x, size_t n, const char *what, const char *name, uint64_t *usize,
                             uint64_t *csize, uint64_t *off)
{
    size_t i = 0;
    while (i + 4 <= n) {
        size_t id = (size_t)le(x + i, 2), len = (size_t)le(x + i + 2, 2);
        if (len > n - i - 4) return mk_error(MK_ERR_FORMAT, "%s: entry %s: extra field runs past its end", what, name);
        if (id == 1) {
            const uint8_t *f = x + i + 4;
            size_t k = 0;
            uint64_t *want[3] = {usize, csize, off};
            for (int j = 0; j < 3; j++) {
                if (*want[j] != 0xffffffffu) continue;
                if (k + 8 > len) return mk_error(MK_ERR_FORMAT, "%s: entry %s: Zip64 extra field too short", what, name);
                *want[j] = le(f + k, 8);
                k += 8;
            }
            return MK_OK;
        }
        i += 4 + len;
    }
    if (*usize == 0xffffffffu || *csize == 0xffffffffu || *off == 0xffffffffu)
        return mk_error(MK_ERR_FORMAT, "%s: entry %s: a saturated size or offset without a Zip64 extra field", what, name);
    return MK_OK;
}

mk_status tb_zip_open(const mk_tb_input *in, const char *what, tb_zip *z)
{
    memset(z, 0, sizeof *z);
    uint64_t cd_off = 0, cd_size = 0, count = 0, cd_end = 0;
    MK_TRY(find_cdir(in, what, &cd_off, &cd_size, &count, &cd_end));
    uint8_t *cd = mk_malloc(cd_size ? (size_t)cd_size : 1);
    z->e = mk_calloc(count ? (size_t)count : 1, sizeof *z->e);
    tb_zentry **by_off = mk_calloc(count ? (size_t)count : 1, sizeof *by_off);
    mk_status s = cd && z->e && by_off ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && cd_size) s = rd(in, what, cd_off, cd, (size_t)cd_size);
    size_t pos = 0;
    for (uint64_t k = 0; s == MK_OK && k < count; k++) {
        const uint8_t *c = cd + pos;
        if (cd_size - pos < CENTRAL_LEN || le(c, 4) != SIG_CENTRAL) {
            s = mk_error(MK_ERR_FORMAT, "%s: central directory entry %llu is damaged", what, (unsigned long long)k);
            break;
        }
        size_t nl = (size_t)le(c + 28, 2), xl = (size_t)le(c + 30, 2), cl = (size_t)le(c + 32, 2);
        if (nl + xl + cl > cd_size - pos - CENTRAL_LEN) {
            s = mk_error(MK_ERR_FORMAT, "%s: central directory entry %llu runs past the directory", what, (unsigned long long)k);
            break;
        }
        const char *nm = (const char *)c + CENTRAL_LEN;
        if (!name_ok(nm, nl) || nl > MAX_NAME) {
            s = mk_error(MK_ERR_FORMAT, "%s: zip entry '%.*s' is not a relative path inside the archive", what,
                         (int)(nl < 200 ? nl : 200), nm);
            break;
        }
        tb_zentry *e = &z->e[z->n];
        if (!(e->name = mk_strndup(nm, nl))) {
            s = MK_ERR_NOMEM;
            break;
        }
        z->n++;
        e->flags = (uint16_t)le(c + 8, 2);
        e->method = (uint16_t)le(c + 10, 2);
        e->crc = (uint32_t)le(c + 16, 4);
        e->csize = le(c + 20, 4);
        e->size = le(c + 24, 4);
        e->local_off = le(c + 42, 4);
        if (le(c + 34, 2) != 0 && le(c + 34, 2) != 0xffff) {
            s = mk_error(MK_ERR_FORMAT, "%s: entry %s is on another disk", what, e->name);
            break;
        }
        s = zip64_extra(c + CENTRAL_LEN + nl, xl, what, e->name, &e->size, &e->csize, &e->local_off);
        pos += CENTRAL_LEN + nl + xl + cl;
    }
    if (s == MK_OK && pos != cd_size)
        s = mk_error(MK_ERR_FORMAT, "%s: central directory has %llu bytes after its %llu entries", what,
                     (unsigned long long)(cd_size - pos), (unsigned long long)count);
    free(cd);
    /* local headers: where each entry's data starts; all of it before the directory */
    for (size_t k = 0; s == MK_OK && k < z->n; k++) {
        tb_zentry *e = &z->e[k];
        uint8_t h[LOCAL_LEN];
        if (e->local_off > cd_off || cd_off - e->local_off < LOCAL_LEN) {
            s = mk_error(MK_ERR_FORMAT, "%s: entry %s: local header at byte %llu is not before the central directory", what,
                         e->name, (unsigned long long)e->local_off);
            break;
        }
        s = rd(in, what, e->local_off, h, LOCAL_LEN);
        if (s != MK_OK) break;
        size_t nl = (size_t)le(h + 26, 2), xl = (size_t)le(h + 28, 2), len = strlen(e->name);
        if (le(h, 4) != SIG_LOCAL || nl != len) {
            s = mk_error(MK_ERR_FORMAT, "%s: entry %s: no matching local header at byte %llu", what, e->name,
                         (unsigned long long)e->local_off);
            break;
        }
        char name[MAX_NAME];
        s = rd(in, what, e->local_off + LOCAL_LEN, name, nl);
        if (s != MK_OK) break;
        if (memcmp(name, e->name, nl) != 0) {
            s = mk_error(MK_ERR_FORMAT, "%s: entry %s: the local header names another file", what, e->name);
            break;
        }
        e->data_off = e->local_off + LOCAL_LEN + nl + xl;
        if (e->data_off > cd_off || e->csize > cd_off - e->data_off) {
            s = mk_error(MK_ERR_FORMAT, "%s: entry %s: %llu bytes at byte %llu run past the central directory (byte %llu)",
                         what, e->name, (unsigned long long)e->csize, (unsigned long long)e->data_off,
                         (unsigned long long)cd_off);
            break;
        }
        by_off[k] = e;
    }
    /* no two entries share bytes (overlapping entries are how zip bombs amplify) */
    if (s == MK_OK && z->n > 1) {
        qsort(by_off, z->n, sizeof *by_off, cmp_off);
        for (size_t k = 1; k < z->n && s == MK_OK; k++)
            if (by_off[k]->local_off < by_off[k - 1]->data_off + by_off[k - 1]->csize)
                s = mk_error(MK_ERR_FORMAT, "%s: zip entries %s and %s overlap", what, by_off[k - 1]->name, by_off[k]->name);
    }
    free(by_off);
    if (s == MK_OK) {
        qsort(z->e, z->n, sizeof *z->e, cmp_entry);
        for (size_t k = 1; k < z->n && s == MK_OK; k++)
            if (strcmp(z->e[k].name, z->e[k - 1].name) == 0)
                s = mk_error(MK_ERR_FORMAT, "%s: the archive holds two entries named %s", what, z->e[k].name);
    }
    if (s != MK_OK) tb_zip_free(z);
    return s;
}

const tb_zentry *tb_zip_find(const tb_zip *z, const char *name)
{
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(z->e[mid].name, name);
        if (c == 0) return &z->e[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

mk_status tb_zip_check_stored(const tb_zentry *e, const char *what)
{
    if (e->flags & 1) return mk_error(MK_ERR_FORMAT, "%s: entry %s is encrypted", what, e->name);
    if (e->method != 0)
        return mk_error(MK_ERR_FORMAT, "%s: entry %s is compressed (method %u); torch.save stores entries uncompressed", what,
                        e->name, e->method);
    if (e->csize != e->size)
        return mk_error(MK_ERR_FORMAT, "%s: stored entry %s has %llu bytes but declares %llu", what, e->name,
                        (unsigned long long)e->csize, (unsigned long long)e->size);
    return MK_OK;
}

mk_status tb_zip_read(const mk_tb_input *in, const char *what, const tb_zentry *e, uint64_t cap, uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    MK_TRY(tb_zip_check_stored(e, what));
    if (e->size > cap)
        return mk_error(MK_ERR_FORMAT, "%s: entry %s is %llu bytes (over the %llu-byte limit)", what, e->name,
                        (unsigned long long)e->size, (unsigned long long)cap);
    uint8_t *b = mk_malloc((size_t)e->size + 1);
    if (!b) return MK_ERR_NOMEM;
    mk_status s = e->size ? rd(in, what, e->data_off, b, (size_t)e->size) : MK_OK;
    if (s == MK_OK && mk_crc32(0, b, (size_t)e->size) != e->crc)
        s = mk_error(MK_ERR_FORMAT, "%s: entry %s fails its CRC-32 check (damaged file)", what, e->name);
    if (s != MK_OK) {
        free(b);
        return s;
    }
    b[e->size] = 0;
    *data = b;
    *len = (size_t)e->size;
    return MK_OK;
}

void tb_zip_free(tb_zip *z)
{
    if (!z) return;
    for (size_t k = 0; k < z->n; k++) free(z->e[k].name);
    free(z->e);
    memset(z, 0, sizeof *z);
}
