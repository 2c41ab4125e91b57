/* mk_io.c - see mk_io.h */
#include "mk_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static mk_status io_err(const char *what, const char *path)
{
    return mk_error(MK_ERR_IO, "%s: %s: %s", path, what, strerror(errno));
}

/* ---- mappings ------------------------------------------------------------------------ */

mk_status mk_map_open(mk_map *m, const char *path)
{
    memset(m, 0, sizeof *m);
    m->fd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return io_err("cannot open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return io_err("cannot stat", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mk_error(MK_ERR_FORMAT, "%s: not a regular file", path);
    }
    m->path = mk_strdup(path);
    if (!m->path) {
        close(fd);
        return MK_ERR_NOMEM;
    }
    m->fd = fd;
    m->size = (uint64_t)st.st_size;
    if (m->size == 0) return MK_OK;
    if (m->size > SIZE_MAX) {
        mk_map_close(m);
        return mk_error(MK_ERR_FORMAT, "%s: file too large to map", path);
    }
    void *p = mmap(NULL, (size_t)m->size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        mk_status s = io_err("cannot map", path);
        mk_map_close(m);
        return s;
    }
    m->data = p;
    return MK_OK;
}

void mk_map_close(mk_map *m)
{
    if (!m) return;
    if (m->data) munmap((void *)m->data, (size_t)m->size);
    if (m->fd >= 0) close(m->fd);
    free(m->path);
    memset(m, 0, sizeof *m);
    m->fd = -1;
}

static void page_range(const mk_map *m, uint64_t off, uint64_t len, uint64_t *a, uint64_t *b)
{
    uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t end = off + len > m->size ? m->size : off + len;
    *a = off / pg * pg;
    *b = end;
}

void mk_map_willneed(const mk_map *m, uint64_t off, uint64_t len)
{
    if (!m->data || off >= m->size || !len) return;
    uint64_t a, b;
    page_range(m, off, len, &a, &b);
    madvise((void *)(m->data + a), (size_t)(b - a), MADV_WILLNEED);
}

void mk_map_done(const mk_map *m, uint64_t off, uint64_t len)
{
    if (!m->data || off >= m->size || !len) return;
    /* Rounded outward: dropping a page another chunk still reads is harmless, the
     * next access faults it back in from the page cache. */
    uint64_t a, b;
    page_range(m, off, len, &a, &b);
    madvise((void *)(m->data + a), (size_t)(b - a), MADV_DONTNEED);
}

/* ---- pread files ---------------------------------------------------------------------- */

static const mk_rfile_hooks *g_rhooks;

void mk_rfile_set_hooks(const mk_rfile_hooks *h) { g_rhooks = h; }

mk_status mk_rfile_open(mk_rfile *f, const char *path)
{
    memset(f, 0, sizeof *f);
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) return io_err("cannot open", path);
    struct stat st;
    if (fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        mk_status s = S_ISREG(st.st_mode) ? io_err("cannot stat", path) : mk_error(MK_ERR_FORMAT, "%s: not a regular file", path);
        close(f->fd);
        f->fd = -1;
        return s;
    }
    f->size = (uint64_t)st.st_size;
    f->path = mk_strdup(path);
    mk_status s = f->path ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && g_rhooks) s = g_rhooks->attach(path, f->size, &f->remote);
    if (s != MK_OK) {
        close(f->fd);
        free(f->path);
        f->path = NULL;
        f->fd = -1;
    }
    return s;
}

