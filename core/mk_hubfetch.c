/* mk_hubfetch.c - see mk_hubfetch.h. The Hub's endpoints, as huggingface_hub 2.4 uses them:
 *   GET  {endpoint}/api/models/{id}/revision/{rev}   {"sha": commit, "siblings": [{"rfilename"}]}
 *   HEAD {endpoint}/{id}/resolve/{commit}/{file}     X-Repo-Commit, ETag or X-Linked-Etag (an
 *        LFS file's sha256, on a redirect to its storage), Content-Length or X-Linked-Size
 *   GET  {endpoint}/{id}/resolve/{commit}/{file}     the bytes (Range honoured; redirects followed)
 */
#include "mk_hubfetch.h"

#include "mk_hash.h"
#include "mk_hub.h"
#include "mk_io.h"
#include "mk_json.h"

#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PARTIAL_DIR MK_HUB_PARTIAL_DIR
#define MAX_INFO_BYTES (64u << 20)  /* a revision's file list */
#define MAX_SMALL_BYTES (256u << 20) /* a small file fetched whole (tokenizer.json ~ 10 MB) */

static _Atomic uint64_t g_fetched;

uint64_t mk_hub_fetched_bytes(void) { return atomic_load(&g_fetched); }

/* ---- settings from the environment --------------------------------------------------------- */

static const char *env_set(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static long env_long(const char *name, long def, long lo, long hi)
{
    const char *v = env_set(name);
    if (!v) return def;
    char *end;
    long x = strtol(v, &end, 10);
    return *end || x < lo || x > hi ? def : x;
}

static char *endpoint(void)
{
    const char *e = env_set("HF_ENDPOINT");
    char *r = mk_strdup(e ? e : "https://huggingface.co");
    if (r)
        for (size_t n = strlen(r); n && r[n - 1] == '/'; n--) r[n - 1] = 0;
    return r;
}

/* HF_TOKEN, else the token file (huggingface_hub constants.HF_TOKEN_PATH); NULL when none. */
static char *token(void)
{
    const char *t = env_set("HF_TOKEN");
    char *r = NULL;
    if (t) r = mk_strdup(t);
    else {
        const char *p = env_set("HF_TOKEN_PATH"), *home = env_set("HF_HOME"), *h = env_set("HOME");
        char *path = p ? mk_strdup(p)
                     : home ? mk_asprintf("%s/token", home)
                            : mk_asprintf("%s/.cache/huggingface/token", h ? h : "");
        size_t len = 0;
        if (path && mk_is_file(path) && mk_read_file(path, 4096, &r, &len) != MK_OK) {
            mk_error_clear();
            r = NULL;
        }
        free(path);
    }
    if (r) { /* strip white space, as huggingface_hub does */
        size_t n = strlen(r);
        while (n && isspace((unsigned char)r[n - 1])) r[--n] = 0;
        size_t i = 0;
        while (isspace((unsigned char)r[i])) i++;
        memmove(r, r + i, n - i + 1);
        if (!*r) {
            free(r);
            r = NULL;
        }
    }
    return r;
}

/* ---- HTTP ------------------------------------------------------------------------------- */

typedef struct http_req {
    const char *url;
    bool head;              /* HEAD, redirects not followed (their headers are the answer) */
    bool no_auth;           /* a storage URL off the Hub: the token is not sent there */
    uint64_t r0, r1;        /* Range bytes=r0-(r1-1) when r1 > r0 */
    /* GET body: into a buffer (cap bytes at most), or into fd at r0 onwards */
    char *body;
    size_t len, cap;
    int fd;
    uint64_t got;           /* body bytes received in this attempt */
    bool too_big;
    /* answer */
    long code;
    char etag[96], linked_etag[96], commit[48], location[2048];
    char effective[4096];   /* the URL that answered, after redirects ("" when too long) */
    uint64_t size, linked_size;
    bool has_size, has_linked_size;
    int io_errno;
} http_req;

static void header_value(const char *line, size_t n, char *dst, size_t cap)
{
    while (n && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' ')) n--;
    while (n && *line == ' ') line++, n--;
    /* ETags come quoted, and weak ones with W/ */
    if (n >= 2 && line[0] == 'W' && line[1] == '/') line += 2, n -= 2;
    if (n >= 2 && line[0] == '"' && line[n - 1] == '"') line++, n -= 2;
    if (n >= cap) n = cap - 1;
    memcpy(dst, line, n);
    dst[n] = 0;
}

static bool header_is(const char *line, size_t n, const char *name, const char **val, size_t *vn)
{
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':') return false;
    *val = line + k + 1;
    *vn = n - k - 1;
    return true;
}

static size_t on_header(char *line, size_t sz, size_t nm, void *ctx)
{
    http_req *r = ctx;
    size_t n = sz * nm, vn;
    const char *v;
    char buf[96];
    if (n > 5 && strncmp(line, "HTTP/", 5) == 0) { /* a new response (after a redirect): start over */
        r->etag[0] = r->linked_etag[0] = r->commit[0] = r->location[0] = 0;
        r->has_size = r->has_linked_size = false;
    } else if (header_is(line, n, "ETag", &v, &vn)) header_value(v, vn, r->etag, sizeof r->etag);
    else if (header_is(line, n, "X-Linked-Etag", &v, &vn)) header_value(v, vn, r->linked_etag, sizeof r->linked_etag);
    else if (header_is(line, n, "X-Repo-Commit", &v, &vn)) header_value(v, vn, r->commit, sizeof r->commit);
    else if (header_is(line, n, "Location", &v, &vn)) header_value(v, vn, r->location, sizeof r->location);
    else if (header_is(line, n, "Content-Length", &v, &vn) || header_is(line, n, "X-Linked-Size", &v, &vn)) {
        bool linked = tolower((unsigned char)line[0]) == 'x';
        header_value(v, vn, buf, sizeof buf);
        char *end;
        errno = 0;
        unsigned long long x = strtoull(buf, &end, 10);
        if (!errno && !*end && *buf && isdigit((unsigned char)*buf)) {
            if (linked) r->linked_size = x, r->has_linked_size = true;
            else r->size = x, r->has_size = true;
        }
    }
    return n;
}

