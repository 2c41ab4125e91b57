/* cmd_finalize.c - `mergekit-c finalize OUT`, and what merge and quantize share for split
 * outputs: --part/--parts, the manifest, --dry-run's split table, and (make MPI=1) the parts
 * that mpirun's ranks write and rank 0 finalizes.
 *
 * finalize reads OUT.tmp's manifest (formats/parts.h), goes to the directory the parts ran in
 * and replays the recorded command in its finalize mode: the same plan is built, every part's
 * record is checked against it, the index and side files are written and OUT.tmp is renamed
 * to OUT. Nothing is removed when it refuses.
 */
#include "cli.h"

#include "../core/mk_io.h"
#include "../formats/output.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef MK_MPI
#include <mpi.h>

static int mpi_rank, mpi_size = 1;

static void mpi_end(void)
{
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}

static void mpi_start(void)
{
    /* only under a launcher (mpirun sets these): a plain run never starts MPI */
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK") && !getenv("PMI_SIZE")) return;
    int init = 0;
    MPI_Initialized(&init);
    if (!init) {
        MPI_Init(NULL, NULL);
        atexit(mpi_end);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &mpi_size);
}
#endif

mk_status mk_cli_parts_resolve(mk_cli_parts *x, bool dry_run, bool mpi)
{
    memset(&x->p, 0, sizeof x->p);
    x->mpi = false;
    if (x->parts && (x->parts < 1 || x->parts > (long)MK_PARTS_MAX))
        return mk_error(MK_ERR_USAGE, "--parts %ld: expected 1 to %u", x->parts, MK_PARTS_MAX);
    if (x->parts && !dry_run)
        return mk_error(MK_ERR_USAGE, "--parts %ld prints the split with --dry-run; run each part with --part I/%ld", x->parts,
                        x->parts);
    if (x->parts && x->part) return mk_error(MK_ERR_USAGE, "--parts goes with --dry-run alone; not with --part");
    if (x->part) return mk_part_parse(x->part, "--part", &x->p);
    (void)mpi;
#ifdef MK_MPI
    if (mpi) {
        mpi_start();
        if (mpi_size > 1) {
            x->p.i = (unsigned)mpi_rank + 1;
            x->p.n = (unsigned)mpi_size;
            x->mpi = true;
        }
    }
#endif
    return MK_OK;
}

mk_status mk_cli_parts_manifest(mk_parts_manifest *m, const char *command, int argc, char **argv, const char *plan, unsigned n)
{
    memset(m, 0, sizeof *m);
    MK_TRY(mk_parts_manifest_argv(m, command, argc, argv));
    m->plan = mk_strdup(plan);
    m->cwd = getcwd(NULL, 0);
    m->n = n;
    if (!m->plan || !m->cwd) return mk_error(MK_ERR_IO, "cannot record the working directory: %s", strerror(errno));
    return MK_OK;
}

void mk_cli_parts_hash_inputs(mk_buf *b, const mk_source *src)
{
    for (size_t f = 0; f < src->n_files; f++) {
        uint64_t size = 0;
        mk_rfile rf;
        if (mk_rfile_open(&rf, src->files[f]) == MK_OK) {
            size = rf.size;
            mk_rfile_close(&rf);
        }
        mk_buf_printf(b, "|%llu", (unsigned long long)size);
    }
}

