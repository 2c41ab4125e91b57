/* modeldir.c - see modeldir.h */
#include "modeldir.h"

#include "../core/mk_hubfetch.h"
#include "../core/mk_io.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

bool mk_modeldir_is_weight_name(const char *n)
{
    static const char *const ext[] = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".mkz",
                                      ".h5", ".msgpack", ".onnx", ".pkl", ".npz"};
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++)
        if (mk_str_ends_with(n, ext[i])) return true;
    return strcmp(n, "model.safetensors.index.json") == 0 || strcmp(n, "pytorch_model.bin.index.json") == 0;
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

mk_status mk_modeldir_open(mk_modeldir *d, const char *dir, bool list)
{
    memset(d, 0, sizeof *d);
    d->dir = mk_strdup(dir);
    char buf[PATH_MAX];
    if (!d->dir) return MK_ERR_NOMEM;
    if (!realpath(dir, buf)) return mk_error(MK_ERR_IO, "%s: cannot resolve: %s", dir, strerror(errno));
    d->real = mk_strdup(buf);
    /* .../models--org--name/snapshots/<rev>[/sub/folder], or the staging folder of a fetch
     * (core/mk_hubfetch.h): trust the repository folder (a subfolder's files link to
     * ../../../blobs) */
    static const char *const marks[] = {"/snapshots/", "/" MK_HUB_PARTIAL_DIR "/"};
    for (size_t k = 0; k < 2; k++) {
        char *snap;
        for (snap = strstr(buf, marks[k]); snap; snap = strstr(snap + 1, marks[k])) {
            *snap = 0;
            const char *base = strrchr(buf, '/');
            if (base && mk_str_starts_with(base + 1, "models--")) break;
            *snap = '/';
        }
        if (snap) break;
    }
    d->trust_root = mk_strdup(buf);
    d->names = mk_calloc(1, sizeof *d->names);
    if (!d->real || !d->trust_root || !d->names) return MK_ERR_NOMEM;
    if (!list) return MK_OK;
    DIR *dh = opendir(dir);
    if (!dh) return mk_error(MK_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    size_t n = 0, cap = 1;
    struct dirent *e;
    mk_status s = MK_OK;
    while ((e = readdir(dh))) {
        if (e->d_name[0] == '.' || mk_modeldir_is_weight_name(e->d_name)) continue;
        char *p = NULL;
        if (mk_modeldir_resolve(d, e->d_name, &p) != MK_OK) {
            mk_error_clear();
            continue; /* directories, sockets, links leaving the folder: not ours to read */
        }
        free(p);
        if (n + 2 > cap) {
            cap = cap * 2 + 4;
            char **nn = mk_realloc_array(d->names, cap, sizeof *nn);
            if (!nn) {
                s = MK_ERR_NOMEM;
                break;
            }
            d->names = nn;
        }
        if (!(d->names[n] = mk_strdup(e->d_name))) {
            s = MK_ERR_NOMEM;
            break;
        }
        d->names[++n] = NULL;
    }
    closedir(dh);
    qsort(d->names, n, sizeof *d->names, cmp_name);
    return s;
}

mk_status mk_modeldir_resolve(const mk_modeldir *d, const char *name, char **path)
{
    *path = NULL;
    if (!name[0] || strchr(name, '/') || strcmp(name, "..") == 0 || strcmp(name, ".") == 0)
        return mk_error(MK_ERR_FORMAT, "%s: '%s' is not a plain file name", d->dir, name);
    char *p = mk_path_join(d->dir, name);
    if (!p) return MK_ERR_NOMEM;
    struct stat st;
    if (lstat(p, &st) != 0) {
        mk_status s = mk_error(MK_ERR_IO, "%s: missing", p);
        free(p);
        return s;
    }
    if (S_ISLNK(st.st_mode)) {
        char buf[PATH_MAX];
        if (!realpath(p, buf)) {
            mk_status s = mk_error(MK_ERR_IO, "%s: broken symlink", p);
            free(p);
            return s;
        }
        if (!mk_path_is_within(buf, d->trust_root)) {
            mk_status s = mk_error(MK_ERR_FORMAT, "%s: symlink points outside the model folder (to %s); refused", p, buf);
            free(p);
            return s;
        }
        if (stat(p, &st) != 0) {
            mk_status s = mk_error(MK_ERR_IO, "%s: cannot stat: %s", p, strerror(errno));
            free(p);
            return s;
        }
    }
    if (!S_ISREG(st.st_mode)) {
        mk_status s = mk_error(MK_ERR_FORMAT, "%s: not a regular file", p);
        free(p);
        return s;
    }
    *path = p;
    return MK_OK;
}

mk_status mk_modeldir_read(const mk_modeldir *d, const char *name, uint64_t cap, char **data, size_t *len)
{
    *data = NULL;
    if (len) *len = 0;
    char *p = mk_path_join(d->dir, name);
    if (!p) return MK_ERR_NOMEM;
    bool exists = mk_path_exists(p);
    free(p);
    if (!exists) return MK_OK;
    MK_TRY(mk_modeldir_resolve(d, name, &p));
    mk_status s = mk_read_file(p, cap, data, len);
    free(p);
    return s;
}

void mk_modeldir_free(mk_modeldir *d)
{
    if (!d) return;
    if (d->names)
        for (char **n = d->names; *n; n++) free(*n);
    free(d->names);
    free(d->dir);
    free(d->real);
    free(d->trust_root);
    memset(d, 0, sizeof *d);
}
