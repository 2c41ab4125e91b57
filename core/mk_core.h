/* mk_core.h - status codes, thread-local error detail, logging, checked allocation,
 * overflow-checked arithmetic and small string helpers.
 *
 * Owns: the error model of the whole program. Library code returns an mk_status and
 * leaves a one-line message (naming file, key or tensor, what was expected and found)
 * in a thread-local buffer; only cli/ prints it and exits.
 * Must not: print to stdout, call exit(), or depend on any other module.
 */
#ifndef MK_CORE_H
#define MK_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MK_VERSION "0.1.0"

/* Status codes. The CLI maps them to exit codes: USAGE and RECIPE -> 2, the rest -> 1. */
typedef enum mk_status {
    MK_OK = 0,
    MK_ERR_USAGE,      /* bad command line */
    MK_ERR_RECIPE,     /* recipe (YAML) is invalid or names something that does not exist */
    MK_ERR_FORMAT,     /* an input file is malformed or hostile */
    MK_ERR_IO,         /* open/read/write/rename/fsync failed */
    MK_ERR_NOMEM,      /* allocation failed or a size is over a limit */
    MK_ERR_UNSUPPORTED,/* valid request that this build does not do (yet) */
    MK_ERR_NUMERIC,    /* NaN/Inf or an overflowing conversion */
    MK_ERR_EXISTS,     /* output exists and --force was not given */
    MK_ERR_MISMATCH,   /* a check (hash, --check, verify) found a difference */
    MK_ERR_COUNT
} mk_status;

const char *mk_status_name(mk_status s);
int mk_status_exit_code(mk_status s);

/* Record an error message for the calling thread and return `s`. printf-style. */
mk_status mk_error(mk_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "prefix: " (used when forwarding upward). */
mk_status mk_error_prefix(mk_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *mk_errmsg(void);
void mk_error_clear(void);

#define MK_TRY(expr)                                                                     \
    do {                                                                                 \
        mk_status mk_try_s_ = (expr);                                                    \
        if (mk_try_s_ != MK_OK) return mk_try_s_;                                        \
    } while (0)

/* Our own bugs, never input validation: always on, aborts with file:line. */
#define MK_BUG(msg) mk_bug(__FILE__, __LINE__, (msg))
#define MK_ASSERT(cond)                                                                  \
    do {                                                                                 \
        if (!(cond)) mk_bug(__FILE__, __LINE__, #cond);                                  \
    } while (0)
_Noreturn void mk_bug(const char *file, int line, const char *msg);

/* ---- logging (stderr only; cli sets the level) ---------------------------------- */
typedef enum mk_log_level { MK_LOG_ERROR = 0, MK_LOG_WARN, MK_LOG_INFO, MK_LOG_DEBUG } mk_log_level;
void mk_log_set_level(int level); /* -q -> -1 (errors only... and not even warnings), default 1 (warn) */
int mk_log_get_level(void);
void mk_log(mk_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define mk_warn(...) mk_log(MK_LOG_WARN, __VA_ARGS__)
#define mk_info(...) mk_log(MK_LOG_INFO, __VA_ARGS__)
#define mk_debug(...) mk_log(MK_LOG_DEBUG, __VA_ARGS__)
/* Number of warnings emitted so far (tests and --json report it). */
unsigned mk_log_warnings(void);

/* ---- checked allocation: NULL + MK_ERR_NOMEM message on failure ------------------ */
void *mk_malloc(size_t n);
void *mk_calloc(size_t count, size_t size);
void *mk_realloc(void *p, size_t n);
void *mk_realloc_array(void *p, size_t count, size_t size);
char *mk_strdup(const char *s);
char *mk_strndup(const char *s, size_t n);
char *mk_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- overflow-checked arithmetic: return false on overflow ----------------------- */
static inline bool mk_add_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_add_overflow(a, b, out); }
static inline bool mk_mul_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }
/* Greatest common divisor (gcd(0, b) = b). */
static inline uint64_t mk_gcd_u64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}
static inline bool mk_mul_size(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }

/* ---- small string helpers -------------------------------------------------------- */
bool mk_str_ends_with(const char *s, const char *suffix);
bool mk_str_starts_with(const char *s, const char *prefix);
/* Whether `part` (one or more dot-separated components) occurs in the dotted path `path` as
 * whole components: (^|.*\.)part($|\..*), as PEFT matches modules_to_save entries. */
bool mk_str_has_component(const char *path, const char *part);
/* Levenshtein distance, capped at 255; used for "did you mean" hints. */
unsigned mk_edit_distance(const char *a, const char *b);
/* The candidate closest to `word` if it is close enough to be a likely typo, else NULL. */
const char *mk_did_you_mean(const char *word, const char *const *candidates, size_t n);
/* Parse sizes like "5e9", "500M", "2G", "1.5GB", "4096", "2GiB". Decimal units (K=1e3,
 * M=1e6, G/B=1e9, T=1e12) as Hugging Face and mergekit use; Ki/Mi/Gi are binary. */
bool mk_parse_size(const char *s, uint64_t *out);
/* Human-readable byte count into buf ("1.50 GB"). */
const char *mk_fmt_bytes(uint64_t n, char buf[32]);

/* Growable byte buffer for building text (JSON, model cards). */
typedef struct mk_buf {
    char *data;
    size_t len, cap;
    bool failed; /* an allocation failed; contents are incomplete */
} mk_buf;
void mk_buf_put(mk_buf *b, const void *p, size_t n);
void mk_buf_puts(mk_buf *b, const char *s);
void mk_buf_printf(mk_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as a JSON string literal (quotes included, escapes per RFC 8259). */
void mk_buf_json_str(mk_buf *b, const char *s);
void mk_buf_free(mk_buf *b);

/* Monotonic seconds. */
double mk_now(void);

/* Bytes of memory this process may use now: the kernel's MemAvailable (/proc/meminfo), or less
 * where a memory cgroup's limit is lower (v2 memory.max, v1 memory.limit_in_bytes, less what
 * the group uses). 0 where neither is known. */
uint64_t mk_mem_available(void);

/* Crash-safety test points: the writers call mk_testpoint() at every step where a kill
 * could leave something behind (each tensor done, each shard made durable, each step of the
 * final commit). When armed with n > 0 (the CLI does this from MK_TEST_KILL_AT), the n-th
 * call kills the process with SIGKILL, so tests can stop a run at chosen points. */
void mk_testpoint_arm(long n);
void mk_testpoint(void);
long mk_testpoint_count(void);

#endif
