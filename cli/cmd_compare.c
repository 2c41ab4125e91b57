/* cmd_compare.c - `mergekit-c compare GOT WANT`: compare two checkpoints tensor by tensor
 * (any formats we read), with named tolerances, reporting the worst element of every
 * tensor (index, got, want). Exit 0 when within tolerance, 1 otherwise.
 *
 * An element passes when it is bit-equal after converting both values to WANT's dtype,
 * or within --max-ulp units in the last place of that dtype, or within --rel times the
 * largest magnitude in WANT's tensor. --max-diff-share bounds the share of elements that
 * may differ at all; --max-bad-share lets that share of a tensor's elements be out of
 * tolerance (for methods whose per-element decisions sit on a rounding knife-edge).
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMP_CHUNK (1u << 20)

/* Position of a value on the ordered integer lattice of a float dtype. */
static int64_t lattice(mk_dtype t, float v)
{
    int64_t u;
    switch (t) {
    case MK_BF16: u = mk_f32_to_bf16(v); return (u & 0x8000) ? -(u & 0x7fff) : u;
    case MK_F16: u = mk_f32_to_f16(v); return (u & 0x8000) ? -(u & 0x7fff) : u;
    case MK_F8_E4M3: u = mk_f32_to_e4m3(v); return (u & 0x80) ? -(u & 0x7f) : u;
    case MK_F8_E5M2: u = mk_f32_to_e5m2(v); return (u & 0x80) ? -(u & 0x7f) : u;
    default: {
        uint32_t b;
        memcpy(&b, &v, 4);
        return (b & 0x80000000u) ? -(int64_t)(b & 0x7fffffffu) : (int64_t)b;
    }
    }
}

typedef struct cmp_stats {
    uint64_t n, differ, bad;
    double max_abs, max_mag;
    uint64_t worst_i;
    float worst_got, worst_want;
    int64_t max_ulp;
} cmp_stats;

