/* test_parts.c - split outputs (formats/parts.h): --part parsing, the Slurm array's part, the
 * byte-balanced split, the manifest's command line, and records checked against the plan. */
#include "harness.h"

#include "../../formats/parts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

MK_TEST(part_parse)
{
    mk_part p;
    CHECK_OK(mk_part_parse("2/3", "--part", &p));
    CHECK(p.i == 2 && p.n == 3);
    CHECK_OK(mk_part_parse("1/1", "--part", &p));
    CHECK(p.i == 1 && p.n == 1);
    CHECK_ERR(mk_part_parse("0/3", "--part", &p), MK_ERR_USAGE, "numbered 1 to 3");
    CHECK_ERR(mk_part_parse("4/3", "--part", &p), MK_ERR_USAGE, "part 4 does not exist");
    CHECK_ERR(mk_part_parse("x", "--part", &p), MK_ERR_USAGE, "expected I/N");
    CHECK_ERR(mk_part_parse("1/0", "--part", &p), MK_ERR_USAGE, "expected I/N");
    CHECK_ERR(mk_part_parse("1/", "--part", &p), MK_ERR_USAGE, "expected I/N");
    CHECK_ERR(mk_part_parse("/2", "--part", &p), MK_ERR_USAGE, "expected I/N");
    CHECK_ERR(mk_part_parse("-1/2", "--part", &p), MK_ERR_USAGE, "expected I/N");
    CHECK_ERR(mk_part_parse("1/2x", "--part", &p), MK_ERR_USAGE, "expected I/N");
    CHECK_ERR(mk_part_parse("1/99999999999999999999", "--part", &p), MK_ERR_USAGE, "expected I/N");
    CHECK_ERR(mk_part_parse("1/100001", "--part", &p), MK_ERR_USAGE, "expected I/N");
}

static void slurm(const char *id, const char *lo, const char *hi, const char *count)
{
    setenv("SLURM_ARRAY_TASK_ID", id, 1);
    setenv("SLURM_ARRAY_TASK_MIN", lo, 1);
    setenv("SLURM_ARRAY_TASK_MAX", hi, 1);
    setenv("SLURM_ARRAY_TASK_COUNT", count, 1);
}

MK_TEST(part_slurm)
{
    mk_part p;
    slurm("0", "0", "3", "4"); /* --array=0-3 */
    CHECK_OK(mk_part_parse("slurm", "--part", &p));
    CHECK(p.i == 1 && p.n == 4);
    slurm("4", "1", "4", "4"); /* --array=1-4 */
    CHECK_OK(mk_part_slurm(&p));
    CHECK(p.i == 4 && p.n == 4);
    slurm("12", "10", "12", "3"); /* --array=10-12 */
    CHECK_OK(mk_part_slurm(&p));
    CHECK(p.i == 3 && p.n == 3);
    slurm("3", "1", "5", "3"); /* --array=1-5:2 */
    CHECK_ERR(mk_part_slurm(&p), MK_ERR_USAGE, "contiguous range");
    slurm("x", "1", "5", "5");
    CHECK_ERR(mk_part_slurm(&p), MK_ERR_USAGE, "SLURM_ARRAY_TASK_ID='x'");
    slurm("2", "1", "5", "5");
    unsetenv("SLURM_ARRAY_TASK_COUNT");
    CHECK_ERR(mk_part_slurm(&p), MK_ERR_USAGE, "SLURM_ARRAY_TASK_COUNT is not set");
    unsetenv("SLURM_ARRAY_TASK_ID");
    unsetenv("SLURM_ARRAY_TASK_MIN");
    unsetenv("SLURM_ARRAY_TASK_MAX");
}

