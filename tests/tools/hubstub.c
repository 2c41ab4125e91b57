/* hubstub - a stand-in for the Hugging Face Hub on the loopback address, for tests. It serves
 * the endpoints the Hub answers and mergekit-c (and huggingface_hub) use:
 *   GET  /api/models/ORG/NAME/revision/REV   {"id", "sha": commit, "siblings": [{"rfilename"}]}
 *   GET  /api/models/ORG/NAME/tree/REV       [{"type": "file", "path", "size", "oid", "lfs"}]
 *                                            (huggingface_hub's snapshot_download lists with it)
 *   HEAD|GET /ORG/NAME/resolve/REV/FILE      small files: 200 with ETag and the bytes;
 *        *.safetensors (LFS): 302 to http://localhost:PORT/lfs/SHA256/ORG/NAME/FILE (another
 *        host name: the Hub redirects to its storage on another host, which HEAD requests
 *        do not follow) with X-Linked-Etag and X-Linked-Size
 *   GET  /lfs/SHA256/ORG/NAME/FILE           the bytes, with Range (206)
 * from ROOT/ORG/NAME/ (files, and folders of files). REV is "main" or the repository's
 * commit (the first 40 hex digits of the sha256 of "ORG/NAME"). A file ROOT/ORG/NAME.gated
 * makes the repository want `Authorization: Bearer TOKEN` (401 without one, 403 with another).
 *
 * Usage: hubstub ROOT PORTFILE LOG [--token T] [--cut-after N] [--fail-first N]
 *   writes its port to PORTFILE once listening; appends "METHOD PATH START END\n" to LOG for
 *   every body it sends (START-END the bytes of the file); --cut-after N closes the
 *   connection after N bytes of the first LFS body (a cut download); --fail-first N answers
 *   the first N requests with 503 (retries). Serves until killed; a process per connection.
 */
#include "../../core/mk_hash.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *g_root, *g_log, *g_token, *g_state;
static long g_cut = -1, g_fail = 0;
static int g_port;

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0) _exit(0);
        c += w;
        n -= (size_t)w;
    }
}

static void reply(int fd, int code, const char *reason, const char *extra, const char *body, size_t blen, bool head)
{
    char h[4096];
    int n = snprintf(h, sizeof h, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s\r\n", code, reason, blen, extra ? extra : "");
    send_all(fd, h, (size_t)n);
    if (!head && blen) send_all(fd, body, blen);
}

static void logline(const char *method, const char *path, unsigned long long a, unsigned long long b)
{
    FILE *f = fopen(g_log, "a");
    if (!f) return;
    fprintf(f, "%s %s %llu %llu\n", method, path, a, b);
    fclose(f);
}

static void commit_of(const char *repo, char out[41])
{
    mk_sha256 s;
    char hex[65];
    mk_sha256_init(&s);
    mk_sha256_update(&s, repo, strlen(repo));
    mk_sha256_hex(&s, hex);
    memcpy(out, hex, 40);
    out[40] = 0;
}

/* A counter kept in a file (processes share it): returns its value before adding one. */
static long bump(const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s.%s", g_state, name);
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return 0;
    long v = 0;
    char buf[32] = {0};
    if (lockf(fd, F_LOCK, 0) == 0) {
        ssize_t r = pread(fd, buf, sizeof buf - 1, 0);
        if (r > 0) v = strtol(buf, NULL, 10);
        int n = snprintf(buf, sizeof buf, "%ld\n", v + 1);
        if (pwrite(fd, buf, (size_t)n, 0) < 0) v = 0;
    }
    close(fd);
    return v;
}

static void sha_file(const char *path, char hex[65]);

/* Files under dir (relative names, '/'-joined) into out: as revision siblings, or (tree) as
 * the entries of /api/models/.../tree/REV. */
static void list_files(const char *dir, const char *prefix, char *out, size_t cap, bool *first, bool tree)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[4200], rel[4200];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        snprintf(rel, sizeof rel, "%s%s", prefix, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            char pre[4300];
            snprintf(pre, sizeof pre, "%s/", rel);
            list_files(p, pre, out, cap, first, tree);
        } else if (tree) {
            size_t n = strlen(out), fl = strlen(rel);
            char sha[65];
            sha_file(p, sha);
            bool lfs = fl > 12 && strcmp(rel + fl - 12, ".safetensors") == 0;
            n += (size_t)snprintf(out + n, cap - n, "%s{\"type\": \"file\", \"oid\": \"%.40s\", \"size\": %lld, \"path\": \"%s\"",
                                  *first ? "" : ", ", sha, (long long)st.st_size, rel);
            if (lfs)
                n += (size_t)snprintf(out + n, cap - n, ", \"lfs\": {\"oid\": \"%s\", \"size\": %lld, \"pointerSize\": 134}", sha,
                                      (long long)st.st_size);
            snprintf(out + n, cap - n, "}");
            *first = false;
        } else {
            size_t n = strlen(out);
            snprintf(out + n, cap - n, "%s{\"rfilename\": \"%s\"}", *first ? "" : ", ", rel);
            *first = false;
        }
    }
    closedir(d);
}

