/* modeldir.h - the non-tensor files of a model folder (config.json, tokenizer files, ...),
 * read with the folder's containment rule: a name is a plain file name, and a symlink is
 * followed only when its target stays inside the model folder, or inside the Hugging Face
 * cache repository that holds it (models--org--name/, whose snapshots/ and their subfolders
 * link into blobs/).
 * Must not: parse the files it reads.
 */
#ifndef MK_MODELDIR_H
#define MK_MODELDIR_H

#include "../core/mk_core.h"

typedef struct mk_modeldir {
    char *dir;        /* as given */
    char *real;       /* its resolved absolute path */
    char *trust_root; /* symlink targets must resolve inside this */
    char **names;     /* NULL-terminated, sorted: regular files other than weights */
} mk_modeldir;

/* With list, enumerate the folder's auxiliary files. */
mk_status mk_modeldir_open(mk_modeldir *d, const char *dir, bool list);
/* Full path of `name` in the folder, checked: exists, regular file, contained. */
mk_status mk_modeldir_resolve(const mk_modeldir *d, const char *name, char **path);
/* Read `name` (at most cap bytes); *data = NULL and MK_OK when it does not exist. */
mk_status mk_modeldir_read(const mk_modeldir *d, const char *name, uint64_t cap, char **data, size_t *len);
void mk_modeldir_free(mk_modeldir *d);
/* Names that are model weights in some format (never copied as auxiliary files). */
bool mk_modeldir_is_weight_name(const char *name);

#endif
