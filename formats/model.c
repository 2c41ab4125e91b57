/* model.c - see model.h */
#include "model.h"

#include "../core/mk_io.h"
#include "mkz.h"
#include "safetensors.h"

mk_status mk_model_open(const char *path, mk_source **out)
{
    *out = NULL;
    if (!mk_path_exists(path)) return mk_error(MK_ERR_IO, "%s: no such file or folder", path);
    /* by content, and by name so that a container with a damaged header says so */
    if (mk_mkz_probe(path) || (mk_is_file(path) && mk_str_ends_with(path, ".mkz"))) return mk_mkz_open(path, out);
    return mk_safetensors_open(path, out);
}
