/* mk_dstream.h - one byte range of a file read once, front to back, around the page cache.
 *
 * A merge pass or a quantize run that reads a tensor's bytes exactly once gains nothing from
 * the page cache: filling it costs the kernel a page allocation and a copy per page, evicting
 * other files' pages, and, on some virtual machines, more than the disk itself. A stream
 * reads the range in blocks of MK_DSTREAM_BLOCK bytes on a thread of its own, ahead of its
 * readers, into a ring of aligned buffers: with O_DIRECT where the block's pages are not
 * cached, with an ordinary read where they all are (a run on a warm cache stays warm), and
 * with an ordinary read for every later block once O_DIRECT fails for one (a file system or
 * device with other alignment rules). Readers copy their pieces out; a block's buffer is
 * reused once every byte of the range in it has been read.
 *
 * Unless the stream keeps its blocks (below), every byte of the range must be read exactly
 * once (any number of threads), and each
 * reader's pieces in increasing order: a block whose bytes are never read would hold its
 * buffer for ever. The reader of the lowest unread byte can always go on, so readers that take
 * their pieces in order (mk_parallel_chunks hands out chunks so) never wait on each other for
 * good; `reach` sizes the ring (reach plus two blocks, at least four) so that the pieces in
 * flight on every thread are read ahead together: T threads taking pieces of at most C bytes
 * want a reach of T * C.
 *
 * Must not: know tensors or file formats.
 */
#ifndef MK_DSTREAM_H
#define MK_DSTREAM_H

#include "mk_core.h"
#include "mk_hash.h"
#include "mk_io.h"

#define MK_DSTREAM_BLOCK (2u << 20)

typedef struct mk_dstream mk_dstream;

/* How streams read (merge and quantize --direct-io). */
typedef enum mk_dio_mode {
    MK_DIO_AUTO = 0, /* O_DIRECT for blocks not in the page cache, an ordinary read for the others */
    MK_DIO_ALWAYS,   /* O_DIRECT for every block, cached or not */
    MK_DIO_OFF,      /* no streams: mk_dstream_open gives NULL, files are read through the page cache */
} mk_dio_mode;
void mk_dstream_set_mode(mk_dio_mode m);
mk_dio_mode mk_dstream_mode(void);

/* A stream over [off, off + len) of f. *out is NULL, and MK_OK returned, where the file is not
 * one to stream (a file still arriving, a length of 0, a file system without O_DIRECT, or
 * MK_DIO_OFF): the caller reads it as before. */
mk_status mk_dstream_open(const mk_rfile *f, uint64_t off, uint64_t len, uint64_t reach, mk_dstream **out);
/* Copies bytes [pos, pos + n) of the range (pos counted from the range's start) to dst. The
 * error names the file. Thread-safe. */
mk_status mk_dstream_read(mk_dstream *s, uint64_t pos, void *dst, size_t n);
/* Stops the stream's thread and frees it; bytes left unread (a pass that failed) are fine. */
void mk_dstream_close(mk_dstream *s);

/* A stream whose reach covers its whole range (reach >= len, up to 1 GiB) keeps every block:
 * its bytes may then be read any number of times, in any order, by any thread (a merge
 * method's passes over a tensor held in memory). */

/* A stream that keeps every block: bytes [pos, pos + n) of its range where they lie in its
 * buffers, once read (waiting for them), valid until the stream is closed; no copy. NULL for a
 * stream that does not keep its blocks, or where reading them failed (mk_dstream_read then
 * returns the error). */
const void *mk_dstream_borrow(mk_dstream *s, uint64_t pos, size_t n);

/* Whether stream s keeps every block (its reach covered its range). */
bool mk_dstream_keeps(const mk_dstream *s);

/* Whether two streams read the same file (the same device and inode). */
bool mk_dstream_same_file(const mk_dstream *a, const mk_dstream *b);

/* A tap hashes one file in file order (XXH3-128, as mk_hash_file) from the blocks its streams
 * read, so a file read once around the page cache is not read again to be hashed. While a
 * tap is open, the streams of its file read one after another, in the order they were opened:
 * each waits until those opened before it have read their last block (or were closed). So
 * the streams of one file must be consumed in the order they were opened: a reader waiting
 * on a later stream while an earlier one's blocks go unread would wait for ever. Bytes that
 * no stream hands over before a later block of the file arrives (a header, tensors read
 * through the page cache, tensors not read at all) are read through the page cache by the
 * tap itself, in the reader of that later block; mk_dtap_fill hashes them meanwhile from
 * another thread, mk_dtap_finish the rest. One tap per file (a second on the same file is
 * fed only by fill and finish). Every stream of the file must be closed before its tap. */
typedef struct mk_dtap mk_dtap;
mk_status mk_dtap_open(const char *path, mk_dtap **out);
uint64_t mk_dtap_size(const mk_dtap *t);
/* Bytes the tap has read itself so far (gaps and fills), not handed over by a stream. */
uint64_t mk_dtap_read_bytes(mk_dtap *t);
/* Hash the file through byte `upto` (clamped to its size) where no stream has yet. */
mk_status mk_dtap_fill(mk_dtap *t, uint64_t upto);
/* Hash the rest and give the file's hash; the first read error of the tap or its gaps, naming
 * the file, otherwise. Closes the tap either way. */
mk_status mk_dtap_finish(mk_dtap *t, mk_hash128 *out);
void mk_dtap_close(mk_dtap *t);

/* Bytes every stream of the process has read so far with O_DIRECT and with an ordinary read. */
void mk_dstream_totals(uint64_t *direct, uint64_t *cached);

/* Rings mapped so far by the process's streams: a stream takes the ring of a closed one where
 * one is kept (at least its length and at most twice it; rings of 256 MiB at most, 512 MiB of
 * them kept) and maps a fresh one otherwise. mk_dstream_rings_drop unmaps the kept ones. */
uint64_t mk_dstream_rings_mapped(void);
void mk_dstream_rings_drop(void);
#define MK_DSTREAM_POOL_BYTES (256ull * MK_DSTREAM_BLOCK)

/* Blocks of this stream read so far with O_DIRECT and with an ordinary read (read once the
 * readers are done). */
void mk_dstream_counts(const mk_dstream *s, uint64_t *direct, uint64_t *cached);

#endif
