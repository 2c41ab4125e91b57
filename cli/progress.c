/* progress.c - progress on stderr. On a terminal: one bar line redrawn at most 10 times a
 * second (items, bytes, rate, ETA). Otherwise: one line per item at -v, nothing else. */
#include "cli.h"

#include <stdio.h>
#include <unistd.h>

void mk_progress_init(mk_progress *p, const char *what, const mk_common *c)
{
    p->what = what;
    p->tty = isatty(2) && !c->quiet;
    p->per_item = !p->tty && c->verbose > 0 && !c->quiet;
    p->enabled = p->tty || p->per_item;
    p->t0 = p->last = mk_now();
}

void mk_progress_cb(void *ctx, size_t done, size_t total, uint64_t bytes_done, uint64_t bytes_total, const char *name)
{
    mk_progress *p = ctx;
    if (!p->enabled) return;
    double now = mk_now(), el = now - p->t0;
    double rate = el > 0 ? bytes_done / el : 0;
    if (p->per_item) {
        fprintf(stderr, "mergekit-c: [%zu/%zu] %s\n", done, total, name);
        return;
    }
    if (done < total && now - p->last < 0.1) return;
    p->last = now;
    char a[32], b[32], r[32];
    if (!bytes_total) {
        /* a count of items only (no byte sizes known): items, items/s, ETA from the item rate */
        double irate = el > 0 ? done / el : 0, ieta = irate > 0 ? (total - done) / irate : 0;
        int ipct = total ? (int)(100.0 * done / total) : 100;
        char ibar[26];
        for (int i = 0; i < 25; i++) ibar[i] = i < ipct / 4 ? '#' : '.';
        ibar[25] = 0;
        fprintf(stderr, "\r%s [%s] %3d%% %zu/%zu tensors %.1f tensors/s ETA %d:%02d  ", p->what, ibar, ipct, done, total, irate,
                (int)ieta / 60, (int)ieta % 60);
        return;
    }
    double eta = rate > 0 ? (bytes_total - bytes_done) / rate : 0;
    int pct = bytes_total ? (int)(100.0 * bytes_done / bytes_total) : 100;
    int filled = pct / 4;
    char bar[26];
    for (int i = 0; i < 25; i++) bar[i] = i < filled ? '#' : '.';
    bar[25] = 0;
    fprintf(stderr, "\r%s [%s] %3d%% %zu/%zu tensors %s/%s %s/s ETA %d:%02d  ", p->what, bar, pct, done, total,
            mk_fmt_bytes(bytes_done, a), mk_fmt_bytes(bytes_total, b), mk_fmt_bytes((uint64_t)rate, r),
            (int)eta / 60, (int)eta % 60);
}

void mk_progress_end(mk_progress *p)
{
    if (p->tty && p->enabled) fprintf(stderr, "\n");
}
