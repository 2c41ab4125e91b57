/* cmd_pack.c - the .mkz container commands:
 *   pack IN OUT.mkz     a model folder (or one .safetensors file) into one container
 *                       (--base BASE: tensors matching BASE's stored as deltas against it)
 *   unpack IN.mkz OUT   every file back, byte for byte, checked as it is written
 *   verify IN.mkz       every block, tensor, file and index checksum
 * A delta container is read with its base: --base, else $MK_DELTA_BASE, else the path it
 * records (relative to the container's folder).
 * Outputs are atomic (OUT.tmp, renamed when complete); a damaged container is reported
 * in one line naming the tensor or structure, exit 1, and nothing is written.
 */
#include "cli.h"

#include "../core/mk_io.h"
#include "../core/mk_hub.h"
#include "../formats/mkz.h"
#include "../formats/model.h"
#include "../formats/safetensors.h"
#include "../formats/torchbin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double ratio(uint64_t raw, uint64_t stored) { return stored ? (double)raw / (double)stored : 0.0; }

/* {"k1": "path1", "k2": "path2", <rest>} on stdout, the paths JSON-escaped. */
static void print_json(const char *k1, const char *v1, const char *k2, const char *v2, const char *rest)
{
    mk_buf b = {0};
    mk_buf_printf(&b, "{\"%s\": ", k1);
    mk_buf_json_str(&b, v1);
    if (k2) {
        mk_buf_printf(&b, ", \"%s\": ", k2);
        mk_buf_json_str(&b, v2);
    }
    mk_buf_printf(&b, ", %s}\n", rest);
    if (!b.failed) fputs(b.data, stdout);
    mk_buf_free(&b);
}

/* Path `to` as seen from folder `from` (both absolute, normalised): "../x/y". */
static char *relative_path(const char *to, const char *from)
{
    size_t i = 0, common = 0;
    while (to[i] && to[i] == from[i]) {
        if (to[i] == '/') common = i;
        i++;
    }
    if (!from[i] && (to[i] == '/' || !to[i])) common = i; /* from is a prefix folder of to */
    if (common == 0 && from[1]) return mk_strdup(to);       /* only "/" in common: keep it absolute */
    mk_buf b = {0};
    for (const char *p = from + common; *p; p++)
        if (*p == '/') mk_buf_puts(&b, "../");
    mk_buf_puts(&b, to[common] == '/' ? to + common + 1 : to + common);
    if (b.len == 0) mk_buf_puts(&b, ".");
    char *r = b.failed ? NULL : mk_strdup(b.data);
    mk_buf_free(&b);
    return r;
}

/* The base to pack against (a local path or a Hub id) and its path relative to OUT's folder. */
static mk_status open_pack_base(const char *base, const char *out, mk_source **src, char **hint)
{
    char *local = NULL, *abs = NULL, *od = NULL, *dir = mk_path_dirname(out);
    MK_TRY(mk_hub_resolve(base, NULL, &local, NULL));
    mk_status s = mk_model_open(local, src);
    if (s == MK_OK && (!dir || !(abs = mk_path_absolute(local)) || !(od = mk_path_absolute(dir)))) s = MK_ERR_IO;
    if (s == MK_OK && !(*hint = relative_path(abs, od))) s = MK_ERR_NOMEM;
    free(local);
    free(abs);
    free(od);
    free(dir);
    return s;
}

/* What pack did: --json on stdout, a line on stderr. */
static void print_packed(const mk_common *c, const char *in, const char *out, const mk_mkz_stats *st, const char *hint,
                         double el, long level)
{
    char a[32], b[32], rest[600], dl[400] = "";
    mk_buf hj = {0};
    if (hint) {
        mk_buf_json_str(&hj, hint);
        snprintf(dl, sizeof dl, ", %zu of them as deltas against %s", st->deltas, hint);
    }
    snprintf(rest, sizeof rest,
             "\"files\": %zu, \"tensors\": %zu, \"bytes\": %llu, \"stored_bytes\": %llu, \"ratio\": %.4f, "
             "\"seconds\": %.3f, \"level\": %ld, \"base\": %s, \"deltas\": %zu",
             st->files, st->tensors, (unsigned long long)st->raw_bytes, (unsigned long long)st->container_bytes,
             ratio(st->raw_bytes, st->container_bytes), el, level, hint && !hj.failed ? hj.data : "null", st->deltas);
    mk_buf_free(&hj);
    if (c->json) print_json("input", in, "output", out, rest);
    if (!c->quiet)
        fprintf(stderr, "mergekit-c: packed %s: %zu files, %zu tensors%s, %s -> %s (%.3fx) in %.1f s\n", out, st->files,
                st->tensors, dl, mk_fmt_bytes(st->raw_bytes, a), mk_fmt_bytes(st->container_bytes, b),
                ratio(st->raw_bytes, st->container_bytes), el);
}

