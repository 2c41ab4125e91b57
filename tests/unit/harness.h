/* harness.h - a tiny unit-test harness. Each test file defines tests with MK_TEST(name);
 * they register themselves at load time and tests/unit/main.c runs them all, printing
 * "ok NAME" or "FAIL NAME: message" per test and "N passed, N failed" at the end.
 * Numeric checks name their tolerance and print the worst element (index, got, want).
 */
#ifndef MK_HARNESS_H
#define MK_HARNESS_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef void (*mk_test_fn)(void);
void mk_test_register(const char *name, const char *file, mk_test_fn fn);
/* Record a failure of the current test (it keeps running; later checks may add detail). */
void mk_test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A scratch directory for this test run (created on first use, removed at exit). */
const char *mk_test_tmpdir(void);
/* tests/golden/REL (under $MK_ROOT, else the current folder) as a safetensors source, or NULL
 * after recording a failure that names the file. */
struct mk_source *mk_test_golden(const char *rel);

#define MK_TEST(name)                                                                    \
    static void test_##name(void);                                                       \
    __attribute__((constructor)) static void reg_##name(void)                            \
    {                                                                                    \
        mk_test_register(#name, __FILE__, test_##name);                                  \
    }                                                                                    \
    static void test_##name(void)

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) mk_test_fail(__FILE__, __LINE__, "check failed: %s", #cond);        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                             \
    do {                                                                                 \
        if (!(cond)) mk_test_fail(__FILE__, __LINE__, __VA_ARGS__);                      \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                               \
    do {                                                                                 \
        long long a_ = (long long)(a), b_ = (long long)(b);                              \
        if (a_ != b_) mk_test_fail(__FILE__, __LINE__, "%s == %lld, want %s == %lld", #a, a_, #b, b_); \
    } while (0)

#define CHECK_STR(a, b)                                                                  \
    do {                                                                                 \
        const char *a_ = (a), *b_ = (b);                                                 \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                           \
            mk_test_fail(__FILE__, __LINE__, "%s == \"%s\", want \"%s\"", #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
    } while (0)

/* An error status whose message contains `needle`. */
#define CHECK_ERR(expr, want_status, needle)                                             \
    do {                                                                                 \
        mk_status s_ = (expr);                                                           \
        if (s_ != (want_status) || !strstr(mk_errmsg(), (needle)))                       \
            mk_test_fail(__FILE__, __LINE__, "%s: got status %d \"%s\", want %d containing \"%s\"", #expr, (int)s_, \
                         s_ ? mk_errmsg() : "", (int)(want_status), (needle));           \
    } while (0)

#define CHECK_OK(expr)                                                                   \
    do {                                                                                 \
        mk_status s_ = (expr);                                                           \
        if (s_ != MK_OK) mk_test_fail(__FILE__, __LINE__, "%s failed: %s", #expr, mk_errmsg()); \
    } while (0)

/* Elementwise |got - want| <= atol + rtol * |want|; reports the worst element. */
void mk_check_close(const char *file, int line, const char *what, const float *got, const float *want, size_t n,
                    double atol, double rtol);
#define CHECK_CLOSE(what, got, want, n, atol, rtol) mk_check_close(__FILE__, __LINE__, what, got, want, n, atol, rtol)

#endif
