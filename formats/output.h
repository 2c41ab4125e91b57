/* output.h - a command's model output, start to finish: the sink for OUT picked from its
 * path (a .mkz container when OUT ends in .mkz or compression is asked for, else a folder
 * of safetensors shards), mirroring mk_model_open for inputs; the side files a model folder
 * carries (config.json from a donor, edited; tokenizer and generation files; recipe, model
 * card, provenance), each recorded with its size and XXH3-128; and the atomic commit
 * (everything in OUT.tmp, renamed to OUT when complete; removed on failure).
 *
 * Order of use: mk_output_begin (declares the tensors), tensor data through o->k (or a
 * consumer on it), side files, mk_output_seal (shards durable, o->k->out_files filled),
 * files that list the shards' hashes (provenance, card), mk_output_commit. mk_output_close
 * releases everything and removes OUT.tmp unless committed.
 * Split outputs (parts.h): with opts.part, mk_output_begin joins the shared OUT.tmp and the
 * sink writes only that part's shards; mk_output_part_done (after mk_output_seal) writes the
 * part's completion record, and OUT.tmp stays. With opts.finalize, mk_output_begin checks
 * every part's record and adopts their shards; the index and side files are then written as
 * usual and mk_output_commit removes the parts' files before the rename. Neither removes
 * OUT.tmp on failure: the parts' work is kept.
 * Must not: decide what goes into the side files (callers pass the edits and texts).
 */
#ifndef MK_OUTPUT_H
#define MK_OUTPUT_H

#include "../core/mk_io.h"
#include "../core/mk_tensor.h"
#include "hfconfig.h"
#include "parts.h"

#define MK_OUTPUT_MAX_FILES 32

typedef struct mk_output_opts {
    uint64_t shard_size;      /* max bytes of tensor data per shard; 0 = one shard */
    const char *stem;         /* shard file stem; NULL = "model" (PEFT adapters: "adapter_model") */
    bool force;               /* replace an existing OUT (once the new one is complete) */
    bool resume;              /* keep shards of an interrupted run recorded under resume_key */
    const char *resume_key;   /* identity of the job for --resume; NULL = no journal */
    bool compress;            /* a .mkz container even when OUT does not end in .mkz */
    int level;                /* its zstd level; 0 = the default */
    mk_part part;             /* --part I/N: write part I of N into the shared OUT.tmp; n == 0: all */
    bool finalize;            /* OUT from the parts in OUT.tmp */
    const mk_parts_manifest *manifest; /* with part or finalize: the plan's hash, N, the command line */
    bool write_behind;        /* safetensors: write each tensor behind the computation (output_wb.c) */
} mk_output_opts;

/* The shards of an output split between parts (--dry-run --parts N prints it). */
typedef struct mk_output_split {
    size_t n_shards;
    char **names;       /* [n_shards] */
    uint64_t *size;     /* [n_shards] file sizes */
    uint32_t *part_of;  /* [n_shards] 0-based part */
} mk_output_split;

typedef struct mk_output {
    mk_outdir od;
    mk_sink *k;
    bool container;           /* a .mkz file */
    bool begun, committed;
    size_t n_files;           /* side files written, in order */
    mk_out_file files[MK_OUTPUT_MAX_FILES];
    mk_part part;             /* as opened */
    bool finalize, keep;      /* keep: OUT.tmp is shared with parts; never removed here */
    int part_locks[2];
    const mk_parts_manifest *manifest;
    unsigned char *own;       /* the sink's shard masks, alive as long as it */
    mk_out_file *adopt;
    mk_parts_inputs inputs;   /* finalize: the input hashes the parts recorded */
} mk_output;

/* The shards tensors t[n] go into as opts would write them, split between `parts` parts. */
mk_status mk_output_split_build(const mk_tensor_info *t, size_t n, const mk_output_opts *opts, unsigned parts,
                                mk_output_split *sp);
void mk_output_split_free(mk_output_split *sp);
/* After mk_output_seal of a part: its completion record, with the input files it hashed
 * in[n_in] (name = path; NULL, 0 for none). */
mk_status mk_output_part_done(mk_output *o, const mk_out_file *in, size_t n_in);

/* True when OUT is written as a .mkz container. */
bool mk_output_is_container(const char *out, const mk_output_opts *o);
/* Create OUT.tmp and the sink, and declare the output tensors t[n] (in output order). */
mk_status mk_output_begin(mk_output *o, const char *out, const mk_output_opts *opts, const mk_tensor_info *t, size_t n);
/* A side file: written and recorded (name, size, hash). */
mk_status mk_output_file(mk_output *o, const char *name, const void *data, size_t len);
/* config.json of `donor` with `e` applied (NULL: copied as it is). *found = false (and
 * nothing written) when the donor has none. */
mk_status mk_output_config(mk_output *o, mk_source *donor, const mk_hfconfig_edit *e, bool *found);
/* The donor's tokenizer and generation files (hfconfig.h's list), those it has. */
mk_status mk_output_tokenizer(mk_output *o, mk_source *donor);
/* Every auxiliary file of `donor` except those named in `skip` (NULL-terminated). */
mk_status mk_output_copy_aux(mk_output *o, mk_source *donor, const char *const *skip);
/* Make the tensor data and shard index durable; fills o->k->out_files. */
mk_status mk_output_seal(mk_output *o);
/* Finish the container (if one) and rename OUT.tmp to OUT. */
mk_status mk_output_commit(mk_output *o);
/* Release the sink; remove OUT.tmp unless committed. */
void mk_output_close(mk_output *o);
/* Put a write-behind sink in front of *k (before its begin; opts.write_behind does it in
 * mk_output_begin): each tensor up to 64 MiB is gathered and written in one piece by a
 * thread of its own while the caller computes the next; add_file, commit and finish wait
 * for it. The same bytes and tensor_done order as *k alone. */
mk_status mk_output_write_behind(mk_sink **k);
/* For tests: the gathering limit and the backlog limit of the sinks made after it (64 MiB
 * each; 0 restores that). */
void mk_output_write_behind_limits(uint64_t cap, uint64_t inflight);

#endif
