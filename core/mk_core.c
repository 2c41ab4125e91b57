/* mk_core.c - see mk_core.h */
#include "mk_core.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MK_ERRMSG_CAP 1024

static _Thread_local char tl_msg[MK_ERRMSG_CAP];

static const char *const status_names[MK_ERR_COUNT] = {
    [MK_OK] = "ok",
    [MK_ERR_USAGE] = "usage error",
    [MK_ERR_RECIPE] = "recipe error",
    [MK_ERR_FORMAT] = "bad input file",
    [MK_ERR_IO] = "I/O error",
    [MK_ERR_NOMEM] = "out of memory",
    [MK_ERR_UNSUPPORTED] = "not supported",
    [MK_ERR_NUMERIC] = "numeric error",
    [MK_ERR_EXISTS] = "output exists",
    [MK_ERR_MISMATCH] = "mismatch",
};

const char *mk_status_name(mk_status s)
{
    return (s >= 0 && s < MK_ERR_COUNT) ? status_names[s] : "unknown error";
}

int mk_status_exit_code(mk_status s)
{
    switch (s) {
    case MK_OK: return 0;
    case MK_ERR_USAGE:
    case MK_ERR_RECIPE:
    case MK_ERR_EXISTS: return 2;
    default: return 1;
    }
}

/* Messages quote names and values from input files: control characters become '?', so an
 * error or warning always stays on one line of the terminal. */
static void one_line(char *m)
{
    for (unsigned char *p = (unsigned char *)m; *p; p++)
        if (*p < 0x20 || *p == 0x7f) *p = '?';
}

mk_status mk_error(mk_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof tl_msg, fmt, ap);
    va_end(ap);
    one_line(tl_msg);
    return s;
}

mk_status mk_error_prefix(mk_status s, const char *fmt, ...)
{
    char prefix[512], old[MK_ERRMSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    one_line(prefix);
    memcpy(old, tl_msg, sizeof old);
    int n = snprintf(tl_msg, sizeof tl_msg, "%s: ", prefix);
    if (n > 0 && (size_t)n < sizeof tl_msg) {
        size_t room = sizeof tl_msg - (size_t)n, len = strlen(old);
        memcpy(tl_msg + n, old, len < room ? len + 1 : room);
        tl_msg[sizeof tl_msg - 1] = 0;
    }
    return s;
}

const char *mk_errmsg(void) { return tl_msg[0] ? tl_msg : "unknown error"; }
void mk_error_clear(void) { tl_msg[0] = 0; }

_Noreturn void mk_bug(const char *file, int line, const char *msg)
{
    fprintf(stderr, "mergekit-c: internal error at %s:%d: %s\n", file, line, msg);
    abort();
}

/* ---- logging --------------------------------------------------------------------- */

static int log_level = MK_LOG_WARN;
static unsigned n_warnings;

void mk_log_set_level(int level) { log_level = level; }
int mk_log_get_level(void) { return log_level; }
unsigned mk_log_warnings(void) { return __atomic_load_n(&n_warnings, __ATOMIC_RELAXED); }

void mk_log(mk_log_level lvl, const char *fmt, ...)
{
    if (lvl == MK_LOG_WARN) __atomic_add_fetch(&n_warnings, 1, __ATOMIC_RELAXED);
    if ((int)lvl > log_level) return;
    static const char *const tag[] = {"error: ", "warning: ", "", ""};
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    one_line(line);
    /* one fprintf per line so lines from threads do not interleave */
    fprintf(stderr, "mergekit-c: %s%s\n", tag[lvl], line);
}

/* ---- allocation ------------------------------------------------------------------ */

void *mk_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) mk_error(MK_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *mk_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) mk_error(MK_ERR_NOMEM, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *mk_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) mk_error(MK_ERR_NOMEM, "out of memory reallocating %zu bytes", n);
    return q;
}

