/* parts.c - see parts.h */
#include "parts.h"

#include "../core/mk_hash.h"
#include "../core/mk_io.h"
#include "../core/mk_json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define RECORD_CAP (64u << 20)

/* A decimal integer in [lo, hi], the whole string. */
static bool parse_uint(const char *s, size_t len, unsigned long lo, unsigned long hi, unsigned long *v)
{
    if (len == 0 || len > 9) return false;
    unsigned long x = 0;
    for (size_t k = 0; k < len; k++) {
        if (s[k] < '0' || s[k] > '9') return false;
        x = x * 10 + (unsigned long)(s[k] - '0');
    }
    if (x < lo || x > hi) return false;
    *v = x;
    return true;
}

mk_status mk_part_parse(const char *spec, const char *opt, mk_part *p)
{
    memset(p, 0, sizeof *p);
    if (strcmp(spec, "slurm") == 0) return mk_part_slurm(p);
    const char *slash = strchr(spec, '/');
    unsigned long i, n;
    if (!slash || !parse_uint(slash + 1, strlen(slash + 1), 1, MK_PARTS_MAX, &n) ||
        !parse_uint(spec, (size_t)(slash - spec), 0, MK_PARTS_MAX, &i))
        return mk_error(MK_ERR_USAGE, "%s '%s': expected I/N (part I of N, 1 <= I <= N <= %u) or 'slurm'", opt, spec,
                        MK_PARTS_MAX);
    if (i < 1 || i > n)
        return mk_error(MK_ERR_USAGE, "%s %s: parts are numbered 1 to %lu (part %lu does not exist)", opt, spec, n, i);
    p->i = (unsigned)i;
    p->n = (unsigned)n;
    return MK_OK;
}

static mk_status slurm_var(const char *name, unsigned long *v)
{
    const char *s = getenv(name);
    if (!s) return mk_error(MK_ERR_USAGE, "--part slurm: %s is not set (run it as a task of a job array: sbatch --array=1-N)", name);
    if (!parse_uint(s, strlen(s), 0, 999999999ul, v)) return mk_error(MK_ERR_USAGE, "--part slurm: %s='%s' is not a task number", name, s);
    return MK_OK;
}

mk_status mk_part_slurm(mk_part *p)
{
    unsigned long id, lo, count, hi;
    MK_TRY(slurm_var("SLURM_ARRAY_TASK_ID", &id));
    MK_TRY(slurm_var("SLURM_ARRAY_TASK_MIN", &lo));
    MK_TRY(slurm_var("SLURM_ARRAY_TASK_COUNT", &count));
    MK_TRY(slurm_var("SLURM_ARRAY_TASK_MAX", &hi));
    /* a stepped or listed array (--array=1,3,5 or 0-9:2) would leave parts without a task */
    if (count < 1 || count > MK_PARTS_MAX || hi < lo || hi - lo + 1 != count || id < lo || id > hi)
        return mk_error(MK_ERR_USAGE,
                        "--part slurm: the job array must be one contiguous range of task ids (--array=1-N or 0-(N-1)); "
                        "got ids %lu..%lu, %lu task(s), this one %lu",
                        lo, hi, count, id);
    p->i = (unsigned)(id - lo + 1);
    p->n = (unsigned)count;
    return MK_OK;
}

void mk_parts_split(const uint64_t *size, size_t ns, unsigned n, uint32_t *part_of)
{
    uint64_t load[64], *lp = n <= 64 ? load : mk_calloc(n, sizeof *lp);
    size_t *order = mk_calloc(ns ? ns : 1, sizeof *order);
    if (!lp || !order) { /* no memory: round robin is still a valid split */
        for (size_t s = 0; s < ns; s++) part_of[s] = (uint32_t)(s % n);
        if (lp != load) free(lp);
        free(order);
        return;
    }
    memset(lp, 0, n * sizeof *lp);
    /* largest first (stable: equal sizes in shard order), insertion sort: shard counts are small */
    for (size_t s = 0; s < ns; s++) {
        size_t k = s;
        while (k > 0 && size[order[k - 1]] < size[s]) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = s;
    }
    for (size_t q = 0; q < ns; q++) {
        unsigned best = 0;
        for (unsigned i = 1; i < n; i++)
            if (lp[i] < lp[best]) best = i;
        part_of[order[q]] = best;
        lp[best] += size[order[q]];
    }
    if (lp != load) free(lp);
    free(order);
}

