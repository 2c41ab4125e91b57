/* model.c - see model.h */
#include "model.h"

#include "../core/mk_io.h"
#include "mkz.h"
#include "safetensors.h"
#include "torchbin.h"

mk_status mk_model_open(const char *path, mk_source **out)
{
    *out = NULL;
    if (!mk_path_exists(path)) return mk_error(MK_ERR_IO, "%s: no such file or folder", path);
    /* by content, and by name so that a container with a damaged header says so */
    if (mk_mkz_probe(path) || (mk_is_file(path) && mk_str_ends_with(path, ".mkz"))) return mk_mkz_open(path, out);
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

bool mk_model_probe(const char *path)
{
    return mk_mkz_probe(path) || mk_safetensors_probe(path) || mk_torchbin_probe(path) ||
           (mk_is_file(path) && mk_str_ends_with(path, ".mkz"));
}
