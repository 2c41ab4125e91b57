/* mk_hub.c - see mk_hub.h */
#include "mk_hub.h"

#include "mk_hash.h"
#include "mk_hubfetch.h"
#include "mk_io.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool g_verify;

void mk_hub_set_verify(bool on) { g_verify = on; }

/* huggingface_hub constants._is_true */
static bool env_true(const char *name)
{
    const char *v = getenv(name);
    if (!v) return false;
    static const char *const yes[] = {"1", "ON", "YES", "TRUE"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (strcasecmp(v, yes[i]) == 0) return true;
    return false;
}

bool mk_hub_offline(void)
{
    const char *v = getenv("HF_HUB_OFFLINE");
    /* `os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")`: an
     * empty HF_HUB_OFFLINE defers to the other */
    return v && *v ? env_true("HF_HUB_OFFLINE") : env_true("TRANSFORMERS_OFFLINE");
}

/* os.path.expanduser: a leading "~" or "~/" is $HOME */
static char *expand_user(const char *p)
{
    if (p[0] == '~' && (p[1] == 0 || p[1] == '/')) {
        const char *home = getenv("HOME");
        return mk_asprintf("%s%s", home ? home : "", p + 1);
    }
    return mk_strdup(p);
}

static const char *env_set(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

char *mk_hub_cache_dir(void)
{
    const char *v;
    if ((v = env_set("HF_HUB_CACHE")) || (v = env_set("HUGGINGFACE_HUB_CACHE"))) return expand_user(v);
    if ((v = env_set("HF_HOME"))) {
        char *h = expand_user(v), *r = h ? mk_path_join(h, "hub") : NULL;
        free(h);
        return r;
    }
    if ((v = env_set("XDG_CACHE_HOME"))) return mk_asprintf("%s/huggingface/hub", v);
    return expand_user("~/.cache/huggingface/hub");
}

/* ---- syntax ------------------------------------------------------------------------------ */

static bool is_word(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* One part of a repository id, huggingface_hub validate_repo_id: 1 to 96 of [A-Za-z0-9_.-],
 * starting and ending with [A-Za-z0-9_], no "--" or "..", not ending in ".git". */
static const char *repo_part_problem(const char *s, size_t n)
{
    if (n == 0) return "an empty owner or name";
    if (n > 96) return "a name longer than 96 characters";
    for (size_t i = 0; i < n; i++)
        if (!is_word(s[i]) && s[i] != '-' && s[i] != '.') return "characters other than letters, digits, '-', '_' and '.'";
    if (!is_word(s[0]) || !is_word(s[n - 1])) return "a name that starts or ends with '-' or '.'";
    for (size_t i = 0; i + 1 < n; i++)
        if ((s[i] == '-' && s[i + 1] == '-') || (s[i] == '.' && s[i + 1] == '.')) return "'--' or '..' in a name";
    if (n >= 4 && memcmp(s + n - 4, ".git", 4) == 0) return "a name ending in '.git'";
    return NULL;
}

/* Slash-separated components, none empty, "." or ".."; no control characters. With
 * `ref_chars`, only what a git branch or tag name of the Hub holds: [A-Za-z0-9._+-]. */
static const char *path_problem(const char *s, bool ref_chars)
{
    if (!*s) return "it is empty";
    if (strlen(s) > 1024) return "it is longer than 1024 characters";
    for (const char *c = s; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f || *c == '\\') return "it holds a control character or a backslash";
        if (ref_chars && !isalnum((unsigned char)*c) && !strchr("._+-/", *c))
            return "it holds characters a branch, tag or commit cannot (letters, digits, '.', '_', '+', '-', '/')";
    }
    for (const char *p = s;;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0) return "it has an empty component (a leading, trailing or double '/')";
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return "it has a '.' or '..' component";
        if (!e) break;
        p = e + 1;
    }
    return NULL;
}

static bool is_hex(const char *s, size_t n)
{
    if (strlen(s) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

/* ---- the cache --------------------------------------------------------------------------- */

typedef struct hub_ctx {
    const char *id;       /* org/name as given */
    const char *rev;      /* as given, or "main" */
    char *cache, *repo;   /* <cache>, <cache>/models--org--name */
} hub_ctx;

/* What to do when the cache lacks something: with HF_HUB_OFFLINE there is no download
 * (without it, a model the cache lacks is fetched: mk_hubfetch.h). */
static const char *remedy(const hub_ctx *h, char buf[512])
{
    char cmd[300];
    bool main_rev = strcmp(h->rev, "main") == 0;
    snprintf(cmd, sizeof cmd, "hf download %.96s%s%.160s", h->id, main_rev ? "" : " --revision ", main_rev ? "" : h->rev);
    if (mk_hub_offline())
        snprintf(buf, 512, "HF_HUB_OFFLINE is set, so the network is disallowed: unset it, run `%s` where it is "
                 "allowed, or point HF_HUB_CACHE or HF_HOME at a cache that has it", cmd);
    else
        snprintf(buf, 512, "run `%s`, or point HF_HUB_CACHE or HF_HOME at a cache that has it", cmd);
    return buf;
}

/* ref -> commit: a 40-hex revision is the commit; else refs/<rev> holds it */
static mk_status read_commit(const hub_ctx *h, char commit[41])
{
    if (is_hex(h->rev, 40)) {
        memcpy(commit, h->rev, 41);
        return MK_OK;
    }
    char *refs = mk_asprintf("%s/refs/%s", h->repo, h->rev), rb[512];
    if (!refs) return MK_ERR_NOMEM;
    mk_status s = MK_OK;
    if (!mk_is_file(refs)) {
        s = mk_error(MK_ERR_IO, "%s@%s: revision '%s' is not in the Hugging Face cache (no %s); %s", h->id, h->rev, h->rev,
                     refs, remedy(h, rb));
    } else {
        char *text = NULL;
        size_t len = 0;
        s = mk_read_file(refs, 256, &text, &len);
        if (s == MK_OK) {
            while (len && isspace((unsigned char)text[len - 1])) text[--len] = 0;
            if (is_hex(text, 40)) memcpy(commit, text, 41);
            else
                s = mk_error(MK_ERR_FORMAT, "%s@%s: %s holds '%.64s', not a 40-hex commit hash (a damaged cache; "
                             "download the model again)", h->id, h->rev, refs, text);
        }
        free(text);
    }
    free(refs);
    return s;
}

/* One file of a snapshot: a link must lead to an existing file inside the repository folder
 * (snapshots link into ../../blobs); with verification, an LFS blob's sha256 must be its name. */
static mk_status check_entry(const hub_ctx *h, const char *path, const char *real_repo)
{
    struct stat st;
    if (lstat(path, &st) != 0) return mk_error(MK_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISLNK(st.st_mode)) return MK_OK;
    char target[PATH_MAX];
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0) return mk_error(MK_ERR_IO, "%s: cannot read the link: %s", path, strerror(errno));
    target[n] = 0;
    char *real = realpath(path, NULL), rb[512];
    if (!real)
        return mk_error(MK_ERR_IO, "%s: %s links to a missing blob (%s): the download is unfinished; %s", h->id, path,
                        target, remedy(h, rb));
    mk_status s = MK_OK;
    if (!mk_path_is_within(real, real_repo))
        s = mk_error(MK_ERR_FORMAT, "%s: %s links outside its cache repository %s (to %s); refused", h->id, path, h->repo,
                     real);
    const char *base = strrchr(real, '/');
    base = base ? base + 1 : real;
    if (s == MK_OK && g_verify && is_hex(base, 64) && stat(real, &st) == 0 && S_ISREG(st.st_mode)) {
        char got[65];
        s = mk_sha256_file(real, got);
        if (s == MK_OK && strcmp(got, base) != 0)
            s = mk_error(MK_ERR_MISMATCH, "%s: %s: blob %s has sha256 %s, not the one its name says (a damaged "
                         "download; delete the blob and download it again)", h->id, path, real, got);
    }
    free(real);
    return s;
}

/* The resolved file or folder (its entries, not recursively). */
static mk_status check_target(const hub_ctx *h, const char *target)
{
    char *real_repo = realpath(h->repo, NULL);
    if (!real_repo) return mk_error(MK_ERR_IO, "%s: cannot resolve: %s", h->repo, strerror(errno));
    mk_status s = MK_OK;
    struct stat st;
    if (lstat(target, &st) == 0 && !S_ISDIR(st.st_mode)) {
        s = check_entry(h, target, real_repo);
    } else {
        DIR *d = opendir(target);
        if (!d) s = mk_error(MK_ERR_IO, "%s: cannot list: %s", target, strerror(errno));
        struct dirent *e;
        while (s == MK_OK && d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char *p = mk_path_join(target, e->d_name);
            s = p ? check_entry(h, p, real_repo) : MK_ERR_NOMEM;
            free(p);
        }
        if (d) closedir(d);
    }
    free(real_repo);
    return s;
}

/* id = org/name or name; sub = "" or a path inside the snapshot. */
static mk_status resolve_cached(const char *id, const char *sub, const char *rev, char **out)
{
    hub_ctx h = {.id = id, .rev = rev ? rev : "main"};
    h.cache = mk_hub_cache_dir();
    /* huggingface_hub repo_folder_name: "models--" + the id with "/" as "--" */
    const char *slash = strchr(id, '/');
    h.repo = !h.cache ? NULL
             : slash ? mk_asprintf("%s/models--%.*s--%s", h.cache, (int)(slash - id), id, slash + 1)
                     : mk_asprintf("%s/models--%s", h.cache, id);
    mk_status s = h.repo ? MK_OK : MK_ERR_NOMEM;
    char commit[41] = {0}, rb[512];
    char *snap = NULL, *target = NULL;
    /* what the cache lacks is fetched, unless HF_HUB_OFFLINE */
    bool fetch = !mk_hub_offline(), need = false;
    if (s == MK_OK && !mk_is_dir(h.repo)) {
        if (fetch) need = true;
        else
            s = mk_error(MK_ERR_IO, "%s%s%s: no such local path, and no Hugging Face model '%s' in the cache %s (no %s); %s",
                         id, rev ? "@" : "", rev ? rev : "", id, h.cache, h.repo + strlen(h.cache) + 1, remedy(&h, rb));
    }
    if (s == MK_OK && !need && fetch && !is_hex(h.rev, 40)) {
        char *refs = mk_asprintf("%s/refs/%s", h.repo, h.rev);
        if (!refs) s = MK_ERR_NOMEM;
        else need = !mk_is_file(refs);
        free(refs);
    }
    if (s == MK_OK && !need) s = read_commit(&h, commit);
    if (s == MK_OK && !need) {
        snap = mk_asprintf("%s/snapshots/%s", h.repo, commit);
        char *part = snap ? mk_hub_partial_dir(h.repo, commit) : NULL;
        if (!snap) s = MK_ERR_NOMEM;
        else if (part) { /* a fetch in progress: its folder has every file, some of them in part */
            free(snap);
            snap = part;
        } else if (!mk_is_dir(snap)) {
            if (fetch) need = true;
            else
                s = mk_error(MK_ERR_IO, "%s@%s: commit %s is not in the cache (no %s: the download is unfinished or was "
                             "deleted); %s", id, h.rev, commit, snap, remedy(&h, rb));
        }
    }
    if (s == MK_OK && need) s = mk_hub_fetch(id, h.rev, sub, h.repo, &target);
    else if (s == MK_OK) {
        target = *sub ? mk_path_join(snap, sub) : mk_strdup(snap);
        struct stat st;
        if (!target) s = MK_ERR_NOMEM;
        else if (*sub && lstat(target, &st) != 0)
            s = mk_error(MK_ERR_IO, "%s@%s: no '%s' in the cached snapshot %s; %s", id, h.rev, sub, snap, remedy(&h, rb));
    }
    if (s == MK_OK) s = check_target(&h, target);
    if (s == MK_OK) {
        *out = target;
        target = NULL;
    }
    free(target);
    free(snap);
    free(h.cache);
    free(h.repo);
    return s;
}

static bool looks_local(const char *p)
{
    /* a trailing '/' names a folder: ids never end with one */
    return p[0] == '/' || p[0] == '~' || strcmp(p, ".") == 0 || strcmp(p, "..") == 0 || mk_str_starts_with(p, "./") ||
           mk_str_starts_with(p, "../") || mk_str_ends_with(p, "/");
}

mk_status mk_hub_resolve(const char *ref, const char *revision, char **out, bool *cached)
{
    *out = NULL;
    if (cached) *cached = false;
    if (mk_path_exists(ref)) {
        if (revision) mk_warn("%s: revision '%s' ignored: a local path is read as it is", ref, revision);
        *out = mk_strdup(ref);
        return *out ? MK_OK : MK_ERR_NOMEM;
    }
    const char *at = revision ? NULL : strchr(ref, '@');
    char *name = at ? mk_strndup(ref, (size_t)(at - ref)) : mk_strdup(ref);
    if (!name) return MK_ERR_NOMEM;
    if (at) revision = at + 1;
    mk_status s = MK_OK;
    const char *slash = strchr(name, '/');
    const char *bad;
    if (at && mk_path_exists(name)) {
        /* path@rev naming a local path */
        mk_warn("%s: revision '%s' ignored: a local path is read as it is", name, revision);
        *out = name;
        return MK_OK;
    }
    if (looks_local(name) || (!slash && !at && !*name)) {
        *out = mk_strdup(ref);
        free(name);
        return *out ? MK_OK : MK_ERR_NOMEM;
    }
    if (revision && (bad = path_problem(revision, true))) {
        s = mk_error(MK_ERR_USAGE, "%s: revision '%s' is not a branch, tag or commit: %s", ref, revision, bad);
    } else if (!slash) {
        /* a name without owner: a Hub id only when cached */
        if ((bad = repo_part_problem(name, strlen(name)))) {
            if (at)
                s = mk_error(MK_ERR_USAGE, "%s: not a local path, and '%s' is not a Hugging Face model id: %s", ref, name,
                             bad);
            else *out = mk_strdup(ref);
        } else {
            char *cache = mk_hub_cache_dir();
            char *repo = cache ? mk_asprintf("%s/models--%s", cache, name) : NULL;
            if (!repo) s = MK_ERR_NOMEM;
            else if (mk_is_dir(repo) || at) s = resolve_cached(name, "", revision, out);
            else *out = mk_strdup(ref);
            free(cache);
            free(repo);
        }
    } else {
        const char *slash2 = strchr(slash + 1, '/');
        size_t idlen = slash2 ? (size_t)(slash2 - name) : strlen(name);
        const char *sub = slash2 ? slash2 + 1 : "";
        if ((bad = repo_part_problem(name, (size_t)(slash - name))) ||
            (bad = repo_part_problem(slash + 1, idlen - (size_t)(slash - name) - 1)))
            s = mk_error(MK_ERR_USAGE, "%s: not a local path, and not a Hugging Face model id "
                         "(owner/name[/subfolder][@revision]): %s", ref, bad);
        else if (slash2 && (bad = path_problem(sub, false)))
            s = mk_error(MK_ERR_USAGE, "%s: subfolder '%s' of a Hugging Face model id is refused: %s", ref, sub, bad);
        else {
            name[idlen] = 0;
            s = resolve_cached(name, sub, revision, out);
        }
        if (s == MK_OK && cached) *cached = true;
    }
    if (s == MK_OK && !*out) s = MK_ERR_NOMEM;
    if (s == MK_OK && cached && !slash && strcmp(*out, ref) != 0) *cached = true;
    free(name);
    return s;
}
