/* model.h - open any model input by what it is: a safetensors file or folder, a .mkz
 * container (recognised by its magic number or its name), or a PyTorch checkpoint (a
 * .bin/.pt/.pth file or a folder with pytorch_model.bin or its index, read without
 * unpickling: torchbin.h), or a llama.cpp GGUF file (.gguf, or the GGUF magic number:
 * gguf.h). A folder with both safetensors and PyTorch weights is read as
 * safetensors. One entry point for every command. */
#ifndef MK_MODEL_H
#define MK_MODEL_H

#include "../core/mk_tensor.h"

mk_status mk_model_open(const char *path, mk_source **out);
/* As mk_model_open; a delta container (.mkz packed with --base) is read against `base`
 * when given, else $MK_DELTA_BASE when set, else the base path it records, relative to the
 * container's folder. A base that is not there is not an error until a delta tensor is
 * read (the error names the base wanted); a base without the tensors the container was
 * packed against is refused here, one whose bytes differ when a tensor is first read. */
mk_status mk_model_open_base(const char *path, const char *base, mk_source **out);
/* As mk_model_open_base for a path that must be a .mkz container. */
mk_status mk_model_open_mkz(const char *path, const char *base, mk_source **out);
/* True if `path` holds weights mk_model_open would read (by name or magic number; the
 * contents are not validated). */
bool mk_model_probe(const char *path);

#endif
