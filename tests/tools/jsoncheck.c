/* jsoncheck.c - test helper: stdin must be exactly one JSON document (RFC 8259, read by the
 * project's strict reader, core/mk_json), with no object naming a key twice. Prints nothing
 * and exits 0 when it is; else one line saying what is wrong, exit 1. Used by the e2e tests
 * so that `make test` needs no Python. */
#include "../../core/mk_json.h"

#include <stdio.h>
#include <stdlib.h>

#define CAP (256u << 20)

/* First object at or below node i that names a key twice, or 0. Depth is bounded by the
 * parse limits. */
static uint32_t dup_below(const mk_json *j, uint32_t i)
{
    const mk_json_node *n = mk_json_at(j, i);
    if (n->type != MK_JSON_OBJ && n->type != MK_JSON_ARR) return 0;
    if (n->type == MK_JSON_OBJ) {
        uint32_t d = mk_json_dup_key(j, i);
        if (d) return d;
    }
    for (uint32_t c = n->first; c; c = mk_json_at(j, c)->next) {
        uint32_t d = dup_below(j, c);
        if (d) return d;
    }
    return 0;
}

int main(void)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - len, stdin)) > 0;) {
        len += got;
        if (len == cap) {
            if (cap >= CAP) {
                fprintf(stderr, "jsoncheck: input over %u bytes\n", CAP);
                return 1;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) break;
            buf = nb;
            cap *= 2;
        }
    }
    if (!buf) return 1;
    if (len == 0) {
        fprintf(stderr, "jsoncheck: no output (want one JSON document)\n");
        return 1;
    }
    mk_json j;
    mk_json_limits lim = {64, len / 2 + 16};
    if (mk_json_parse(&j, buf, len, &lim, "stdout") != MK_OK) {
        fprintf(stderr, "jsoncheck: %s\n", mk_errmsg());
        return 1;
    }
    uint32_t d = dup_below(&j, 0);
    if (d) fprintf(stderr, "jsoncheck: key '%s' appears twice in one object\n", mk_json_key(&j, d));
    mk_json_free(&j);
    free(buf);
    return d ? 1 : 0;
}
