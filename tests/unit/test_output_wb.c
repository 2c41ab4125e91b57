/* test_output_wb.c - the write-behind sink (formats/output_wb.c) over a sink in memory that
 * logs its calls: the same bytes, each gathered tensor in one write, tensor_done in order
 * and before commit, resume answers kept, and the writing thread's error (with its message)
 * returned by a later call. */
#include "harness.h"

#include "../../formats/output.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct logsink {
    size_t n;
    uint64_t *nbytes;
    unsigned char **data;
    int *writes;            /* write calls per tensor */
    size_t order[8], n_done;
    bool committed, done_before_commit;
    long fail_write;        /* tensor whose write fails, or -1 */
    bool resumed0;          /* tensor 0 is already done (resume) */
} logsink;

static mk_status ls_begin(mk_sink *k, const mk_tensor_info *t, size_t n)
{
    logsink *m = k->impl;
    m->n = n;
    m->nbytes = calloc(n, sizeof *m->nbytes);
    m->data = calloc(n, sizeof *m->data);
    m->writes = calloc(n, sizeof *m->writes);
    for (size_t i = 0; i < n; i++) {
        m->nbytes[i] = t[i].nbytes;
        m->data[i] = calloc(t[i].nbytes + 1, 1);
    }
    return MK_OK;
}
static bool ls_is_done(mk_sink *k, size_t i) { return i == 0 && ((logsink *)k->impl)->resumed0; }
static mk_status ls_write(mk_sink *k, size_t i, uint64_t off, const void *d, uint64_t len)
{
    logsink *m = k->impl;
    if (off + len > m->nbytes[i]) MK_BUG("write past the end");
    if ((long)i == m->fail_write) return mk_error(MK_ERR_IO, "shard.safetensors: write: no space left (tensor %zu)", i);
    memcpy(m->data[i] + off, d, len);
    m->writes[i]++;
    return MK_OK;
}
static mk_status ls_done(mk_sink *k, size_t i)
{
    logsink *m = k->impl;
    if (m->n_done < 8) m->order[m->n_done] = i;
    m->n_done++;
    return MK_OK;
}
static mk_status ls_add_file(mk_sink *k, const char *name, const void *d, size_t len)
{
    (void)k, (void)name, (void)d, (void)len;
    return MK_OK;
}
static mk_status ls_commit(mk_sink *k)
{
    logsink *m = k->impl;
    m->committed = true;
    m->done_before_commit = m->n_done == m->n;
    return MK_OK;
}
static void ls_close(mk_sink *k)
{
    logsink *m = k->impl;
    for (size_t i = 0; i < m->n; i++) free(m->data[i]);
    free(m->data);
    free(m->nbytes);
    free(m->writes);
    free(k);
}
static const mk_sink_ops ls_ops = {ls_begin, ls_is_done, ls_write, ls_done, ls_add_file, ls_commit, ls_close, NULL};

static mk_tensor_info wb_ti(const char *name, int64_t numel)
{
    mk_tensor_info t = {0};
    t.name = (char *)name;
    t.dtype = MK_U8;
    t.ndim = 1;
    t.shape[0] = numel;
    mk_tensor_info_finish(&t);
    return t;
}

static unsigned char pattern(size_t i, uint64_t k) { return (unsigned char)(i * 31 + k * 7 + 1); }

typedef struct piece_job {
    mk_sink *k;
    size_t i;
    uint64_t len, piece, first; /* pieces first, first + 2, ... of tensor i */
    mk_status st;
} piece_job;

static void *write_pieces(void *p)
{
    piece_job *j = p;
    unsigned char buf[4096];
    for (uint64_t off = j->first * j->piece; off < j->len && j->st == MK_OK; off += 2 * j->piece) {
        uint64_t n = j->len - off < j->piece ? j->len - off : j->piece;
        for (uint64_t b = 0; b < n; b++) buf[b] = pattern(j->i, off + b);
        j->st = j->k->ops->write(j->k, j->i, off, buf, n);
    }
    return NULL;
}