static bool read_file(const char *path, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc((size_t)n + 1);
    *len = (size_t)n;
    bool ok = *data && fread(*data, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    return ok;
}

/* sha256 of each file, computed once (children inherit the table) */
#define MAX_FILES 4096
static char *g_paths[MAX_FILES];
static char g_shas[MAX_FILES][65];
static size_t g_nfiles;

static void sha_compute(const char *path, char hex[65])
{
    char *d = NULL;
    size_t n = 0;
    mk_sha256 s;
    mk_sha256_init(&s);
    if (read_file(path, &d, &n)) mk_sha256_update(&s, d, n);
    free(d);
    mk_sha256_hex(&s, hex);
}

static void sha_file(const char *path, char hex[65])
{
    for (size_t i = 0; i < g_nfiles; i++)
        if (strcmp(g_paths[i], path) == 0) {
            memcpy(hex, g_shas[i], 65);
            return;
        }
    sha_compute(path, hex);
}

static void sha_all(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) && g_nfiles < MAX_FILES) {
        if (e->d_name[0] == '.') continue;
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) sha_all(p);
        else if (S_ISREG(st.st_mode)) {
            g_paths[g_nfiles] = strdup(p);
            sha_compute(p, g_shas[g_nfiles++]);
        }
    }
    closedir(d);
}

/* org/name from "org/name/rest": repo into buf, returns rest (after the '/') or NULL. */
static const char *split_repo(const char *p, char *repo, size_t cap)
{
    const char *s1 = strchr(p, '/');
    const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    if (!s2 || (size_t)(s2 - p) >= cap) return NULL;
    memcpy(repo, p, (size_t)(s2 - p));
    repo[s2 - p] = 0;
    return s2 + 1;
}

static bool safe(const char *p) { return !strstr(p, "..") && p[0] != '/'; }

/* Auth for a gated repository: 0 fine, else the status to answer. */
static int auth(const char *repo, const char *authz)
{
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/%s.gated", g_root, repo);
    if (access(marker, F_OK) != 0) return 0;
    if (!authz) return 401;
    char want[600];
    snprintf(want, sizeof want, "Bearer %s", g_token ? g_token : "");
    return g_token && strcmp(authz, want) == 0 ? 0 : 403;
}

