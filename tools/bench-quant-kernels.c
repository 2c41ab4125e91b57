/* bench-quant-kernels.c - compute throughput of the quantizer kernels on one core, data in
 * cache (256 Ki bf16-valued weights, quantized again and again; best of 5 runs), with
 * the error sums the quantize report needs. Built and run by tools/bench-quant.sh:
 *   cc -O2 -ffp-contract=off -I. tools/bench-quant-kernels.c build/libmergekit.a -lm -lpthread
 */
#include "quant/bnb.h"
#include "quant/ct.h"
#include "quant/search.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define N (1u << 18)
static float x[N];
static uint8_t out[N];
static float aux[N];

typedef void (*kern)(size_t n);

static void k_nf4(size_t n)
{
    mk_qerr e = {0, 0, 0};
    mk_bnb4_quantize(MK_BNB_NF4, 64, x, n, aux, out, NULL, &e);
}
static void k_int8(size_t n)
{
    mk_qerr e = {0, 0, 0};
    mk_bnb_int8_quantize(x, n / 2048, 2048, (int8_t *)out, aux, &e);
}
static void k_int4(size_t n)
{
    mk_qerr e = {0, 0, 0};
    mk_ct_int a = {4, false, MK_BF16};
    for (size_t g = 0; g < n; g += 128) {
        float s;
        int32_t z;
        mk_ct_int_qparams(&a, x + g, 128, &s, &z);
        mk_ct_int_codes(&a, x + g, 128, s, z, (int8_t *)out + g, &e);
    }
}
static uint16_t xb[N];
static uint32_t words[N / 8];
static void k_int4_packed(size_t n) /* a bf16 weight's rows of 2048, quantized and packed in one pass */
{
    mk_qerr e = {0, 0, 0};
    mk_ct_int a = {4, false, MK_BF16};
    int32_t z[16];
    for (size_t r = 0; r < n; r += 2048)
        mk_ct_int_row_bf16_packed(&a, xb + r, 2048, 128, aux, z, words + r / 8, (int8_t *)out, &e);
}
static void k_int4_search(size_t n)
{
    mk_qerr e = {0, 0, 0};
    mk_ct_int a = {4, false, MK_BF16};
    for (size_t g = 0; g < n; g += 128) {
        float s;
        int32_t z;
        mk_search_int_qparams(&a, x + g, NULL, 128, &s, &z);
        mk_ct_int_codes(&a, x + g, 128, s, z, (int8_t *)out + g, &e);
    }
}
static void k_fp8(size_t n)
{
    mk_qerr e = {0, 0, 0};
    mk_ct_fp8 a = {false, MK_BF16};
    for (size_t r = 0; r < n; r += 2048) mk_ct_fp8_quantize(&a, x + r, 2048, mk_ct_fp8_scale(&a, mk_ct_absmax(x + r, 2048)), out + r, &e);
}

int main(void)
{
    srand(1);
    for (size_t i = 0; i < N; i++) {
        xb[i] = mk_f32_to_bf16(((float)rand() / (float)RAND_MAX - 0.5f) * 0.08f);
        x[i] = mk_bf16_to_f32(xb[i]);
    }
    struct { const char *name; kern f; size_t reps; } k[] = {
        {"nf4", k_nf4, 64}, {"int8", k_int8, 64}, {"int4", k_int4, 64}, {"int4-bf16-row", k_int4_packed, 64}, {"int4-search", k_int4_search, 4}, {"fp8", k_fp8, 64}};
    for (size_t i = 0; i < sizeof k / sizeof *k; i++) {
        double best = 0;
        for (int run = 0; run < 5; run++) {
            double t0 = now();
            for (size_t r = 0; r < k[i].reps; r++) k[i].f(N);
            double v = (double)N * (double)k[i].reps / (now() - t0);
            best = v > best ? v : best;
        }
        printf("kernel %-12s %8.1f M values/s on one core\n", k[i].name, best / 1e6);
    }
    return 0;
}