/* The wrapper over a fresh log sink, begun with tensors of `sizes` bytes. */
static mk_sink *wb_open(logsink *m, const int64_t *sizes, size_t n)
{
    mk_sink *inner = calloc(1, sizeof *inner);
    *inner = (mk_sink){&ls_ops, NULL, 0, NULL, m};
    mk_sink *k = inner;
    CHECK_OK(mk_output_write_behind(&k));
    CHECK(k != inner);
    mk_tensor_info t[8];
    for (size_t i = 0; i < n; i++) t[i] = wb_ti("t", sizes[i]);
    CHECK_OK(k->ops->begin(k, t, n));
    return k;
}

MK_TEST(output_write_behind_same_bytes_in_order)
{
    const int64_t sizes[] = {3000, 0, 100000, 12345};
    logsink m = {.fail_write = -1};
    mk_sink *k = wb_open(&m, sizes, 4);
    for (size_t i = 0; i < 4; i++) {
        /* two threads, interleaved pieces written in no particular order */
        pthread_t th[2];
        piece_job j[2];
        for (int h = 0; h < 2; h++) {
            j[h] = (piece_job){k, i, (uint64_t)sizes[i], 1000, (uint64_t)h, MK_OK};
            pthread_create(&th[h], NULL, write_pieces, &j[h]);
        }
        for (int h = 0; h < 2; h++) {
            pthread_join(th[h], NULL);
            CHECK_OK(j[h].st);
        }
        CHECK_OK(k->ops->tensor_done(k, i));
    }
    CHECK_OK(k->ops->add_file(k, "config.json", "{}", 2));
    CHECK_EQ_INT(m.n_done, 4); /* add_file waited for every tensor */
    CHECK_OK(k->ops->commit(k));
    CHECK(m.committed && m.done_before_commit);
    for (size_t i = 0; i < 4; i++) {
        CHECK_EQ_INT(m.order[i], i);
        CHECK_EQ_INT(m.writes[i], sizes[i] ? 1 : 0); /* gathered: one write each */
        uint64_t bad = 0;
        for (uint64_t b = 0; b < (uint64_t)sizes[i]; b++) bad += m.data[i][b] != pattern(i, b);
        CHECK_MSG(bad == 0, "tensor %zu: %llu bytes differ from those written", i, (unsigned long long)bad);
    }
    mk_sink_close(k);
}

MK_TEST(output_write_behind_error_and_resume)
{
    const int64_t sizes[] = {10, 20, 30};
    logsink m = {.fail_write = 1, .resumed0 = true};
    mk_sink *k = wb_open(&m, sizes, 3);
    CHECK(k->ops->is_done(k, 0)); /* the inner sink's resume answers */
    CHECK(!k->ops->is_done(k, 1));
    unsigned char b[30] = {1};
    CHECK_OK(k->ops->write(k, 1, 0, b, 20));
    CHECK_OK(k->ops->tensor_done(k, 1)); /* queued; the write below fails later */
    /* the error comes back by the next call that waits, with the writing thread's message */
    CHECK_ERR(k->ops->commit(k), MK_ERR_IO, "no space left (tensor 1)");
    CHECK(!m.committed);
    CHECK_ERR(k->ops->write(k, 2, 0, b, 30), MK_ERR_IO, "no space left (tensor 1)");
    mk_sink_close(k); /* joins the thread, frees what is left */
}

/* A reused buffer is not cleared up front: the bytes no piece wrote are zeroed at tensor_done
 * (gaps before, between and after overlapping pieces), as a cleared buffer would have them. */
MK_TEST(output_write_behind_zeroes_unwritten_bytes)
{
    const int64_t sizes[] = {1000, 900};
    logsink m = {.fail_write = -1};
    mk_sink *k = wb_open(&m, sizes, 2);
    unsigned char ff[1000];
    memset(ff, 0xff, sizeof ff);
    CHECK_OK(k->ops->write(k, 0, 0, ff, 1000));
    CHECK_OK(k->ops->tensor_done(k, 0));
    CHECK_OK(k->ops->add_file(k, "config.json", "{}", 2)); /* written: its buffer is kept for tensor 1 */
    unsigned char a[100];
    memset(a, 7, sizeof a);
    CHECK_OK(k->ops->write(k, 1, 500, a, 100));
    CHECK_OK(k->ops->write(k, 1, 100, a, 100));
    CHECK_OK(k->ops->write(k, 1, 150, a, 100)); /* overlaps the one before */
    CHECK_OK(k->ops->tensor_done(k, 1));
    CHECK_OK(k->ops->commit(k));
    long bad = -1;
    for (int b = 0; b < 900 && bad < 0; b++) {
        unsigned char want = (b >= 100 && b < 250) || (b >= 500 && b < 600) ? 7 : 0;
        if (m.data[1][b] != want) bad = b;
    }
    CHECK_MSG(bad < 0, "tensor 1: byte %ld is %d, want %d", bad, bad < 0 ? 0 : m.data[1][bad],
              (bad >= 100 && bad < 250) || (bad >= 500 && bad < 600) ? 7 : 0);
    mk_sink_close(k);
}