static void serve(int fd, const char *method, const char *path, const char *authz, const char *range)
{
    bool head = strcmp(method, "HEAD") == 0;
    char repo[512], commit[41], fpath[4400], extra[2048];
    if (g_fail > 0 && bump("fail") < g_fail) {
        reply(fd, 503, "Service Unavailable", NULL, "busy", 4, head);
        return;
    }
    if (strncmp(path, "/api/models/", 12) == 0) {
        const char *rest = split_repo(path + 12, repo, sizeof repo);
        bool tree = rest && strncmp(rest, "tree/", 5) == 0;
        if (!rest || (strncmp(rest, "revision/", 9) != 0 && !tree) || !safe(repo)) goto notfound;
        int a = auth(repo, authz);
        if (a) goto denied;
        commit_of(repo, commit);
        const char *rev = rest + (tree ? 5 : 9);
        snprintf(fpath, sizeof fpath, "%s/%s", g_root, repo);
        struct stat st;
        if (stat(fpath, &st) != 0 || (strcmp(rev, "main") != 0 && strcmp(rev, commit) != 0)) goto notfound;
        static char body[1 << 20];
        bool first = true;
        char files[1 << 16] = {0};
        list_files(fpath, "", files, sizeof files, &first, tree);
        int n = tree ? snprintf(body, sizeof body, "[%s]", files)
                     : snprintf(body, sizeof body, "{\"id\": \"%s\", \"sha\": \"%s\", \"siblings\": [%s]}", repo, commit, files);
        reply(fd, 200, "OK", "Content-Type: application/json\r\n", body, (size_t)n, head);
        return;
    denied:
        reply(fd, a, a == 401 ? "Unauthorized" : "Forbidden", NULL, "{\"error\": \"gated\"}", 19, head);
        return;
    }
    if (strncmp(path, "/lfs/", 5) == 0) {
        const char *rest = strchr(path + 5, '/');
        if (!rest || !safe(rest + 1)) goto notfound;
        snprintf(fpath, sizeof fpath, "%s/%s", g_root, rest + 1);
        int ffd = open(fpath, O_RDONLY);
        struct stat fst;
        if (ffd < 0 || fstat(ffd, &fst) != 0) {
            if (ffd >= 0) close(ffd);
            goto notfound;
        }
        size_t len = (size_t)fst.st_size;
        unsigned long long a = 0, b = len ? len - 1 : 0;
        int code = 200;
        if (range && sscanf(range, "bytes=%llu-%llu", &a, &b) >= 1) {
            if (b >= len) b = len - 1;
            if (a > b) {
                close(ffd);
                reply(fd, 416, "Range Not Satisfiable", NULL, "", 0, head);
                return;
            }
            code = 206;
        }
        size_t n = (size_t)(b - a + 1), send_n = n;
        snprintf(extra, sizeof extra, "Accept-Ranges: bytes\r\nContent-Range: bytes %llu-%llu/%zu\r\n", a, b, len);
        bool cut = !head && g_cut >= 0 && (size_t)g_cut < n && bump("cut") == 0;
        if (cut) send_n = (size_t)g_cut;
        char h[512];
        int hn = snprintf(h, sizeof h, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s\r\n", code,
                          code == 206 ? "Partial Content" : "OK", n, extra);
        send_all(fd, h, (size_t)hn);
        if (!head) {
            static char chunk[1 << 20];
            for (size_t done = 0; done < send_n;) {
                size_t k = send_n - done < sizeof chunk ? send_n - done : sizeof chunk;
                ssize_t r = pread(ffd, chunk, k, (off_t)(a + done));
                if (r <= 0) _exit(0);
                send_all(fd, chunk, (size_t)r);
                done += (size_t)r;
            }
            logline(cut ? "CUT" : "GET", rest + 1, a, a + send_n);
        }
        close(ffd);
        if (cut) _exit(0);
        return;
    }
    {
        const char *rest = split_repo(path + 1, repo, sizeof repo);
        if (!rest || strncmp(rest, "resolve/", 8) != 0 || !safe(repo)) goto notfound;
        int a = auth(repo, authz);
        if (a) {
            reply(fd, a, a == 401 ? "Unauthorized" : "Forbidden", "X-Error-Code: GatedRepo\r\n", "", 0, head);
            return;
        }
        commit_of(repo, commit);
        const char *rev = rest + 8, *file = strchr(rev, '/');
        if (!file || !safe(file + 1)) goto notfound;
        if (strncmp(rev, "main/", 5) != 0 && strncmp(rev, commit, 40) != 0) goto notfound;
        file++;
        snprintf(fpath, sizeof fpath, "%s/%s/%s", g_root, repo, file);
        struct stat st;
        if (stat(fpath, &st) != 0 || !S_ISREG(st.st_mode)) goto notfound;
        char sha[65];
        sha_file(fpath, sha);
        size_t fl = strlen(file);
        if (fl > 12 && strcmp(file + fl - 12, ".safetensors") == 0) {
            snprintf(extra, sizeof extra,
                     "Location: http://localhost:%d/lfs/%s/%s/%s\r\nX-Repo-Commit: %s\r\nX-Linked-Etag: \"%s\"\r\nX-Linked-Size: %lld\r\n"
                     "ETag: W/\"%.40s\"\r\n",
                     g_port, sha, repo, file, commit, sha, (long long)st.st_size, sha);
            reply(fd, 302, "Found", extra, "", 0, head);
            return;
        }
        char *data = NULL;
        size_t len = 0;
        if (!read_file(fpath, &data, &len)) goto notfound;
        snprintf(extra, sizeof extra, "X-Repo-Commit: %s\r\nETag: \"%.40s\"\r\n", commit, sha);
        if (!head) logline("GET", file, 0, len);
        reply(fd, 200, "OK", extra, data, len, head);
        free(data);
        return;
    }
notfound:
    reply(fd, 404, "Not Found", "X-Error-Code: EntryNotFound\r\n", "not found", 9, strcmp(method, "HEAD") == 0);
}

