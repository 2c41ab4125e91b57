/* select.h - exact order statistics of a whole tensor in bounded memory, without sorting
 * a copy: the cut at rank `pos` of a stream of uint32 keys (see kernel.h for keys of
 * floats), found with histograms over the key bits across passes over the chunks.
 *
 * Order: ascending or descending by key; equal keys are ordered by flat index, lower
 * first, in both directions. "Before the cut" = the first `pos` elements of that order.
 * So the top k by magnitude (TIES) is a descending query with pos = k, and mergekit's
 * breadcrumbs keep [n_bot, n_bot + target) of the ascending order: the elements before
 * ascending cut n_bot + target minus those before cut n_bot.
 *
 * Passes (each is a job pass whose kernel calls mk_sel_count for every stream):
 *   HI   histogram of the top 16 key bits -> the 16-bit bin holding the cut
 *   LO   histogram of the low 16 bits inside that bin, and per-chunk bin counts ->
 *        the cut key (skipped when every key's low bits are 0, e.g. bf16 data)
 *   TIE  per-chunk counts of keys equal to the cut key, only when the cut splits a run
 *        of equal keys and neither the LO pass nor the HI pass's per-chunk windows around
 *        each chunk's own cut (MK_SEL_WIN) counted them
 * Counts are integers added atomically, so the result is the same at any thread count
 * and chunk order. Memory: 512 KiB per stream and per query, plus 276 bytes per chunk and
 * query, plus 1 MiB per thread that counts a HI pass (four sub-histograms, kept zero
 * between calls, touched only over each chunk's range of bins).
 * Must not: read tensors itself or allocate per element.
 */
#ifndef MK_SELECT_H
#define MK_SELECT_H

#include "../../core/mk_core.h"

#define MK_SEL_BINS 65536u
/* Bins of each chunk's own histogram kept around the chunk's local cut (HI pass): when
 * every chunk's window holds the global cut bin, bf16-like keys need no TIE pass. */
#define MK_SEL_WIN 64u
#define MK_SEL_NO_WIN UINT32_MAX

typedef enum mk_sel_phase { MK_SEL_HI = 0, MK_SEL_LO, MK_SEL_TIE, MK_SEL_DONE } mk_sel_phase;

typedef struct mk_sel_query {
    uint32_t stream;
    uint64_t pos;        /* 0..n */
    bool desc;
    bool value;          /* only the key at rank pos is wanted (a quantile): no tie counts */
    /* resolved */
    bool done;
    bool all;            /* pos == n: every element is before the cut */
    uint32_t hi;         /* top 16 bits of the cut key */
    uint32_t key;        /* the cut key (valid when pos < n) */
    uint64_t strict;     /* elements strictly before `key` in this order */
    uint64_t equal;      /* elements equal to `key` */
    uint64_t take;       /* of those, how many (lowest indices first) are before the cut */
    uint64_t *lo_hist;   /* [MK_SEL_BINS] */
    uint64_t *bin_chunk; /* [n_chunks] keys in bin `hi` per chunk (LO pass) */
    uint64_t *eq_before; /* [n_chunks] keys equal to `key` in earlier chunks */
    uint32_t *win;       /* [n_chunks][MK_SEL_WIN] counts of bins win_lo[c] ... */
    uint32_t *win_lo;    /* [n_chunks] first bin of chunk c's window, or MK_SEL_NO_WIN */
    bool need_tie;
} mk_sel_query;

typedef struct mk_select {
    uint64_t n;          /* keys per stream */
    uint64_t n_chunks;
    size_t n_streams, n_queries;
    uint64_t *hi_hist;   /* [n_streams][MK_SEL_BINS] */
    uint32_t *lo_or;     /* [n_streams] OR of the low 16 bits of every key */
    mk_sel_query *q;
    mk_sel_phase phase;
} mk_select;

/* Set up n_queries queries over n_streams streams of n keys each; describe each with
 * mk_sel_query_set, then call mk_sel_start. A query's pos may still be
 * changed after the HI pass (it is first used by mk_sel_next). */
mk_status mk_sel_init(mk_select *s, uint64_t n, uint64_t n_chunks, size_t n_streams, size_t n_queries);
/* Describe query qi: the cut at `pos` of stream `st`, descending or not; `value`: only
 * the key at rank pos is wanted. */
static inline void mk_sel_query_set(mk_select *s, size_t qi, uint32_t st, uint64_t pos, bool desc, bool value)
{
    s->q[qi].stream = st;
    s->q[qi].pos = pos;
    s->q[qi].desc = desc;
    s->q[qi].value = value;
}
/* Resolve the trivial queries (pos 0 or n); true when a pass is needed. */
bool mk_sel_start(mk_select *s);
void mk_sel_free(mk_select *s);
/* Change query qi's cut after the HI pass, before mk_sel_next (pos 0 or n resolve at once). */
void mk_sel_set_pos(mk_select *s, size_t qi, uint64_t pos);

/* In a chunk kernel of the current phase: account the keys of stream `st` in chunk
 * `chunk` (in flat index order). Thread-safe for distinct chunks. */
mk_status mk_sel_count(mk_select *s, size_t st, uint64_t chunk, const uint32_t *keys, uint64_t n);

/* After a pass: resolve what the counts allow; true when another pass is needed. */
bool mk_sel_next(mk_select *s);

/* Is the element with key `key` before the cut of query q? Elements of one chunk must be
 * asked in flat index order with one `seen` counter per (chunk, query) starting at 0. */
static inline bool mk_sel_before(const mk_sel_query *q, uint64_t chunk, uint32_t key, uint64_t *seen)
{
    if (q->pos == 0) return false;
    if (q->all) return true;
    if (key != q->key) return q->desc ? key > q->key : key < q->key;
    if (q->take == 0) return false;
    if (q->take >= q->equal) return true;
    return q->eq_before[chunk] + (*seen)++ < q->take;
}

/* flags[i] = whether keys[i] is before the cut of q, as mk_sel_before says for keys of chunk
 * `chunk` asked in index order with the counter `seen` (so a chunk may come in pieces, in
 * order): a vectorised comparison with the cut key, then the keys equal to it, in index
 * order, only when the cut splits them. */
void mk_sel_flags(const mk_sel_query *q, uint64_t chunk, const uint32_t *keys, uint64_t n, uint8_t *flags,
                  uint64_t *seen);

#endif