char *mk_parts_tmp_path(const char *out)
{
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') n--;
    return mk_asprintf("%.*s.tmp", (int)n, out);
}

char *mk_part_file(const char *dir, mk_part p, const char *ext)
{
    return mk_asprintf("%s/.mergekit-c-part-%05u-of-%05u.%s", dir, p.i, p.n, ext);
}

/* ---- the manifest ------------------------------------------------------------------------ */

void mk_parts_manifest_free(mk_parts_manifest *m)
{
    if (!m) return;
    for (int k = 0; k < m->argc && m->argv; k++) free(m->argv[k]);
    free(m->argv);
    free(m->command);
    free(m->plan);
    free(m->cwd);
    free(m->self);
    free(m->file);
    memset(m, 0, sizeof *m);
}

static bool is_opt(const char *a, const char *name, bool *has_value)
{
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return false;
    if (a[n] == '=') *has_value = true;
    else if (a[n] == 0) *has_value = false;
    else return false;
    return true;
}

mk_status mk_parts_manifest_argv(mk_parts_manifest *m, const char *command, int argc, char **argv)
{
    m->command = mk_strdup(command);
    m->argv = mk_calloc((size_t)argc + 1, sizeof *m->argv);
    if (!m->command || !m->argv) return MK_ERR_NOMEM;
    m->argc = 0;
    for (int k = 0; k < argc; k++) {
        bool hv = false;
        if (k > 0 && (is_opt(argv[k], "--part", &hv) || is_opt(argv[k], "--parts", &hv))) {
            if (!hv) k++; /* its value */
            continue;
        }
        /* --resume is implied; how much finalize prints is finalize's own choice */
        static const char *const drop[] = {"--resume", "-q", "--quiet", "-v", "-vv", "--verbose", "--json", NULL};
        bool dropped = false;
        for (const char *const *d = drop; *d && k > 0 && !dropped; d++) dropped = strcmp(argv[k], *d) == 0;
        if (dropped) continue;
        if (!(m->argv[m->argc] = mk_strdup(argv[k]))) return MK_ERR_NOMEM;
        m->argc++;
    }
    return MK_OK;
}

static mk_status manifest_json(const mk_parts_manifest *m, mk_buf *b)
{
    mk_buf_puts(b, "{\n  \"command\": ");
    mk_buf_json_str(b, m->command);
    mk_buf_printf(b, ",\n  \"plan\": \"%s\",\n  \"parts\": %u,\n  \"cwd\": ", m->plan, m->n);
    mk_buf_json_str(b, m->cwd);
    if (m->file) {
        mk_buf_puts(b, ",\n  \"file\": ");
        mk_buf_json_str(b, m->file);
    }
    mk_buf_puts(b, ",\n  \"argv\": [");
    for (int k = 0; k < m->argc; k++) {
        mk_buf_puts(b, k ? ", " : "");
        mk_buf_json_str(b, m->argv[k]);
    }
    mk_buf_puts(b, "]\n}\n");
    return b->failed ? mk_error(MK_ERR_NOMEM, "out of memory writing the parts manifest") : MK_OK;
}

/* A string member of object `obj`, or NULL. */
static const char *json_str(const mk_json *j, uint32_t obj, const char *key)
{
    uint32_t v = mk_json_get(j, obj, key);
    return v && mk_json_at(j, v)->type == MK_JSON_STR && !mk_json_at(j, v)->has_nul ? mk_json_strv(j, v) : NULL;
}

