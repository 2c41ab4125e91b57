/* report.c - the HTML page and its SVG plots (report.h). */
#include "report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* plot geometry, in SVG user units (the page scales the SVG to its width) */
#define W 760.0
#define H 300.0
#define ML 70.0  /* left margin: y tick labels */
#define MR 16.0
#define MT 16.0
#define MB 46.0  /* bottom: x labels */
#define PW (W - ML - MR)
#define PH (H - MT - MB)

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
#define NPAL (sizeof palette / sizeof *palette)

void mk_report_escape(mk_buf *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '&': mk_buf_puts(b, "&amp;"); break;
        case '<': mk_buf_puts(b, "&lt;"); break;
        case '>': mk_buf_puts(b, "&gt;"); break;
        case '"': mk_buf_puts(b, "&quot;"); break;
        case '\'': mk_buf_puts(b, "&#39;"); break;
        default:
            /* XML 1.0 allows no C0 control but tab and newline; DEL is allowed but unseen */
            if (*p < 0x20 && *p != '\t' && *p != '\n') mk_buf_puts(b, "\xEF\xBF\xBD");
            else mk_buf_put(b, p, 1);
        }
    }
}

static const char css[] =
    "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#222;padding:0 12px}"
    "h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}"
    "figure{margin:12px 0}figcaption{font-weight:600;margin-bottom:4px}"
    "svg.plot{width:100%;height:auto;background:#fff;border:1px solid #e4e4e4}"
    "svg text{font:11px sans-serif;fill:#333}.axis{stroke:#888;stroke-width:1}.grid{stroke:#eee;stroke-width:1}"
    "table{border-collapse:collapse;margin:8px 0;font-size:12px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}"
    "td:first-child,th:first-child{text-align:left;word-break:break-all}";

void mk_report_begin(mk_report *r, const char *title)
{
    memset(r, 0, sizeof *r);
    mk_buf_puts(&r->b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>");
    mk_report_escape(&r->b, title);
    mk_buf_printf(&r->b, "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>", css);
    mk_report_escape(&r->b, title);
    mk_buf_puts(&r->b, "</h1>\n");
}

void mk_report_h2(mk_report *r, const char *text)
{
    mk_buf_puts(&r->b, "<h2>");
    mk_report_escape(&r->b, text);
    mk_buf_puts(&r->b, "</h2>\n");
}

void mk_report_p(mk_report *r, const char *text)
{
    mk_buf_puts(&r->b, "<p>");
    mk_report_escape(&r->b, text);
    mk_buf_puts(&r->b, "</p>\n");
}

void mk_report_table(mk_report *r, const char *const *head, size_t ncol, const char *const *cells, size_t nrow)
{
    mk_buf_puts(&r->b, "<table>\n<tr>");
    for (size_t c = 0; c < ncol; c++) {
        mk_buf_puts(&r->b, "<th>");
        mk_report_escape(&r->b, head[c]);
        mk_buf_puts(&r->b, "</th>");
    }
    mk_buf_puts(&r->b, "</tr>\n");
    for (size_t i = 0; i < nrow; i++) {
        mk_buf_puts(&r->b, "<tr>");
        for (size_t c = 0; c < ncol; c++) {
            mk_buf_puts(&r->b, "<td>");
            mk_report_escape(&r->b, cells[i * ncol + c]);
            mk_buf_puts(&r->b, "</td>");
        }
        mk_buf_puts(&r->b, "</tr>\n");
    }
    mk_buf_puts(&r->b, "</table>\n");
}

/* ---- axes ---------------------------------------------------------------------------------- */

typedef struct axis {
    double lo, hi, step;
} axis;

/* A range covering [lo, hi] with round tick steps (1, 2 or 5 x 10^k, about 5 ticks). */
static axis nice_axis(double lo, double hi)
{
    if (!(lo <= hi)) lo = hi = 0;
    if (hi - lo < 1e-300) {
        double d = fabs(hi) > 0 ? fabs(hi) * 0.5 : 1;
        lo -= d;
        hi += d;
    }
    double raw = (hi - lo) / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
    double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
    axis a = {floor(lo / step) * step, ceil(hi / step) * step, step};
    return a;
}

static double ypos(const axis *a, double v) { return MT + PH - (v - a->lo) / (a->hi - a->lo) * PH; }

static void range_of(const double *v, size_t n, double *lo, double *hi)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i])) continue;
        if (v[i] < *lo) *lo = v[i];
        if (v[i] > *hi) *hi = v[i];
    }
}

/* extra_h: room below the plot (the legend) */
static void plot_open(mk_report *r, const char *title, const char *kind, size_t n, double extra_h)
{
    r->plots++;
    mk_buf_puts(&r->b, "<figure>\n<figcaption>");
    mk_report_escape(&r->b, title);
    mk_buf_printf(&r->b,
                  "</figcaption>\n<svg class=\"plot\" data-plot=\"p%u\" data-kind=\"%s\" data-n=\"%zu\" "
                  "xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %g %g\" width=\"%g\" height=\"%g\" role=\"img\">\n",
                  r->plots, kind, n, W, H + extra_h, W, H + extra_h);
}

