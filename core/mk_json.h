/* mk_json.h - a strict RFC 8259 JSON reader for untrusted headers (safetensors headers,
 * shard indexes, adapter configs).
 *
 * Stricter than general-purpose readers in ways the formats need: integers are kept
 * exactly as u64 (a JSON parser that goes through double loses offsets above 2^53),
 * numbers remember whether they were written as plain non-negative integers (so 4.0,
 * 1e3 and -1 can be refused where an offset is expected), strings are checked to be
 * valid UTF-8 and remember whether they contain NUL, nesting depth and node counts are
 * bounded. Duplicate object keys are reported by the caller (mk_json_dup_key).
 * Must not: allocate per node (one growing array) or recurse without a depth bound.
 */
#ifndef MK_JSON_H
#define MK_JSON_H

#include "mk_core.h"

typedef enum mk_json_type {
    MK_JSON_NULL = 0,
    MK_JSON_BOOL,
    MK_JSON_NUM,
    MK_JSON_STR,
    MK_JSON_ARR,
    MK_JSON_OBJ,
} mk_json_type;

typedef struct mk_json_node {
    mk_json_type type;
    bool b;          /* BOOL */
    bool is_uint;    /* NUM written as a plain non-negative integer that fits u64 */
    bool has_nul;    /* STR (or key) contains U+0000 */
    uint32_t count;  /* ARR/OBJ: number of children */
    uint32_t first;  /* ARR/OBJ: first child (0 = none) */
    uint32_t next;   /* next sibling (0 = none) */
    uint32_t key;    /* object members: offset of the key in strs (NUL-terminated) */
    uint32_t key_len;
    uint32_t str;    /* STR: offset in strs; */
    uint32_t str_len;
    uint64_t u;      /* NUM: exact value when is_uint */
    double d;        /* NUM: value as double */
    uint32_t pos;    /* byte offset in the input, for messages */
} mk_json_node;

typedef struct mk_json {
    mk_json_node *nodes; /* nodes[0] is the root */
    size_t n, cap;
    char *strs;
    size_t strs_len, strs_cap;
} mk_json;

typedef struct mk_json_limits {
    unsigned max_depth;  /* e.g. 64 */
    size_t max_nodes;    /* e.g. input length / 2 + 16 */
} mk_json_limits;

/* Parse buf[0..len). `what` names the input in messages ("model.safetensors: header"). */
mk_status mk_json_parse(mk_json *j, const char *buf, size_t len, const mk_json_limits *lim, const char *what);
void mk_json_free(mk_json *j);

static inline const mk_json_node *mk_json_at(const mk_json *j, uint32_t i) { return &j->nodes[i]; }
static inline const char *mk_json_key(const mk_json *j, uint32_t i) { return j->strs + j->nodes[i].key; }
static inline const char *mk_json_strv(const mk_json *j, uint32_t i) { return j->strs + j->nodes[i].str; }
/* Member of object `obj` named `key`, or 0. */
uint32_t mk_json_get(const mk_json *j, uint32_t obj, const char *key);
/* First duplicated key among the members of `obj`, or 0 if none (O(n log n)). */
uint32_t mk_json_dup_key(const mk_json *j, uint32_t obj);
const char *mk_json_type_name(mk_json_type t);
/* True if s[0..n) is valid UTF-8 (Unicode 15, table 3-7: no overlongs, no surrogates). */
bool mk_utf8_check(const char *s, size_t n);

#endif