/* An unsigned member of `obj` no larger than `max`; false when absent or not one. */
static bool json_uint(const mk_json *j, uint32_t obj, const char *key, uint64_t max, uint64_t *out)
{
    uint32_t v = mk_json_get(j, obj, key);
    if (!v || mk_json_at(j, v)->type != MK_JSON_NUM || !mk_json_at(j, v)->is_uint || mk_json_at(j, v)->u > max) return false;
    *out = mk_json_at(j, v)->u;
    return true;
}

static mk_status parse_json(const char *text, size_t len, const char *what, mk_json *j)
{
    mk_json_limits lim = {8, len / 2 + 16};
    MK_TRY(mk_json_parse(j, text, len, &lim, what));
    if (mk_json_at(j, 0)->type != MK_JSON_OBJ) {
        mk_json_free(j);
        return mk_error(MK_ERR_FORMAT, "%s: not a JSON object", what);
    }
    return MK_OK;
}

static mk_status load_json(const char *path, mk_json *j)
{
    char *text = NULL;
    size_t len = 0;
    MK_TRY(mk_read_file(path, RECORD_CAP, &text, &len));
    mk_status s = parse_json(text, len, path, j);
    free(text);
    return s;
}

mk_status mk_parts_manifest_load(const char *tmp, mk_parts_manifest *m)
{
    memset(m, 0, sizeof *m);
    char *path = mk_path_join(tmp, MK_PARTS_MANIFEST), *text = NULL;
    size_t len = 0;
    mk_status s = path ? mk_read_file(path, RECORD_CAP, &text, &len) : MK_ERR_NOMEM;
    if (s == MK_OK) s = mk_parts_manifest_parse(text, len, path, m);
    free(text);
    free(path);
    return s;
}

mk_status mk_parts_manifest_parse(const char *text, size_t len, const char *path, mk_parts_manifest *m)
{
    memset(m, 0, sizeof *m);
    mk_json j;
    MK_TRY(parse_json(text, len, path, &j));
    mk_status s = MK_OK;
    const char *cmd = json_str(&j, 0, "command"), *plan = json_str(&j, 0, "plan"), *cwd = json_str(&j, 0, "cwd");
    const char *file = json_str(&j, 0, "file");
    uint64_t n = 0;
    uint32_t av = mk_json_get(&j, 0, "argv");
    if (!cmd || !plan || strlen(plan) != 32 || !cwd || !json_uint(&j, 0, "parts", MK_PARTS_MAX, &n) || n < 1 || !av ||
        mk_json_at(&j, av)->type != MK_JSON_ARR || mk_json_at(&j, av)->count < 1 || mk_json_at(&j, av)->count > 4096)
        s = mk_error(MK_ERR_FORMAT, "%s: malformed parts manifest", path);
    /* a plain name in OUT.tmp, never one of the parts' own files */
    if (s == MK_OK && mk_json_get(&j, 0, "file") &&
        (!file || !file[0] || file[0] == '.' || strchr(file, '/') || strlen(file) > 255))
        s = mk_error(MK_ERR_FORMAT, "%s: malformed parts manifest (file)", path);
    if (s == MK_OK && file && !(m->file = mk_strdup(file))) s = MK_ERR_NOMEM;
    if (s == MK_OK) {
        m->command = mk_strdup(cmd);
        m->plan = mk_strdup(plan);
        m->cwd = mk_strdup(cwd);
        m->n = (unsigned)n;
        m->argv = mk_calloc(mk_json_at(&j, av)->count + 1, sizeof *m->argv);
        if (!m->command || !m->plan || !m->cwd || !m->argv) s = MK_ERR_NOMEM;
    }
    for (uint32_t c = s == MK_OK ? mk_json_at(&j, av)->first : 0; c && s == MK_OK; c = mk_json_at(&j, c)->next) {
        if (mk_json_at(&j, c)->type != MK_JSON_STR || mk_json_at(&j, c)->has_nul)
            s = mk_error(MK_ERR_FORMAT, "%s: malformed parts manifest (argv)", path);
        else if (!(m->argv[m->argc++] = mk_strdup(mk_json_strv(&j, c)))) s = MK_ERR_NOMEM;
    }
    mk_json_free(&j);
    if (s != MK_OK) mk_parts_manifest_free(m);
    return s;
}

