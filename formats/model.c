/* model.c - see model.h */
#include "model.h"

#include "../core/mk_io.h"
#include "safetensors.h"

mk_status mk_model_open(const char *path, mk_source **out)
{
    *out = NULL;
    if (!mk_path_exists(path)) return mk_error(MK_ERR_IO, "%s: no such file or folder", path);
    return mk_safetensors_open(path, out);
}