mk_status mk_rfile_read(const mk_rfile *f, uint64_t off, void *dst, size_t len)
{
    char *p = dst;
    if (f->remote && len) MK_TRY(g_rhooks->ensure(f->remote, off, len));
    while (len) {
        ssize_t r = pread(f->fd, p, len > (1u << 30) ? (1u << 30) : len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return io_err("read failed", f->path);
        if (r == 0)
            return mk_error(MK_ERR_IO, "%s: file ended at byte %llu while reading (was it truncated during the run?)",
                            f->path, (unsigned long long)off);
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return MK_OK;
}

void mk_rfile_willneed(const mk_rfile *f, uint64_t off, uint64_t len)
{
    /* a file being fetched gets the whole range in one request; a failure is reported by the read */
    if (f->remote && len && g_rhooks->ensure(f->remote, off, len) != MK_OK) return;
    if (f->fd >= 0 && len) {
        posix_fadvise(f->fd, 0, 0, POSIX_FADV_RANDOM);
        posix_fadvise(f->fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
    }
}

void mk_rfile_close(mk_rfile *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    if (f->remote) g_rhooks->detach(f->remote);
    free(f->path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

/* ---- whole files ----------------------------------------------------------------------- */

mk_status mk_read_file(const char *path, uint64_t cap, char **out, size_t *len)
{
    *out = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return io_err("cannot open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return io_err("cannot stat", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mk_error(MK_ERR_FORMAT, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > cap) {
        close(fd);
        return mk_error(MK_ERR_FORMAT, "%s: file is %lld bytes, over the %llu-byte limit for this kind of file",
                        path, (long long)st.st_size, (unsigned long long)cap);
    }
    size_t n = (size_t)st.st_size;
    char *buf = mk_malloc(n + 1);
    if (!buf) {
        close(fd);
        return MK_ERR_NOMEM;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            mk_status s = io_err("read failed", path);
            free(buf);
            close(fd);
            return s;
        }
        if (r == 0) break; /* file shrank while we read it */
        got += (size_t)r;
    }
    close(fd);
    buf[got] = 0;
    *out = buf;
    if (len) *len = got;
    return MK_OK;
}

mk_status mk_pwrite_all(int fd, const void *buf, size_t len, uint64_t off, const char *path)
{
    const char *p = buf;
    while (len) {
        ssize_t w = pwrite(fd, p, len > (1u << 30) ? (1u << 30) : len, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return io_err("write failed", path);
        if (w == 0) return mk_error(MK_ERR_IO, "%s: write returned 0 (disk full?)", path);
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return MK_OK;
}

mk_status mk_write_all(int fd, const void *buf, size_t len, const char *path)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return io_err("write failed", path);
        if (w == 0) return mk_error(MK_ERR_IO, "%s: write returned 0 (disk full?)", path);
        p += w;
        len -= (size_t)w;
    }
    return MK_OK;
}

mk_status mk_write_file_atomic(const char *path, const void *data, size_t len)
{
    char *tmp = mk_asprintf("%s.tmp", path);
    if (!tmp) return MK_ERR_NOMEM;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        mk_status s = io_err("cannot create", tmp);
        free(tmp);
        return s;
    }
    mk_status s = mk_write_all(fd, data, len, tmp);
    if (s == MK_OK && fsync(fd) != 0) s = io_err("fsync failed", tmp);
    if (close(fd) != 0 && s == MK_OK) s = io_err("close failed", tmp);
    if (s == MK_OK && rename(tmp, path) != 0) s = io_err("cannot rename into place", path);
    if (s != MK_OK) unlink(tmp);
    free(tmp);
    return s;
}

mk_status mk_copy_file(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return io_err("cannot open", src);
    struct stat st;
    if (fstat(in, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(in);
        return mk_error(MK_ERR_IO, "%s: not a regular file", src);
    }
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (out < 0) {
        close(in);
        return io_err("cannot create", dst);
    }
    mk_status s = MK_OK;
    char *buf = mk_malloc(1 << 20);
    if (!buf) s = MK_ERR_NOMEM;
    while (s == MK_OK) {
        ssize_t r = read(in, buf, 1 << 20);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) s = io_err("read failed", src);
        if (r <= 0) break;
        s = mk_write_all(out, buf, (size_t)r, dst);
    }
    free(buf);
    if (s == MK_OK && fsync(out) != 0) s = io_err("fsync failed", dst);
    if (close(out) != 0 && s == MK_OK) s = io_err("close failed", dst);
    close(in);
    if (s != MK_OK) unlink(dst);
    return s;
}

mk_status mk_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return io_err("cannot open directory", dir);
    int r = fsync(fd);
    close(fd);
    /* some filesystems refuse fsync on directories; that is not a data-loss error */
    if (r != 0 && errno != EINVAL && errno != EROFS) return io_err("fsync failed", dir);
    return MK_OK;
}

mk_status mk_mkdir_p(const char *path)
{
    char *p = mk_strdup(path);
    if (!p) return MK_ERR_NOMEM;
    for (char *q = p + 1; *q; q++) {
        if (*q != '/') continue;
        *q = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            mk_status s = io_err("cannot create directory", p);
            free(p);
            return s;
        }
        *q = '/';
    }
    mk_status s = MK_OK;
    if (mkdir(p, 0755) != 0 && errno != EEXIST) s = io_err("cannot create directory", p);
    else if (!mk_is_dir(p)) s = mk_error(MK_ERR_IO, "%s: exists and is not a directory", p);
    free(p);
    return s;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    int r = (flag == FTW_DP) ? rmdir(path) : unlink(path);
    return r != 0 && errno != ENOENT ? -1 : 0;
}

mk_status mk_rm_rf(const char *path)
{
    if (!path || !*path || strcmp(path, "/") == 0) MK_BUG("refusing to remove an empty path or /");
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? MK_OK : io_err("cannot stat", path);
    if (!S_ISDIR(st.st_mode)) return unlink(path) == 0 ? MK_OK : io_err("cannot remove", path);
    if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0) return io_err("cannot remove", path);
    return MK_OK;
}