/* ---- joining OUT.tmp --------------------------------------------------------------------- */

static mk_status lock_file(const char *path, int how, int *fd, const char *busy, const char *tmp)
{
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (*fd < 0) return mk_error(MK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (flock(*fd, how | LOCK_NB) != 0) {
        close(*fd);
        *fd = -1;
        return mk_error(MK_ERR_IO, "%s: %s", tmp, busy);
    }
    return MK_OK;
}

/* OUT.tmp made whole elsewhere (marker and manifest) and renamed into place, so a part never
 * sees it half made; losing the race to another part is fine. */
static mk_status create_tmp(const char *tmp, const mk_parts_manifest *m)
{
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    for (char *c = host; *c; c++)
        if (*c == '/') *c = '_';
    char *stage = mk_asprintf("%s.new-%s-%ld", tmp, host, (long)getpid());
    char *marker = stage ? mk_path_join(stage, MK_OUTDIR_MARKER) : NULL;
    char *man = stage ? mk_path_join(stage, MK_PARTS_MANIFEST) : NULL;
    mk_buf b = {0};
    mk_status s = stage && marker && man ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && mkdir(stage, 0755) != 0) s = mk_error(MK_ERR_IO, "%s: cannot create directory: %s", stage, strerror(errno));
    bool made = s == MK_OK;
    if (s == MK_OK) s = mk_write_file_atomic(marker, "", 0);
    if (s == MK_OK) s = manifest_json(m, &b);
    if (s == MK_OK) s = mk_write_file_atomic(man, b.data, b.len);
    if (s == MK_OK) s = mk_fsync_dir(stage);
    if (s == MK_OK && rename(stage, tmp) != 0) {
        if (errno != EEXIST && errno != ENOTEMPTY)
            s = mk_error(MK_ERR_IO, "%s: cannot rename into place: %s", tmp, strerror(errno));
    } else if (s == MK_OK) {
        made = false;
    }
    if (made) mk_rm_rf(stage);
    mk_buf_free(&b);
    free(stage);
    free(marker);
    free(man);
    return s;
}

mk_status mk_parts_join(const char *tmp, const mk_parts_manifest *m, mk_part p, int locks[2])
{
    locks[0] = locks[1] = -1;
    if (!mk_path_exists(tmp)) MK_TRY(create_tmp(tmp, m));
    char *marker = mk_path_join(tmp, MK_OUTDIR_MARKER), *man = mk_path_join(tmp, MK_PARTS_MANIFEST);
    char *lock = mk_part_file(tmp, p, "lock");
    mk_status s = marker && man && lock ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && (!mk_is_dir(tmp) || !mk_is_file(marker)))
        s = mk_error(MK_ERR_EXISTS, "%s: exists and was not made by mergekit-c; move it away first", tmp);
    if (s == MK_OK && !mk_is_file(man))
        s = mk_error(MK_ERR_EXISTS,
                     "%s: holds an interrupted single-process run, not parts; finish it with --resume (no --part) or remove it",
                     tmp);
    mk_parts_manifest have = {0};
    if (s == MK_OK) s = mk_parts_manifest_load(tmp, &have);
    if (s == MK_OK && (strcmp(have.plan, m->plan) != 0 || have.n != m->n || strcmp(have.command, m->command) != 0 ||
                       !have.file != !m->file || (m->file && strcmp(have.file, m->file) != 0)))
        s = mk_error(MK_ERR_MISMATCH,
                     "%s: holds the parts of another plan (%s into %u part(s), plan %.12s; this is %s into %u, plan %.12s): "
                     "finalize or remove it first",
                     tmp, have.command, have.n, have.plan, m->command, m->n, m->plan);
    mk_parts_manifest_free(&have);
    if (s == MK_OK) s = lock_file(marker, LOCK_SH, &locks[0], "finalize is running on this output", tmp);
    if (s == MK_OK) {
        char what[96];
        snprintf(what, sizeof what, "part %u/%u is already being written by another process", p.i, p.n);
        s = lock_file(lock, LOCK_EX, &locks[1], what, tmp);
    }
    if (s != MK_OK) mk_parts_release(locks);
    free(marker);
    free(man);
    free(lock);
    return s;
}