MK_TEST(parts_split_balances_bytes)
{
    /* by tensor count this would be 3 + 2; by bytes the big shard stands alone */
    uint64_t size[5] = {100, 10, 10, 10, 10};
    uint32_t part_of[5];
    mk_parts_split(size, 5, 2, part_of);
    CHECK(part_of[0] == 0);
    for (int s = 1; s < 5; s++) CHECK(part_of[s] == 1);
    /* any sizes: the heaviest part is at most one shard heavier than the lightest */
    uint64_t rng = 1;
    for (int round = 0; round < 200; round++) {
        size_t ns = 1 + (size_t)(round % 37);
        unsigned n = 1 + (unsigned)(round % 7);
        uint64_t sz[64], load[8] = {0}, big = 0;
        uint32_t po[64];
        for (size_t s = 0; s < ns; s++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            sz[s] = 1 + (rng >> 40) % 5000000000ull;
            if (sz[s] > big) big = sz[s];
        }
        mk_parts_split(sz, ns, n, po);
        for (size_t s = 0; s < ns; s++) {
            CHECK(po[s] < n);
            load[po[s]] += sz[s];
        }
        uint64_t lo = UINT64_MAX, hi = 0;
        for (unsigned i = 0; i < n; i++) {
            if (load[i] < lo) lo = load[i];
            if (load[i] > hi) hi = load[i];
        }
        CHECK_MSG(hi - lo <= big, "round %d: parts %llu..%llu bytes, largest shard %llu", round, (unsigned long long)lo,
                  (unsigned long long)hi, (unsigned long long)big);
    }
    /* more parts than shards: the extra parts get nothing */
    uint64_t two[2] = {5, 7};
    uint32_t po2[2];
    mk_parts_split(two, 2, 4, po2);
    CHECK(po2[1] == 0 && po2[0] == 1);
}

MK_TEST(parts_manifest_argv)
{
    char *argv[] = {"merge", "r.yaml", "out/", "--part", "2/3", "--resume", "--part=1/3", "--parts", "4", "-q", "--partx", NULL};
    mk_parts_manifest m = {0};
    CHECK_OK(mk_parts_manifest_argv(&m, "merge", 11, argv));
    CHECK_EQ_INT(m.argc, 4);
    CHECK_STR(m.argv[0], "merge");
    CHECK_STR(m.argv[2], "out/");
    CHECK_STR(m.argv[3], "--partx");
    mk_parts_manifest_free(&m);
    const char *text = "{\"command\": \"merge\", \"plan\": \"0123456789abcdef0123456789abcdef\", \"parts\": 3, "
                       "\"cwd\": \"/w\", \"argv\": [\"merge\", \"r.yaml\", \"out/\"]}";
    CHECK_OK(mk_parts_manifest_parse(text, strlen(text), "m.json", &m));
    CHECK(m.n == 3 && m.argc == 3);
    CHECK_STR(m.cwd, "/w");
    mk_parts_manifest_free(&m);
    const char *bad = "{\"command\": \"merge\", \"plan\": \"0123\", \"parts\": 0, \"cwd\": \"/w\", \"argv\": []}";
    CHECK_ERR(mk_parts_manifest_parse(bad, strlen(bad), "m.json", &m), MK_ERR_FORMAT, "malformed parts manifest");
    /* a one-file output (convert to GGUF): the file's name, a plain name in OUT.tmp */
    const char *one = "{\"command\": \"convert\", \"plan\": \"0123456789abcdef0123456789abcdef\", \"parts\": 2, "
                      "\"cwd\": \"/w\", \"file\": \"m.gguf\", \"argv\": [\"convert\", \"in\", \"m.gguf\"]}";
    CHECK_OK(mk_parts_manifest_parse(one, strlen(one), "m.json", &m));
    CHECK_STR(m.file, "m.gguf");
    mk_parts_manifest_free(&m);
    CHECK_OK(mk_parts_manifest_parse(text, strlen(text), "m.json", &m));
    CHECK(m.file == NULL);
    mk_parts_manifest_free(&m);
    static const char *const bad_files[] = {"\"../x\"", "\".mergekit-c-parts.json\"", "\"\"", "3", "\"a/b\""};
    for (size_t k = 0; k < sizeof bad_files / sizeof *bad_files; k++) {
        char t[512];
        snprintf(t, sizeof t,
                 "{\"command\": \"convert\", \"plan\": \"0123456789abcdef0123456789abcdef\", \"parts\": 2, \"cwd\": \"/w\", "
                 "\"file\": %s, \"argv\": [\"convert\"]}",
                 bad_files[k]);
        CHECK_ERR(mk_parts_manifest_parse(t, strlen(t), "m.json", &m), MK_ERR_FORMAT, "malformed parts manifest (file)");
    }
}

