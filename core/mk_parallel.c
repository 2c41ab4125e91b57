/* mk_parallel.c - see mk_parallel.h */
#include "mk_parallel.h"
#include "mk_io.h"

#include <stdio.h>
#include <stdlib.h>

#ifdef _OPENMP
#define MK_OMP(x) _Pragma(x)
#else
#define MK_OMP(x)
#endif

mk_status mk_parallel_chunks(uint64_t n, mk_chunk_task task, void *ctx, void *(*tls_new)(void *ctx),
                             void (*tls_free)(void *tls))
{
    mk_status first = MK_OK;
    uint64_t first_chunk = UINT64_MAX;
    char first_msg[1024] = "";
    int stop = 0;
    MK_OMP("omp parallel")
    {
        void *tls = tls_new ? tls_new(ctx) : NULL;
        bool ready = !tls_new || tls;
        if (!ready) {
            MK_OMP("omp critical(mk_parallel_err)")
            {
                if (first == MK_OK) {
                    first = MK_ERR_NOMEM;
                    first_chunk = 0;
                    snprintf(first_msg, sizeof first_msg, "%s", mk_errmsg());
                }
            }
            MK_OMP("omp atomic write")
            stop = 1;
        }
        MK_OMP("omp for schedule(dynamic, 1)")
        for (int64_t ci = 0; ci < (int64_t)n; ci++) {
            int stopped;
            MK_OMP("omp atomic read")
            stopped = stop;
            if (stopped || !ready) continue;
            uint64_t c = (uint64_t)ci;
            mk_status st = task(ctx, c, tls);
            if (st == MK_OK && mk_interrupted()) st = mk_error(MK_ERR_IO, "interrupted");
            if (st != MK_OK) {
                MK_OMP("omp critical(mk_parallel_err)")
                {
                    if (c < first_chunk) {
                        first = st;
                        first_chunk = c;
                        snprintf(first_msg, sizeof first_msg, "%s", mk_errmsg());
                    }
                }
                MK_OMP("omp atomic write")
                stop = 1;
            }
        }
        if (tls && tls_free) tls_free(tls);
    }
    if (first != MK_OK) return mk_error(first, "%s", first_msg);
    return MK_OK;
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

uint64_t mk_rows_per_chunk(uint64_t cols, uint64_t align, uint64_t chunk)
{
    if (!cols) cols = 1;
    if (!align) align = 1;
    uint64_t unit = align / gcd64(cols, align);
    uint64_t rpc = chunk / cols;
    if (rpc < unit) rpc = unit;
    return rpc - rpc % unit;
}

mk_status mk_source_copy_raw(mk_source *src, size_t i,
                             mk_status (*fn)(void *ctx, uint64_t off, const void *data, uint64_t len), void *ctx)
{
    const uint64_t total = src->tensors[i].nbytes, step = 8u << 20;
    void *buf = NULL;
    mk_status s = MK_OK;
    for (uint64_t off = 0; off < total && s == MK_OK; off += step) {
        uint64_t len = total - off < step ? total - off : step;
        const void *p = src->ops->borrow ? src->ops->borrow(src, i, off, len) : NULL;
        if (!p) {
            if (!buf && !(buf = mk_malloc((size_t)step))) return MK_ERR_NOMEM;
            s = src->ops->read(src, i, off, len, buf);
            p = buf;
        }
        if (s == MK_OK) s = fn(ctx, off, p, len);
        if (src->ops->release) src->ops->release(src, i, off, len);
        if (s == MK_OK && mk_interrupted()) s = mk_error(MK_ERR_IO, "interrupted");
    }
    free(buf);
    return s;
}
