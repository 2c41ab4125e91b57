/* parts.h - one output written by several processes: `--part I/N` (Slurm array tasks, MPI
 * ranks, or plain processes on hosts that share OUT's filesystem) and `finalize`.
 *
 * The output's shards are split between N parts, balancing bytes. Every part joins the
 * same OUT.tmp (the first one creates it, atomically, with the manifest: the command line,
 * its working directory, the plan's hash and N), writes only its own shards (a journal of
 * its own, so a part that died keeps its finished shards when rerun) and, once they are
 * durable, a completion record: its index, the plan's hash, and each shard's name, size
 * and XXH3-128. `finalize` checks every record against the plan (refusing, by name, a part
 * that is missing or was made by another plan), writes the index and side files and renames
 * OUT.tmp to OUT: the same bytes as one process writing the whole output.
 * Files in OUT.tmp: .mergekit-c-parts.json (manifest), .mergekit-c-part-0000I-of-0000N.json
 * (record), .journal and .lock beside it; finalize removes them all.
 * An output that is one file (GGUF) is split by regions instead: the manifest names the file
 * (`file`), every part sizes it and writes its header (the same bytes), its record lists the
 * tensors' byte regions it wrote (name, size, hash) where a shard output lists shard files.
 * Must not: know what a plan is (callers pass its hash and the shards' names and sizes).
 */
#ifndef MK_PARTS_H
#define MK_PARTS_H

#include "../core/mk_core.h"
#include "../core/mk_tensor.h"

#define MK_PARTS_MANIFEST ".mergekit-c-parts.json"
#define MK_PARTS_MAX 100000u /* more parts than any array job asks for */

typedef struct mk_part {
    unsigned i, n; /* part i of n, 1-based; n == 0: the whole output in one process */
} mk_part;

/* "I/N" (1 <= I <= N), or "slurm": the Slurm job array's task (mk_part_slurm). `opt` names
 * the option in messages. A usage error names what is wrong. */
mk_status mk_part_parse(const char *spec, const char *opt, mk_part *p);
/* The part of this Slurm array task: I = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN + 1 (task
 * ids may start at 0 or 1, or anywhere), N = SLURM_ARRAY_TASK_COUNT; the array must be a
 * contiguous range (--array=1-N or 0-(N-1), any %limit). */
mk_status mk_part_slurm(mk_part *p);

/* Split shards size[ns] between n parts, balancing bytes: largest shard first, each to the
 * part with the fewest bytes so far (ties: the lower part). part_of[ns] gets 0..n-1. */
void mk_parts_split(const uint64_t *size, size_t ns, unsigned n, uint32_t *part_of);

/* OUT.tmp for OUT ("out/" -> "out.tmp"), as the atomic output names it. Allocates. */
char *mk_parts_tmp_path(const char *out);
/* dir/.mergekit-c-part-0000I-of-0000N.EXT. Allocates. */
char *mk_part_file(const char *dir, mk_part p, const char *ext);

typedef struct mk_parts_manifest {
    char *command;  /* "merge" or "quantize": which command finalize replays */
    char *plan;     /* the plan's hash (hex) */
    unsigned n;     /* parts */
    char *cwd;      /* where the command ran (relative paths in its arguments) */
    int argc;
    char **argv;    /* the command line, --part removed; argv[0] is the command */
    char *self;     /* finalize: the absolute path of the OUT.tmp it was read from (not recorded) */
    char *file;     /* an output that is one file: its name in OUT.tmp, whose byte regions the records
                     * list (no shard files); NULL for a folder of shards */
} mk_parts_manifest;

/* argv without --part/--parts (and their values), --resume, and -q/-v/--json (finalize's own
 * say), as the manifest records it: copies into m (command, argc, argv). */
mk_status mk_parts_manifest_argv(mk_parts_manifest *m, const char *command, int argc, char **argv);
mk_status mk_parts_manifest_load(const char *tmp, mk_parts_manifest *m);
/* The manifest's text (hostile: bounded, checked); `what` names it in messages. */
mk_status mk_parts_manifest_parse(const char *text, size_t len, const char *what, mk_parts_manifest *m);
void mk_parts_manifest_free(mk_parts_manifest *m);

/* Create OUT.tmp (`tmp`) holding the manifest m, or join the one there, which must be of the
 * same plan and split; then hold OUT.tmp shared (finalize waits) and part p exclusively (the
 * same part twice at once is refused). locks[2] get the descriptors (mk_parts_release). */
mk_status mk_parts_join(const char *tmp, const mk_parts_manifest *m, mk_part p, int locks[2]);
void mk_parts_release(int locks[2]);
/* finalize of a one-file output: OUT.tmp held alone (refused while a part writes); *fd gets
 * the lock's descriptor. */
mk_status mk_parts_hold(const char *tmp, int *fd);
/* A run without --part starts OUT.tmp afresh: refused when OUT.tmp holds parts. */
mk_status mk_parts_refuse_plain(const char *out);

/* Part p already complete for `plan`: its record is there, of this plan, and every shard it
 * lists is there with its size (one-file outputs: the file is there) (a rerun skips it). */
bool mk_parts_complete(const char *tmp, mk_part p, const char *plan);
/* The plan's hash for parts: `what` (the command's options, recipe, ...) and the output tensors'
 * names, dtypes and shapes. Allocated hex. */
char *mk_parts_plan_hash(const char *what, size_t len, const mk_tensor_info *t, size_t n);

/* Input files hashed by the parts (each hashes its share, so finalize reads no input whole):
 * name = the file's path as the command names it, hash. */
typedef struct mk_parts_inputs {
    size_t n, cap;
    mk_out_file *f;
} mk_parts_inputs;
void mk_parts_inputs_free(mk_parts_inputs *in);
/* The recorded hash of input file `path`, or NULL. */
const char *mk_parts_inputs_find(const mk_parts_inputs *in, const char *path);

/* The completion record of part p: its shards f[n] (name, size, hash) and the input files it
 * hashed in[n_in] (name = path). Written last. */
mk_status mk_parts_record(const char *tmp, mk_part p, const char *plan, const mk_out_file *f, size_t n, const mk_out_file *in,
                          size_t n_in);

/* finalize: every part's record against the plan m and its shards (name[ns], size[ns],
 * part_of[ns] from mk_parts_split): refused, naming the parts, when one is missing, was made
 * by another plan or split, or lists other shards; each shard file must be there with its
 * size (one-file outputs, m->file: the caller checks the file). Fills adopt[ns] (name borrowed from name[], size, hash from the records) and `in` with
 * the input hashes the records carry. */
mk_status mk_parts_check(const char *tmp, const mk_parts_manifest *m, char *const *name, const uint64_t *size,
                         const uint32_t *part_of, size_t ns, mk_out_file *adopt, mk_parts_inputs *in);
/* A record's input hashes appended to `in` (hostile input: bounded, checked). */
mk_status mk_parts_record_inputs(const char *text, size_t len, const char *what, mk_parts_inputs *in);
/* One record's text for part i (mk_parts_check's step; hostile input): *other when it is of
 * another plan or split or lists shards the plan does not give part i; else adopt[] gets
 * part i's shards. MK_ERR_FORMAT when malformed. */
mk_status mk_parts_record_parse(const char *text, size_t len, const char *what, const mk_parts_manifest *m, unsigned i,
                                char *const *name, const uint64_t *size, const uint32_t *part_of, size_t ns, mk_out_file *adopt,
                                bool *other);
/* Remove the manifest, records, journals and locks (finalize, just before the rename). */
mk_status mk_parts_cleanup(const char *tmp);

#endif