static size_t on_body(char *data, size_t sz, size_t nm, void *ctx)
{
    http_req *r = ctx;
    size_t n = sz * nm;
    if (r->fd >= 0) {
        /* never write past the range asked for (a server that ignores Range sends it all) */
        uint64_t want = r->r1 - r->r0;
        if (r->got + n > want) {
            r->too_big = true;
            return 0;
        }
        if (mk_pwrite_all(r->fd, data, n, r->r0 + r->got, "cache file") != MK_OK) {
            r->io_errno = errno ? errno : EIO;
            mk_error_clear();
            return 0;
        }
    } else {
        if (r->len + n > r->cap) {
            r->too_big = true;
            return 0;
        }
        if (!r->body) r->body = mk_malloc(r->cap + 1);
        if (!r->body) return 0;
        memcpy(r->body + r->len, data, n);
        r->len += n;
        r->body[r->len] = 0;
    }
    r->got += n;
    atomic_fetch_add(&g_fetched, n);
    return n;
}

/* One attempt. CURLE_* of the transfer; r->code the HTTP status. */
static CURLcode http_once(CURL *c, http_req *r, const char *tok)
{
    curl_easy_reset(c);
    char auth[4200], range[64];
    struct curl_slist *h = NULL;
    if (tok) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
        h = curl_slist_append(h, auth);
    }
    h = curl_slist_append(h, "Accept-Encoding: identity");
    h = curl_slist_append(h, "User-Agent: mergekit-c; hf_hub/2.4.0");
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L);
    /* a stalled transfer (under 1 KB/s for 30 s) is cut and retried */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    if (r->head) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, 8L);
    }
    if (r->r1 > r->r0) {
        snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)(r->r0 + r->got), (unsigned long long)(r->r1 - 1));
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    CURLcode e = curl_easy_perform(c);
    r->code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
    char *eff = NULL;
    r->effective[0] = 0;
    if (curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &eff) == CURLE_OK && eff && strlen(eff) < sizeof r->effective)
        memcpy(r->effective, eff, strlen(eff) + 1);
    curl_slist_free_all(h);
    return e;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* What to do about an HTTP refusal, for the error line. */
static const char *refusal(long code, bool have_token)
{
    switch (code) {
    case 401:
        return have_token ? "the Hub refused the token (401): it is invalid or expired; set HF_TOKEN to a valid one"
                          : "the Hub wants a token (401): the repository is gated or private, or the id is wrong; accept "
                            "its terms on the website and set HF_TOKEN (or run `hf auth login`)";
    case 403:
        return "the Hub refused access (403): the token has no access to this gated or private repository; accept its "
               "terms on the website or use a token that has access";
    case 404:
        return "not found on the Hub (404): check the id, the revision and the file name";
    default:
        return NULL;
    }
}

/* The request with retries (connection failures, 408, 429, 5xx; a cut body resumes where
 * it stopped). `what` names it in errors ("acme/base: config.json"). */
static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static mk_status http_do(http_req *r, const char *what)
{
    pthread_once(&g_curl_once, curl_init_once);
    CURL *c = curl_easy_init();
    if (!c) return mk_error(MK_ERR_NOMEM, "%s: cannot start an HTTP client", what);
    char *tok = token();
    long tries = env_long("MK_HUB_RETRIES", 5, 1, 100), delay = env_long("MK_HUB_BACKOFF_MS", 500, 0, 60000);
    mk_status s = MK_OK;
    for (long t = 0;; t++) {
        if (r->fd < 0) { /* a buffered body starts over */
            r->len = 0;
            r->got = 0;
        }
        CURLcode e = http_once(c, r, r->no_auth ? NULL : tok);
        bool ok_code = r->code >= 200 && r->code < 300;
        if (r->head && r->code >= 300 && r->code < 400) ok_code = true; /* headers of a redirect */
        if (r->io_errno) {
            s = mk_error(MK_ERR_IO, "%s: cannot write to the cache: %s", what, strerror(r->io_errno));
            break;
        }
        if (r->too_big) {
            s = mk_error(MK_ERR_FORMAT, "%s: the server sent more than was asked for (%s)", what,
                         r->fd >= 0 ? "it ignored the byte range" : "over the size limit for this kind of file");
            break;
        }
        if (e == CURLE_OK && ok_code) {
            if (r->fd >= 0 && r->r1 > r->r0 && r->got < r->r1 - r->r0) e = CURLE_PARTIAL_FILE; /* cut short */
            else break;
        }
        const char *why = e == CURLE_OK ? refusal(r->code, tok != NULL) : NULL;
        if (why) {
            s = mk_error(MK_ERR_IO, "%s: %s", what, why);
            break;
        }
        bool retry = e != CURLE_OK || r->code == 408 || r->code == 429 || r->code >= 500;
        if (!retry || t + 1 >= tries || mk_interrupted()) {
            if (e != CURLE_OK)
                s = mk_error(MK_ERR_IO, "%s: %s (%s)%s", what, curl_easy_strerror(e), r->url,
                             t + 1 >= tries ? "; gave up after retries (MK_HUB_RETRIES)" : "");
            else s = mk_error(MK_ERR_IO, "%s: the Hub answered HTTP %ld (%s)", what, r->code, r->url);
            break;
        }
        mk_debug("%s: %s, retrying", what, e != CURLE_OK ? curl_easy_strerror(e) : "server error");
        sleep_ms(delay);
        delay = delay * 2 > 8000 ? 8000 : delay * 2;
    }
    free(tok);
    curl_easy_cleanup(c);
    return s;
}