void mk_parts_release(int locks[2])
{
    for (int k = 0; k < 2; k++) {
        if (locks[k] >= 0) close(locks[k]);
        locks[k] = -1;
    }
}

mk_status mk_parts_hold(const char *tmp, int *fd)
{
    char *marker = mk_path_join(tmp, MK_OUTDIR_MARKER);
    mk_status s = marker ? lock_file(marker, LOCK_EX, fd, "a part is still writing it; finalize once every part has ended", tmp)
                         : MK_ERR_NOMEM;
    free(marker);
    return s;
}

mk_status mk_parts_refuse_plain(const char *out)
{
    char *tmp = mk_parts_tmp_path(out), *man = tmp ? mk_path_join(tmp, MK_PARTS_MANIFEST) : NULL;
    mk_status s = man ? MK_OK : MK_ERR_NOMEM;
    if (man && mk_is_file(man))
        s = mk_error(MK_ERR_EXISTS, "%s: holds the parts of a split run (--part); finish it with 'mergekit-c finalize %s', "
                                    "or remove it to start over", tmp, out);
    free(tmp);
    free(man);
    return s;
}

/* ---- records ------------------------------------------------------------------------------ */

void mk_parts_inputs_free(mk_parts_inputs *in)
{
    for (size_t k = 0; k < in->n; k++) free(in->f[k].name);
    free(in->f);
    memset(in, 0, sizeof *in);
}

const char *mk_parts_inputs_find(const mk_parts_inputs *in, const char *path)
{
    for (size_t k = 0; k < in->n; k++)
        if (strcmp(in->f[k].name, path) == 0) return in->f[k].hash;
    return NULL;
}

mk_status mk_parts_record_inputs(const char *text, size_t len, const char *what, mk_parts_inputs *in)
{
    mk_json j;
    MK_TRY(parse_json(text, len, what, &j));
    mk_status s = MK_OK;
    uint32_t arr = mk_json_get(&j, 0, "inputs");
    if (arr && (mk_json_at(&j, arr)->type != MK_JSON_ARR || mk_json_at(&j, arr)->count > (1u << 20)))
        s = mk_error(MK_ERR_FORMAT, "%s: malformed inputs list", what);
    for (uint32_t c = s == MK_OK && arr ? mk_json_at(&j, arr)->first : 0; c && s == MK_OK; c = mk_json_at(&j, c)->next) {
        const char *fn = json_str(&j, c, "file"), *hx = json_str(&j, c, "xxh128");
        if (!fn || !hx || strlen(hx) != 32) {
            s = mk_error(MK_ERR_FORMAT, "%s: malformed inputs entry", what);
            break;
        }
        if (in->n == in->cap) {
            size_t cap = in->cap ? in->cap * 2 : 16;
            mk_out_file *nf = mk_realloc_array(in->f, cap, sizeof *nf);
            if (!nf) {
                s = MK_ERR_NOMEM;
                break;
            }
            in->f = nf;
            in->cap = cap;
        }
        mk_out_file *f = &in->f[in->n];
        memset(f, 0, sizeof *f);
        if (!(f->name = mk_strdup(fn))) s = MK_ERR_NOMEM;
        else {
            memcpy(f->hash, hx, 33);
            in->n++;
        }
    }
    mk_json_free(&j);
    return s;
}

