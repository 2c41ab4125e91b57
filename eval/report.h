/* report.h - one self-contained HTML page with SVG plots: inline CSS, the plots drawn here as
 * SVG elements, no script and nothing fetched, so the page opens offline in any browser.
 * `mergekit-c report` and `--report` of merge and quantize build their pages with it.
 *
 * Every string that reaches the page (titles, tensor and model names from hostile files) is
 * escaped for HTML text and attributes (& < > " '); control characters become U+FFFD, so
 * the page stays well-formed XML as well as HTML. Numbers are printed with %.6g (the C
 * locale), nothing else varies: the same inputs give the same bytes.
 *
 * Structure the tests (and readers) rely on: each plot is one
 *   <svg class="plot" data-plot="ID" data-n="N" ...>
 * with one <circle class="pt"> per finite point of each line series, one <rect class="bar">
 * per finite bar, one <rect class="cell"> per matrix cell; each carries a <title> naming its
 * item and value.
 * Must not: open files, print, or know what the numbers mean (callers pass labels).
 */
#ifndef MK_REPORT_H
#define MK_REPORT_H

#include "../core/mk_core.h"

typedef struct mk_report {
    mk_buf b;
    unsigned plots;   /* plots drawn so far (their ids are p1, p2, ...) */
} mk_report;

typedef struct mk_report_series {
    const char *name;
    const double *y;  /* [n]; non-finite values are left out */
} mk_report_series;

/* Append s escaped for HTML text and attribute values. */
void mk_report_escape(mk_buf *b, const char *s);

void mk_report_begin(mk_report *r, const char *title);
void mk_report_h2(mk_report *r, const char *text);
/* A paragraph of plain text (escaped). */
void mk_report_p(mk_report *r, const char *text);
/* A table: head[ncol], cells[nrow * ncol] row-major (escaped; NULL cells are empty). */
void mk_report_table(mk_report *r, const char *const *head, size_t ncol, const char *const *cells, size_t nrow);
/* Lines over x = 0..n-1 (xname[i] names each x in tooltips, may be NULL), one colour per series. */
void mk_report_lines(mk_report *r, const char *title, const char *xlabel, const char *ylabel, size_t n,
                     const char *const *xname, const mk_report_series *s, size_t ns);
/* One bar per item, label[i] in its tooltip (and under it when few); with many bars the x axis
 * shows tick[i] at every few bars (NULL: the index). */
void mk_report_bars(mk_report *r, const char *title, const char *xlabel, const char *ylabel, size_t n,
                    const char *const *label, const char *const *tick, const double *v);
/* An n x n matrix v[i * n + j] in [-1, 1] as coloured cells (cosine similarities). */
void mk_report_matrix(mk_report *r, const char *title, size_t n, const char *const *name, const double *v);
/* ---- pages (report_pages.c) ---- */

/* One quantized tensor (or the total): bits per weight, relative RMSE, SQNR in dB. */
typedef struct mk_report_qrow {
    const char *name;
    double bpw, rel, sqnr, max_err;
    uint64_t in_bytes, out_bytes;
} mk_report_qrow;

/* A section on quantization: relative RMSE and SQNR per layer, one series per kind of tensor
 * (the name after its layer number, "self_attn.q_proj.weight"), relative RMSE and bits per
 * weight per tensor, and a table ending with `tot`. */
void mk_report_quant(mk_report *r, const char *what, const mk_report_qrow *row, size_t n, const mk_report_qrow *tot);
/* A page from text[len], the --json output of quantize or of eval (hostile: any bytes);
 * mk_report_begin is called here. `path` names it in messages and the title. MK_ERR_USAGE
 * for JSON of something else; on error the page is freed. */
mk_status mk_report_json(mk_report *r, const char *text, size_t len, const char *path);

/* Close the page; *html is malloc'd (the caller frees it). MK_ERR_NOMEM if any append failed. */
mk_status mk_report_end(mk_report *r, char **html, size_t *len);
void mk_report_free(mk_report *r);

#endif
