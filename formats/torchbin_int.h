/* torchbin_int.h - internals of the PyTorch checkpoint reader, shared by its three files:
 * torchbin_zip.c (the stored-entry zip container), torchbin_pickle.c (the restricted
 * pickle machine) and torchbin.c (storages, tensor views, the source). Not for use outside
 * formats/torchbin*.c.
 */
#ifndef MK_TORCHBIN_INT_H
#define MK_TORCHBIN_INT_H

#include "torchbin.h"

/* ---- zip (APPNOTE.TXT 6.3: local headers 4.3.7, central directory 4.3.12, end records
 * 4.3.14-4.3.16, Zip64 extra field 4.5.3) -------------------------------------------------- */

typedef struct tb_zentry {
    char *name;
    uint64_t local_off; /* local header */
    uint64_t data_off;  /* first byte of the entry's data */
    uint64_t size;      /* uncompressed size (== compressed size for stored entries) */
    uint64_t csize;
    uint32_t crc;
    uint16_t method;    /* 0 stored, 8 deflate, ... */
    uint16_t flags;     /* bit 0: encrypted */
} tb_zentry;

typedef struct tb_zip {
    size_t n;
    tb_zentry *e; /* sorted by name */
} tb_zip;

/* Central directory and every local header, validated: names are relative paths inside
 * the archive (no '..', no leading '/', no '\\', no NUL, no empty part), unique; every
 * entry's header and data lie inside the file before the central directory and do not
 * overlap another entry. */
mk_status tb_zip_open(const mk_tb_input *in, const char *what, tb_zip *z);
const tb_zentry *tb_zip_find(const tb_zip *z, const char *name);
/* An entry we read: stored (method 0), not encrypted. */
mk_status tb_zip_check_stored(const tb_zentry *e, const char *what);
/* The bytes of a small stored entry (at most cap), CRC-32 checked; *data is
 * NUL-terminated for convenience. */
mk_status tb_zip_read(const mk_tb_input *in, const char *what, const tb_zentry *e, uint64_t cap, uint8_t **data,
                      size_t *len);
void tb_zip_free(tb_zip *z);

/* ---- the restricted pickle machine -------------------------------------------------------- */

typedef enum tb_vtype {
    TV_NONE = 0,
    TV_BOOL,
    TV_INT,     /* fits int64 */
    TV_BIGINT,  /* LONG1 of more than 8 bytes: little-endian two's complement in the buffer */
    TV_FLOAT,
    TV_STR,     /* UTF-8 bytes in the buffer (not validated until used as a name) */
    TV_BYTES,
    TV_TUPLE,
    TV_LIST,
    TV_DICT,    /* flag 1: collections.OrderedDict */
    TV_SET,
    TV_GLOBAL,  /* an allowed global: flag = tb_global kind, aux = table row */
    TV_STORAGE, /* a persistent id: aux = storage index */
    TV_TENSOR,  /* aux = tensor index */
    TV_COUNT
} tb_vtype;

typedef struct tb_value {
    uint8_t type;
    uint8_t flag;
    uint16_t depth;  /* containers: nesting depth (leaves 0) */
    uint32_t n, cap; /* containers: item count and capacity (a dict holds key, value pairs) */
    union {
        int64_t i;
        double f;
        struct {
            uint32_t off, len;
        } s;
        uint32_t *items;
        uint32_t aux;
    } u;
} tb_value;

typedef struct tb_type_row tb_type_row;

/* A storage named by a persistent id ('storage', type, key, location, numel[, view]). */
typedef struct tb_storage {
    uint32_t key_off, key_len; /* key string in the buffer */
    const tb_type_row *type;   /* its storage type */
    uint64_t numel;            /* in elements of that type */
    uint64_t bytes;            /* numel x element size */
    /* where its bytes are: filled by the container */
    uint64_t base;
    bool located;
} tb_storage;

/* A tensor built by a rebuild function (not yet named or checked against its storage). */
typedef struct tb_tensor {
    uint32_t storage;
    const tb_type_row *type; /* its dtype (a storage-type row or a dtype row) */
    int ndim;
    int64_t size[MK_MAX_DIMS], stride[MK_MAX_DIMS];
    uint64_t offset;
    bool flagged;    /* metadata sets the conjugate or negative bit */
    size_t pos;      /* byte of its REDUCE, for messages */
} tb_tensor;

typedef struct tb_pickle {
    const uint8_t *buf;
    size_t len;
    const char *what; /* names the pickle in messages */
    int pid_arity;    /* 5 in the zip container, 6 in the legacy stream */
    tb_value *v;
    size_t nv, capv;
    uint32_t *memo; /* value + 1, 0 = unset */
    size_t cap_memo, memo_count;
    uint32_t *stack;
    size_t nstack, cap_stack;
    size_t *marks;
    size_t nmarks, cap_marks;
    uint64_t items; /* container items, all containers */
    tb_storage *st;
    size_t nst, cap_st;
    uint32_t *st_slots; /* storage key -> index + 1 (open addressing) */
    size_t cap_slots;
    tb_tensor *tn;
    size_t ntn, cap_tn;
    bool hit_end; /* the last error was running out of bytes (the caller may read more) */
} tb_pickle;

/* Run one pickle from buf[start]; *end = the byte after its STOP, *result its value. The
 * storage and tensor tables accumulate over several runs (the legacy stream). */
mk_status tb_pickle_run(tb_pickle *p, size_t start, size_t *end, uint32_t *result);
void tb_pickle_free(tb_pickle *p);
/* Index of the storage with this key, or -1. */
long tb_pickle_find_storage(const tb_pickle *p, const uint8_t *key, size_t len);
/* "a tuple", "an OrderedDict", "None" ... for messages */
const char *tb_value_type_name(const tb_pickle *p, uint32_t v);

/* The storage-type and dtype tables. dtype is MK_DTYPE_NONE for types torch has but
 * mergekit-c does not compute with (complex, quantized, ...). */
struct tb_type_row {
    const char *name;  /* the global's name: "FloatStorage", "float32" */
    const char *torch; /* the dtype's name in torch: "float32" */
    mk_dtype dtype;
    unsigned size;     /* element size in bytes */
};
extern const tb_type_row TB_STORAGE_TYPES[];
extern const size_t TB_N_STORAGE_TYPES;
extern const tb_type_row TB_DTYPES[];
extern const size_t TB_N_DTYPES;

#endif
