/* mk_hash.h - XXH3 hashing of byte ranges and files (provenance, checksums, RNG keys).
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

/* Streaming XXH3-128 (opaque state; malloc'd). */
typedef struct mk_hasher mk_hasher;
mk_hasher *mk_hasher_new(void);
void mk_hasher_update(mk_hasher *h, const void *data, size_t len);
mk_hash128 mk_hasher_digest(const mk_hasher *h);
void mk_hasher_free(mk_hasher *h);

#endif
