/* fuzz_parts.c - a split output's manifest and completion records (OUT.tmp/.mergekit-c-parts.json,
 * .mergekit-c-part-*.json), both read by finalize from a shared folder. */
#include "fuzz.h"

#include "../../core/mk_core.h"
#include "../../formats/parts.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mk_log_set_level(-1);
    mk_parts_manifest m;
    if (mk_parts_manifest_parse((const char *)data, size, "fuzz-manifest.json", &m) == MK_OK) {
        if (!m.command || !m.plan || strlen(m.plan) != 32 || !m.cwd || m.n < 1 || m.n > MK_PARTS_MAX || m.argc < 1) __builtin_trap();
        for (int k = 0; k < m.argc; k++)
            if (!m.argv[k]) __builtin_trap();
        if (m.file && (!m.file[0] || m.file[0] == '.' || strchr(m.file, '/'))) __builtin_trap();
        mk_parts_manifest_free(&m);
    }
    /* the same bytes as part 2's record of a 2-part plan of 4 shards */
    char plan[] = "0123456789abcdef0123456789abcdef", cmd[] = "merge";
    mk_parts_manifest want = {cmd, plan, 2, NULL, 0, NULL, NULL, NULL};
    char a[] = "a.safetensors", b[] = "b.safetensors", c[] = "c.safetensors", d[] = "d.safetensors";
    char *name[4] = {a, b, c, d};
    uint64_t sz[4] = {10, 20, 30, 40};
    uint32_t part_of[4] = {0, 1, 1, 0};
    mk_out_file adopt[4];
    memset(adopt, 0, sizeof adopt);
    bool other = false;
    if (mk_parts_record_parse((const char *)data, size, "fuzz-record.json", &want, 2, name, sz, part_of, 4, adopt, &other) == MK_OK &&
        !other) {
        for (int k = 0; k < 4; k++) {
            if (part_of[k] == 1 && (adopt[k].name != name[k] || adopt[k].size != sz[k] || strlen(adopt[k].hash) != 32)) __builtin_trap();
            if (part_of[k] == 0 && adopt[k].name) __builtin_trap();
        }
    }
    mk_parts_inputs in = {0};
    if (mk_parts_record_inputs((const char *)data, size, "fuzz-record.json", &in) == MK_OK)
        for (size_t k = 0; k < in.n; k++)
            if (!in.f[k].name || strlen(in.f[k].hash) != 32 || mk_parts_inputs_find(&in, in.f[k].name) == NULL) __builtin_trap();
    mk_parts_inputs_free(&in);
    return 0;
}
