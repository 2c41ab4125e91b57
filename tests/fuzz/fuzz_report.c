/* fuzz_report.c - report pages from hostile quantize --json / eval --json documents: any
 * bytes give a page or an error, never a crash; every page ends as a whole document. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../eval/report.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    mk_report r;
    memset(&r, 0, sizeof r);
    if (mk_report_json(&r, (const char *)data, size, "fuzz.json") != MK_OK) return 0;
    char *html = NULL;
    size_t len = 0;
    if (mk_report_end(&r, &html, &len) == MK_OK) {
        /* the page is whole: it ends as every page does */
        if (len < 8 || memcmp(html + len - 8, "</html>\n", 8) != 0) abort();
        free(html);
    }
    return 0;
}
