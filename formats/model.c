/* model.c - see model.h */
#include "model.h"

#include "../core/mk_io.h"
#include "gguf.h"
#include "mkz.h"
#include "safetensors.h"
#include "torchbin.h"

#include <stdlib.h>

/* Open path as what it is; a delta container comes back without its base. */
static mk_status open_any(const char *path, mk_source **out)
{
    *out = NULL;
    if (!mk_path_exists(path)) return mk_error(MK_ERR_IO, "%s: no such file or folder", path);
    /* by content, and by name so that a container with a damaged header says so */
    if (mk_mkz_probe(path) || (mk_is_file(path) && mk_str_ends_with(path, ".mkz"))) return mk_mkz_open(path, out);
    if (mk_gguf_probe(path)) return mk_gguf_open(path, out);
    /* a folder with both: safetensors wins (no pickle is even looked at) */
    if (mk_safetensors_probe(path)) return mk_safetensors_open(path, out);
    if (mk_torchbin_probe(path)) return mk_torchbin_open(path, out);
    if (mk_is_dir(path))
        return mk_error(MK_ERR_FORMAT,
                        "%s: no model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
                        "pytorch_model.bin.index.json in this folder",
                        path);
    return mk_safetensors_open(path, out);
}

/* Where the base of delta container `path` is: `given`, else $MK_DELTA_BASE, else the
 * recorded hint relative to the container's folder. */
static char *base_path(const char *path, const char *given, const char *hint)
{
    const char *env = getenv("MK_DELTA_BASE");
    if (given) return mk_strdup(given);
    if (env && env[0]) return mk_strdup(env);
    if (hint[0] == '/') return mk_strdup(hint);
    char *dir = mk_path_dirname(path);
    char *p = dir ? mk_path_join(dir, hint) : NULL;
    free(dir);
    return p;
}

/* The base of *out, when it is a delta container; *out closed on failure. */
static mk_status attach(const char *path, const char *base, mk_source **out)
{
    const mk_mkz_index *ix = mk_mkz_source_index(*out);
    if (!ix || !ix->base_hint) {
        if (base) mk_warn("%s: not a delta container; --base %s is not used", path, base);
        return MK_OK;
    }
    char *bp = base_path(path, base, ix->base_hint);
    mk_status s = bp ? MK_OK : MK_ERR_NOMEM;
    mk_source *b = NULL;
    if (s == MK_OK && !base && !mk_path_exists(bp)) {
        char *why = mk_asprintf("which is not at %s (give it with --base BASE or MK_DELTA_BASE=BASE)", bp);
        s = why ? mk_mkz_attach_base(*out, NULL, why) : MK_ERR_NOMEM;
        free(why);
    } else if (s == MK_OK) {
        s = open_any(bp, &b);
        if (s != MK_OK) mk_error_prefix(s, "the base of %s", path);
        else s = mk_mkz_attach_base(*out, b, NULL);
    }
    free(bp);
    if (s != MK_OK) {
        mk_source_close(*out);
        *out = NULL;
    }
    return s;
}

mk_status mk_model_open_base(const char *path, const char *base, mk_source **out)
{
    MK_TRY(open_any(path, out));
    return attach(path, base, out);
}

mk_status mk_model_open_mkz(const char *path, const char *base, mk_source **out)
{
    MK_TRY(mk_mkz_open(path, out));
    return attach(path, base, out);
}

mk_status mk_model_open(const char *path, mk_source **out) { return mk_model_open_base(path, NULL, out); }

bool mk_model_probe(const char *path)
{
    return mk_mkz_probe(path) || mk_safetensors_probe(path) || mk_torchbin_probe(path) || mk_gguf_probe(path) ||
           (mk_is_file(path) && mk_str_ends_with(path, ".mkz"));
}
