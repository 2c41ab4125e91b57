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

/* Chunks are handed out in increasing order from one atomic counter (no OpenMP work-share:
 * nothing to set up per loop, no barrier but the region's end; small loops run many times,
 * such as one per batch of .mkz blocks, pay little). A chunk is skipped only when a lower
 * chunk has already failed (first_chunk < c): every chunk below the lowest failing one
 * runs, so the error reported is that chunk's however the chunks were shared out.
 * (Skipping on any earlier failure would let a thread that had taken a lower chunk, but not
 * yet started it, drop it: the error would then depend on timing.) A thread without its
 * state fails as chunk 0, which stops everything. One chunk runs on the calling thread. */
mk_status mk_parallel_chunks(uint64_t n, mk_chunk_task task, void *ctx, void *(*tls_new)(void *ctx),
                             void (*tls_free)(void *tls))
{
    mk_status first = MK_OK;
    uint64_t first_chunk = UINT64_MAX; /* written in the critical section, read outside it */
    uint64_t next = 0;
    char first_msg[1024] = "";
    MK_OMP("omp parallel if (n > 1)")
    {
        void *tls = tls_new ? tls_new(ctx) : NULL;
        if (tls_new && !tls) {
            MK_OMP("omp critical(mk_parallel_err)")
            {
                if (first_chunk > 0) {
                    first = MK_ERR_NOMEM;
                    snprintf(first_msg, sizeof first_msg, "%s", mk_errmsg());
                    __atomic_store_n(&first_chunk, 0, __ATOMIC_RELAXED);
                }
            }
        }
        for (;;) {
            uint64_t c = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
            /* later chunks of this thread are higher still: once one is skipped, all are */
            if (c >= n || c >= __atomic_load_n(&first_chunk, __ATOMIC_RELAXED)) break;
            mk_status st = task(ctx, c, tls);
            if (st == MK_OK && mk_interrupted()) st = mk_error(MK_ERR_IO, "interrupted");
            if (st != MK_OK) {
                MK_OMP("omp critical(mk_parallel_err)")
                {
                    if (c < first_chunk) {
                        first = st;
                        snprintf(first_msg, sizeof first_msg, "%s", mk_errmsg());
                        __atomic_store_n(&first_chunk, c, __ATOMIC_RELAXED);
                    }
                }
            }
        }
        if (tls && tls_free) tls_free(tls);
    }
    if (first != MK_OK) return mk_error(first, "%s", first_msg);
    return MK_OK;
}

uint64_t mk_rows_per_chunk(uint64_t cols, uint64_t align, uint64_t chunk)
{
    if (!cols) cols = 1;
    if (!align) align = 1;
    uint64_t unit = align / mk_gcd_u64(cols, align);
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
