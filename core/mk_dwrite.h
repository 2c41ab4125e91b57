/* mk_dwrite.h - one output file written around the page cache. Bytes are put at any offset,
 * from any thread, into aligned windows of memory (MK_DWRITE_WIN bytes of the file each); a
 * thread of its own writes each window with O_DIRECT once it is whole (every byte of it put)
 * or final (mk_dwrite_final: nothing more comes below an offset), in file order, and hashes
 * the file as it goes (XXH3-128 of the whole file, as mk_hash_file gives it). So a writer
 * copies its bytes once, into memory already faulted in, where a buffered write copies them
 * into fresh page-cache pages, and two threads never wait on the file's lock for each other.
 * At most MK_DWRITE_GATHER windows gather at once: the bytes of windows beyond them are
 * written through the page cache as they come (read back for the hash once whole), so memory
 * stays bounded whatever the order of the puts. A window the file system refuses to take with
 * O_DIRECT is written through the page cache, and so are the windows after it.
 * Bytes of the file never put read as zeros (the file is expected preallocated, as the
 * safetensors sink does).
 * Must not: hold more than MK_DWRITE_GATHER windows, write a window before it is whole or
 * final, or change a byte of what is written (the same file as pwrite of every piece).
 */
#ifndef MK_DWRITE_H
#define MK_DWRITE_H

#include "mk_core.h"

#define MK_DWRITE_WIN (4u << 20)
#define MK_DWRITE_GATHER 16

typedef struct mk_dwrite mk_dwrite;

/* The file at path, open as fd (read and write; size bytes once finished). *out is NULL, and
 * MK_OK returned, where the file cannot be opened again with O_DIRECT (tmpfs and the like):
 * the caller writes as before. */
mk_status mk_dwrite_open(int fd, const char *path, uint64_t size, mk_dwrite **out);
/* Bytes [off, off + len) of the file are p's. Thread-safe. An error of the writing thread
 * comes back from the next call. Putting bytes of a window already written is an error. */
mk_status mk_dwrite_put(mk_dwrite *d, uint64_t off, const void *p, uint64_t len);
/* Every byte below `upto` that will be put has been put. */
void mk_dwrite_final(mk_dwrite *d, uint64_t upto);
/* Everything final: waits for the last window, sets the file's size, and gives its hash. The
 * caller still fsyncs the file. */
mk_status mk_dwrite_finish(mk_dwrite *d, char hex[33]);
/* Stop the thread and free everything. NULL is fine. */
void mk_dwrite_close(mk_dwrite *d);
/* Windows written with O_DIRECT and through the page cache so far. */
void mk_dwrite_counts(mk_dwrite *d, uint64_t *direct, uint64_t *through);
/* For tests: the window size (a multiple of 4096) and the gathering cap of writers opened
 * after it; 0 restores the default. */
void mk_dwrite_limits(uint64_t win, size_t gather);

#endif
