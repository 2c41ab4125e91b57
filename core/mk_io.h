/* mk_io.h - files: read-only mappings, whole-file reads with a cap, full writes,
 * durable atomic outputs (temporary sibling + fsync + rename + fsync of the directory),
 * and path helpers.
 *
 * Owns: every open/mmap/write/rename the program does on behalf of a format.
 * Inputs are never opened for writing. Outputs are created under a temporary name and
 * renamed into place only when complete; nothing that may be mapped is truncated.
 * Must not: know about tensors or formats.
 */
#ifndef MK_IO_H
#define MK_IO_H

#include "mk_core.h"

#include <sys/types.h>

/* A read-only mapping of a whole file. Empty files have data == NULL, size == 0. */
typedef struct mk_map {
    const unsigned char *data;
    uint64_t size;
    int fd;
    char *path;
} mk_map;

mk_status mk_map_open(mk_map *m, const char *path);
void mk_map_close(mk_map *m);
/* Tell the kernel we will read [off, off+len) soon / are done with it. The "done" form
 * drops the range from our resident set (MADV_DONTNEED on a shared read-only file
 * mapping only discards page-table entries; the page cache keeps the data). */
void mk_map_willneed(const mk_map *m, uint64_t off, uint64_t len);
void mk_map_done(const mk_map *m, uint64_t off, uint64_t len);

/* A read-only file read with pread, for tensor data. No mapping: a file that shrinks or
 * fails while we read it gives an error naming it, never SIGBUS. Safe from many threads. */
typedef struct mk_rfile_remote mk_rfile_remote;
typedef struct mk_rfile {
    int fd;
    uint64_t size;
    char *path;
    mk_rfile_remote *remote; /* a file still being fetched (core/mk_hubfetch.h), else NULL */
} mk_rfile;

/* Files whose bytes arrive on demand: attach says whether `path` is one (NULL *out: an
 * ordinary file), ensure makes [off, off+len) present before a read (thread-safe), detach
 * ends it. Installed once at start (mk_hub_fetch_install); none by default. */
typedef struct mk_rfile_hooks {
    mk_status (*attach)(const char *path, uint64_t size, mk_rfile_remote **out);
    mk_status (*ensure)(mk_rfile_remote *r, uint64_t off, uint64_t len);
    void (*detach)(mk_rfile_remote *r);
} mk_rfile_hooks;
void mk_rfile_set_hooks(const mk_rfile_hooks *h);

mk_status mk_rfile_open(mk_rfile *f, const char *path);
/* Exactly len bytes at off, or an error. */
mk_status mk_rfile_read(const mk_rfile *f, uint64_t off, void *dst, size_t len);
/* Start reading [off, off+len) ahead (POSIX_FADV_WILLNEED). From then on the file is read no
 * further ahead than asked (POSIX_FADV_RANDOM): a reader that asks for what it will read gains
 * nothing from the kernel's read-ahead past it, which would fill the page cache with the bytes
 * after it, those a stream is about to read around it (mk_dstream.h). */
void mk_rfile_willneed(const mk_rfile *f, uint64_t off, uint64_t len);
void mk_rfile_close(mk_rfile *f);

/* Read a whole (small) file into a NUL-terminated buffer; refuses files over `cap`. */
mk_status mk_read_file(const char *path, uint64_t cap, char **out, size_t *len);

/* Write all bytes with pwrite at `off`, retrying short writes and EINTR. */
mk_status mk_pwrite_all(int fd, const void *buf, size_t len, uint64_t off, const char *path);
mk_status mk_write_all(int fd, const void *buf, size_t len, const char *path);

/* Write a small file durably: path.tmp, fsync, rename. */
mk_status mk_write_file_atomic(const char *path, const void *data, size_t len);
/* Copy a file (small or large) to dst (which must not exist), fsyncing it. */
mk_status mk_copy_file(const char *src, const char *dst);

mk_status mk_fsync_dir(const char *dir);
mk_status mk_mkdir_p(const char *path);
/* Remove a directory tree we created. Refuses "/" and empty paths. */
mk_status mk_rm_rf(const char *path);

bool mk_path_exists(const char *path);
bool mk_is_dir(const char *path);
bool mk_is_file(const char *path);
/* A directory (not a link to one) with no entries: an empty OUT is used without --force. */
bool mk_dir_is_empty(const char *path);
/* Join two path parts with one '/'. Returns NULL (+error) on allocation failure. */
char *mk_path_join(const char *a, const char *b);
/* Parent directory ("." for a bare name); final component. Both allocate. */
char *mk_path_dirname(const char *p);
char *mk_path_basename(const char *p);
/* Absolute, normalised form of a path whose last components may not exist yet
 * (symlinks resolved for the existing prefix). */
char *mk_path_absolute(const char *p);
/* True if `inner` equals `outer` or lies inside it (both absolute, normalised). */
bool mk_path_is_within(const char *inner, const char *outer);

/* ---- atomic outputs --------------------------------------------------------------------
 * mk_outdir_begin creates OUT.tmp (a sibling, so the final rename stays on one
 * filesystem), as a folder or, with as_file, as a path for one file the caller creates.
 * The caller writes everything there; mk_outdir_commit fsyncs and renames it to OUT
 * (an existing OUT is moved aside only with force, and deleted only after the new one is
 * in place; an empty OUT folder is replaced without force, by a rename that fails if it is
 * no longer empty); mk_outdir_abort removes OUT.tmp. A folder OUT.tmp carries a marker file so
 * that a later run knows it is ours: without resume it is deleted and started afresh,
 * with resume it is kept (o->resumed) for the caller to reuse. */
typedef struct mk_outdir {
    char *final_path; /* OUT as given */
    char *tmp_path;   /* OUT.tmp */
    bool as_file;
    bool resumed;     /* an earlier partial OUT.tmp was found and kept */
    bool over_empty;  /* OUT is an empty folder, replaced without force */
    int lock_fd;      /* flock on the marker: one writer per OUT */
} mk_outdir;

#define MK_OUTDIR_MARKER ".mergekit-c-partial"

mk_status mk_outdir_begin(mk_outdir *o, const char *out, bool as_file, bool force, bool resume);
mk_status mk_outdir_commit(mk_outdir *o);
void mk_outdir_abort(mk_outdir *o);

/* SIGINT/SIGTERM set a flag instead of killing us, so long loops can stop at a chunk
 * boundary and take the normal cleanup path. */
void mk_signal_install(void);
bool mk_interrupted(void);

#endif
