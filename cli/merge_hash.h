/* merge_hash.h - the input files' hashes a merge records (mergekit-c.json): XXH3-128 of each
 * file this process hashes, made on a thread beside the executor and paced by it
 * (mk_hash_files), so the hashing and the merge read the same pages while the page cache holds
 * them and the disk serves each input once, even when the page cache cannot hold a model.
 * Where the merge reads its inputs around the page cache (streams, core/mk_dstream.h), the
 * hashing is fed the blocks they read (taps), and reads itself only what they skip, behind
 * the merge, where the page cache still holds what the merge read through it.
 * A file still being fetched from the Hub records its sha256 there instead; finalize takes the
 * hashes the parts recorded; a part of a split output hashes its byte-balanced share.
 * Must not: print, or keep the merge waiting before its end (mk_merge_hash_join).
 */
#ifndef MK_MERGE_HASH_H
#define MK_MERGE_HASH_H

#include "../core/mk_core.h"
#include "../core/mk_dstream.h"
#include "../core/mk_tensor.h"
#include "../formats/parts.h"

#include <pthread.h>

typedef struct mk_input_hashes {
    size_t n;
    mk_out_file *files; /* name = full path */
    size_t *model_of;   /* model index per file */
    char (*sha256)[65]; /* a file still being fetched from the Hub: its sha256 there
                           (core/mk_hubfetch.h), recorded instead of hashing the file;
                           "" for the others */
} mk_input_hashes;

typedef struct mk_merge_hash {
    mk_source *const *src;           /* the models, n_src of them */
    size_t n_src;
    mk_part part;                    /* part.n: this process is part part.i of a split output */
    const mk_parts_inputs *recorded; /* finalize: the hashes the parts recorded; else NULL */
    mk_input_hashes *ih;             /* filled by mk_merge_hash_join */
    bool unpaced;                    /* hash at full speed, not paced by mk_merge_hash_pace */
    uint32_t ppm;                    /* how far the merge reads (mk_hash_pace) */
    /* Fed hashing (a paced run whose merge reads around the page cache): one tap per file to
     * hash (core/mk_dstream.h), fed by the merge's streams, the rest read behind the merge:
     * each file up to the end of the last input tensor the merge has read in it (upto). */
    mk_dtap **taps;
    size_t *todo, n_todo;
    size_t *tap_of;                  /* per input file (models' files in order): its tap, or SIZE_MAX */
    uint64_t *upto;                  /* per tap */
    mk_status status;
    char msg[1024];
    pthread_t thread;
    bool started;
} mk_merge_hash;

/* Start hashing on a thread (inline, unpaced, if none can start). */
mk_status mk_merge_hash_start(mk_merge_hash *h);
/* Hash now, on this thread, unpaced. */
mk_status mk_merge_hash_now(mk_merge_hash *h);
/* mk_exec_opts.reading: the merge is about to read the inputs of the output bytes up to
 * `through` of `total`. ctx: the mk_merge_hash. */
void mk_merge_hash_pace(void *ctx, uint64_t through, uint64_t total);
/* mk_exec_opts.read_input: the merge has read input tensor `tensor` of src. ctx: the mk_merge_hash. */
void mk_merge_hash_input_read(void *ctx, const mk_source *src, size_t tensor);
/* Let the hashing finish unpaced and wait for it; MK_OK when it was never started. */
mk_status mk_merge_hash_join(mk_merge_hash *h);
void mk_input_hashes_free(mk_input_hashes *ih);

#endif
