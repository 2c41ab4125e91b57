/* model.h - open any model input by what it is: a safetensors file or folder, or a .mkz
 * container (recognised by its magic number or its name). One entry point for every
 * command. */
#ifndef MK_MODEL_H
#define MK_MODEL_H

#include "../core/mk_tensor.h"

mk_status mk_model_open(const char *path, mk_source **out);

#endif
