/* main.c - runs every registered unit test. Usage: test-unit [SUBSTRING] */
#include "harness.h"

#include "../../core/mk_core.h"
#include "../../core/mk_io.h"
#include "../../formats/safetensors.h"

#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_TESTS 1024

static struct {
    const char *name, *file;
    mk_test_fn fn;
} tests[MAX_TESTS];
static int n_tests;
static int cur_failed;
static char tmpdir[256];

void mk_test_register(const char *name, const char *file, mk_test_fn fn)
{
    if (n_tests < MAX_TESTS) {
        tests[n_tests].name = name;
        tests[n_tests].file = file;
        tests[n_tests].fn = fn;
        n_tests++;
    }
}

void mk_test_fail(const char *file, int line, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cur_failed < 5) printf("  %s:%d: %s\n", file, line, msg);
    cur_failed++;
}

mk_source *mk_test_golden(const char *rel)
{
    const char *root = getenv("MK_ROOT") ? getenv("MK_ROOT") : ".";
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/golden/%s", root, rel);
    mk_source *src = NULL;
    if (mk_safetensors_open(path, &src) == MK_OK) return src;
    mk_test_fail(__FILE__, __LINE__, "cannot open %s: %s", path, mk_errmsg());
    return NULL;
}

const char *mk_test_tmpdir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/mk-unit-XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return tmpdir;
}

void mk_check_close(const char *file, int line, const char *what, const float *got, const float *want, size_t n,
                    double atol, double rtol)
{
    size_t worst = 0, bad = 0;
    double worst_excess = -1;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        bool same_nan = isnan(g) && isnan(w);
        double tol = atol + rtol * fabs(w);
        double err = same_nan ? 0 : (isinf(w) || isinf(g)) ? (g == w ? 0 : INFINITY) : fabs(g - w);
        if (isnan(err)) err = INFINITY;
        if (err > tol) {
            bad++;
            if (err - tol > worst_excess) {
                worst_excess = err - tol;
                worst = i;
            }
        }
    }
    if (bad)
        mk_test_fail(file, line, "%s: %zu of %zu elements outside atol %g + rtol %g; worst at [%zu]: got %.9g, want %.9g",
                     what, bad, n, atol, rtol, worst, (double)got[worst], (double)want[worst]);
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;
    mk_log_set_level(-1); /* tests check messages through mk_errmsg, not stderr */
    for (int i = 0; i < n_tests; i++) {
        if (filter && !strstr(tests[i].name, filter)) continue;
        cur_failed = 0;
        mk_error_clear();
        tests[i].fn();
        if (cur_failed) {
            printf("FAIL %s (%s)\n", tests[i].name, tests[i].file);
            failed++;
        } else {
            printf("ok %s\n", tests[i].name);
            passed++;
        }
        fflush(stdout);
    }
    if (tmpdir[0]) mk_rm_rf(tmpdir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