/* URL-escape a path, keeping '/'. Allocated. */
static char *url_path(const char *p)
{
    size_t n = strlen(p);
    char *o = mk_malloc(3 * n + 1), *w = o;
    if (!o) return NULL;
    for (const char *c = p; *c; c++) {
        unsigned char u = (unsigned char)*c;
        if (isalnum(u) || strchr("/-_.~", u)) *w++ = (char)u;
        else w += sprintf(w, "%%%02X", u);
    }
    *w = 0;
    return o;
}

/* ---- the revision's commit and files -------------------------------------------------------- */

typedef struct rev_info {
    char commit[41];
    char **files;
    size_t n;
} rev_info;

static void rev_info_free(rev_info *ri)
{
    for (size_t i = 0; i < ri->n; i++) free(ri->files[i]);
    free(ri->files);
}

static bool is_hex40(const char *s)
{
    if (strlen(s) != 40) return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) return false;
    return true;
}

static mk_status get_rev_info(const char *ep, const char *id, const char *rev, rev_info *ri)
{
    memset(ri, 0, sizeof *ri);
    char *erev = url_path(rev), *url = erev ? mk_asprintf("%s/api/models/%s/revision/%s", ep, id, erev) : NULL;
    free(erev);
    if (!url) return MK_ERR_NOMEM;
    char what[400];
    snprintf(what, sizeof what, "%.200s@%.150s", id, rev);
    http_req r = {.url = url, .fd = -1, .cap = MAX_INFO_BYTES};
    mk_status s = http_do(&r, what);
    mk_json j = {0};
    if (s == MK_OK) {
        mk_json_limits lim = {64, r.len / 2 + 16};
        s = mk_json_parse(&j, r.body ? r.body : "", r.len, &lim, what);
    }
    uint32_t sha = 0, sib = 0;
    if (s == MK_OK && j.nodes[0].type == MK_JSON_OBJ) {
        sha = mk_json_get(&j, 0, "sha");
        sib = mk_json_get(&j, 0, "siblings");
    }
    if (s == MK_OK && (!sha || j.nodes[sha].type != MK_JSON_STR || !is_hex40(mk_json_strv(&j, sha)) || !sib ||
                       j.nodes[sib].type != MK_JSON_ARR))
        s = mk_error(MK_ERR_FORMAT, "%s: the Hub's answer about the revision has no commit hash or file list (%s)", what,
                     url);
    if (s == MK_OK) {
        memcpy(ri->commit, mk_json_strv(&j, sha), 41);
        ri->files = mk_calloc(j.nodes[sib].count + 1, sizeof *ri->files);
        if (!ri->files) s = MK_ERR_NOMEM;
        for (uint32_t e = j.nodes[sib].first; s == MK_OK && e; e = j.nodes[e].next) {
            uint32_t f = j.nodes[e].type == MK_JSON_OBJ ? mk_json_get(&j, e, "rfilename") : 0;
            if (!f || j.nodes[f].type != MK_JSON_STR || j.nodes[f].has_nul) continue;
            if (!(ri->files[ri->n] = mk_strdup(mk_json_strv(&j, f)))) s = MK_ERR_NOMEM;
            else ri->n++;
        }
    }
    mk_json_free(&j);
    free(r.body);
    free(url);
    if (s != MK_OK) rev_info_free(ri);
    return s;
}

/* ---- files -------------------------------------------------------------------------------- */

/* What a model folder needs whole: configs, tokenizers, the shard index, chat templates. */
static bool is_small(const char *name)
{
    static const char *const ext[] = {".json", ".txt", ".model", ".jinja", ".tiktoken", ".yaml", ".yml"};
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++)
        if (mk_str_ends_with(name, ext[i])) return true;
    return false;
}

/* A file name from the Hub must stay inside the folder. */
static bool safe_rel(const char *p)
{
    if (!*p || *p == '/' || strlen(p) > 1024) return false;
    for (const char *c = p; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == '\\') return false;
    for (const char *q = p;;) {
        const char *e = strchr(q, '/');
        size_t n = e ? (size_t)(e - q) : strlen(q);
        if (!n || (n == 1 && q[0] == '.') || (n == 2 && q[0] == '.' && q[1] == '.')) return false;
        if (!e) return true;
        q = e + 1;
    }
}

/* "../" repeated for the depth of `rel` below its base folder, plus `up` more. */
static char *ups(const char *rel, int up)
{
    int d = up;
    for (const char *c = rel; *c; c++) d += *c == '/';
    char *o = mk_malloc((size_t)d * 3 + 1);
    if (!o) return NULL;
    for (int i = 0; i < d; i++) memcpy(o + 3 * i, "../", 3);
    o[3 * d] = 0;
    return o;
}

static mk_status mkdirs_for(const char *path)
{
    char *d = mk_path_dirname(path);
    mk_status s = d ? mk_mkdir_p(d) : MK_ERR_NOMEM;
    free(d);
    return s;
}