void mk_cli_parts_print(const struct mk_output_split *sp, unsigned n, bool json, const char *unit)
{
    uint64_t total = 0;
    char a[32];
    for (size_t s = 0; s < sp->n_shards; s++) total += sp->size[s];
    mk_buf b = {0};
    if (json) mk_buf_printf(&b, "{\"%ss\": %zu, \"bytes\": %llu, \"parts\": [", unit, sp->n_shards, (unsigned long long)total);
    else mk_buf_printf(&b, "split: %zu %s(s), %s, into %u part(s), bytes balanced\n", sp->n_shards, unit, mk_fmt_bytes(total, a), n);
    for (unsigned i = 0; i < n; i++) {
        uint64_t bytes = 0;
        size_t cnt = 0;
        for (size_t s = 0; s < sp->n_shards; s++)
            if (sp->part_of[s] == i) bytes += sp->size[s], cnt++;
        if (json) mk_buf_printf(&b, "%s\n  {\"part\": %u, \"bytes\": %llu, \"%ss\": [", i ? "," : "", i + 1, (unsigned long long)bytes, unit);
        else mk_buf_printf(&b, "  part %u/%u: %zu %s(s), %s%s", i + 1, n, cnt, unit, mk_fmt_bytes(bytes, a), cnt ? ":" : " (nothing to write)");
        bool first = true;
        for (size_t s = 0; s < sp->n_shards; s++) {
            if (sp->part_of[s] != i) continue;
            if (json) {
                mk_buf_puts(&b, first ? "" : ", ");
                mk_buf_json_str(&b, sp->names[s]);
            } else {
                mk_buf_printf(&b, " %s", sp->names[s]);
            }
            first = false;
        }
        mk_buf_puts(&b, json ? "]}" : "\n");
    }
    if (json) mk_buf_puts(&b, "\n]}\n");
    if (!b.failed) fputs(b.data, stdout);
    mk_buf_free(&b);
}

/* Replay the manifest's command in its finalize mode; extra[n_extra] are appended (-q, -v, --json). */
static int finalize_out(const char *out, char **extra, int n_extra)
{
    char *tmp = mk_parts_tmp_path(out);
    if (!tmp) return mk_cli_fail(MK_ERR_NOMEM);
    mk_parts_manifest m = {0};
    mk_status s = MK_OK;
    if (!mk_is_dir(tmp))
        s = mk_error(mk_path_exists(out) ? MK_ERR_EXISTS : MK_ERR_USAGE,
                     mk_path_exists(out) ? "%s: no parts to finalize (%s is absent; was it finalized already?)"
                                         : "%s: no parts to finalize (%s is absent; run the parts with --part I/N first)",
                     out, tmp);
    if (s == MK_OK) s = mk_parts_manifest_load(tmp, &m);
    if (s == MK_ERR_IO && !mk_path_exists(tmp)) s = mk_error(s, "%s: no parts to finalize", out);
    else if (s != MK_OK && s != MK_ERR_USAGE && s != MK_ERR_EXISTS)
        s = mk_error_prefix(s, "%s: not the output of parts (--part)", tmp);
    if (s == MK_OK && !(m.self = mk_path_absolute(tmp))) s = MK_ERR_NOMEM;
    char *here = getcwd(NULL, 0);
    if (s == MK_OK && (!here || strcmp(here, m.cwd) != 0) && chdir(m.cwd) != 0)
        s = mk_error(MK_ERR_IO, "%s: the parts ran in %s, which cannot be entered: %s", tmp, m.cwd, strerror(errno));
    char **argv = s == MK_OK ? mk_calloc((size_t)(m.argc + n_extra + 1), sizeof *argv) : NULL;
    if (s == MK_OK && !argv) s = MK_ERR_NOMEM;
    int rc;
    if (s != MK_OK) {
        rc = mk_cli_fail(s);
    } else {
        int argc = 0;
        for (int k = 0; k < m.argc; k++) argv[argc++] = m.argv[k];
        for (int k = 0; k < n_extra; k++) argv[argc++] = extra[k];
        if (strcmp(m.command, "merge") == 0) rc = mk_cmd_merge_finalize(argc, argv, &m);
        else if (strcmp(m.command, "quantize") == 0) rc = mk_cmd_quantize_finalize(argc, argv, &m);
        else if (strcmp(m.command, "convert") == 0) rc = mk_cmd_convert_finalize(argc, argv, &m);
        else rc = mk_cli_fail(mk_error(MK_ERR_FORMAT, "%s: parts of an unknown command '%s'", tmp, m.command));
    }
    if (here && m.cwd && strcmp(here, m.cwd) != 0 && chdir(here) != 0) mk_warn("cannot return to %s", here);
    free(here);
    free(argv);
    mk_parts_manifest_free(&m);
    free(tmp);
    return rc;
}