/* Requests on one connection until it closes. */
static void connection(int fd)
{
    static char buf[65536];
    size_t have = 0;
    for (;;) {
        char *end;
        while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
            if (have == sizeof buf) _exit(0);
            ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
            if (r <= 0) _exit(0);
            have += (size_t)r;
        }
        *end = 0;
        char method[16], path[8192];
        if (sscanf(buf, "%15s %8191s", method, path) != 2) _exit(0);
        char *authz = NULL, *range = NULL;
        for (char *l = strstr(buf, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
            char *v = l + 2;
            if (strncasecmp(v, "Authorization: ", 15) == 0) authz = v + 15;
            if (strncasecmp(v, "Range: ", 7) == 0) range = v + 7;
        }
        for (char *l = buf; (l = strstr(l, "\r\n")); l++) *l = 0;
        char *q = strchr(path, '?');
        if (q) *q = 0;
        serve(fd, method, path, authz, range);
        size_t used = (size_t)(end + 4 - buf);
        memmove(buf, buf + used, have - used);
        have -= used;
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: hubstub ROOT PORTFILE LOG [--token T] [--cut-after N] [--fail-first N]\n");
        return 2;
    }
    g_root = argv[1];
    g_log = argv[3];
    g_state = argv[3];
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--token") == 0) g_token = argv[i + 1];
        else if (strcmp(argv[i], "--cut-after") == 0) g_cut = strtol(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--fail-first") == 0) g_fail = strtol(argv[i + 1], NULL, 10);
    }
    sha_all(g_root);
    signal(SIGCHLD, SIG_IGN);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
    socklen_t al = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 64) != 0 || getsockname(s, (struct sockaddr *)&a, &al) != 0) {
        perror("hubstub");
        return 1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]);
    FILE *pf = fopen(tmp, "w");
    if (!pf) return 1;
    g_port = ntohs(a.sin_port);
    fprintf(pf, "%d\n", g_port);
    fclose(pf);
    rename(tmp, argv[2]);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        pid_t p = fork();
        if (p == 0) {
            close(s);
            connection(c);
            _exit(0);
        }
        close(c);
    }
}
