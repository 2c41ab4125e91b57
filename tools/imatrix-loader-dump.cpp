// imatrix-loader-dump.cpp: llama.cpp's own imatrix reader (common/imatrix-loader.cpp, compiled
// from a llama.cpp source tree next to this file by tools/compat-imatrix.sh) on each FILE given,
// printing what llama-quantize would hand its quantizers: per entry "NAME NVAL NCOUNTS" and the
// importances in_sum2 / count per matrix (1 where the count is 0) for GGUF files, value / ncall
// for legacy ones (load_imatrix in tools/quantize/quantize.cpp), as %.9g. Exit 1 when the loader
// refuses a file.
#include "imatrix-loader.h"
#include "log.h"

#include <cstdarg>
#include <cstdio>

// the loader logs through common/log.cpp; these stand-ins print its errors to stderr
int common_log_get_verbosity_thold(void) { return 0; }
struct common_log * common_log_main() { return nullptr; }
void common_log_add(struct common_log *, enum ggml_log_level, const char * fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

int main(int argc, char ** argv)
{
    for (int a = 1; a < argc; a++) {
        common_imatrix m;
        if (!common_imatrix_load(argv[a], m)) {
            fprintf(stderr, "%s: refused by llama.cpp's loader\n", argv[a]);
            return 1;
        }
        printf("file %s legacy %d entries %zu chunk_count %d\n", argv[a], (int)m.is_legacy, m.entries.size(), m.chunk_count);
        for (const auto & [name, e] : m.entries) {
            size_t nc = e.counts.size(), per = nc ? e.sums.size() / nc : 0;
            printf("%s %zu %zu", name.c_str(), e.sums.size(), nc);
            for (size_t i = 0; i < e.sums.size(); i++) {
                float v;
                if (m.is_legacy) v = e.counts[0] > 0 ? e.sums[i] / (float)e.counts[0] : e.sums[i];
                else v = e.counts[i / per] > 0 ? e.sums[i] / (float)e.counts[i / per] : 1.0f;
                printf(" %.9g", (double)v);
            }
            printf("\n");
        }
    }
    return 0;
}