/* The common options given to finalize, passed on to the replayed command. */
static int common_args(const mk_common *c, char **extra)
{
    static char q[] = "-q", v[] = "-v", j[] = "--json";
    int n = 0;
    if (c->quiet) extra[n++] = q;
    for (int k = 0; k < c->verbose && k < 2; k++) extra[n++] = v;
    if (c->json) extra[n++] = j;
    return n;
}

int mk_cli_parts_after(const mk_cli_parts *x, int rc, const char *out, const mk_common *c)
{
    if (!x->mpi) return rc;
#ifdef MK_MPI
    enum { MSG = 512 };
    char msg[MSG] = "";
    if (rc) snprintf(msg, sizeof msg, "%s", mk_errmsg()[0] ? mk_errmsg() : "failed");
    int *rcs = mpi_rank == 0 ? calloc((size_t)mpi_size, sizeof *rcs) : NULL;
    char *msgs = mpi_rank == 0 ? calloc((size_t)mpi_size, MSG) : NULL;
    if (mpi_rank == 0 && (!rcs || !msgs)) MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Gather(&rc, 1, MPI_INT, rcs, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Gather(msg, MSG, MPI_CHAR, msgs, MSG, MPI_CHAR, 0, MPI_COMM_WORLD);
    int job = 0;
    if (mpi_rank == 0) {
        for (int r = 0; r < mpi_size; r++)
            if (rcs[r]) {
                msgs[(size_t)r * MSG + MSG - 1] = 0;
                fprintf(stderr, "mergekit-c: error: part %d/%d (rank %d) failed: %s\n", r + 1, mpi_size, r, msgs + (size_t)r * MSG);
                job = 1;
            }
        if (job) fprintf(stderr, "mergekit-c: rerun the same mpirun command (merge: --resume is accepted): finished parts are kept\n");
        else {
            char *extra[4], *tmp = mk_parts_tmp_path(out);
            /* every rank found OUT complete (--resume after a finished job): nothing to finalize */
            if (tmp && !mk_path_exists(tmp) && mk_path_exists(out)) job = 0;
            else job = finalize_out(out, extra, common_args(c, extra));
            free(tmp);
        }
    }
    free(rcs);
    free(msgs);
    MPI_Bcast(&job, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return job;
#else
    (void)out;
    (void)c;
    return rc;
#endif
}

int mk_cmd_finalize(int argc, char **argv)
{
    mk_common c = {0};
    const mk_opt opts[] = {MK_COMMON_OPTS(c), {0}};
    const mk_cmd_spec spec = {
        "finalize", "OUT [options]", "Finish an output written in parts (--part I/N): check every part, write the index and side files, rename OUT.tmp to OUT.",
        "Every part's completion record in OUT.tmp must be there and of the plan the manifest records\n"
        "(the recipe or input, the options, the number of parts); otherwise nothing is changed and the\n"
        "parts to rerun are named. The recorded command is replayed from the directory the parts ran\n"
        "in: the inputs are read again for the side files and the input hashes of the provenance\n"
        "record, not for the tensors. A GGUF file written in parts (convert, or a merge to OUT.gguf) is\n"
        "checked (every part's record, its size and header) and renamed from OUT.gguf.tmp/ into place.\n"
        "The result is the same bytes as one process writing OUT.\n"
        "See docs/cluster.md (Slurm job arrays, mpirun).",
        opts, 1, 1, 0};
    char *pos[1];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    char *extra[4];
    return finalize_out(pos[0], extra, common_args(&c, extra));
}
