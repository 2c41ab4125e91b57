/* mk_hash.h - XXH3 hashing of byte ranges and files (provenance, checksums, RNG keys), and
 * SHA-256 (the names of blobs in the Hugging Face cache, checked by mk_hub.h).
 *
 * 128-bit hashes print as xxhsum -H2 does (high 64 bits first, lowercase hex), so a user
 * can check any recorded file hash with `xxhsum -H2 FILE`.
 * Must not: know about tensors or formats.
 */
#ifndef MK_HASH_H
#define MK_HASH_H

#include "mk_core.h"

typedef struct mk_hash128 {
    uint64_t hi, lo;
} mk_hash128;

uint64_t mk_hash64(const void *data, size_t len);
uint64_t mk_hash64_str(const char *s);
mk_hash128 mk_hash128_bytes(const void *data, size_t len);
void mk_hash128_hex(mk_hash128 h, char out[33]);
bool mk_hash128_parse(const char *hex, mk_hash128 *out);
static inline bool mk_hash128_eq(mk_hash128 a, mk_hash128 b) { return a.hi == b.hi && a.lo == b.lo; }

/* CRC-32 (ISO-HDLC, the zip and gzip checksum: reflected polynomial 0xEDB88320, init and
 * final xor 0xFFFFFFFF). Chain calls by passing the previous result as `crc` (0 to start). */
uint32_t mk_crc32(uint32_t crc, const void *data, size_t len);

/* XXH3-128 of a whole file, read through a mapping in windows that are dropped behind. */
mk_status mk_hash_file(const char *path, mk_hash128 *out);

/* The same hash of n files, read together: each 8 MiB window goes to the file least far
 * through, so every file is read at the same pace, as a merge reads its models' tensors side
 * by side. With `pace` (may be NULL), the reading stays at most `ahead` bytes past *pace
 * parts per million of the files' total bytes, which another thread raises as it reads the
 * same files (atomically; 1000000 lets it finish): both then read pages that are still in
 * the page cache, and the disk serves them once. */
typedef struct mk_hash_pace {
    const uint32_t *ppm;
    uint64_t ahead;
} mk_hash_pace;
mk_status mk_hash_files(const char *const *paths, size_t n, mk_hash128 *out, const mk_hash_pace *pace);

/* Streaming XXH3-128 (opaque state; malloc'd). */
typedef struct mk_hasher mk_hasher;
mk_hasher *mk_hasher_new(void);
void mk_hasher_update(mk_hasher *h, const void *data, size_t len);
mk_hash128 mk_hasher_digest(const mk_hasher *h);
void mk_hasher_free(mk_hasher *h);
/* Feed bytes [off, off+len) of the open file fd (named path in errors) to h, read with pread
 * through buf (cap bytes, the caller's). */
mk_status mk_hasher_update_fd(mk_hasher *h, int fd, const char *path, uint64_t off, uint64_t len, void *buf, size_t cap);

/* SHA-256 (FIPS 180-4): the name of a Git LFS object, and of its blob in the Hugging Face
 * cache. Lowercase hex, as sha256sum prints it. */
typedef struct mk_sha256 {
    uint32_t h[8];
    uint64_t len; /* bytes so far */
    unsigned char buf[64];
    size_t fill;
} mk_sha256;
void mk_sha256_init(mk_sha256 *s);
void mk_sha256_update(mk_sha256 *s, const void *data, size_t len);
/* Finish (s is spent) and write 64 hex digits and a NUL. */
void mk_sha256_hex(mk_sha256 *s, char out[65]);
mk_status mk_sha256_file(const char *path, char out[65]);

#endif
