/* imatrix.h - llama.cpp's importance matrices, in both of llama-imatrix's file layouts:
 *
 *  - GGUF (general.type "imatrix"): for each matrix NAME (a GGUF tensor name) the F32 tensors
 *    NAME.in_sum2 ([cols, nmat]: per input column, the sum over tokens of the squared
 *    activation; nmat > 1 for the experts of a 3-D expert tensor) and NAME.counts ([1, nmat]:
 *    the tokens summed, per expert the tokens routed to it), and the metadata
 *    imatrix.datasets (strings), imatrix.chunk_count and imatrix.chunk_size (u32).
 *  - the legacy binary ".dat" (little-endian): i32 n_entries, then per entry i32 name length,
 *    the name's bytes, i32 ncall, i32 nval and nval f32 values, each (sum / count) x ncall
 *    (ncall: the chunks behind the entry; a matrix that saw no tokens stores ncall); then,
 *    optionally, i32 chunk count, i32 dataset name length and its bytes. It records no
 *    expert split: an entry is one row of nval values (nmat 1), and one count.
 *
 * Reader rules (a file is GGUF when it starts with "GGUF", else legacy): the GGUF rules of
 * gguf.h; every .in_sum2 has its .counts and the reverse, both F32, counts one per matrix with
 * in_sum2 a whole multiple of them; legacy: 1 to MK_IMATRIX_MAX_ENTRIES entries, names of 1
 * to MK_IMATRIX_MAX_NAME bytes without NUL, each name once, ncall >= 0, nval >= 1, every
 * length within the file and nothing after the trailer. Sums finite and >= 0; counts finite,
 * >= 0 and at most MK_IMATRIX_MAX_COUNT. Each error names the file and the entry.
 * The importance of a column (what llama-quantize hands the quantizers): GGUF in_sum2 /
 * round(count), or 1 where the count is 0; legacy value / ncall (the value itself when
 * ncall is 0).
 * Must not: know tensor types, run models or quantize.
 */
#ifndef MK_IMATRIX_H
#define MK_IMATRIX_H

#include "../core/mk_core.h"

#include <stdint.h>

#define MK_IMATRIX_MAX_BYTES (1ull << 32)   /* a file read whole */
#define MK_IMATRIX_MAX_COUNT 1e15           /* tokens a matrix saw */
#define MK_IMATRIX_MAX_ENTRIES (1u << 20)   /* legacy entries */
#define MK_IMATRIX_MAX_NAME 255u            /* legacy name bytes */

typedef struct mk_imatrix_entry {
    char *name;      /* the matrix's name (without .in_sum2) */
    uint64_t cols;   /* values a matrix (ne0 of in_sum2; a legacy entry's nval) */
    uint64_t nmat;   /* matrices (experts); 1 for a plain linear weight and every legacy entry */
    float *imp;      /* [nmat * cols] importance */
    float *sum;      /* [nmat * cols] as stored: GGUF in_sum2, legacy (sum / count) x ncall */
    double *count;   /* [nmat] as stored: GGUF counts (rounded), legacy {ncall} */
} mk_imatrix_entry;

typedef struct mk_imatrix {
    mk_imatrix_entry *e;
    size_t n;
    uint32_t chunk_count, chunk_size; /* chunk_size 0 in a legacy file */
    bool legacy;                      /* read from the legacy layout */
    char **datasets;
    size_t n_datasets;
} mk_imatrix;

/* Parse an imatrix image of len bytes (the whole file, either layout); what names it in
 * errors. The fuzz entry point. */
mk_status mk_imatrix_parse(const unsigned char *buf, size_t len, const char *what, mk_imatrix *m);
mk_status mk_imatrix_read(const char *path, mk_imatrix *m);

/* What a writer has gathered for one matrix: per matrix (expert) and column the sum over
 * tokens of the squared input activation, and per matrix the tokens summed. */
typedef struct mk_imatrix_stat {
    const char *name;     /* the matrix's GGUF name */
    uint64_t cols, nmat;  /* nmat 0 is read as 1 */
    const double *sum2;   /* [nmat * cols] */
    const double *count;  /* [nmat] */
} mk_imatrix_stat;

typedef struct mk_imatrix_meta {
    const char *const *datasets;
    size_t n_datasets;
    uint32_t chunk_count, chunk_size; /* legacy ncall = ceil(max count / chunk_size) */
} mk_imatrix_meta;

/* Write stats to out, atomically (out must not exist unless force), entries in name order as
 * llama-imatrix writes them: as llama-imatrix's GGUF (F32 NAME.in_sum2 [cols, nmat] and
 * NAME.counts [1, nmat]; general.type, imatrix.datasets, chunk_count, chunk_size), or with
 * legacy in the .dat layout (values (sum / count) x ncall from the sums rounded to f32 as the
 * GGUF stores them, computed in double and rounded once, where llama-imatrix rounds twice in
 * f32: at most 1 ulp apart; entries that saw no token left out, as llama-imatrix does; the last
 * dataset named). */
mk_status mk_imatrix_write(const char *out, const mk_imatrix_stat *st, size_t n, const mk_imatrix_meta *meta, bool legacy, bool force);
/* The statistics of a file read, ready for mk_imatrix_write (sum2 and count malloc'd in
 * st[i], names borrowed from m): GGUF as stored; legacy as llama-imatrix loads it, sums
 * and counts times chunk_size. Free with mk_imatrix_stats_free. */
mk_status mk_imatrix_stats(const mk_imatrix *m, uint32_t chunk_size, mk_imatrix_stat **st);
void mk_imatrix_stats_free(mk_imatrix_stat *st, size_t n);
/* the entry for matrix name, or NULL */
const mk_imatrix_entry *mk_imatrix_find(const mk_imatrix *m, const char *name);
/* The importances for the GGUF tensor `name` of `nmat` matrices (its experts; 1 for a plain
 * matrix) of `cols` columns each, as llama-quantize takes them: *imp = [nmat * cols], the
 * rows of matrix (expert) e quantized with imp + e * cols; *imp = NULL (and MK_OK) when the
 * file has no entry of that name. The entry must hold exactly nmat matrices of cols (a GGUF
 * file: one .counts value per expert; a legacy entry, which records no split: nmat * cols
 * values), else MK_ERR_FORMAT naming `file`, the entry and both shapes (llama-quantize
 * refuses a size other than cols * nmat too). An expert that saw no token (count 0) has
 * importance 1 in every column, as llama-quantize gives it. */
/* whether entry e of m holds nmat matrices of cols (as mk_imatrix_lookup takes them) */
bool mk_imatrix_fits(const mk_imatrix *m, const mk_imatrix_entry *e, uint64_t nmat, uint64_t cols);
mk_status mk_imatrix_lookup(const mk_imatrix *m, const char *file, const char *name, uint64_t nmat, uint64_t cols, const float **imp);
void mk_imatrix_free(mk_imatrix *m);

#endif