int mk_cmd_compare(int argc, char **argv)
{
    mk_common c = {0};
    double rel = 0, share = 1, bad_share = 0;
    long max_ulp = 0;
    bool subset = false;
    const mk_opt opts[] = {
        {"rel", 0, MK_OPT_DOUBLE, &rel, "R", "allow |got - want| <= R x (largest |want| in the tensor)", "0"},
        {"max-ulp", 0, MK_OPT_INT, &max_ulp, "N", "allow N units in the last place of WANT's dtype", "0"},
        {"max-diff-share", 0, MK_OPT_DOUBLE, &share, "S", "allow at most this share of elements to differ at all", "1"},
        {"max-bad-share", 0, MK_OPT_DOUBLE, &bad_share, "S", "allow this share of a tensor's elements to be out of tolerance",
         "0"},
        {"subset", 0, MK_OPT_FLAG, &subset, NULL, "GOT may have tensors WANT lacks", NULL},
        MK_COMMON_OPTS(c),
        {0},
    };
    const mk_cmd_spec spec = {"compare", "GOT WANT [options]",
                              "Compare two checkpoints tensor by tensor; print each tensor that is out of tolerance with its\n"
                              "worst element (index, got, want). Exit 0 when all are within tolerance, 1 otherwise.",
                              NULL, opts, 2, 2};
    char *pos[2];
    size_t npos;
    int rc;
    if (!mk_cli_begin(&spec, argc, argv, pos, &npos, &c, false, &rc)) return rc;
    mk_source *a = NULL, *b = NULL;
    mk_status s = mk_cli_open_model(pos[0], &a);
    if (s == MK_OK) s = mk_cli_open_model(pos[1], &b);
    if (s != MK_OK) {
        mk_source_close(a);
        return mk_cli_fail(s);
    }
    float *ga = malloc(CMP_CHUNK * sizeof(float)), *gb = malloc(CMP_CHUNK * sizeof(float));
    void *scratch = malloc(CMP_CHUNK * 8);
    size_t n_bad_tensors = 0, compared = 0;
    uint64_t total = 0, total_differ = 0;
    if (!ga || !gb || !scratch) s = mk_error(MK_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < b->n_tensors && s == MK_OK; i++) {
        const mk_tensor_info *tb = &b->tensors[i];
        long ia = mk_source_find(a, tb->name);
        if (ia < 0) {
            printf("%s: missing from %s\n", tb->name, pos[0]);
            n_bad_tensors++;
            continue;
        }
        const mk_tensor_info *ta = &a->tensors[ia];
        char sa[160], sb[160];
        if (!mk_shape_eq(ta, tb)) {
            printf("%s: shape %s, want %s\n", tb->name, mk_shape_str(ta, sa), mk_shape_str(tb, sb));
            n_bad_tensors++;
            continue;
        }
        cmp_stats st = {0};
        bool is_float = mk_dtype_info(tb->dtype)->is_float;
        /* largest magnitude first (for --rel) */
        for (uint64_t e0 = 0; e0 < tb->numel && s == MK_OK && rel > 0; e0 += CMP_CHUNK) {
            uint64_t n = tb->numel - e0 < CMP_CHUNK ? tb->numel - e0 : CMP_CHUNK;
            s = mk_source_read_f32(b, i, e0, n, gb, scratch);
            for (uint64_t k = 0; k < n; k++)
                if (fabs(gb[k]) > st.max_mag && isfinite(gb[k])) st.max_mag = fabs(gb[k]);
        }
        for (uint64_t e0 = 0; e0 < tb->numel && s == MK_OK; e0 += CMP_CHUNK) {
            uint64_t n = tb->numel - e0 < CMP_CHUNK ? tb->numel - e0 : CMP_CHUNK;
            s = mk_source_read_f32(a, (size_t)ia, e0, n, ga, scratch);
            if (s == MK_OK) s = mk_source_read_f32(b, i, e0, n, gb, scratch);
            for (uint64_t k = 0; k < n && s == MK_OK; k++) {
                float g = ga[k], w = gb[k];
                int64_t ud = is_float ? llabs(lattice(tb->dtype, g) - lattice(tb->dtype, w)) : (g == w ? 0 : INT64_MAX);
                bool nan_eq = isnan(g) && isnan(w);
                if (nan_eq) ud = 0;
                if (ud == 0) continue;
                st.differ++;
                double d = fabs((double)g - (double)w);
                if (isnan(d)) d = INFINITY;
                if (ud > st.max_ulp) st.max_ulp = ud;
                bool pass = (is_float && ud <= max_ulp) || (rel > 0 && d <= rel * st.max_mag);
                if (!pass) st.bad++;
                if (d > st.max_abs || (!pass && st.bad == 1)) {
                    st.max_abs = d;
                    st.worst_i = e0 + k;
                    st.worst_got = g;
                    st.worst_want = w;
                }
            }
        }
        st.n = tb->numel;
        total += st.n;
        total_differ += st.differ;
        compared++;
        bool share_bad = st.n && (double)st.differ / (double)st.n > share;
        bool too_bad = st.bad && (double)st.bad > bad_share * (double)st.n;
        if (too_bad || share_bad) {
            n_bad_tensors++;
            printf("%s: %llu of %llu elements differ (%llu out of tolerance), max |diff| %.9g, max ulp %lld; "
                   "worst at [%llu]: got %.9g, want %.9g\n",
                   tb->name, (unsigned long long)st.differ, (unsigned long long)st.n, (unsigned long long)st.bad,
                   st.max_abs, (long long)st.max_ulp, (unsigned long long)st.worst_i, (double)st.worst_got,
                   (double)st.worst_want);
        } else if (c.verbose && st.differ) {
            printf("%s: %llu of %llu elements differ, max |diff| %.9g, max ulp %lld (within tolerance)\n", tb->name,
                   (unsigned long long)st.differ, (unsigned long long)st.n, st.max_abs, (long long)st.max_ulp);
        }
    }
    if (s == MK_OK && !subset) {
        for (size_t i = 0; i < a->n_tensors; i++)
            if (mk_source_find(b, a->tensors[i].name) < 0) {
                printf("%s: not in %s\n", a->tensors[i].name, pos[1]);
                n_bad_tensors++;
            }
    }
    free(ga);
    free(gb);
    free(scratch);
    mk_source_close(a);
    mk_source_close(b);
    if (s != MK_OK) return mk_cli_fail(s);
    printf("compared %zu tensors, %llu elements: %llu differ, %zu tensor(s) out of tolerance (rel %g, max-ulp %ld, "
           "max-diff-share %g, max-bad-share %g)\n",
           compared, (unsigned long long)total, (unsigned long long)total_differ, n_bad_tensors, rel, max_ulp, share,
           bad_share);
    return n_bad_tensors ? 1 : 0;
}