static void plot_close(mk_report *r) { mk_buf_puts(&r->b, "</svg>\n</figure>\n"); }

/* Grid lines, y tick labels, the axes and their labels. */
static void frame(mk_report *r, const axis *a, const char *xlabel, const char *ylabel)
{
    for (double t = a->lo; t <= a->hi + a->step * 1e-9; t += a->step) {
        double y = ypos(a, t), v = fabs(t) < a->step * 1e-9 ? 0 : t;
        mk_buf_printf(&r->b, "<line class=\"grid\" x1=\"%g\" y1=\"%.2f\" x2=\"%g\" y2=\"%.2f\"/>", ML, y, W - MR, y);
        mk_buf_printf(&r->b, "<text x=\"%g\" y=\"%.2f\" text-anchor=\"end\">%.4g</text>\n", ML - 4, y + 4, v);
    }
    mk_buf_printf(&r->b, "<line class=\"axis\" x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\"/>", ML, MT, ML, MT + PH);
    mk_buf_printf(&r->b, "<line class=\"axis\" x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\"/>\n", ML, MT + PH, W - MR, MT + PH);
    mk_buf_printf(&r->b, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">", ML + PW / 2, H - 6);
    mk_report_escape(&r->b, xlabel);
    mk_buf_printf(&r->b, "</text>\n<text x=\"12\" y=\"%g\" text-anchor=\"middle\" transform=\"rotate(-90 12 %g)\">", MT + PH / 2,
                  MT + PH / 2);
    mk_report_escape(&r->b, ylabel);
    mk_buf_puts(&r->b, "</text>\n");
}

/* x tick labels: about 12 at most, at x = 0..n-1 mapped by x0 + dx x; tick[i] or the index */
static void xticks(mk_report *r, size_t n, double x0, double dx, const char *const *tick)
{
    size_t every = n > 12 ? (n + 11) / 12 : 1;
    for (size_t i = 0; i < n; i += every) {
        mk_buf_printf(&r->b, "<text x=\"%.2f\" y=\"%g\" text-anchor=\"middle\">", x0 + dx * (double)i, MT + PH + 14);
        if (tick) mk_report_escape(&r->b, tick[i]);
        else mk_buf_printf(&r->b, "%zu", i);
        mk_buf_puts(&r->b, "</text>");
    }
    mk_buf_puts(&r->b, "\n");
}

static void tooltip(mk_report *r, const char *what, const char *series, double v)
{
    mk_buf_puts(&r->b, "<title>");
    if (series) {
        mk_report_escape(&r->b, series);
        mk_buf_puts(&r->b, ": ");
    }
    mk_report_escape(&r->b, what);
    mk_buf_printf(&r->b, " = %.6g</title>", v);
}

/* ---- plots --------------------------------------------------------------------------------- */

void mk_report_lines(mk_report *r, const char *title, const char *xlabel, const char *ylabel, size_t n,
                     const char *const *xname, const mk_report_series *s, size_t ns)
{
    double lo = INFINITY, hi = -INFINITY;
    for (size_t k = 0; k < ns; k++) range_of(s[k].y, n, &lo, &hi);
    axis a = nice_axis(isfinite(lo) ? lo : 0, isfinite(hi) ? hi : 1);
    size_t legend_rows = (ns + 1) / 2; /* two columns under the plot */
    plot_open(r, title, "lines", n, legend_rows ? 14 * (double)legend_rows + 6 : 0);
    frame(r, &a, xlabel, ylabel);
    double dx = n > 1 ? PW / (double)(n - 1) : 0, x0 = n > 1 ? ML : ML + PW / 2;
    xticks(r, n, x0, dx, NULL);
    for (size_t k = 0; k < ns; k++) {
        const char *col = palette[k % NPAL];
        /* the line: a path broken at missing values */
        mk_buf_printf(&r->b, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" d=\"", col);
        bool pen = false;
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(s[k].y[i])) {
                pen = false;
                continue;
            }
            mk_buf_printf(&r->b, "%s%.2f %.2f ", pen ? "L" : "M", x0 + dx * (double)i, ypos(&a, s[k].y[i]));
            pen = true;
        }
        mk_buf_puts(&r->b, "\"/>\n");
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(s[k].y[i])) continue;
            char num[32];
            snprintf(num, sizeof num, "%zu", i);
            mk_buf_printf(&r->b, "<circle class=\"pt\" data-series=\"%zu\" cx=\"%.2f\" cy=\"%.2f\" r=\"2.5\" fill=\"%s\">", k,
                          x0 + dx * (double)i, ypos(&a, s[k].y[i]), col);
            tooltip(r, xname && xname[i] ? xname[i] : num, s[k].name, s[k].y[i]);
            mk_buf_puts(&r->b, "</circle>\n");
        }
    }
    for (size_t k = 0; k < ns; k++) { /* the legend */
        double lx = ML + (double)(k % 2) * PW / 2, ly = H + 14 * (double)(k / 2) + 10;
        mk_buf_printf(&r->b, "<rect x=\"%g\" y=\"%.2f\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"%g\" y=\"%.2f\">", lx,
                      ly - 9, palette[k % NPAL], lx + 14, ly);
        mk_report_escape(&r->b, s[k].name);
        mk_buf_puts(&r->b, "</text>\n");
    }
    plot_close(r);
}