void *mk_realloc_array(void *p, size_t count, size_t size)
{
    size_t n;
    if (!mk_mul_size(count, size, &n)) {
        mk_error(MK_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    return mk_realloc(p, n);
}

char *mk_strdup(const char *s) { return mk_strndup(s, strlen(s)); }

char *mk_strndup(const char *s, size_t n)
{
    char *p = mk_malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *mk_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = NULL;
    int r = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (r < 0) {
        mk_error(MK_ERR_NOMEM, "out of memory formatting a string");
        return NULL;
    }
    return p;
}

/* ---- strings ----------------------------------------------------------------------- */

bool mk_str_ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

bool mk_str_starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool mk_str_has_component(const char *path, const char *part)
{
    size_t kl = strlen(part);
    if (kl == 0) return false; /* strstr would never advance */
    for (const char *p = path; (p = strstr(p, part)) != NULL; p++) {
        bool start = p == path || p[-1] == '.';
        bool end = p[kl] == 0 || p[kl] == '.';
        if (start && end) return true;
    }
    return false;
}

unsigned mk_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 255;
    unsigned row[65];
    for (size_t j = 0; j <= lb; j++) row[j] = (unsigned)j;
    for (size_t i = 1; i <= la; i++) {
        unsigned prev = row[0];
        row[0] = (unsigned)i;
        for (size_t j = 1; j <= lb; j++) {
            unsigned cur = row[j];
            unsigned sub = prev + (a[i - 1] != b[j - 1]);
            unsigned del = row[j] + 1, ins = row[j - 1] + 1;
            unsigned m = sub < del ? sub : del;
            row[j] = m < ins ? m : ins;
            prev = cur;
        }
    }
    return row[lb] > 255 ? 255 : row[lb];
}

const char *mk_did_you_mean(const char *word, const char *const *candidates, size_t n)
{
    const char *best = NULL;
    unsigned best_d = 255;
    for (size_t i = 0; i < n; i++) {
        unsigned d = mk_edit_distance(word, candidates[i]);
        if (d < best_d) {
            best_d = d;
            best = candidates[i];
        }
    }
    size_t len = strlen(word);
    unsigned limit = len <= 4 ? 1 : len <= 8 ? 2 : 3;
    if (best_d <= limit) return best;
    /* a part of a longer name ("shard-size" for "out-shard-size") */
    for (size_t i = 0; len >= 4 && i < n; i++)
        if (strstr(candidates[i], word)) return candidates[i];
    return NULL;
}

bool mk_parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0) || !isfinite(v)) return false;
    double mul = 1;
    const char *u = end;
    if (*u) {
        static const struct { const char *suf; double mul; } units[] = {
            {"", 1},
            {"K", 1e3}, {"KB", 1e3}, {"M", 1e6}, {"MB", 1e6},
            {"G", 1e9}, {"GB", 1e9}, {"T", 1e12}, {"TB", 1e12},
            {"KI", 1024.0}, {"KIB", 1024.0}, {"MI", 1048576.0}, {"MIB", 1048576.0},
            {"GI", 1073741824.0}, {"GIB", 1073741824.0},
        };
        char up[8];
        size_t n = strlen(u);
        if (n >= sizeof up) return false;
        for (size_t i = 0; i <= n; i++) up[i] = (char)((u[i] >= 'a' && u[i] <= 'z') ? u[i] - 32 : u[i]);
        bool found = false;
        /* mergekit's "5B" means 5e9 bytes (B = billion); a bare "B" suffix after a
         * number is treated the same way, since nobody asks for 5-byte shards */
        if (strcmp(up, "B") == 0) { mul = 1e9; found = true; }
        for (size_t i = 0; !found && i < sizeof units / sizeof units[0]; i++)
            if (strcmp(up, units[i].suf) == 0) { mul = units[i].mul; found = true; }
        if (!found) return false;
    }
    double r = v * mul;
    if (r >= 1.8e19) return false;
    *out = (uint64_t)(r + 0.5);
    return true;
}