int mk_cmd_pack(int argc, char **argv)
{
    mk_common c = {0};
    long level = MK_MKZ_LEVEL_DEFAULT;
    bool force = false;
    const char *base = NULL;
    const mk_opt opts[] = {
        {"base", 'b', MK_OPT_STR, &base, "BASE", "store tensors that match BASE's (name, dtype, shape) as deltas against them; reading the container then needs BASE", NULL},
        {"level", 'l', MK_OPT_INT, &level, "N", "zstd level 1..22; higher levels also try LZ matching on the exponent planes: much slower, rarely smaller", "1"},
        {"force", 'f', MK_OPT_FLAG, &force, NULL, "replace OUT if it exists (only once the new one is complete)", NULL},
        MK_COMMON_OPTS(c),
        MK_HUB_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {
        "pack", "IN OUT.mkz [options]",
        "Pack a model folder (or one .safetensors file) into a lossless .mkz container.",
        "Every regular file of the folder is stored (safetensors files as their header plus their\n"
        "tensors, split into byte planes and compressed with zstd in independent blocks), so\n"
        "`unpack` restores the folder byte for byte. Every command reads .mkz inputs directly.\n"
        "With --base, each block of a matching tensor is stored as the smallest of its bytes, their\n"
        "XOR with the base's and their difference from the base's; the container records BASE's\n"
        "path (relative to OUT's folder) and the XXH3-128 of every base tensor used. Readers find\n"
        "the base by --base, else $MK_DELTA_BASE, else that path, and refuse a different base.",
        opts, 2, 2, 0x1};
    char *pos[2];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    if (level < 1 || level > MK_MKZ_LEVEL_MAX)
        return mk_cli_fail(mk_error(MK_ERR_USAGE, "--level %ld is out of range (1..%d)", level, MK_MKZ_LEVEL_MAX));
    if (!mk_path_exists(pos[0])) return mk_cli_fail(mk_error(MK_ERR_IO, "%s: no such file or folder", pos[0]));
    /* the container restores safetensors files byte for byte; a pickle is not one */
    if (!mk_safetensors_probe(pos[0]) && mk_torchbin_probe(pos[0]))
        return mk_cli_fail(mk_error(MK_ERR_UNSUPPORTED,
                                    "%s: a PyTorch checkpoint; pack stores safetensors models (write one first, e.g. "
                                    "with a passthrough merge)",
                                    pos[0]));
    mk_status s = mk_cli_check_output(pos[1], (const char *const *)&pos[0], 1);
    if (s != MK_OK) return mk_cli_fail(s);
    mk_source *bsrc = NULL;
    char *hint = NULL;
    if (base && (s = open_pack_base(base, pos[1], &bsrc, &hint)) != MK_OK) return mk_cli_fail(s);
    mk_outdir od;
    s = mk_outdir_begin(&od, pos[1], true, force, false);
    if (s != MK_OK) {
        mk_source_close(bsrc);
        free(hint);
        return mk_cli_fail(s);
    }
    mk_progress prog;
    mk_progress_init(&prog, "pack", &c);
    mk_mkz_pack_opts po = {(int)level, bsrc, hint, mk_progress_cb, &prog};
    mk_mkz_stats st;
    double t0 = mk_now();
    s = mk_mkz_pack(pos[0], od.tmp_path, &po, &st);
    double el = mk_now() - t0;
    mk_progress_end(&prog);
    if (s == MK_OK) s = mk_outdir_commit(&od);
    else mk_outdir_abort(&od);
    mk_source_close(bsrc);
    if (s != MK_OK) {
        free(hint);
        return mk_cli_fail(s);
    }
    print_packed(&c, pos[0], pos[1], &st, hint, el, level);
    free(hint);
    return 0;
}

static mk_status open_container(const char *path, const char *base, mk_source **src)
{
    if (!mk_path_exists(path)) return mk_error(MK_ERR_IO, "%s: no such file", path);
    if (!mk_is_file(path)) return mk_error(MK_ERR_USAGE, "%s: not a .mkz container (a folder)", path);
    if (base && !mk_path_exists(base)) return mk_error(MK_ERR_IO, "%s: no such file or folder (--base)", base);
    return mk_model_open_mkz(path, base, src);
}

#define BASE_OPT(v) {"base", 'b', MK_OPT_STR, &(v), "BASE", "the base of a delta container (default: $MK_DELTA_BASE, else the path it records)", NULL}

int mk_cmd_unpack(int argc, char **argv)
{
    mk_common c = {0};
    bool force = false;
    const char *base = NULL;
    const mk_opt opts[] = {
        {"force", 'f', MK_OPT_FLAG, &force, NULL, "replace OUT if it exists (only once the new one is complete)", NULL},
        BASE_OPT(base),
        MK_COMMON_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {"unpack", "IN.mkz OUT [options]",
                              "Restore the files of a .mkz container into folder OUT, byte for byte.",
                              "Every block, tensor and file checksum is checked while writing; on any mismatch\n"
                              "nothing is left behind (OUT is written as OUT.tmp and renamed when complete).",
                              opts, 2, 2, 0x1};
    char *pos[2];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    mk_source *src = NULL;
    mk_status s = open_container(pos[0], base, &src);
    if (s == MK_OK) s = mk_cli_check_output(pos[1], (const char *const *)&pos[0], 1);
    mk_outdir od;
    bool began = false;
    if (s == MK_OK) began = (s = mk_outdir_begin(&od, pos[1], false, force, false)) == MK_OK;
    mk_progress prog;
    mk_progress_init(&prog, "unpack", &c);
    double t0 = mk_now();
    if (s == MK_OK) s = mk_mkz_unpack(src, od.tmp_path, mk_progress_cb, &prog);
    mk_progress_end(&prog);
    if (began) {
        if (s == MK_OK) s = mk_outdir_commit(&od);
        else mk_outdir_abort(&od);
    }
    if (s == MK_OK) {
        const mk_mkz_index *ix = mk_mkz_source_index(src);
        uint64_t bytes = 0;
        for (size_t f = 0; f < ix->n_files; f++) bytes += ix->files[f].size;
        char a[32], rest[200];
        snprintf(rest, sizeof rest, "\"files\": %zu, \"bytes\": %llu, \"seconds\": %.3f", ix->n_files,
                 (unsigned long long)bytes, mk_now() - t0);
        if (c.json) print_json("input", pos[0], "output", pos[1], rest);
        if (!c.quiet)
            fprintf(stderr, "mergekit-c: unpacked %s: %zu files, %s in %.1f s\n", pos[1], ix->n_files,
                    mk_fmt_bytes(bytes, a), mk_now() - t0);
    }
    mk_source_close(src);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}

int mk_cmd_verify(int argc, char **argv)
{
    mk_common c = {0};
    const char *base = NULL;
    const mk_opt opts[] = {BASE_OPT(base), MK_COMMON_OPTS(c), {0}};
    const mk_cmd_spec spec = {"verify", "IN.mkz [options]",
                              "Check every checksum of a .mkz container: header, index, every block, tensor and file.",
                              "A damaged container is reported in one line naming the tensor or structure (exit 1).",
                              opts, 1, 1, 0x1};
    char *pos[1];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, true, &rc)) return rc;
    mk_source *src = NULL;
    mk_status s = open_container(pos[0], base, &src);
    mk_progress prog;
    mk_progress_init(&prog, "verify", &c);
    double t0 = mk_now();
    if (s == MK_OK) s = mk_mkz_verify(src, mk_progress_cb, &prog);
    mk_progress_end(&prog);
    if (s == MK_OK) {
        const mk_mkz_index *ix = mk_mkz_source_index(src);
        uint64_t bytes = 0;
        for (size_t f = 0; f < ix->n_files; f++) bytes += ix->files[f].size;
        char a[32], b[32], rest[300];
        snprintf(rest, sizeof rest,
                 "\"ok\": true, \"files\": %zu, \"tensors\": %zu, \"blocks\": %zu, \"bytes\": %llu, "
                 "\"stored_bytes\": %llu, \"seconds\": %.3f",
                 ix->n_files, ix->n_model, ix->n_blocks, (unsigned long long)bytes, (unsigned long long)ix->file_size,
                 mk_now() - t0);
        if (c.json) print_json("path", pos[0], NULL, NULL, rest);
        else
            printf("%s: ok: %zu files, %zu tensors, %zu blocks, %s stored in %s (%.3fx)\n", pos[0], ix->n_files, ix->n_model,
                   ix->n_blocks, mk_fmt_bytes(bytes, a), mk_fmt_bytes(ix->file_size, b), ratio(bytes, ix->file_size));
    }
    mk_source_close(src);
    return s == MK_OK ? 0 : mk_cli_fail(s);
}
