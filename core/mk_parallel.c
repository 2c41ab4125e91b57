/* mk_parallel.c - see mk_parallel.h */
#include "mk_parallel.h"
#include "mk_io.h"

#include "mk_thread.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* One loop's chunks and its outcome. Chunks are handed out in increasing order from one
 * atomic counter (nothing to set up per loop; small loops run many times, such as one per
 * batch of .mkz blocks, pay little). A chunk is skipped only when a lower chunk has already
 * failed (first_chunk < c): every chunk below the lowest failing one runs, so the error
 * reported is that chunk's however the chunks were shared out. (Skipping on any earlier
 * failure would let a thread that had taken a lower chunk, but not yet started it, drop it:
 * the error would then depend on timing.) A thread makes its state when it takes its first
 * chunk; one that cannot fails as chunk 0, which stops everything. */
typedef struct pjob {
    uint64_t n, next, first_chunk; /* first_chunk: written under mu, read outside it */
    mk_chunk_task task;
    void *ctx;
    void *(*tls_new)(void *ctx);
    void (*tls_free)(void *tls);
    pthread_mutex_t mu;
    mk_status first;
    char msg[1024];
} pjob;

static void job_fail(pjob *j, uint64_t c, mk_status st)
{
    pthread_mutex_lock(&j->mu);
    if (c < j->first_chunk) {
        j->first = st;
        snprintf(j->msg, sizeof j->msg, "%s", mk_errmsg());
        __atomic_store_n(&j->first_chunk, c, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&j->mu);
}

/* This thread's share of job j. */
static void job_work(pjob *j)
{
    void *tls = NULL;
    bool started = false;
    for (;;) {
        uint64_t c = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        /* later chunks of this thread are higher still: once one is skipped, all are */
        if (c >= j->n || c >= __atomic_load_n(&j->first_chunk, __ATOMIC_RELAXED)) break;
        if (!started && j->tls_new && !(tls = j->tls_new(j->ctx))) {
            job_fail(j, 0, MK_ERR_NOMEM);
            break;
        }
        started = true;
        mk_status st = j->task(j->ctx, c, tls);
        if (st == MK_OK && mk_interrupted()) st = mk_error(MK_ERR_IO, "interrupted");
        if (st != MK_OK) job_fail(j, c, st);
    }
    if (tls && j->tls_free) j->tls_free(tls);
}

/* The pool: mk_threads_get() - 1 threads of our own that sleep on a condition variable
 * between loops (OpenMP's idle threads spin at each region's end, which on a machine with
 * more runnable threads than cores costs more than the work across a merge's hundreds of
 * passes). The thread that runs a loop takes its share of the chunks as worker 0 and then
 * sleeps until the others are done. One loop at a time uses it (owner); a loop started while
 * it is busy, from a chunk or from another thread, runs on its own thread, with the same
 * chunks, order and error. It starts at the first loop that can use it, is remade when the
 * thread count changes, and its threads live as long as the process. */
typedef struct mk_pool {
    pthread_mutex_t mu;
    pthread_cond_t go, idle;
    int want;            /* the thread count it was made for (0: not made) */
    int n;               /* threads, the caller's included */
    pthread_t *th;       /* [want - 1] */
    unsigned long gen;   /* loop number: a new one wakes the workers */
    int running;         /* workers still in the current loop */
    bool quit;
    pjob *job;
} mk_pool;

static mk_pool g_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 1, NULL, 0, 0,
                         false, NULL};
static pthread_mutex_t g_owner = PTHREAD_MUTEX_INITIALIZER; /* held by the loop that uses the pool */
static _Thread_local bool tl_in_loop; /* a worker, or the owner during its share */

/* OpenMP loops inside a chunk run on the thread that took it (as in a nested region). */
static int omp_one(void)
{
#ifdef _OPENMP
    int n = omp_get_max_threads();
    omp_set_num_threads(1);
    return n;
#else
    return 1;
#endif
}

static void omp_restore(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static void *worker_main(void *arg)
{
    mk_pool *p = &g_pool;
    mk_thread_index_set((int)(intptr_t)arg);
    tl_in_loop = true;
    omp_one();
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen && !p->quit) pthread_cond_wait(&p->go, &p->mu);
        if (p->quit) break;
        seen = p->gen;
        pjob *j = p->job;
        pthread_mutex_unlock(&p->mu);
        job_work(j);
        pthread_mutex_lock(&p->mu);
        if (--p->running == 0) pthread_cond_signal(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* With the owner lock held: stop the workers. */
static void pool_stop(mk_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int k = 1; k < p->n; k++) pthread_join(p->th[k - 1], NULL);
    free(p->th);
    p->th = NULL;
    p->n = 1;
    p->want = 0;
    p->quit = false;
}

/* With the owner lock held: a pool for `want` threads (fewer where the system gives fewer). */
static void pool_make(mk_pool *p, int want)
{
    if (p->want == want) return;
    if (p->want) pool_stop(p);
    p->want = want;
    p->gen = 0;
    if (!(p->th = calloc((size_t)want - 1, sizeof *p->th))) return;
    for (int k = 1; k < want; k++) {
        if (pthread_create(&p->th[k - 1], NULL, worker_main, (void *)(intptr_t)k) != 0) break;
        p->n = k + 1;
    }
}

/* With the owner lock held: job j on the pool and this thread. */
static void pool_run(mk_pool *p, pjob *j)
{
    pthread_mutex_lock(&p->mu);
    p->job = j;
    p->running = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    tl_in_loop = true;
    int omp_n = omp_one();
    job_work(j);
    omp_restore(omp_n);
    tl_in_loop = false;
    pthread_mutex_lock(&p->mu);
    while (p->running > 0) pthread_cond_wait(&p->idle, &p->mu);
    p->job = NULL;
    pthread_mutex_unlock(&p->mu);
}

mk_status mk_parallel_chunks(uint64_t n, mk_chunk_task task, void *ctx, void *(*tls_new)(void *ctx),
                             void (*tls_free)(void *tls))
{
    pjob j = {.n = n, .first_chunk = UINT64_MAX, .task = task, .ctx = ctx, .tls_new = tls_new, .tls_free = tls_free,
              .mu = PTHREAD_MUTEX_INITIALIZER, .first = MK_OK};
    if (!n) return MK_OK;
    bool pooled = false;
    bool nested = tl_in_loop;
#ifdef _OPENMP
    nested = nested || omp_in_parallel();
#endif
    if (n > 1 && !nested) {
        int want = mk_threads_get();
        if (want > 1 && pthread_mutex_trylock(&g_owner) == 0) {
            pool_make(&g_pool, want);
            if (g_pool.n > 1) {
                pool_run(&g_pool, &j);
                pooled = true;
            }
            pthread_mutex_unlock(&g_owner);
        }
    }
    if (!pooled) job_work(&j);
    pthread_mutex_destroy(&j.mu);
    if (j.first != MK_OK) return mk_error(j.first, "%s", j.msg);
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