bool mk_path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

bool mk_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool mk_dir_is_empty(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return false;
    DIR *d = opendir(path);
    if (!d) return false;
    bool empty = true;
    for (struct dirent *e; empty && (e = readdir(d));) empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    return empty;
}

bool mk_is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

char *mk_path_join(const char *a, const char *b)
{
    size_t la = strlen(a);
    while (la > 1 && a[la - 1] == '/') la--;
    if (!la) return mk_strdup(b);
    return mk_asprintf("%.*s/%s", (int)la, a, b);
}

static size_t trimmed_len(const char *p)
{
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    return n;
}

char *mk_path_dirname(const char *p)
{
    size_t n = trimmed_len(p);
    while (n > 0 && p[n - 1] != '/') n--;
    if (n == 0) return mk_strdup(".");
    while (n > 1 && p[n - 1] == '/') n--;
    return mk_strndup(p, n);
}

char *mk_path_basename(const char *p)
{
    size_t n = trimmed_len(p), a = n;
    while (a > 0 && p[a - 1] != '/') a--;
    return mk_strndup(p + a, n - a);
}

char *mk_path_absolute(const char *p)
{
    char buf[PATH_MAX];
    if (realpath(p, buf)) return mk_strdup(buf);
    /* does not exist (yet): resolve the parent and append the last component */
    char *dir = mk_path_dirname(p), *base = mk_path_basename(p);
    char *res = NULL;
    if (dir && base) {
        if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0 || strcmp(dir, p) == 0) {
            res = NULL;
        } else {
            char *pd = mk_path_absolute(dir);
            if (pd) res = mk_path_join(pd, base);
            free(pd);
        }
    }
    if (!res) mk_error(MK_ERR_IO, "%s: cannot resolve path", p);
    free(dir);
    free(base);
    return res;
}

bool mk_path_is_within(const char *inner, const char *outer)
{
    size_t n = strlen(outer);
    if (n == 1 && outer[0] == '/') return true;
    return strncmp(inner, outer, n) == 0 && (inner[n] == 0 || inner[n] == '/');
}

/* ---- atomic outputs -------------------------------------------------------------------- */

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

void mk_signal_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

bool mk_interrupted(void) { return g_interrupted != 0; }

static mk_status take_lock(mk_outdir *o, const char *marker)
{
    int fd = open(marker, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return io_err("cannot create", marker);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return mk_error(MK_ERR_IO, "%s: another mergekit-c run is writing this output", o->tmp_path);
    }
    o->lock_fd = fd;
    return MK_OK;
}

static mk_status outdir_begin(mk_outdir *o, const char *out, bool as_file, bool force, bool resume);

mk_status mk_outdir_begin(mk_outdir *o, const char *out, bool as_file, bool force, bool resume)
{
    mk_status s = outdir_begin(o, out, as_file, force, resume);
    if (s != MK_OK) {
        /* nothing of ours was created unless the lock was taken; release what we hold */
        if (o->lock_fd >= 0) close(o->lock_fd);
        free(o->final_path);
        free(o->tmp_path);
        memset(o, 0, sizeof *o);
        o->lock_fd = -1;
    }
    return s;
}