mk_status mk_parts_record(const char *tmp, mk_part p, const char *plan, const mk_out_file *f, size_t n, const mk_out_file *in,
                          size_t n_in)
{
    mk_buf b = {0};
    mk_buf_printf(&b, "{\n  \"part\": %u,\n  \"parts\": %u,\n  \"plan\": \"%s\",\n  \"shards\": [", p.i, p.n, plan);
    for (size_t k = 0; k < n; k++) {
        mk_buf_puts(&b, k ? ",\n    {\"name\": " : "\n    {\"name\": ");
        mk_buf_json_str(&b, f[k].name);
        mk_buf_printf(&b, ", \"size\": %llu, \"xxh128\": \"%s\"}", (unsigned long long)f[k].size, f[k].hash);
    }
    mk_buf_puts(&b, "\n  ],\n  \"inputs\": [");
    size_t listed = 0;
    for (size_t k = 0; k < n_in; k++) {
        if (!in[k].hash[0]) continue; /* not hashed here (a file the Hub's sha256 stands for) */
        mk_buf_puts(&b, listed++ ? ",\n    {\"file\": " : "\n    {\"file\": ");
        mk_buf_json_str(&b, in[k].name);
        mk_buf_printf(&b, ", \"xxh128\": \"%s\"}", in[k].hash);
    }
    mk_buf_puts(&b, listed ? "\n  ]\n}\n" : "]\n}\n");
    char *path = mk_part_file(tmp, p, "json");
    mk_status s = b.failed || !path ? MK_ERR_NOMEM : mk_write_file_atomic(path, b.data, b.len);
    if (s == MK_OK) s = mk_fsync_dir(tmp);
    free(path);
    mk_buf_free(&b);
    return s;
}

bool mk_parts_complete(const char *tmp, mk_part p, const char *plan)
{
    /* OUT.tmp must be this plan's (else joining it is refused, by name) */
    mk_parts_manifest man;
    if (!mk_path_exists(tmp) || mk_parts_manifest_load(tmp, &man) != MK_OK) {
        mk_error_clear();
        return false;
    }
    bool same = strcmp(man.plan, plan) == 0 && man.n == p.n;
    char *one = man.file ? mk_path_join(tmp, man.file) : NULL; /* a one-file output: its regions */
    bool regions = man.file != NULL;
    mk_parts_manifest_free(&man);
    if (regions && (!one || !same || !mk_is_file(one))) same = false;
    free(one);
    if (!same) return false;
    char *path = mk_part_file(tmp, p, "json");
    mk_json j;
    bool ok = path && mk_path_exists(path) && load_json(path, &j) == MK_OK;
    if (!ok) {
        mk_error_clear();
        free(path);
        return false;
    }
    uint64_t pi, pn;
    const char *pl = json_str(&j, 0, "plan");
    uint32_t sh = mk_json_get(&j, 0, "shards");
    ok = pl && strcmp(pl, plan) == 0 && json_uint(&j, 0, "part", MK_PARTS_MAX, &pi) && pi == p.i &&
         json_uint(&j, 0, "parts", MK_PARTS_MAX, &pn) && pn == p.n && sh && mk_json_at(&j, sh)->type == MK_JSON_ARR;
    for (uint32_t c = ok ? mk_json_at(&j, sh)->first : 0; c && ok; c = mk_json_at(&j, c)->next) {
        const char *nm = json_str(&j, c, "name");
        uint64_t sz;
        ok = nm && json_uint(&j, c, "size", UINT64_MAX, &sz);
        if (!ok || regions) continue;
        char *fp = !strchr(nm, '/') ? mk_path_join(tmp, nm) : NULL;
        struct stat st;
        ok = fp && stat(fp, &st) == 0 && (uint64_t)st.st_size == sz;
        free(fp);
    }
    mk_json_free(&j);
    free(path);
    return ok;
}

char *mk_parts_plan_hash(const char *what, size_t len, const mk_tensor_info *t, size_t n)
{
    mk_buf b = {0};
    mk_buf_put(&b, what, len);
    for (size_t i = 0; i < n; i++) {
        mk_buf_printf(&b, "|%s|%d|", t[i].name, (int)t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++) mk_buf_printf(&b, "%lld,", (long long)t[i].shape[d]);
    }
    char hex[33];
    mk_hash128_hex(mk_hash128_bytes(b.data ? b.data : "", b.len), hex);
    bool failed = b.failed;
    mk_buf_free(&b);
    return failed ? NULL : mk_strdup(hex);
}