/* A relative symlink at `link` to blobs/<etag> of `repo` (depth: link's folder below repo). */
static mk_status link_blob(const char *link, const char *rel_from_repo, const char *etag)
{
    char *u = ups(rel_from_repo, 0);
    char *target = u ? mk_asprintf("%sblobs/%s", u, etag) : NULL;
    free(u);
    if (!target) return MK_ERR_NOMEM;
    mk_status s = mkdirs_for(link);
    char *tmp = s == MK_OK ? mk_asprintf("%s.mklink", link) : NULL;
    if (s == MK_OK && !tmp) s = MK_ERR_NOMEM;
    if (s == MK_OK) {
        unlink(tmp);
        if (symlink(target, tmp) != 0 || rename(tmp, link) != 0) {
            s = mk_error(MK_ERR_IO, "%s: cannot link it into the cache: %s", link, strerror(errno));
            unlink(tmp);
        }
    }
    free(tmp);
    free(target);
    return s;
}

typedef struct fetch_ctx {
    const char *ep, *id, *repo;
    const char *commit;
} fetch_ctx;

static char *resolve_url(const fetch_ctx *f, const char *file)
{
    char *ef = url_path(file);
    char *u = ef ? mk_asprintf("%s/%s/resolve/%s/%s", f->ep, f->id, f->commit, ef) : NULL;
    free(ef);
    return u;
}

/* "scheme://host[:port]" of a URL: its length. */
static size_t origin_len(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p) return 0;
    const char *e = strchr(p + 3, '/');
    return e ? (size_t)(e - url) : strlen(url);
}

static mk_status head_file(const fetch_ctx *f, const char *file, char etag[96], uint64_t *size, bool *lfs)
{
    char *url = resolve_url(f, file), what[1300];
    if (!url) return MK_ERR_NOMEM;
    snprintf(what, sizeof what, "%.200s: %.1000s", f->id, file);
    http_req r;
    mk_status s = MK_OK;
    /* redirects on the Hub's own host are followed (a renamed repository); one to another
     * host (the storage of LFS files) carries the file's metadata itself */
    for (int hop = 0; s == MK_OK; hop++) {
        r = (http_req){.url = url, .head = true, .fd = -1};
        s = http_do(&r, what);
        if (s != MK_OK || r.code < 300 || r.code >= 400 || !r.location[0]) break;
        size_t ol = origin_len(url);
        char *next = r.location[0] == '/' ? mk_asprintf("%.*s%s", (int)ol, url, r.location)
                     : origin_len(r.location) == ol && strncmp(r.location, url, ol) == 0 ? mk_strdup(r.location)
                                                                                         : NULL;
        if (!next) break;
        free(url);
        url = next;
        if (hop == 8) s = mk_error(MK_ERR_IO, "%s: too many redirects", what);
    }
    free(url);
    if (s != MK_OK) return s;
    *lfs = r.linked_etag[0] != 0;
    const char *e = *lfs ? r.linked_etag : r.etag;
    if (!*e || !safe_rel(e) || strchr(e, '/'))
        return mk_error(MK_ERR_FORMAT, "%s: the Hub gave no usable ETag for it", what);
    snprintf(etag, 96, "%s", e);
    if (*lfs && r.has_linked_size) *size = r.linked_size;
    else if (r.has_size) *size = r.size;
    else return mk_error(MK_ERR_FORMAT, "%s: the Hub did not say its size", what);
    return MK_OK;
}

/* A small file, whole, into blobs/<etag> (through blobs/<etag>.incomplete, as huggingface_hub). */
static mk_status fetch_small(const fetch_ctx *f, const char *file, const char *etag, uint64_t size)
{
    char *blob = mk_asprintf("%s/blobs/%s", f->repo, etag), *tmp = blob ? mk_asprintf("%s.incomplete", blob) : NULL;
    char *url = resolve_url(f, file), what[1300];
    snprintf(what, sizeof what, "%.200s: %.1000s", f->id, file);
    mk_status s = blob && tmp && url ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK && !mk_is_file(blob)) {
        if (size > MAX_SMALL_BYTES)
            s = mk_error(MK_ERR_FORMAT, "%s: %llu bytes, over the %u MB limit for a side file", what,
                         (unsigned long long)size, MAX_SMALL_BYTES >> 20);
        http_req r = {.url = url, .fd = -1, .cap = MAX_SMALL_BYTES};
        if (s == MK_OK) s = http_do(&r, what);
        if (s == MK_OK && r.len != size)
            s = mk_error(MK_ERR_FORMAT, "%s: received %zu bytes, the Hub said %llu", what, r.len, (unsigned long long)size);
        if (s == MK_OK) s = mkdirs_for(tmp);
        if (s == MK_OK) s = mk_write_file_atomic(tmp, r.body ? r.body : "", r.len);
        if (s == MK_OK && rename(tmp, blob) != 0) s = mk_error(MK_ERR_IO, "%s: %s", blob, strerror(errno));
        free(r.body);
    }
    free(blob);
    free(tmp);
    free(url);
    return s;
}

/* ---- a file being fetched: its ranges --------------------------------------------------------- */

typedef struct range {
    uint64_t a, b;
} range;

struct mk_rfile_remote {
    pthread_mutex_t mu;
    struct mk_rfile_remote *next; /* the open ones (every mk_rfile of a path shares one) */
    unsigned refs;
    char *path, *ranges_path, *meta_path;
    char *url, *repo, *commit, *rel, *etag, *id; /* rel: the file's path in the snapshot */
    char *direct;           /* where url last redirected to (the storage), reused for the next
                               ranges; dropped when it stops answering */
    uint64_t size;
    range *r;
    size_t n, cap;
    int wfd;
    bool complete;
};

