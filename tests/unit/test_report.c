/* test_report.c - the HTML page builder (eval/report.h): escaping, one element per finite
 * value, the same bytes for the same calls, and pages read from hostile JSON. */
#include "harness.h"

#include "../../eval/report.h"

#include <stdlib.h>
#include <string.h>

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

MK_TEST(report_escape)
{
    mk_buf b = {0};
    mk_report_escape(&b, "a<b>&\"c'\x01\td\n");
    mk_buf_put(&b, "", 1);
    CHECK_STR(b.data, "a&lt;b&gt;&amp;&quot;c&#39;\xEF\xBF\xBD\td\n");
    mk_buf_free(&b);
    b = (mk_buf){0};
    mk_report_escape(&b, NULL); /* nothing, no crash */
    CHECK_EQ_INT(b.len, 0);
    mk_buf_free(&b);
}

static char *page(void)
{
    mk_report r;
    mk_report_begin(&r, "t<i>tle");
    const double y1[5] = {1, 2, NAN, 4, 5}, y2[5] = {0.5, INFINITY, 0.25, 0.125, -1};
    const char *xn[5] = {"l0", "l<1>", "l2", "l3", "l4"};
    mk_report_series s[2] = {{"one", y1}, {"t&o", y2}};
    mk_report_lines(&r, "lines", "x", "y", 5, xn, s, 2);
    const double bars[3] = {3, NAN, -2};
    const char *lab[3] = {"a", "b", "c\"d"};
    mk_report_bars(&r, "bars", "x", "y", 3, lab, NULL, bars);
    const double m[4] = {1, -0.5, -0.5, 1};
    const char *nm[2] = {"p", "q"};
    mk_report_matrix(&r, "matrix", 2, nm, m);
    char *html;
    size_t len;
    if (mk_report_end(&r, &html, &len) != MK_OK) return NULL;
    CHECK_EQ_INT(strlen(html), len);
    return html;
}

MK_TEST(report_plots)
{
    char *a = page(), *b = page();
    CHECK(a && b);
    if (!a || !b) return;
    CHECK_STR(a, b); /* the same calls give the same bytes */
    CHECK_EQ_INT(count(a, "<svg class=\"plot\""), 3);
    CHECK_EQ_INT(count(a, "class=\"pt\""), 8); /* 10 values, NaN and Inf left out */
    CHECK_EQ_INT(count(a, "class=\"pt\" data-series=\"1\""), 4);
    CHECK_EQ_INT(count(a, "class=\"bar\""), 2);
    CHECK_EQ_INT(count(a, "class=\"cell\""), 4);
    CHECK(strstr(a, "data-plot=\"p2\" data-kind=\"bars\" data-n=\"3\"") != NULL);
    CHECK(strstr(a, "<title>t&lt;i&gt;tle</title>") && !strstr(a, "<i>"));
    CHECK(strstr(a, "<title>t&amp;o: l&lt;1&gt; = ") == NULL); /* Inf there: no point */
    CHECK(strstr(a, "<title>one: l3 = 4</title>") != NULL);
    CHECK(strstr(a, "<title>c&quot;d = -2</title>") != NULL);
    CHECK(strstr(a, "<title>p vs q = -0.5</title>") != NULL);
    /* the line breaks at the missing value: a second M in the first path */
    const char *path = strstr(a, "<path");
    CHECK(path && count(path, "M") >= 2);
    CHECK_EQ_INT(count(a, "<svg"), count(a, "</svg>"));
    free(a);
    free(b);
}

MK_TEST(report_json)
{
    static const char *bad[] = {
        "", "[", "[1]", "{}", "{\"format\": 1}", "{\"format\": \"x\", \"tensors\": 3}", "{\"format\": \"x\", \"tensors\": [1]}",
        "{\"ppl\": 1, \"refs\": {}}", "{\"ppl\": 1, \"refs\": [1]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mk_report r;
        memset(&r, 0, sizeof r);
        CHECK_MSG(mk_report_json(&r, bad[i], strlen(bad[i]), "x.json") != MK_OK, "accepted %s", bad[i]);
    }
    /* a layer number past the bound is drawn as no layer, not as 10^9 points */
    const char *j = "{\"format\": \"x\", \"tensors\": [{\"name\": \"m.layers.999999999.w\", \"rel_rmse\": 0.1, \"bits_per_weight\": 4},"
                    "{\"name\": \"m.layers.2.w\", \"rel_rmse\": 0.2, \"bits_per_weight\": 4}], \"total\": {}}";
    mk_report r;
    memset(&r, 0, sizeof r);
    CHECK_OK(mk_report_json(&r, j, strlen(j), "x.json"));
    char *html;
    size_t len;
    CHECK_OK(mk_report_end(&r, &html, &len));
    CHECK(strstr(html, "data-kind=\"lines\" data-n=\"3\"") != NULL);
    CHECK_EQ_INT(count(html, "class=\"bar\""), 4); /* two tensors in each of two bar plots */
    free(html);
}