/* Parts named in a list for one message: "2/5, 4/5". */
static void add_part(char *list, size_t cap, unsigned i, unsigned n, size_t *count)
{
    size_t len = strlen(list);
    if (len + 24 < cap) snprintf(list + len, cap - len, "%s%u/%u", *count ? ", " : "", i, n);
    (*count)++;
}

/* Record files of another split (a different N) left in OUT.tmp. */
static mk_status check_strays(const char *tmp, unsigned n)
{
    DIR *d = opendir(tmp);
    if (!d) return mk_error(MK_ERR_IO, "%s: cannot list: %s", tmp, strerror(errno));
    char list[256] = "";
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned i, pn;
        char tail[8] = "";
        if (sscanf(e->d_name, ".mergekit-c-part-%u-of-%u.%7s", &i, &pn, tail) == 3 && strcmp(tail, "json") == 0 && pn != n)
            add_part(list, sizeof list, i, pn, &count);
    }
    closedir(d);
    if (count)
        return mk_error(MK_ERR_MISMATCH, "%s: part%s %s belong%s to another split (this plan has %u parts); remove %s", tmp,
                        count > 1 ? "s" : "", list, count > 1 ? "" : "s", n, count > 1 ? "them" : "it");
    return MK_OK;
}

/* Part i's record: its shards must be exactly the plan's for part i (name and size). */
static mk_status check_record(const mk_json *j, const mk_parts_manifest *m, unsigned i, char *const *name,
                              const uint64_t *size, const uint32_t *part_of, size_t ns, mk_out_file *adopt, bool *other)
{
    uint64_t pi, pn;
    const char *plan = json_str(j, 0, "plan");
    uint32_t sh = mk_json_get(j, 0, "shards");
    *other = false;
    if (!plan || !json_uint(j, 0, "part", MK_PARTS_MAX, &pi) || !json_uint(j, 0, "parts", MK_PARTS_MAX, &pn) || !sh ||
        mk_json_at(j, sh)->type != MK_JSON_ARR)
        return MK_ERR_FORMAT;
    if (strcmp(plan, m->plan) != 0 || pi != i || pn != m->n) {
        *other = true;
        return MK_OK;
    }
    size_t want = 0, got = 0;
    for (size_t s = 0; s < ns; s++) want += part_of[s] == i - 1;
    for (uint32_t c = mk_json_at(j, sh)->first; c; c = mk_json_at(j, c)->next) {
        const char *nm = json_str(j, c, "name"), *hx = json_str(j, c, "xxh128");
        uint64_t sz;
        if (!nm || !hx || strlen(hx) != 32 || !json_uint(j, c, "size", UINT64_MAX, &sz)) return MK_ERR_FORMAT;
        size_t s = 0;
        while (s < ns && strcmp(name[s], nm) != 0) s++;
        if (s == ns || part_of[s] != i - 1 || size[s] != sz || adopt[s].name) {
            *other = true; /* a shard this plan does not give part i */
            return MK_OK;
        }
        adopt[s].name = name[s];
        adopt[s].size = sz;
        memcpy(adopt[s].hash, hx, 33);
        got++;
    }
    if (got != want) *other = true;
    return MK_OK;
}

mk_status mk_parts_record_parse(const char *text, size_t len, const char *what, const mk_parts_manifest *m, unsigned i,
                                char *const *name, const uint64_t *size, const uint32_t *part_of, size_t ns, mk_out_file *adopt,
                                bool *other)
{
    mk_json j;
    *other = false;
    MK_TRY(parse_json(text, len, what, &j));
    mk_status s = check_record(&j, m, i, name, size, part_of, ns, adopt, other);
    if (s == MK_ERR_FORMAT) s = mk_error(s, "%s: malformed completion record of part %u/%u", what, i, m->n);
    mk_json_free(&j);
    return s;
}

