/* output_hash.h - hashing output files as they are written. A writer declares its files as
 * pieces (byte ranges, finished in any order: a sink's tensors) and, for each file, the bytes
 * before them (a header); a thread hashes each file's prefix of finished pieces in file order,
 * mapping them through the writer's descriptor (from the page cache, just written; read when a
 * window cannot be mapped), so a file's XXH3-128 (the whole file's, as xxhsum -H2 prints it)
 * is ready when its last piece is. The same thread starts each finished piece's writeback to
 * the disk (mk_whash_ready).
 * Must not: know about any file format, or read a piece before the writer says it is done.
 */
#ifndef MK_OUTPUT_HASH_H
#define MK_OUTPUT_HASH_H

#include "../core/mk_core.h"

typedef struct mk_whash mk_whash;

/* n pieces: piece i is bytes [off[i], off[i] + len[i]) of file file_of[i] (< n_files); the
 * arrays are copied. */
mk_status mk_whash_new(size_t n, const uint32_t *file_of, const uint64_t *off, const uint64_t *len, size_t n_files,
                       mk_whash **out);
/* File f is to be hashed: it starts with head[head_len] (hashed now), then its pieces in
 * offset order, read through fd (named path in errors; kept open until mk_whash_wait). */
mk_status mk_whash_file(mk_whash *h, size_t f, int fd, const char *path, const void *head, size_t head_len);
/* Start the thread (when some file was declared). */
mk_status mk_whash_start(mk_whash *h);
/* Every byte of piece i is written. True when the thread also starts the piece's writeback
 * (sync_file_range SYNC_FILE_RANGE_WRITE, before hashing it), so the writer, often a thread
 * that computes, never waits on the disk's queue for it; false when its file is not hashed
 * (the writer starts the writeback itself, if it wants it started). */
bool mk_whash_ready(mk_whash *h, size_t i);
/* File f's hash, once all its pieces are ready and hashed, or the hashing error. */
mk_status mk_whash_wait(mk_whash *h, size_t f, char hex[33]);
/* Stop the thread (an unfinished file is abandoned) and free everything. NULL is fine. */
void mk_whash_free(mk_whash *h);

#endif