const char *mk_fmt_bytes(uint64_t n, char buf[32])
{
    if (n < 1000) snprintf(buf, 32, "%llu B", (unsigned long long)n);
    else if (n < 1000000) snprintf(buf, 32, "%.2f kB", n / 1e3);
    else if (n < 1000000000) snprintf(buf, 32, "%.2f MB", n / 1e6);
    else snprintf(buf, 32, "%.2f GB", n / 1e9);
    return buf;
}

/* ---- growable buffer ----------------------------------------------------------- */

void mk_buf_put(mk_buf *b, const void *p, size_t n)
{
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->failed = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n); /* p may be NULL when n is 0 */
    b->len += n;
    b->data[b->len] = 0;
}

void mk_buf_puts(mk_buf *b, const char *s) { mk_buf_put(b, s, strlen(s)); }

void mk_buf_printf(mk_buf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        mk_buf_put(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    mk_buf_put(b, big, (size_t)n);
    free(big);
}

void mk_buf_json_str(mk_buf *b, const char *s)
{
    mk_buf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': mk_buf_puts(b, "\\\""); break;
        case '\\': mk_buf_puts(b, "\\\\"); break;
        case '\n': mk_buf_puts(b, "\\n"); break;
        case '\r': mk_buf_puts(b, "\\r"); break;
        case '\t': mk_buf_puts(b, "\\t"); break;
        default:
            if (*p < 0x20) mk_buf_printf(b, "\\u%04x", *p);
            else mk_buf_put(b, p, 1);
        }
    }
    mk_buf_put(b, "\"", 1);
}

void mk_buf_free(mk_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

double mk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The first number in file `path` (0 when absent or not a number: "max"). */
static uint64_t file_number(const char *path)
{
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    if (f && fscanf(f, "%llu", &v) != 1) v = 0;
    if (f) fclose(f);
    return (uint64_t)v;
}

/* Of this process's memory cgroup and the groups above it, the least room left under a limit
 * (limit less usage; UINT64_MAX where none is limited). v2: the "0::" line of /proc/self/cgroup,
 * v1: the line naming the memory controller. */
static uint64_t cgroup_room(void)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[1024], rel[1024] = "", *base = NULL, *lim = NULL, *use = NULL;
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        bool v2 = c1 == line + 1 && line[0] == '0' && c1[1] == 0;
        bool v1 = strstr(c1 + 1, "memory") != NULL;
        if (!v1 && !(v2 && !base)) continue;
        snprintf(rel, sizeof rel, "%s", c2 + 1);
        base = v1 ? "/sys/fs/cgroup/memory" : "/sys/fs/cgroup";
        lim = v1 ? "memory.limit_in_bytes" : "memory.max";
        use = v1 ? "memory.usage_in_bytes" : "memory.current";
        if (v1) break;
    }
    if (f) fclose(f);
    uint64_t room = UINT64_MAX;
    for (bool more = base != NULL; more;) {
        char pl[1200], pu[1200];
        snprintf(pl, sizeof pl, "%s%s/%s", base, rel, lim);
        snprintf(pu, sizeof pu, "%s%s/%s", base, rel, use);
        uint64_t l = file_number(pl), u = file_number(pu);
        if (l && l < (1ull << 60) && (l > u ? l - u : 0) < room) room = l > u ? l - u : 0;
        char *slash = strrchr(rel, '/');
        more = slash != NULL && rel[0];
        if (slash) *slash = 0;
    }
    return room;
}

uint64_t mk_mem_available(void)
{
    uint64_t avail = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) avail = (uint64_t)kb * 1024;
    if (f) fclose(f);
    uint64_t room = cgroup_room();
    if (room != UINT64_MAX && (!avail || room < avail)) avail = room;
    return avail;
}

static long tp_arm, tp_count;

void mk_testpoint_arm(long n) { tp_arm = n; }

void mk_testpoint(void)
{
    long c = __atomic_add_fetch(&tp_count, 1, __ATOMIC_SEQ_CST);
    if (tp_arm > 0 && c == tp_arm) raise(SIGKILL);
}

long mk_testpoint_count(void) { return __atomic_load_n(&tp_count, __ATOMIC_SEQ_CST); }