mk_status mk_parts_check(const char *tmp, const mk_parts_manifest *m, char *const *name, const uint64_t *size,
                         const uint32_t *part_of, size_t ns, mk_out_file *adopt, mk_parts_inputs *in)
{
    MK_TRY(check_strays(tmp, m->n));
    memset(adopt, 0, ns * sizeof *adopt);
    char missing[256] = "", foreign[256] = "";
    size_t n_missing = 0, n_foreign = 0;
    for (unsigned i = 1; i <= m->n; i++) {
        mk_part p = {i, m->n};
        char *path = mk_part_file(tmp, p, "json");
        if (!path) return MK_ERR_NOMEM;
        if (!mk_path_exists(path)) {
            add_part(missing, sizeof missing, i, m->n, &n_missing);
            free(path);
            continue;
        }
        char *text = NULL;
        size_t len = 0;
        bool other = false;
        mk_status s = mk_read_file(path, RECORD_CAP, &text, &len);
        if (s == MK_OK) s = mk_parts_record_parse(text, len, path, m, i, name, size, part_of, ns, adopt, &other);
        if (s == MK_OK && !other && in) s = mk_parts_record_inputs(text, len, path, in);
        free(text);
        free(path);
        MK_TRY(s);
        if (other) add_part(foreign, sizeof foreign, i, m->n, &n_foreign);
    }
    if (n_foreign)
        return mk_error(MK_ERR_MISMATCH,
                        "%s: part%s %s %s made by another plan (recipe, inputs, options or split differ); rerun %s with this "
                        "command's --part, then finalize",
                        tmp, n_foreign > 1 ? "s" : "", foreign, n_foreign > 1 ? "were" : "was", n_foreign > 1 ? "them" : "it");
    if (n_missing)
        return mk_error(MK_ERR_MISMATCH, "%s: part%s %s %s not complete (no completion record); run %s with --part, then finalize",
                        tmp, n_missing > 1 ? "s" : "", missing, n_missing > 1 ? "are" : "is", n_missing > 1 ? "them" : "it");
    for (size_t s = 0; s < ns; s++) {
        if (!adopt[s].name) MK_BUG("a shard with no part");
        if (m->file) continue; /* regions of one file: the caller checks it */
        char *path = mk_path_join(tmp, name[s]);
        struct stat st;
        bool ok = path && stat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == size[s];
        free(path);
        if (!ok)
            return mk_error(MK_ERR_MISMATCH, "%s: %s (part %u/%u) is missing or not %llu bytes; rerun --part %u/%u", tmp,
                            name[s], part_of[s] + 1, m->n, (unsigned long long)size[s], part_of[s] + 1, m->n);
    }
    return MK_OK;
}

mk_status mk_parts_cleanup(const char *tmp)
{
    DIR *d = opendir(tmp);
    if (!d) return mk_error(MK_ERR_IO, "%s: cannot list: %s", tmp, strerror(errno));
    mk_status s = MK_OK;
    struct dirent *e;
    while ((e = readdir(d)) && s == MK_OK) {
        if (strncmp(e->d_name, ".mergekit-c-part-", 17) != 0) continue;
        char *p = mk_path_join(tmp, e->d_name);
        if (!p) s = MK_ERR_NOMEM;
        else if (unlink(p) != 0 && errno != ENOENT) s = mk_error(MK_ERR_IO, "%s: cannot remove: %s", p, strerror(errno));
        free(p);
    }
    closedir(d);
    char *man = mk_path_join(tmp, MK_PARTS_MANIFEST);
    if (s == MK_OK && !man) s = MK_ERR_NOMEM;
    if (s == MK_OK && unlink(man) != 0 && errno != ENOENT) s = mk_error(MK_ERR_IO, "%s: cannot remove: %s", man, strerror(errno));
    free(man);
    return s;
}