static int cmp_range(const void *x, const void *y)
{
    const range *a = x, *b = y;
    return a->a < b->a ? -1 : a->a > b->a;
}

/* Sort and merge overlapping or touching ranges. */
static void normalise(mk_rfile_remote *m)
{
    if (!m->n) return;
    qsort(m->r, m->n, sizeof *m->r, cmp_range);
    size_t w = 0;
    for (size_t i = 1; i < m->n; i++) {
        if (m->r[i].a <= m->r[w].b) {
            if (m->r[i].b > m->r[w].b) m->r[w].b = m->r[i].b;
        } else m->r[++w] = m->r[i];
    }
    m->n = w + 1;
}

static mk_status add_range(mk_rfile_remote *m, uint64_t a, uint64_t b)
{
    if (m->n == m->cap) {
        size_t nc = m->cap ? 2 * m->cap : 16;
        range *nr = realloc(m->r, nc * sizeof *nr);
        if (!nr) return MK_ERR_NOMEM;
        m->r = nr;
        m->cap = nc;
    }
    m->r[m->n++] = (range){a, b};
    normalise(m);
    return MK_OK;
}

/* Bytes of [a, b) not present. */
static uint64_t missing_in(const mk_rfile_remote *m, uint64_t a, uint64_t b)
{
    uint64_t miss = b - a;
    for (size_t i = 0; i < m->n; i++) {
        uint64_t x = m->r[i].a > a ? m->r[i].a : a, y = m->r[i].b < b ? m->r[i].b : b;
        if (y > x) miss -= y - x;
    }
    return miss;
}

static mk_status load_ranges(mk_rfile_remote *m)
{
    if (!mk_is_file(m->ranges_path)) return MK_OK;
    char *text = NULL;
    size_t len = 0;
    MK_TRY(mk_read_file(m->ranges_path, 256u << 20, &text, &len));
    mk_status s = MK_OK;
    for (char *line = text, *nl; s == MK_OK && line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (!nl) break; /* a line cut by a crash is not a range */
        unsigned long long a, b;
        char tail;
        *nl = 0;
        if (sscanf(line, "%llu %llu%c", &a, &b, &tail) == 2 && a < b && b <= m->size) s = add_range(m, a, b);
    }
    free(text);
    return s;
}

/* The file is whole: check its sha256, move it into blobs/ and link it into the snapshot and
 * the staging folder. A mismatch drops what was fetched. */
