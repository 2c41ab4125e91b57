/* sniff.h - what a file that is not in the format a reader expected looks like, from its
 * first bytes, so that the error says "config.json: not a safetensors file (it starts with
 * '{', a JSON text?)" instead of a nonsense header length.
 * Must not: read files (callers pass the bytes they read) or decide whether to fail.
 */
#ifndef MK_SNIFF_H
#define MK_SNIFF_H

#include "../core/mk_core.h"

/* Bytes worth reading for mk_sniff. */
#define MK_SNIFF_BYTES 64

/* A short description of head[0..n) (the start of a file of file_size bytes): "it is empty",
 * "a zip archive: a PyTorch checkpoint?", "it starts with '{', a JSON text?", "a Git LFS
 * pointer: ...", "text ('hello wor...')", ... Returns NULL for binary data it does not
 * recognise (a damaged file of the expected format, perhaps); with `always`, a hex dump
 * of the first bytes instead. buf holds the text. */
const char *mk_sniff(const unsigned char *head, size_t n, uint64_t file_size, bool always, char *buf, size_t cap);

#endif
