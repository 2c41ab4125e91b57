/* model.h - open any model input by what it is: a safetensors file or folder, a .mkz
 * container (recognised by its magic number or its name), or a PyTorch checkpoint (a
 * .bin/.pt/.pth file or a folder with pytorch_model.bin or its index, read without
 * unpickling: torchbin.h). A folder with both safetensors and PyTorch weights is read as
 * safetensors. One entry point for every command. */
#ifndef MK_MODEL_H
#define MK_MODEL_H

#include "../core/mk_tensor.h"

mk_status mk_model_open(const char *path, mk_source **out);
/* True if `path` holds weights mk_model_open would read (by name or magic number; the
 * contents are not validated). */
bool mk_model_probe(const char *path);

#endif