MK_TEST(parts_record_against_plan)
{
    char plan[] = "0123456789abcdef0123456789abcdef", cmd[] = "merge";
    mk_parts_manifest m = {cmd, plan, 2, NULL, 0, NULL, NULL, NULL};
    char a[] = "a.safetensors", b[] = "b.safetensors", c[] = "c.safetensors";
    char *name[3] = {a, b, c};
    uint64_t size[3] = {10, 20, 30};
    uint32_t part_of[3] = {1, 1, 0};
    mk_out_file adopt[3];
    bool other;
    const char *good = "{\"part\": 2, \"parts\": 2, \"plan\": \"0123456789abcdef0123456789abcdef\", \"shards\": ["
                       "{\"name\": \"b.safetensors\", \"size\": 20, \"xxh128\": \"00112233445566778899aabbccddeeff\"},"
                       "{\"name\": \"a.safetensors\", \"size\": 10, \"xxh128\": \"ffeeddccbbaa99887766554433221100\"}]}";
    memset(adopt, 0, sizeof adopt);
    CHECK_OK(mk_parts_record_parse(good, strlen(good), "r.json", &m, 2, name, size, part_of, 3, adopt, &other));
    CHECK(!other && adopt[0].name == a && adopt[1].name == b && !adopt[2].name);
    CHECK_STR(adopt[0].hash, "ffeeddccbbaa99887766554433221100");
    /* the same record read as part 1's, or against another plan, or another split: another plan's */
    memset(adopt, 0, sizeof adopt);
    CHECK_OK(mk_parts_record_parse(good, strlen(good), "r.json", &m, 1, name, size, part_of, 3, adopt, &other));
    CHECK(other);
    char plan2[] = "ffffffffffffffffffffffffffffffff";
    mk_parts_manifest m2 = {cmd, plan2, 2, NULL, 0, NULL, NULL, NULL};
    memset(adopt, 0, sizeof adopt);
    CHECK_OK(mk_parts_record_parse(good, strlen(good), "r.json", &m2, 2, name, size, part_of, 3, adopt, &other));
    CHECK(other);
    const char *wrong_size = "{\"part\": 2, \"parts\": 2, \"plan\": \"0123456789abcdef0123456789abcdef\", \"shards\": ["
                             "{\"name\": \"b.safetensors\", \"size\": 21, \"xxh128\": \"00112233445566778899aabbccddeeff\"},"
                             "{\"name\": \"a.safetensors\", \"size\": 10, \"xxh128\": \"ffeeddccbbaa99887766554433221100\"}]}";
    memset(adopt, 0, sizeof adopt);
    CHECK_OK(mk_parts_record_parse(wrong_size, strlen(wrong_size), "r.json", &m, 2, name, size, part_of, 3, adopt, &other));
    CHECK(other);
    const char *missing = "{\"part\": 2, \"parts\": 2, \"plan\": \"0123456789abcdef0123456789abcdef\", \"shards\": ["
                          "{\"name\": \"b.safetensors\", \"size\": 20, \"xxh128\": \"00112233445566778899aabbccddeeff\"}]}";
    memset(adopt, 0, sizeof adopt);
    CHECK_OK(mk_parts_record_parse(missing, strlen(missing), "r.json", &m, 2, name, size, part_of, 3, adopt, &other));
    CHECK(other);
    const char *bad = "{\"part\": 2, \"parts\": 2, \"plan\": \"0123456789abcdef0123456789abcdef\", \"shards\": [{\"name\": 3}]}";
    CHECK_ERR(mk_parts_record_parse(bad, strlen(bad), "r.json", &m, 2, name, size, part_of, 3, adopt, &other), MK_ERR_FORMAT,
              "malformed completion record of part 2/2");
}
