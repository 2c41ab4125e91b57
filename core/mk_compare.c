/* mk_compare.c - see mk_compare.h */
#include "mk_compare.h"

#include <math.h>
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

/* One chunk of elements [e0, e0+n) into the statistics. */
static void compare_chunk(const float *ga, const float *gb, uint64_t e0, uint64_t n, mk_dtype dt, bool is_float,
                          const mk_cmp_tol *tol, mk_cmp_stats *st)
{
    for (uint64_t k = 0; k < n; k++) {
        float g = ga[k], w = gb[k];
        int64_t ud = is_float ? llabs(lattice(dt, g) - lattice(dt, w)) : (g == w ? 0 : INT64_MAX);
        if (isnan(g) && isnan(w)) ud = 0;
        if (ud == 0) continue;
        st->differ++;
        double d = fabs((double)g - (double)w);
        if (isnan(d)) d = INFINITY;
        if (ud > st->max_ulp) st->max_ulp = ud;
        bool pass = (is_float && ud <= tol->max_ulp) || (tol->rel > 0 && d <= tol->rel * st->max_mag);
        if (!pass) st->bad++;
        if (d > st->max_abs || (!pass && st->bad == 1)) {
            st->max_abs = d;
            st->worst_i = e0 + k;
            st->worst_got = g;
            st->worst_want = w;
        }
    }
}

mk_status mk_compare_tensor(mk_source *a, size_t ia, mk_source *b, size_t ib, const mk_cmp_tol *tol, mk_cmp_stats *st)
{
    memset(st, 0, sizeof *st);
    const mk_tensor_info *tb = &b->tensors[ib];
    float *ga = mk_malloc(CMP_CHUNK * sizeof(float)), *gb = mk_malloc(CMP_CHUNK * sizeof(float));
    void *scratch = mk_malloc(CMP_CHUNK * 8);
    mk_status s = ga && gb && scratch ? MK_OK : MK_ERR_NOMEM;
    bool is_float = mk_dtype_info(tb->dtype)->is_float;
    /* largest magnitude first (for rel) */
    for (uint64_t e0 = 0; e0 < tb->numel && s == MK_OK && tol->rel > 0; e0 += CMP_CHUNK) {
        uint64_t n = tb->numel - e0 < CMP_CHUNK ? tb->numel - e0 : CMP_CHUNK;
        s = mk_source_read_f32(b, ib, e0, n, gb, scratch);
        for (uint64_t k = 0; k < n && s == MK_OK; k++)
            if (fabs(gb[k]) > st->max_mag && isfinite(gb[k])) st->max_mag = fabs(gb[k]);
    }
    for (uint64_t e0 = 0; e0 < tb->numel && s == MK_OK; e0 += CMP_CHUNK) {
        uint64_t n = tb->numel - e0 < CMP_CHUNK ? tb->numel - e0 : CMP_CHUNK;
        s = mk_source_read_f32(a, ia, e0, n, ga, scratch);
        if (s == MK_OK) s = mk_source_read_f32(b, ib, e0, n, gb, scratch);
        if (s == MK_OK) compare_chunk(ga, gb, e0, n, tb->dtype, is_float, tol, st);
    }
    st->n = tb->numel;
    bool share_bad = st->n && (double)st->differ / (double)st->n > tol->diff_share;
    bool too_bad = st->bad && (double)st->bad > tol->bad_share * (double)st->n;
    st->out_of_tolerance = share_bad || too_bad;
    free(ga);
    free(gb);
    free(scratch);
    return s;
}