static mk_status sha256_plain(const char *path, char out[65])
{
    /* not mk_sha256_file: it reads through mk_rfile, which would come back here */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mk_error(MK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1u << 20;
    unsigned char *buf = mk_malloc(cap);
    mk_sha256 h;
    mk_sha256_init(&h);
    mk_status s = buf ? MK_OK : MK_ERR_NOMEM;
    for (ssize_t n; s == MK_OK && (n = read(fd, buf, cap)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) s = mk_error(MK_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        else mk_sha256_update(&h, buf, (size_t)n);
    }
    if (s == MK_OK) mk_sha256_hex(&h, out);
    free(buf);
    close(fd);
    return s;
}

static mk_status finish_file(mk_rfile_remote *m)
{
    char got[65];
    MK_TRY(sha256_plain(m->path, got));
    if (strlen(m->etag) == 64 && strcmp(got, m->etag) != 0) {
        unlink(m->ranges_path);
        m->n = 0;
        return mk_error(MK_ERR_MISMATCH, "%s: %s: the fetched file has sha256 %s, not %s as the Hub said; dropped it, "
                        "run again to fetch it anew", m->id, m->rel, got, m->etag);
    }
    char *blob = mk_asprintf("%s/blobs/%s", m->repo, m->etag);
    char *snap_rel = mk_asprintf("snapshots/%s/%s", m->commit, m->rel);
    char *snap = snap_rel ? mk_asprintf("%s/%s", m->repo, snap_rel) : NULL;
    char *stage_rel = mk_asprintf("%s/%s/%s", PARTIAL_DIR, m->commit, m->rel);
    mk_status s = blob && snap && stage_rel ? MK_OK : MK_ERR_NOMEM;
    if (s == MK_OK) s = mkdirs_for(blob);
    if (s == MK_OK && link(m->path, blob) != 0 && errno != EEXIST)
        s = mk_error(MK_ERR_IO, "%s: cannot move it into the cache: %s", blob, strerror(errno));
    if (s == MK_OK) s = mk_fsync_dir(m->repo);
    if (s == MK_OK) s = link_blob(snap, snap_rel, m->etag);
    if (s == MK_OK) s = link_blob(m->path, stage_rel, m->etag);
    if (s == MK_OK) {
        unlink(m->meta_path);
        unlink(m->ranges_path);
        m->complete = true;
    }
    free(blob);
    free(snap_rel);
    free(snap);
    free(stage_rel);
    return s;
}

static pthread_mutex_t g_open_mu = PTHREAD_MUTEX_INITIALIZER;
static mk_rfile_remote *g_open;

static void remote_free(mk_rfile_remote *m)
{
    if (!m) return;
    if (m->wfd >= 0) close(m->wfd);
    pthread_mutex_destroy(&m->mu);
    free(m->path), free(m->ranges_path), free(m->meta_path), free(m->url), free(m->repo), free(m->commit), free(m->rel),
        free(m->etag), free(m->id), free(m->r), free(m->direct);
    free(m);
}

/* Fetch [a, b) into the sparse file and record it. */
static mk_status fetch_range(mk_rfile_remote *m, uint64_t a, uint64_t b)
{
    char what[1300];
    snprintf(what, sizeof what, "%.200s: %.1000s", m->id, m->rel);
    http_req r = {.url = m->direct ? m->direct : m->url, .no_auth = m->direct != NULL, .fd = m->wfd, .r0 = a, .r1 = b};
    mk_status s = http_do(&r, what);
    if (s != MK_OK && m->direct) { /* a storage URL expires: ask the Hub again */
        mk_error_clear();
        free(m->direct);
        m->direct = NULL;
        uint64_t had = r.got;
        r = (http_req){.url = m->url, .fd = m->wfd, .r0 = a, .r1 = b, .got = had};
        s = http_do(&r, what);
    }
    if (s == MK_OK && !m->direct && r.effective[0] && strcmp(r.effective, m->url) != 0) m->direct = mk_strdup(r.effective);
    /* keep what arrived of a failed transfer: the next run starts after it */
    uint64_t got = r.got;
    if (got && fdatasync(m->wfd) != 0) return mk_error(MK_ERR_IO, "%s: %s", m->path, strerror(errno));
    if (got) {
        char line[64];
        int n = snprintf(line, sizeof line, "%llu %llu\n", (unsigned long long)a, (unsigned long long)(a + got));
        int fd = open(m->ranges_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        mk_status w = fd < 0 ? mk_error(MK_ERR_IO, "%s: %s", m->ranges_path, strerror(errno))
                             : mk_write_all(fd, line, (size_t)n, m->ranges_path);
        if (fd >= 0) {
            if (w == MK_OK && fdatasync(fd) != 0) w = mk_error(MK_ERR_IO, "%s: %s", m->ranges_path, strerror(errno));
            close(fd);
        }
        if (s == MK_OK) s = w;
        if (w == MK_OK) {
            mk_status t = add_range(m, a, a + got);
            if (s == MK_OK) s = t;
        }
    }
    return s;
}

static mk_status remote_ensure(mk_rfile_remote *m, uint64_t off, uint64_t len)
{
    if (off > m->size || len > m->size - off) return MK_OK; /* the read reports it */
    if (!m->complete && mk_hub_offline() && missing_in(m, off, off + len))
        return mk_error(MK_ERR_IO, "%s: %s is only partly fetched and HF_HUB_OFFLINE is set: unset it so the rest can "
                        "be fetched", m->id, m->rel);
    pthread_mutex_lock(&m->mu);
    mk_status s = MK_OK;
    uint64_t end = off + len, at = off;
    while (s == MK_OK && !m->complete && at < end) {
        /* the next gap at or after `at` */
        uint64_t ga = at, gb = end;
        for (size_t i = 0; i < m->n; i++) {
            if (m->r[i].a <= ga && m->r[i].b > ga) ga = m->r[i].b;
        }
        if (ga >= end) break;
        for (size_t i = 0; i < m->n; i++)
            if (m->r[i].a > ga && m->r[i].a < gb) gb = m->r[i].a;
        s = fetch_range(m, ga, gb);
        at = gb;
    }
    if (s == MK_OK && !m->complete && m->n == 1 && m->r[0].a == 0 && m->r[0].b == m->size) s = finish_file(m);
    pthread_mutex_unlock(&m->mu);
    return s;
}

static char *meta_path_of(const char *path, const char *ext)
{
    char *dir = mk_path_dirname(path), *base = mk_path_basename(path);
    char *r = dir && base ? mk_asprintf("%s/.%s.%s", dir, base, ext) : NULL;
    free(dir);
    free(base);
    return r;
}

static char *json_str(const mk_json *j, const char *key)
{
    uint32_t k = mk_json_get(j, 0, key);
    return k && j->nodes[k].type == MK_JSON_STR && !j->nodes[k].has_nul ? mk_strdup(mk_json_strv(j, k)) : NULL;
}

static mk_status remote_attach(const char *path, uint64_t size, mk_rfile_remote **out)
{
    *out = NULL;
    char *meta = meta_path_of(path, "mkremote");
    if (!meta) return MK_ERR_NOMEM;
    if (!mk_is_file(meta)) {
        free(meta);
        return MK_OK;
    }
    mk_rfile_remote *m = mk_calloc(1, sizeof *m);
    if (!m) {
        free(meta);
        return MK_ERR_NOMEM;
    }
    pthread_mutex_init(&m->mu, NULL);
    m->wfd = -1;
    m->meta_path = meta;
    char *text = NULL;
    size_t len = 0;
    mk_json j = {0};
    mk_status s = mk_read_file(meta, 1u << 20, &text, &len);
    if (s == MK_OK) {
        mk_json_limits lim = {8, 64};
        s = mk_json_parse(&j, text, len, &lim, meta);
    }
    uint32_t sz = s == MK_OK && j.nodes[0].type == MK_JSON_OBJ ? mk_json_get(&j, 0, "size") : 0;
    if (s == MK_OK) {
        m->url = json_str(&j, "url"), m->repo = json_str(&j, "repo"), m->commit = json_str(&j, "commit");
        m->rel = json_str(&j, "file"), m->etag = json_str(&j, "etag"), m->id = json_str(&j, "id");
        if (!m->url || !m->repo || !m->commit || !m->rel || !m->etag || !m->id || !sz || !j.nodes[sz].is_uint)
            s = mk_error(MK_ERR_FORMAT, "%s: a damaged record of a file being fetched; delete the folder %s and run again",
                         meta, PARTIAL_DIR);
        else m->size = j.nodes[sz].u;
    }
    if (s == MK_OK && m->size != size)
        s = mk_error(MK_ERR_FORMAT, "%s: the file is %llu bytes, its record says %llu; delete it and run again", path,
                     (unsigned long long)size, (unsigned long long)m->size);
    if (s == MK_OK) {
        m->path = mk_strdup(path);
        m->ranges_path = meta_path_of(path, "ranges");
        if (!m->path || !m->ranges_path) s = MK_ERR_NOMEM;
    }
    if (s == MK_OK) s = load_ranges(m);
    if (s == MK_OK && (m->wfd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
        s = mk_error(MK_ERR_IO, "%s: cannot open it to fetch into: %s", path, strerror(errno));
    mk_json_free(&j);
    free(text);
    if (s != MK_OK) {
        remote_free(m);
        return s;
    }
    *out = m;
    return MK_OK;
}

/* mk_rfile's hooks: one shared state per path, so that reads from several mk_rfiles of a
 * file (the merge and its input hashing) fetch each range once. */
static mk_status shared_attach(const char *path, uint64_t size, mk_rfile_remote **out)
{
    *out = NULL;
    pthread_mutex_lock(&g_open_mu);
    for (mk_rfile_remote *m = g_open; m; m = m->next)
        if (strcmp(m->path, path) == 0) {
            m->refs++;
            *out = m;
            break;
        }
    mk_status s = MK_OK;
    if (!*out) {
        s = remote_attach(path, size, out);
        if (s == MK_OK && *out) {
            (*out)->refs = 1;
            (*out)->next = g_open;
            g_open = *out;
        }
    }
    pthread_mutex_unlock(&g_open_mu);
    return s;
}

static void shared_detach(mk_rfile_remote *m)
{
    pthread_mutex_lock(&g_open_mu);
    bool last = --m->refs == 0;
    if (last)
        for (mk_rfile_remote **p = &g_open; *p; p = &(*p)->next)
            if (*p == m) {
                *p = m->next;
                break;
            }
    pthread_mutex_unlock(&g_open_mu);
    if (last) remote_free(m);
}

static const mk_rfile_hooks g_hooks = {shared_attach, remote_ensure, shared_detach};

bool mk_hub_remote_sha256(const char *path, char out[65])
{
    mk_rfile_remote *m = NULL;
    struct stat st;
    if (stat(path, &st) != 0 || remote_attach(path, (uint64_t)st.st_size, &m) != MK_OK || !m) {
        mk_error_clear();
        return false;
    }
    bool ok = strlen(m->etag) == 64;
    if (ok) memcpy(out, m->etag, 65);
    remote_free(m);
    return ok;
}

void mk_hub_fetch_install(void) { mk_rfile_set_hooks(&g_hooks); }

uint64_t mk_hub_missing(const char *path, uint64_t off, uint64_t len)
{
    mk_rfile_remote *m = NULL;
    struct stat st;
    if (stat(path, &st) != 0 || remote_attach(path, (uint64_t)st.st_size, &m) != MK_OK || !m) {
        mk_error_clear();
        return 0;
    }
    uint64_t r = off <= m->size && len <= m->size - off ? missing_in(m, off, off + len) : 0;
    remote_free(m);
    return r;
}

/* ---- a model folder ----------------------------------------------------------------------- */

/* The staging entry of a weights file: the sparse file and its record (kept when both exist
 * with the right size, so a rerun continues). */
static mk_status stage_weights(const fetch_ctx *f, const char *stage, const char *file, const char *etag, uint64_t size)
{
    char *path = mk_asprintf("%s/%s", stage, file), *meta = path ? meta_path_of(path, "mkremote") : NULL;
    char *url = resolve_url(f, file);
    mk_status s = path && meta && url ? MK_OK : MK_ERR_NOMEM;
    struct stat st;
    bool keep = s == MK_OK && mk_is_file(meta) && stat(path, &st) == 0 && (uint64_t)st.st_size == size;
    if (s == MK_OK && !keep) {
        char *ranges = meta_path_of(path, "ranges");
        if (ranges) unlink(ranges);
        free(ranges);
        s = mkdirs_for(path);
        int fd = s == MK_OK ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
        if (s == MK_OK && (fd < 0 || ftruncate(fd, (off_t)size) != 0))
            s = mk_error(MK_ERR_IO, "%s: cannot make it: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        mk_buf b = {0};
        const char *keys[] = {"id", "commit", "file", "etag", "url", "repo"};
        const char *vals[] = {f->id, f->commit, file, etag, url, f->repo};
        for (size_t k = 0; k < 6; k++) {
            mk_buf_printf(&b, "%s\"%s\": ", k ? ", " : "{", keys[k]);
            mk_buf_json_str(&b, vals[k]);
        }
        mk_buf_printf(&b, ", \"size\": %llu}\n", (unsigned long long)size);
        if (s == MK_OK && (!b.data || b.failed)) s = MK_ERR_NOMEM;
        if (s == MK_OK) s = mk_write_file_atomic(meta, b.data, b.len);
        mk_buf_free(&b);
    }
    free(path), free(meta), free(url);
    return s;
}

/* Files of the staging folder `dir` (rel: its path below the staging root) still being
 * fetched, after taking over those that another tool (huggingface_hub) completed in the
 * snapshot meanwhile: their staging entry becomes the snapshot's link. */
static size_t reconcile(const char *dir, const char *rel, const char *snap_root, int depth)
{
    DIR *d = depth < 8 ? opendir(dir) : NULL;
    if (!d) return 0;
    size_t left = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        size_t len = strlen(n);
        char *p = mk_asprintf("%s/%s", dir, n);
        if (!p) continue;
        if (n[0] != '.' && mk_is_dir(p)) {
            char *r = mk_asprintf("%s%s/", rel, n);
            if (r) left += reconcile(p, r, snap_root, depth + 1);
            free(r);
        } else if (n[0] == '.' && len > 10 && strcmp(n + len - 9, ".mkremote") == 0) {
            char *name = mk_strndup(n + 1, len - 10);
            char *file = name ? mk_asprintf("%s/%s", dir, name) : NULL;
            char *snap = name ? mk_asprintf("%s/%s%s", snap_root, rel, name) : NULL;
            char *ranges = file ? meta_path_of(file, "ranges") : NULL;
            char target[4096];
            struct stat a, b;
            ssize_t tl = snap ? readlink(snap, target, sizeof target - 1) : -1;
            bool done = ranges && tl > 0 && stat(snap, &a) == 0 && S_ISREG(a.st_mode) && stat(file, &b) == 0 &&
                        a.st_size == b.st_size;
            char *tmp = done ? mk_asprintf("%s.mklink", file) : NULL;
            if (tmp) {
                target[tl] = 0; /* snapshots/<commit>/ and the staging root are at the same depth */
                unlink(tmp);
                done = symlink(target, tmp) == 0 && rename(tmp, file) == 0;
                if (done) unlink(p), unlink(ranges);
                else unlink(tmp);
            }
            left += !done;
            free(name), free(file), free(snap), free(ranges), free(tmp);
        }
        free(p);
    }
    closedir(d);
    return left;
}

char *mk_hub_partial_dir(const char *repo, const char *commit)
{
    char *d = mk_asprintf("%s/%s/%s", repo, PARTIAL_DIR, commit);
    char *snap = mk_asprintf("%s/snapshots/%s", repo, commit);
    if (d && snap && mk_is_dir(d) && reconcile(d, "", snap, 0) > 0) {
        free(snap);
        return d;
    }
    free(d);
    free(snap);
    return NULL;
}

mk_status mk_hub_fetch(const char *id, const char *rev, const char *sub, const char *repo, char **out)
{
    *out = NULL;
    fetch_ctx f = {.id = id, .repo = repo};
    char *ep = endpoint();
    if (!ep) return MK_ERR_NOMEM;
    f.ep = ep;
    rev_info ri;
    mk_status s = get_rev_info(ep, id, rev, &ri);
    if (s != MK_OK) {
        free(ep);
        return s;
    }
    f.commit = ri.commit;
    char *stage = mk_asprintf("%s/%s/%s", repo, PARTIAL_DIR, ri.commit);
    if (!stage) s = MK_ERR_NOMEM;
    size_t sublen = strlen(sub), taken = 0;
    if (s == MK_OK) s = mk_mkdir_p(stage);
    for (size_t i = 0; s == MK_OK && i < ri.n; i++) {
        const char *file = ri.files[i];
        if (!safe_rel(file)) continue;
        /* the files of the folder itself, not of folders inside it */
        if (sublen && (strncmp(file, sub, sublen) != 0 || file[sublen] != '/')) continue;
        const char *name = file + (sublen ? sublen + 1 : 0);
        if (strchr(name, '/')) continue;
        bool weights = mk_str_ends_with(name, ".safetensors");
        if (!weights && !is_small(name)) continue;
        char etag[96];
        uint64_t size = 0;
        bool lfs = false;
        s = head_file(&f, file, etag, &size, &lfs);
        char *blob = s == MK_OK ? mk_asprintf("%s/blobs/%s", repo, etag) : NULL;
        char *snap_rel = s == MK_OK ? mk_asprintf("snapshots/%s/%s", ri.commit, file) : NULL;
        char *stage_rel = s == MK_OK ? mk_asprintf("%s/%s/%s", PARTIAL_DIR, ri.commit, file) : NULL;
        char *snap = snap_rel ? mk_asprintf("%s/%s", repo, snap_rel) : NULL;
        char *in_stage = stage_rel ? mk_asprintf("%s/%s", repo, stage_rel) : NULL;
        if (s == MK_OK && (!blob || !snap || !in_stage)) s = MK_ERR_NOMEM;
        if (s == MK_OK && (!weights || mk_is_file(blob))) {
            if (!mk_is_file(blob)) s = fetch_small(&f, file, etag, size);
            if (s == MK_OK) s = link_blob(snap, snap_rel, etag);
            if (s == MK_OK) s = link_blob(in_stage, stage_rel, etag);
        } else if (s == MK_OK) {
            s = stage_weights(&f, stage, file, etag, size);
        }
        taken++;
        free(blob), free(snap_rel), free(stage_rel), free(snap), free(in_stage);
    }
    if (s == MK_OK && !taken)
        s = mk_error(MK_ERR_IO, "%s@%s: the Hub lists no model files%s%s (commit %s)", id, rev, sublen ? " in " : "",
                     sub, ri.commit);
    /* refs/<rev> as huggingface_hub writes it: the commit, no newline */
    if (s == MK_OK && !is_hex40(rev)) {
        char *ref = mk_asprintf("%s/refs/%s", repo, rev);
        if (!ref) s = MK_ERR_NOMEM;
        if (s == MK_OK) s = mkdirs_for(ref);
        if (s == MK_OK) s = mk_write_file_atomic(ref, ri.commit, 40);
        free(ref);
    }
    if (s == MK_OK) {
        *out = sublen ? mk_asprintf("%s/%s", stage, sub) : mk_strdup(stage);
        if (!*out) s = MK_ERR_NOMEM;
    }
    if (s == MK_OK) mk_info("%s@%s: fetching from %s by the byte ranges it reads (commit %s)", id, rev, ep, ri.commit);
    free(stage);
    rev_info_free(&ri);
    free(ep);
    return s;
}