static mk_status outdir_begin(mk_outdir *o, const char *out, bool as_file, bool force, bool resume)
{
    memset(o, 0, sizeof *o);
    o->lock_fd = -1;
    o->as_file = as_file;
    size_t n = trimmed_len(out);
    o->final_path = mk_strndup(out, n);
    if (!o->final_path) return MK_ERR_NOMEM;
    o->tmp_path = mk_asprintf("%s.tmp", o->final_path);
    if (!o->tmp_path) return MK_ERR_NOMEM;

    if (!force && !as_file && mk_dir_is_empty(o->final_path)) o->over_empty = true;
    else if (mk_path_exists(o->final_path) && !force)
        return mk_error(MK_ERR_EXISTS, "%s: output already exists (use --force to replace it)", o->final_path);

    char *parent = mk_path_dirname(o->final_path);
    if (!parent) return MK_ERR_NOMEM;
    mk_status s = mk_mkdir_p(parent);
    free(parent);
    MK_TRY(s);

    struct stat st;
    if (lstat(o->tmp_path, &st) == 0) {
        if (as_file) {
            if (!S_ISREG(st.st_mode) || !force)
                return mk_error(MK_ERR_EXISTS, "%s: a leftover temporary file is in the way (remove it, or use --force)",
                                o->tmp_path);
            if (unlink(o->tmp_path) != 0) return io_err("cannot remove", o->tmp_path);
        } else {
            char *marker = mk_path_join(o->tmp_path, MK_OUTDIR_MARKER);
            if (!marker) return MK_ERR_NOMEM;
            bool ours = S_ISDIR(st.st_mode) && mk_is_file(marker);
            if (!ours) {
                free(marker);
                return mk_error(MK_ERR_EXISTS, "%s: exists and was not made by mergekit-c; move it away first",
                                o->tmp_path);
            }
            s = take_lock(o, marker);
            free(marker);
            MK_TRY(s);
            if (resume) {
                o->resumed = true;
                return MK_OK;
            }
            close(o->lock_fd);
            o->lock_fd = -1;
            MK_TRY(mk_rm_rf(o->tmp_path));
        }
    }
    if (as_file) return MK_OK;
    if (mkdir(o->tmp_path, 0755) != 0) return io_err("cannot create directory", o->tmp_path);
    char *marker = mk_path_join(o->tmp_path, MK_OUTDIR_MARKER);
    if (!marker) return MK_ERR_NOMEM;
    s = take_lock(o, marker);
    free(marker);
    return s;
}

mk_status mk_outdir_commit(mk_outdir *o)
{
    char *parent = mk_path_dirname(o->final_path);
    char *old = mk_asprintf("%s.old-%ld", o->final_path, (long)getpid());
    mk_status s = (parent && old) ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && !o->as_file) s = mk_fsync_dir(o->tmp_path);
    bool moved_old = false;
    mk_testpoint(); /* everything written, nothing renamed */
    /* an empty OUT is replaced by the rename itself, which fails if something was put in it */
    if (s == MK_OK && !o->over_empty && mk_path_exists(o->final_path)) {
        if (rename(o->final_path, old) != 0) s = io_err("cannot move the existing output aside", o->final_path);
        else moved_old = true;
    }
    if (s == MK_OK && rename(o->tmp_path, o->final_path) != 0) {
        if (o->over_empty && (errno == ENOTEMPTY || errno == EEXIST))
            s = mk_error(MK_ERR_EXISTS, "%s: the output folder was empty when the run began but is not now; nothing replaced",
                         o->final_path);
        else s = io_err("cannot rename the finished output into place", o->final_path);
        if (moved_old) rename(old, o->final_path); /* put the user's data back */
        moved_old = false;
        if (o->lock_fd >= 0) close(o->lock_fd);
        o->lock_fd = -1;
        mk_rm_rf(o->tmp_path); /* no partial output left behind */
    }
    mk_testpoint(); /* renamed into place, marker not yet removed */
    if (s == MK_OK) s = mk_fsync_dir(parent);
    if (s == MK_OK && !o->as_file) {
        char *marker = mk_path_join(o->final_path, MK_OUTDIR_MARKER);
        if (marker) unlink(marker);
        free(marker);
        mk_fsync_dir(o->final_path);
    }
    if (s == MK_OK && moved_old) s = mk_rm_rf(old);
    if (o->lock_fd >= 0) close(o->lock_fd);
    o->lock_fd = -1;
    free(parent);
    free(old);
    free(o->final_path);
    free(o->tmp_path);
    o->final_path = o->tmp_path = NULL;
    return s;
}

void mk_outdir_abort(mk_outdir *o)
{
    if (!o || !o->tmp_path) return;
    if (o->lock_fd >= 0) close(o->lock_fd);
    o->lock_fd = -1;
    mk_rm_rf(o->tmp_path);
    free(o->final_path);
    free(o->tmp_path);
    o->final_path = o->tmp_path = NULL;
}