void mk_report_bars(mk_report *r, const char *title, const char *xlabel, const char *ylabel, size_t n,
                    const char *const *label, const char *const *tick, const double *v)
{
    double lo = 0, hi = 0;
    range_of(v, n, &lo, &hi);
    axis a = nice_axis(lo, hi);
    plot_open(r, title, "bars", n, 0);
    frame(r, &a, xlabel, ylabel);
    double bw = n ? PW / (double)n : PW, y0 = ypos(&a, 0);
    if (n <= 16) { /* few bars: their labels under them */
        for (size_t i = 0; i < n; i++) {
            mk_buf_printf(&r->b, "<text x=\"%.2f\" y=\"%g\" text-anchor=\"middle\">", ML + bw * ((double)i + 0.5), MT + PH + 14);
            mk_report_escape(&r->b, label ? label[i] : "");
            mk_buf_puts(&r->b, "</text>");
        }
        mk_buf_puts(&r->b, "\n");
    } else {
        xticks(r, n, ML + bw / 2, bw, tick);
    }
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i])) continue;
        double y = ypos(&a, v[i]), top = y < y0 ? y : y0, h = fabs(y - y0);
        mk_buf_printf(&r->b, "<rect class=\"bar\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\">",
                      ML + bw * (double)i + (bw > 3 ? bw * 0.1 : 0), top, bw > 3 ? bw * 0.8 : bw, h > 0.5 ? h : 0.5, palette[0]);
        char num[32];
        snprintf(num, sizeof num, "%zu", i);
        tooltip(r, label && label[i] ? label[i] : num, NULL, v[i]);
        mk_buf_puts(&r->b, "</rect>\n");
    }
    plot_close(r);
}

void mk_report_matrix(mk_report *r, const char *title, size_t n, const char *const *name, const double *v)
{
    plot_open(r, title, "matrix", n * n, 0);
    double side = n ? (H - MT - 20) / (double)n : 0, x0 = 220;
    for (size_t i = 0; i < n; i++) {
        mk_buf_printf(&r->b, "<text x=\"%g\" y=\"%.2f\" text-anchor=\"end\">", x0 - 6, MT + side * ((double)i + 0.5) + 4);
        mk_report_escape(&r->b, name[i]);
        mk_buf_puts(&r->b, "</text>\n");
        for (size_t j = 0; j < n; j++) {
            double c = v[i * n + j];
            /* blue for +1, white for 0, red for -1 */
            double t = isfinite(c) ? (c > 1 ? 1 : c < -1 ? -1 : c) : 0;
            int rr = t >= 0 ? (int)lround(255 * (1 - t)) : 255, bb = t >= 0 ? 255 : (int)lround(255 * (1 + t));
            int gg = (int)lround(255 * (1 - fabs(t)));
            mk_buf_printf(&r->b, "<rect class=\"cell\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#%02x%02x%02x\" stroke=\"#fff\">",
                          x0 + side * (double)j, MT + side * (double)i, side, side, rr, gg, bb);
            mk_buf_puts(&r->b, "<title>");
            mk_report_escape(&r->b, name[i]);
            mk_buf_puts(&r->b, " vs ");
            mk_report_escape(&r->b, name[j]);
            mk_buf_printf(&r->b, " = %.6g</title></rect>", c);
            if (side >= 28)
                mk_buf_printf(&r->b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\"%s>%.3f</text>", x0 + side * ((double)j + 0.5),
                              MT + side * ((double)i + 0.5) + 4, fabs(t) > 0.5 ? " style=\"fill:#fff\"" : "", c);
            mk_buf_puts(&r->b, "\n");
        }
    }
    plot_close(r);
}

mk_status mk_report_end(mk_report *r, char **html, size_t *len)
{
    mk_buf_puts(&r->b, "<p class=\"foot\">Made by mergekit-c " MK_VERSION ".</p>\n</body>\n</html>\n");
    *html = NULL;
    *len = 0;
    if (r->b.failed) {
        mk_report_free(r);
        return MK_ERR_NOMEM;
    }
    *html = r->b.data;
    *len = r->b.len;
    memset(&r->b, 0, sizeof r->b);
    return MK_OK;
}

void mk_report_free(mk_report *r)
{
    if (r) mk_buf_free(&r->b);
}