/* A writer behind: a tensor that would take the queued bytes past the backlog limit is
 * written through as its pieces come (not gathered), all of it, with the same bytes and the
 * same tensor_done order; one that fits beside the queue is gathered. Limits of 1500 and
 * 2000 bytes stand for 64 MiB each; the first write blocks until the test lets it go. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
} gate;
static gate g_gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
static mk_status gated_write(mk_sink *k, size_t i, uint64_t off, const void *d, uint64_t len)
{
    pthread_mutex_lock(&g_gate.mu);
    while (i == 0 && !g_gate.open) pthread_cond_wait(&g_gate.cv, &g_gate.mu);
    pthread_mutex_unlock(&g_gate.mu);
    return ls_write(k, i, off, d, len);
}
static const mk_sink_ops gated_ops = {ls_begin, ls_is_done, gated_write, ls_done, ls_add_file, ls_commit, ls_close, NULL};

MK_TEST(output_write_behind_backlog_goes_through)
{
    const int64_t sizes[] = {1000, 1000, 400};
    logsink m = {.fail_write = -1};
    mk_output_write_behind_limits(2000, 1500);
    mk_sink *inner = calloc(1, sizeof *inner);
    *inner = (mk_sink){&gated_ops, NULL, 0, NULL, &m};
    mk_sink *k = inner;
    CHECK_OK(mk_output_write_behind(&k));
    mk_output_write_behind_limits(0, 0);
    mk_tensor_info t[3];
    for (size_t i = 0; i < 3; i++) t[i] = wb_ti("t", sizes[i]);
    CHECK_OK(k->ops->begin(k, t, 3));
    unsigned char buf[250];
    for (size_t i = 0; i < 3; i++) {
        for (uint64_t off = 0; off < (uint64_t)sizes[i]; off += 250) {
            for (int b = 0; b < 250; b++) buf[b] = pattern(i, off + (uint64_t)b);
            CHECK_OK(k->ops->write(k, i, off, buf, 250 < sizes[i] - (int64_t)off ? 250 : (uint64_t)sizes[i] - off));
            if (i == 1 && off == 0) { /* the queue empties: tensor 1's other pieces still go through */
                pthread_mutex_lock(&g_gate.mu);
                g_gate.open = true;
                pthread_cond_broadcast(&g_gate.cv);
                pthread_mutex_unlock(&g_gate.mu);
                for (int w = 0; w < 10000 && !__atomic_load_n(&m.n_done, __ATOMIC_ACQUIRE); w++) usleep(1000);
                CHECK_EQ_INT(__atomic_load_n(&m.n_done, __ATOMIC_ACQUIRE), 1);
            }
        }
        CHECK_OK(k->ops->tensor_done(k, i)); /* tensor 0 waits behind the gate until tensor 1 began */
    }
    CHECK_OK(k->ops->commit(k));
    CHECK_EQ_INT(m.writes[0], 1); /* gathered */
    CHECK_EQ_INT(m.writes[1], 4); /* 1000 queued + 1000 > 1500: its 4 pieces went through */
    CHECK_EQ_INT(m.writes[2], 1); /* gathered */
    for (size_t i = 0; i < 3; i++) {
        CHECK_EQ_INT(m.order[i], i);
        uint64_t bad = 0;
        for (uint64_t b = 0; b < (uint64_t)sizes[i]; b++) bad += m.data[i][b] != pattern(i, b);
        CHECK_MSG(bad == 0, "tensor %zu: %llu bytes differ from those written", i, (unsigned long long)bad);
    }
    mk_sink_close(k);
}
