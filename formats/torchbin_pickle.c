/* torchbin_pickle.c - the restricted pickle machine of the PyTorch checkpoint reader (see
 * torchbin.h for what it accepts and torchbin_int.h for its values).
 *
 * Opcodes follow CPython's Lib/pickle.py and pickletools.py (protocols 2-5). Accepted:
 * the set PyTorch's weights_only unpickler accepts (torch/_weights_only_unpickler.py)
 * minus NEWOBJ, plus the data-only opcodes of protocols 3-4 (BINBYTES*, SHORT_BINUNICODE,
 * BINUNICODE8, MEMOIZE, FRAME, STACK_GLOBAL looked up in the same allowlist), so that
 * torch.save(..., pickle_protocol=4) files read too. A global is a name compared with a
 * table; REDUCE "calls" only rows of that table, by building a value (a dict, a tensor
 * record); nothing is ever executed. Values live in one growing array and containers
 * refer to them by index, so a memo reference is never copied (no pickle bomb) and
 * nothing recurses.
 */
#include "torchbin_int.h"

#include "../core/mk_hash.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds (hostile input). A state dict of n tensors needs about 20 n values and items. */
#define TB_MAX_VALUES (1u << 22)
#define TB_MAX_STACK (1u << 20) /* values on the stack, all MARK levels together */
#define TB_MAX_MARKS 4096
#define TB_MAX_ITEMS (1u << 24) /* container items, all containers together */
#define TB_MAX_MEMO (1u << 22)  /* largest memo index + 1 */
#define TB_MAX_DEPTH 64         /* container nesting */
#define TB_MAX_STRING (16u << 20)
#define TB_MAX_GLOBAL 256       /* bytes of a global's module or name */
#define TB_MAX_STORAGES (1u << 20)
#define TB_MAX_TENSORS (1u << 20)
#define TB_MAX_KEY 64           /* a storage key (torch writes a counter or an address) */

/* torch.<name>Storage and torch.storage.UntypedStorage (torch/storage.py; the legacy
 * typed storage of each dtype is what torch.save still pickles for the common dtypes) */
const tb_type_row TB_STORAGE_TYPES[] = {
    {"DoubleStorage", "float64", MK_F64, 8},
    {"FloatStorage", "float32", MK_F32, 4},
    {"HalfStorage", "float16", MK_F16, 2},
    {"BFloat16Storage", "bfloat16", MK_BF16, 2},
    {"LongStorage", "int64", MK_I64, 8},
    {"IntStorage", "int32", MK_I32, 4},
    {"ShortStorage", "int16", MK_I16, 2},
    {"CharStorage", "int8", MK_I8, 1},
    {"ByteStorage", "uint8", MK_U8, 1},
    {"BoolStorage", "bool", MK_BOOL, 1},
    {"ComplexFloatStorage", "complex64", MK_DTYPE_NONE, 8},
    {"ComplexDoubleStorage", "complex128", MK_DTYPE_NONE, 16},
    {"QInt8Storage", "qint8", MK_DTYPE_NONE, 1},
    {"QUInt8Storage", "quint8", MK_DTYPE_NONE, 1},
    {"QInt32Storage", "qint32", MK_DTYPE_NONE, 4},
    {"QUInt4x2Storage", "quint4x2", MK_DTYPE_NONE, 1},
    {"QUInt2x4Storage", "quint2x4", MK_DTYPE_NONE, 1},
    {"UntypedStorage", "uint8", MK_U8, 1}, /* last: module torch.storage */
};
const size_t TB_N_STORAGE_TYPES = sizeof TB_STORAGE_TYPES / sizeof *TB_STORAGE_TYPES;

/* torch.<dtype> globals as torch pickles them (str(dtype): canonical names only) */
const tb_type_row TB_DTYPES[] = {
    {"float64", "float64", MK_F64, 8},
    {"float32", "float32", MK_F32, 4},
    {"float16", "float16", MK_F16, 2},
    {"bfloat16", "bfloat16", MK_BF16, 2},
    {"float8_e4m3fn", "float8_e4m3fn", MK_F8_E4M3, 1},
    {"float8_e5m2", "float8_e5m2", MK_F8_E5M2, 1},
    {"int64", "int64", MK_I64, 8},
    {"int32", "int32", MK_I32, 4},
    {"int16", "int16", MK_I16, 2},
    {"int8", "int8", MK_I8, 1},
    {"uint8", "uint8", MK_U8, 1},
    {"uint16", "uint16", MK_U16, 2},
    {"uint32", "uint32", MK_U32, 4},
    {"uint64", "uint64", MK_U64, 8},
    {"bool", "bool", MK_BOOL, 1},
    {"complex32", "complex32", MK_DTYPE_NONE, 4},
    {"complex64", "complex64", MK_DTYPE_NONE, 8},
    {"complex128", "complex128", MK_DTYPE_NONE, 16},
    {"float8_e4m3fnuz", "float8_e4m3fnuz", MK_DTYPE_NONE, 1},
    {"float8_e5m2fnuz", "float8_e5m2fnuz", MK_DTYPE_NONE, 1},
    {"float8_e8m0fnu", "float8_e8m0fnu", MK_DTYPE_NONE, 1},
    {"float4_e2m1fn_x2", "float4_e2m1fn_x2", MK_DTYPE_NONE, 1},
    {"qint8", "qint8", MK_DTYPE_NONE, 1},
    {"quint8", "quint8", MK_DTYPE_NONE, 1},
    {"qint32", "qint32", MK_DTYPE_NONE, 4},
};
const size_t TB_N_DTYPES = sizeof TB_DTYPES / sizeof *TB_DTYPES;

/* The callables and classes a state dict names. */
typedef enum tb_global {
    G_ODICT,        /* collections.OrderedDict: () -> empty ordered dict */
    G_SIZE,         /* torch.Size: (tuple,) -> the tuple */
    G_REBUILD,      /* torch._utils._rebuild_tensor(storage, offset, size, stride) */
    G_REBUILD_V2,   /* ..._v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
    G_REBUILD_V3,   /* ..._v3(untyped storage, offset, size, stride, requires_grad, hooks, dtype[, metadata]) */
    G_PARAM,        /* torch._utils._rebuild_parameter(tensor, requires_grad, hooks) */
    G_PARAM_STATE,  /* ..._with_state(tensor, requires_grad, hooks, state) */
    G_STORAGE_TYPE, /* aux = row of TB_STORAGE_TYPES */
    G_DTYPE,        /* aux = row of TB_DTYPES */
} tb_global;

static const struct {
    const char *module, *name;
    tb_global kind;
} FUNCS[] = {
    {"collections", "OrderedDict", G_ODICT},
    {"torch", "Size", G_SIZE},
    {"torch._utils", "_rebuild_tensor", G_REBUILD},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_V2},
    {"torch._utils", "_rebuild_tensor_v3", G_REBUILD_V3},
    {"torch._utils", "_rebuild_parameter", G_PARAM},
    {"torch._utils", "_rebuild_parameter_with_state", G_PARAM_STATE},
};

static const char *const OPNAMES[256] = {
    ['('] = "MARK", ['.'] = "STOP", ['0'] = "POP", ['1'] = "POP_MARK", ['2'] = "DUP", ['F'] = "FLOAT",
    ['I'] = "INT", ['J'] = "BININT", ['K'] = "BININT1", ['L'] = "LONG", ['M'] = "BININT2", ['N'] = "NONE",
    ['P'] = "PERSID", ['Q'] = "BINPERSID", ['R'] = "REDUCE", ['S'] = "STRING", ['T'] = "BINSTRING",
    ['U'] = "SHORT_BINSTRING", ['V'] = "UNICODE", ['X'] = "BINUNICODE", ['a'] = "APPEND", ['b'] = "BUILD",
    ['c'] = "GLOBAL", ['d'] = "DICT", ['}'] = "EMPTY_DICT", ['e'] = "APPENDS", ['g'] = "GET", ['h'] = "BINGET",
    ['i'] = "INST", ['j'] = "LONG_BINGET", ['l'] = "LIST", [']'] = "EMPTY_LIST", ['o'] = "OBJ", ['p'] = "PUT",
    ['q'] = "BINPUT", ['r'] = "LONG_BINPUT", ['s'] = "SETITEM", ['t'] = "TUPLE", [')'] = "EMPTY_TUPLE",
    ['u'] = "SETITEMS", ['G'] = "BINFLOAT", ['B'] = "BINBYTES", ['C'] = "SHORT_BINBYTES", [0x80] = "PROTO",
    [0x81] = "NEWOBJ", [0x82] = "EXT1", [0x83] = "EXT2", [0x84] = "EXT4", [0x85] = "TUPLE1", [0x86] = "TUPLE2",
    [0x87] = "TUPLE3", [0x88] = "NEWTRUE", [0x89] = "NEWFALSE", [0x8a] = "LONG1", [0x8b] = "LONG4",
    [0x8c] = "SHORT_BINUNICODE", [0x8d] = "BINUNICODE8", [0x8e] = "BINBYTES8", [0x8f] = "EMPTY_SET",
    [0x90] = "ADDITEMS", [0x91] = "FROZENSET", [0x92] = "NEWOBJ_EX", [0x93] = "STACK_GLOBAL", [0x94] = "MEMOIZE",
    [0x95] = "FRAME", [0x96] = "BYTEARRAY8", [0x97] = "NEXT_BUFFER", [0x98] = "READONLY_BUFFER",
};

static mk_status perr(const tb_pickle *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static mk_status perr(const tb_pickle *p, size_t pos, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mk_error(MK_ERR_FORMAT, "%s: byte %zu: %s", p->what, pos, msg);
}

static const char REFUSAL[] = "mergekit-c reads state dicts of tensors and never runs code from a checkpoint";

/* ---- values --------------------------------------------------------------------------- */

static bool grow(void **a, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *n = mk_realloc_array(*a, c, elem);
    if (!n) return false;
    *a = n;
    *cap = c;
    return true;
}

static mk_status new_value(tb_pickle *p, size_t pos, tb_vtype type, uint32_t *out)
{
    if (p->nv >= TB_MAX_VALUES) return perr(p, pos, "more than %u objects in the pickle (a pickle bomb?)", TB_MAX_VALUES);
    if (!grow((void **)&p->v, &p->capv, p->nv + 1, sizeof *p->v)) return MK_ERR_NOMEM;
    memset(&p->v[p->nv], 0, sizeof *p->v);
    p->v[p->nv].type = (uint8_t)type;
    if (type == TV_TUPLE || type == TV_LIST || type == TV_DICT || type == TV_SET) p->v[p->nv].depth = 1;
    *out = (uint32_t)p->nv++;
    return MK_OK;
}

static size_t frame_base(const tb_pickle *p) { return p->nmarks ? p->marks[p->nmarks - 1] : 0; }

static mk_status push(tb_pickle *p, size_t pos, uint32_t v)
{
    if (p->nstack >= TB_MAX_STACK) return perr(p, pos, "stack deeper than %u (a pickle bomb?)", TB_MAX_STACK);
    if (!grow((void **)&p->stack, &p->cap_stack, p->nstack + 1, sizeof *p->stack)) return MK_ERR_NOMEM;
    p->stack[p->nstack++] = v;
    return MK_OK;
}

static mk_status pop(tb_pickle *p, size_t pos, uint8_t op, uint32_t *v)
{
    if (p->nstack <= frame_base(p)) return perr(p, pos, "%s on an empty stack", OPNAMES[op]);
    *v = p->stack[--p->nstack];
    return MK_OK;
}

static mk_status top(tb_pickle *p, size_t pos, uint8_t op, uint32_t **v)
{
    if (p->nstack <= frame_base(p)) return perr(p, pos, "%s on an empty stack", OPNAMES[op]);
    *v = &p->stack[p->nstack - 1];
    return MK_OK;
}

static mk_status add_item(tb_pickle *p, size_t pos, uint32_t c, uint32_t item)
{
    if (p->items >= TB_MAX_ITEMS) return perr(p, pos, "more than %u container items (a pickle bomb?)", TB_MAX_ITEMS);
    tb_value *cv = &p->v[c];
    if (cv->n == cv->cap) {
        size_t cap = cv->cap;
        if (!grow((void **)&cv->u.items, &cap, (size_t)cv->n + 1, sizeof(uint32_t))) return MK_ERR_NOMEM;
        cv->cap = (uint32_t)cap;
    }
    cv->u.items[cv->n++] = item;
    p->items++;
    unsigned d = (unsigned)p->v[item].depth + 1;
    if (d > cv->depth) {
        if (d > TB_MAX_DEPTH) return perr(p, pos, "containers nested deeper than %d (a pickle bomb?)", TB_MAX_DEPTH);
        cv->depth = (uint16_t)d;
    }
    return MK_OK;
}

const char *tb_value_type_name(const tb_pickle *p, uint32_t v)
{
    static const char *const names[TV_COUNT] = {"None",    "a bool", "an int",   "an int",    "a float",
                                                "a str",   "bytes",  "a tuple",  "a list",    "a dict",
                                                "a set",   "a global", "a storage", "a tensor"};
    const tb_value *x = &p->v[v];
    if (x->type == TV_DICT && x->flag) return "an OrderedDict";
    return names[x->type];
}

/* "collections.OrderedDict", "torch.FloatStorage" ... for messages */
static void global_name(const tb_value *g, char *buf, size_t n)
{
    if (g->flag == G_STORAGE_TYPE)
        snprintf(buf, n, "%s.%s", g->u.aux + 1 == TB_N_STORAGE_TYPES ? "torch.storage" : "torch",
                 TB_STORAGE_TYPES[g->u.aux].name);
    else if (g->flag == G_DTYPE) snprintf(buf, n, "torch.%s", TB_DTYPES[g->u.aux].name);
    else
        for (size_t i = 0; i < sizeof FUNCS / sizeof *FUNCS; i++)
            if (FUNCS[i].kind == g->flag) snprintf(buf, n, "%s.%s", FUNCS[i].module, FUNCS[i].name);
}

static bool eq(const uint8_t *s, size_t n, const char *lit) { return strlen(lit) == n && memcmp(s, lit, n) == 0; }

/* Look a global up in the allowlist; refuse it otherwise (the refusal names it). */
static mk_status global(tb_pickle *p, size_t pos, const uint8_t *mod, size_t ml, const uint8_t *name, size_t nl,
                        const char *via)
{
    int kind = -1;
    uint32_t aux = 0;
    for (size_t i = 0; i < sizeof FUNCS / sizeof *FUNCS && kind < 0; i++)
        if (eq(mod, ml, FUNCS[i].module) && eq(name, nl, FUNCS[i].name)) kind = (int)FUNCS[i].kind;
    for (size_t i = 0; i < TB_N_STORAGE_TYPES && kind < 0; i++) {
        bool untyped = i + 1 == TB_N_STORAGE_TYPES;
        if ((untyped ? eq(mod, ml, "torch.storage") || eq(mod, ml, "torch") : eq(mod, ml, "torch")) &&
            eq(name, nl, TB_STORAGE_TYPES[i].name)) {
            kind = G_STORAGE_TYPE;
            aux = (uint32_t)i;
        }
    }
    for (size_t i = 0; i < TB_N_DTYPES && kind < 0; i++)
        if (eq(mod, ml, "torch") && eq(name, nl, TB_DTYPES[i].name)) {
            kind = G_DTYPE;
            aux = (uint32_t)i;
        }
    if (kind < 0)
        return perr(p, pos, "refused pickle global '%.*s.%.*s' (%s): %s", (int)(ml < 120 ? ml : 120), (const char *)mod,
                    (int)(nl < 120 ? nl : 120), (const char *)name, via, REFUSAL);
    uint32_t v;
    MK_TRY(new_value(p, pos, TV_GLOBAL, &v));
    p->v[v].flag = (uint8_t)kind;
    p->v[v].u.aux = aux;
    return push(p, pos, v);
}

/* ---- persistent ids: storages --------------------------------------------------------- */

static uint64_t key_hash(const uint8_t *s, size_t n) { return mk_hash64(s, n); }

static mk_status storage_from_pid(tb_pickle *p, size_t pos, uint32_t pid, uint32_t *out)
{
    const tb_value *t = &p->v[pid];
    if (t->type != TV_TUPLE || t->n != (uint32_t)p->pid_arity)
        return perr(p, pos, "persistent id is %s of %u items; a storage reference is a tuple of %d",
                    tb_value_type_name(p, pid), t->type == TV_TUPLE ? t->n : 0, p->pid_arity);
    const uint32_t *it = t->u.items;
    const tb_value *tag = &p->v[it[0]], *ty = &p->v[it[1]], *key = &p->v[it[2]], *loc = &p->v[it[3]],
                   *num = &p->v[it[4]];
    if (tag->type != TV_STR || !eq(p->buf + tag->u.s.off, tag->u.s.len, "storage"))
        return perr(p, pos, "persistent id is not a ('storage', ...) tuple: %s", REFUSAL);
    if (ty->type != TV_GLOBAL || ty->flag != G_STORAGE_TYPE)
        return perr(p, pos, "storage reference: item 1 is %s, expected a torch storage type", tb_value_type_name(p, it[1]));
    if (key->type != TV_STR || key->u.s.len == 0 || key->u.s.len > TB_MAX_KEY)
        return perr(p, pos, "storage reference: the key is not a string of 1 to %d bytes", TB_MAX_KEY);
    for (uint32_t i = 0; i < key->u.s.len; i++) {
        uint8_t c = p->buf[key->u.s.off + i];
        if (c <= 0x20 || c >= 0x7f || c == '/' || c == '\\')
            return perr(p, pos, "storage reference: key '%.*s' is not a plain name", (int)key->u.s.len,
                        (const char *)p->buf + key->u.s.off);
    }
    if (loc->type != TV_STR)
        return perr(p, pos, "storage reference: the location is %s, expected a string", tb_value_type_name(p, it[3]));
    if (num->type != TV_INT || num->u.i < 0)
        return perr(p, pos, "storage reference: the element count is not a non-negative integer");
    if (p->pid_arity == 6 && p->v[it[5]].type != TV_NONE)
        return perr(p, pos, "storage reference: a view of another storage (PyTorch < 0.4) is not supported");
    const tb_type_row *type = &TB_STORAGE_TYPES[ty->u.aux];
    uint64_t bytes;
    if (!mk_mul_u64((uint64_t)num->u.i, type->size, &bytes))
        return perr(p, pos, "storage '%.*s': %lld elements overflow", (int)key->u.s.len, (const char *)p->buf + key->u.s.off,
                    (long long)num->u.i);
    const uint8_t *ks = p->buf + key->u.s.off;
    /* the same key again (tied weights): it must describe the same storage */
    long found = tb_pickle_find_storage(p, ks, key->u.s.len);
    if (found >= 0) {
        const tb_storage *s = &p->st[found];
        if (s->type != type || s->numel != (uint64_t)num->u.i)
            return perr(p, pos, "storage '%.*s' is named twice with different types or sizes", (int)s->key_len,
                        (const char *)ks);
        *out = (uint32_t)found;
        return MK_OK;
    }
    if (p->nst >= TB_MAX_STORAGES) return perr(p, pos, "more than %u storages", TB_MAX_STORAGES);
    if (!grow((void **)&p->st, &p->cap_st, p->nst + 1, sizeof *p->st)) return MK_ERR_NOMEM;
    if ((p->nst + 1) * 2 > p->cap_slots) {
        size_t cap = p->cap_slots ? p->cap_slots * 2 : 64;
        uint32_t *slots = mk_calloc(cap, sizeof *slots);
        if (!slots) return MK_ERR_NOMEM;
        for (size_t i = 0; i < p->nst; i++) {
            size_t h = (size_t)key_hash(p->buf + p->st[i].key_off, p->st[i].key_len) & (cap - 1);
            while (slots[h]) h = (h + 1) & (cap - 1);
            slots[h] = (uint32_t)(i + 1);
        }
        free(p->st_slots);
        p->st_slots = slots;
        p->cap_slots = cap;
    }
    tb_storage *s = &p->st[p->nst];
    memset(s, 0, sizeof *s);
    s->key_off = key->u.s.off;
    s->key_len = key->u.s.len;
    s->type = type;
    s->numel = (uint64_t)num->u.i;
    s->bytes = bytes;
    size_t h = (size_t)key_hash(ks, key->u.s.len) & (p->cap_slots - 1);
    while (p->st_slots[h]) h = (h + 1) & (p->cap_slots - 1);
    p->st_slots[h] = (uint32_t)(p->nst + 1);
    *out = (uint32_t)p->nst++;
    return MK_OK;
}

/* ---- REDUCE: the rebuild functions ------------------------------------------------------ */

static mk_status int_tuple(tb_pickle *p, size_t pos, uint32_t v, const char *what, int64_t out[MK_MAX_DIMS], int *n)
{
    const tb_value *t = &p->v[v];
    if (t->type != TV_TUPLE) return perr(p, pos, "tensor %s is %s, expected a tuple", what, tb_value_type_name(p, v));
    if (t->n > MK_MAX_DIMS) return perr(p, pos, "tensor %s has %u dimensions (at most %d supported)", what, t->n, MK_MAX_DIMS);
    for (uint32_t i = 0; i < t->n; i++) {
        const tb_value *x = &p->v[t->u.items[i]];
        if (x->type != TV_INT || x->u.i < 0)
            return perr(p, pos, "tensor %s: entry %u is not a non-negative integer", what, i);
        out[i] = x->u.i;
    }
    *n = (int)t->n;
    return MK_OK;
}

static mk_status rebuild_tensor(tb_pickle *p, size_t pos, tb_global kind, uint32_t args, uint32_t *out)
{
    const tb_value *a = &p->v[args];
    uint32_t lo = kind == G_REBUILD ? 4 : kind == G_REBUILD_V2 ? 6 : 7, hi = kind == G_REBUILD ? 4 : lo + 1;
    if (a->n < lo || a->n > hi)
        return perr(p, pos, "a tensor rebuild call has %u arguments, expected %u%s", a->n, lo, hi > lo ? " or one more" : "");
    const uint32_t *it = a->u.items;
    if (p->v[it[0]].type != TV_STORAGE)
        return perr(p, pos, "a tensor rebuild call's storage is %s", tb_value_type_name(p, it[0]));
    if (p->v[it[1]].type != TV_INT || p->v[it[1]].u.i < 0)
        return perr(p, pos, "a tensor's storage offset is not a non-negative integer");
    if (p->ntn >= TB_MAX_TENSORS) return perr(p, pos, "more than %u tensors", TB_MAX_TENSORS);
    if (!grow((void **)&p->tn, &p->cap_tn, p->ntn + 1, sizeof *p->tn)) return MK_ERR_NOMEM;
    tb_tensor *t = &p->tn[p->ntn];
    memset(t, 0, sizeof *t);
    t->storage = p->v[it[0]].u.aux;
    t->offset = (uint64_t)p->v[it[1]].u.i;
    t->pos = pos;
    int ns = 0;
    MK_TRY(int_tuple(p, pos, it[2], "shape", t->size, &t->ndim));
    MK_TRY(int_tuple(p, pos, it[3], "stride", t->stride, &ns));
    if (ns != t->ndim) return perr(p, pos, "a tensor has %d sizes but %d strides", t->ndim, ns);
    t->type = p->st[t->storage].type;
    if (kind != G_REBUILD) {
        if (p->v[it[4]].type != TV_BOOL) return perr(p, pos, "a tensor's requires_grad is %s", tb_value_type_name(p, it[4]));
        if (p->v[it[5]].type != TV_DICT)
            return perr(p, pos, "a tensor's backward hooks are %s, expected an empty OrderedDict", tb_value_type_name(p, it[5]));
    }
    uint32_t meta = 0;
    if (kind == G_REBUILD_V3) {
        const tb_value *d = &p->v[it[6]];
        if (d->type != TV_GLOBAL || d->flag != G_DTYPE)
            return perr(p, pos, "a tensor's dtype is %s, expected a torch dtype", tb_value_type_name(p, it[6]));
        t->type = &TB_DTYPES[d->u.aux];
        if (a->n == 8) meta = it[7];
    } else if (kind == G_REBUILD_V2 && a->n == 7) {
        meta = it[6];
    }
    if (meta) {
        /* torch._utils.get_tensor_metadata: {'conj': True} / {'neg': True} when a bit is set */
        const tb_value *m = &p->v[meta];
        if (m->type != TV_DICT) return perr(p, pos, "a tensor's metadata is %s, expected a dict", tb_value_type_name(p, meta));
        for (uint32_t i = 1; i < m->n; i += 2) {
            const tb_value *x = &p->v[m->u.items[i]];
            if (!(x->type == TV_BOOL && x->u.i == 0)) t->flagged = true;
        }
    }
    uint32_t v;
    MK_TRY(new_value(p, pos, TV_TENSOR, &v));
    p->v[v].u.aux = (uint32_t)p->ntn++;
    *out = v;
    return MK_OK;
}

static mk_status reduce(tb_pickle *p, size_t pos)
{
    uint32_t args = 0, *fn = NULL;
    MK_TRY(pop(p, pos, 'R', &args));
    MK_TRY(top(p, pos, 'R', &fn));
    const tb_value *f = &p->v[*fn];
    if (f->type != TV_GLOBAL) return perr(p, pos, "REDUCE calls %s, not an allowed global", tb_value_type_name(p, *fn));
    char name[160];
    global_name(f, name, sizeof name);
    if (p->v[args].type != TV_TUPLE)
        return perr(p, pos, "REDUCE of %s with %s of arguments, expected a tuple", name, tb_value_type_name(p, args));
    const tb_value *a = &p->v[args];
    uint32_t v = 0;
    switch ((tb_global)f->flag) {
    case G_ODICT:
        if (a->n != 0) return perr(p, pos, "collections.OrderedDict called with arguments; torch.save writes OrderedDict()");
        MK_TRY(new_value(p, pos, TV_DICT, &v));
        p->v[v].flag = 1;
        break;
    case G_SIZE:
        if (a->n != 1 || p->v[a->u.items[0]].type != TV_TUPLE)
            return perr(p, pos, "torch.Size called with something other than one tuple");
        v = a->u.items[0];
        break;
    case G_REBUILD:
    case G_REBUILD_V2:
    case G_REBUILD_V3: MK_TRY(rebuild_tensor(p, pos, (tb_global)f->flag, args, &v)); break;
    case G_PARAM:
    case G_PARAM_STATE:
        /* nn.Parameter(data): the same values */
        if (a->n != (f->flag == G_PARAM ? 3u : 4u) || p->v[a->u.items[0]].type != TV_TENSOR)
            return perr(p, pos, "%s called with %u arguments, the first %s; expected a tensor and %d more", name, a->n,
                        a->n ? tb_value_type_name(p, a->u.items[0]) : "missing", f->flag == G_PARAM ? 2 : 3);
        v = a->u.items[0];
        break;
    default: return perr(p, pos, "REDUCE calls %s, which is not a function mergekit-c allows: %s", name, REFUSAL);
    }
    *fn = v;
    return MK_OK;
}

/* ---- the machine ------------------------------------------------------------------------- */

static uint64_t rd_le(const uint8_t *b, int n)
{
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--) x = x << 8 | b[i];
    return x;
}

static mk_status new_string(tb_pickle *p, size_t pos, tb_vtype type, size_t off, uint64_t len)
{
    if (len > TB_MAX_STRING)
        return perr(p, pos, "a string of %llu bytes (over the %u-byte limit)", (unsigned long long)len, TB_MAX_STRING);
    uint32_t v;
    MK_TRY(new_value(p, pos, type, &v));
    p->v[v].u.s.off = (uint32_t)off;
    p->v[v].u.s.len = (uint32_t)len;
    return push(p, pos, v);
}

static mk_status memo_put(tb_pickle *p, size_t pos, uint64_t idx)
{
    uint32_t *t;
    MK_TRY(top(p, pos, 'q', &t));
    if (idx >= TB_MAX_MEMO) return perr(p, pos, "memo index %llu over the limit of %u", (unsigned long long)idx, TB_MAX_MEMO);
    size_t old = p->cap_memo;
    if (!grow((void **)&p->memo, &p->cap_memo, (size_t)idx + 1, sizeof *p->memo)) return MK_ERR_NOMEM;
    if (p->cap_memo > old) memset(p->memo + old, 0, (p->cap_memo - old) * sizeof *p->memo);
    if (!p->memo[idx]) p->memo_count++;
    p->memo[idx] = *t + 1;
    return MK_OK;
}

static mk_status memo_get(tb_pickle *p, size_t pos, uint64_t idx)
{
    if (idx >= p->cap_memo || !p->memo[idx]) return perr(p, pos, "memo index %llu was never stored", (unsigned long long)idx);
    return push(p, pos, p->memo[idx] - 1);
}

/* The items above the innermost MARK, then drop the mark: [*first, *first + *n) of the stack. */
static mk_status pop_mark(tb_pickle *p, size_t pos, uint8_t op, size_t *first, size_t *n)
{
    if (!p->nmarks) return perr(p, pos, "%s without a MARK", OPNAMES[op]);
    *first = p->marks[--p->nmarks];
    *n = p->nstack - *first;
    p->nstack = *first;
    return MK_OK;
}

static mk_status make_tuple(tb_pickle *p, size_t pos, const uint32_t *items, size_t n)
{
    uint32_t v;
    MK_TRY(new_value(p, pos, TV_TUPLE, &v));
    for (size_t i = 0; i < n; i++) MK_TRY(add_item(p, pos, v, items[i]));
    return push(p, pos, v);
}

mk_status tb_pickle_run(tb_pickle *p, size_t start, size_t *end, uint32_t *result)
{
    /* a fresh stack and memo for each pickle; values, storages and tensors accumulate */
    p->nstack = p->nmarks = 0;
    p->memo_count = 0;
    if (p->memo) memset(p->memo, 0, p->cap_memo * sizeof *p->memo);
    const uint8_t *b = p->buf;
    size_t i = start, n = p->len;
    if (n > UINT32_MAX) return perr(p, start, "pickle of %zu bytes is too large", n);
#define NEED(k)                                                                                                       \
    do {                                                                                                             \
        if ((uint64_t)(k) > n - i) {                                                                                 \
            p->hit_end = true;                                                                                       \
            return perr(p, pos, "the pickle ends inside %s (file truncated?)", OPNAMES[op]);                        \
        }                                                                                                            \
    } while (0)
    while (i < n) {
        size_t pos = i;
        uint8_t op = b[i++];
        uint32_t v = 0, x = 0, *t = NULL;
        switch (op) {
        case 0x80: /* PROTO */
            NEED(1);
            if (b[i] < 2 || b[i] > 5) return perr(p, pos, "pickle protocol %u (2 to 5 expected)", b[i]);
            i++;
            break;
        case 0x95: /* FRAME: a length hint */
            NEED(8);
            if (rd_le(b + i, 8) > n - i - 8)
                return perr(p, pos, "FRAME of %llu bytes runs past the end", (unsigned long long)rd_le(b + i, 8));
            i += 8;
            break;
        case '.': /* STOP */
            MK_TRY(pop(p, pos, op, &v));
            *end = i;
            *result = v;
            return MK_OK;
        case '(': /* MARK */
            if (p->nmarks >= TB_MAX_MARKS) return perr(p, pos, "MARKs nested deeper than %d (a pickle bomb?)", TB_MAX_MARKS);
            if (!grow((void **)&p->marks, &p->cap_marks, p->nmarks + 1, sizeof *p->marks)) return MK_ERR_NOMEM;
            p->marks[p->nmarks++] = p->nstack;
            break;
        case 'N': MK_TRY(new_value(p, pos, TV_NONE, &v)); MK_TRY(push(p, pos, v)); break;
        case 0x88:
        case 0x89:
            MK_TRY(new_value(p, pos, TV_BOOL, &v));
            p->v[v].u.i = op == 0x88;
            MK_TRY(push(p, pos, v));
            break;
        case 'J':
        case 'K':
        case 'M': {
            int k = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            NEED(k);
            uint64_t raw = rd_le(b + i, k);
            i += (size_t)k;
            MK_TRY(new_value(p, pos, TV_INT, &v));
            p->v[v].u.i = op == 'J' ? (int64_t)(int32_t)(uint32_t)raw : (int64_t)raw;
            MK_TRY(push(p, pos, v));
            break;
        }
        case 0x8a: { /* LONG1: little-endian two's complement */
            NEED(1);
            size_t k = b[i++];
            NEED(k);
            if (k <= 8) {
                uint64_t raw = k ? rd_le(b + i, (int)k) : 0;
                if (k && k < 8 && (b[i + k - 1] & 0x80)) raw |= ~0ull << (8 * k);
                MK_TRY(new_value(p, pos, TV_INT, &v));
                p->v[v].u.i = (int64_t)raw;
            } else {
                MK_TRY(new_value(p, pos, TV_BIGINT, &v));
                p->v[v].u.s.off = (uint32_t)i;
                p->v[v].u.s.len = (uint32_t)k;
            }
            i += k;
            MK_TRY(push(p, pos, v));
            break;
        }
        case 'G': { /* BINFLOAT: big-endian IEEE double */
            NEED(8);
            uint64_t raw = 0;
            for (int k = 0; k < 8; k++) raw = raw << 8 | b[i + (size_t)k];
            i += 8;
            MK_TRY(new_value(p, pos, TV_FLOAT, &v));
            memcpy(&p->v[v].u.f, &raw, 8);
            MK_TRY(push(p, pos, v));
            break;
        }
        case 'X':
        case 0x8c:
        case 0x8d:
        case 'U':
        case 'B':
        case 'C':
        case 0x8e: {
            int k = (op == 'X' || op == 'B') ? 4 : (op == 0x8d || op == 0x8e) ? 8 : 1;
            NEED(k);
            uint64_t len = rd_le(b + i, k);
            i += (size_t)k;
            NEED(len);
            /* SHORT_BINSTRING: a Python 2 str, which torch.load decodes as UTF-8 */
            MK_TRY(new_string(p, pos, (op == 'B' || op == 'C' || op == 0x8e) ? TV_BYTES : TV_STR, i, len));
            i += (size_t)len;
            break;
        }
        case ')': MK_TRY(make_tuple(p, pos, NULL, 0)); break;
        case 0x85:
        case 0x86:
        case 0x87: {
            size_t k = (size_t)(op - 0x84);
            if (p->nstack - frame_base(p) < k) return perr(p, pos, "%s on a stack of fewer than %zu items", OPNAMES[op], k);
            uint32_t items[3];
            memcpy(items, p->stack + p->nstack - k, k * sizeof *items);
            p->nstack -= k;
            MK_TRY(make_tuple(p, pos, items, k));
            break;
        }
        case 't': {
            size_t first = 0, k = 0;
            MK_TRY(pop_mark(p, pos, op, &first, &k));
            /* the items stay in the stack array above nstack while the tuple takes them */
            MK_TRY(new_value(p, pos, TV_TUPLE, &v));
            for (size_t j = 0; j < k; j++) MK_TRY(add_item(p, pos, v, p->stack[first + j]));
            MK_TRY(push(p, pos, v));
            break;
        }
        case ']': MK_TRY(new_value(p, pos, TV_LIST, &v)); MK_TRY(push(p, pos, v)); break;
        case '}': MK_TRY(new_value(p, pos, TV_DICT, &v)); MK_TRY(push(p, pos, v)); break;
        case 0x8f: MK_TRY(new_value(p, pos, TV_SET, &v)); MK_TRY(push(p, pos, v)); break;
        case 'a':
            MK_TRY(pop(p, pos, op, &x));
            MK_TRY(top(p, pos, op, &t));
            if (p->v[*t].type != TV_LIST) return perr(p, pos, "APPEND on %s (only lists)", tb_value_type_name(p, *t));
            MK_TRY(add_item(p, pos, *t, x));
            break;
        case 's':
            MK_TRY(pop(p, pos, op, &v));
            MK_TRY(pop(p, pos, op, &x));
            MK_TRY(top(p, pos, op, &t));
            if (p->v[*t].type != TV_DICT) return perr(p, pos, "SETITEM on %s (only dicts)", tb_value_type_name(p, *t));
            MK_TRY(add_item(p, pos, *t, x));
            MK_TRY(add_item(p, pos, *t, v));
            break;
        case 'e': /* APPENDS */
        case 'u': { /* SETITEMS */
            size_t first = 0, k = 0;
            MK_TRY(pop_mark(p, pos, op, &first, &k));
            MK_TRY(top(p, pos, op, &t));
            if (p->v[*t].type != (op == 'e' ? TV_LIST : TV_DICT))
                return perr(p, pos, "%s on %s (only %s)", OPNAMES[op], tb_value_type_name(p, *t), op == 'e' ? "lists" : "dicts");
            if (op == 'u' && k % 2) return perr(p, pos, "SETITEMS with an odd number (%zu) of keys and values", k);
            for (size_t j = 0; j < k; j++) MK_TRY(add_item(p, pos, *t, p->stack[first + j]));
            break;
        }
        case 'q':
        case 'r':
        case 0x94: {
            uint64_t idx = p->memo_count;
            if (op != 0x94) {
                int k = op == 'q' ? 1 : 4;
                NEED(k);
                idx = rd_le(b + i, k);
                i += (size_t)k;
            }
            MK_TRY(memo_put(p, pos, idx));
            break;
        }
        case 'h':
        case 'j': {
            int k = op == 'h' ? 1 : 4;
            NEED(k);
            uint64_t idx = rd_le(b + i, k);
            i += (size_t)k;
            MK_TRY(memo_get(p, pos, idx));
            break;
        }
        case 'c': { /* GLOBAL "module\nname\n" */
            const uint8_t *parts[2];
            size_t lens[2];
            for (int k = 0; k < 2; k++) {
                const uint8_t *nl = memchr(b + i, '\n', n - i < TB_MAX_GLOBAL + 1 ? n - i : TB_MAX_GLOBAL + 1);
                if (!nl && n - i <= TB_MAX_GLOBAL) {
                    p->hit_end = true;
                    return perr(p, pos, "the pickle ends inside GLOBAL (file truncated?)");
                }
                if (!nl) return perr(p, pos, "GLOBAL operand is not a line of at most %d bytes", TB_MAX_GLOBAL);
                parts[k] = b + i;
                lens[k] = (size_t)(nl - (b + i));
                i += lens[k] + 1;
            }
            MK_TRY(global(p, pos, parts[0], lens[0], parts[1], lens[1], "GLOBAL"));
            break;
        }
        case 0x93: { /* STACK_GLOBAL: module and name from the stack */
            uint32_t mv, nv;
            MK_TRY(pop(p, pos, op, &nv));
            MK_TRY(pop(p, pos, op, &mv));
            const tb_value *m = &p->v[mv], *nm = &p->v[nv];
            if (m->type != TV_STR || nm->type != TV_STR)
                return perr(p, pos, "STACK_GLOBAL of %s and %s, expected two strings", tb_value_type_name(p, mv),
                            tb_value_type_name(p, nv));
            MK_TRY(global(p, pos, b + m->u.s.off, m->u.s.len, b + nm->u.s.off, nm->u.s.len, "STACK_GLOBAL"));
            break;
        }
        case 'R': MK_TRY(reduce(p, pos)); break;
        case 'b': { /* BUILD: only an OrderedDict's attributes (a state dict's _metadata) */
            MK_TRY(pop(p, pos, op, &x));
            MK_TRY(top(p, pos, op, &t));
            const tb_value *inst = &p->v[*t];
            if (!(inst->type == TV_DICT && inst->flag))
                return perr(p, pos, "BUILD on %s (only an OrderedDict's attributes): %s", tb_value_type_name(p, *t), REFUSAL);
            if (p->v[x].type != TV_DICT)
                return perr(p, pos, "BUILD of an OrderedDict with %s, expected a dict of attributes", tb_value_type_name(p, x));
            break;
        }
        case 'Q': /* BINPERSID */
            MK_TRY(pop(p, pos, op, &x));
            MK_TRY(storage_from_pid(p, pos, x, &v));
            MK_TRY(new_value(p, pos, TV_STORAGE, &x));
            p->v[x].u.aux = v;
            MK_TRY(push(p, pos, x));
            break;
        case 0x81: { /* NEWOBJ: cls.__new__(cls, *args) runs code; refused, naming the class */
            uint32_t args, cls;
            MK_TRY(pop(p, pos, op, &args));
            MK_TRY(pop(p, pos, op, &cls));
            char name[160] = "a non-global";
            if (p->v[cls].type == TV_GLOBAL) global_name(&p->v[cls], name, sizeof name);
            return perr(p, pos, "refused pickle opcode NEWOBJ (0x81) of %s: %s", name, REFUSAL);
        }
        default:
            if (OPNAMES[op])
                return perr(p, pos, "refused pickle opcode %s (0x%02x): %s", OPNAMES[op], op, REFUSAL);
            return perr(p, pos, "0x%02x is not a pickle opcode", op);
        }
    }
    p->hit_end = true;
    return perr(p, n, "the pickle ends without STOP (file truncated?)");
#undef NEED
}

long tb_pickle_find_storage(const tb_pickle *p, const uint8_t *key, size_t len)
{
    if (!p->cap_slots) return -1;
    size_t h = (size_t)key_hash(key, len) & (p->cap_slots - 1);
    while (p->st_slots[h]) {
        uint32_t i = p->st_slots[h] - 1;
        if (p->st[i].key_len == len && memcmp(p->buf + p->st[i].key_off, key, len) == 0) return (long)i;
        h = (h + 1) & (p->cap_slots - 1);
    }
    return -1;
}

void tb_pickle_free(tb_pickle *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nv; i++)
        if (p->v[i].type == TV_TUPLE || p->v[i].type == TV_LIST || p->v[i].type == TV_DICT || p->v[i].type == TV_SET)
            free(p->v[i].u.items);
    free(p->v);
    free(p->memo);
    free(p->stack);
    free(p->marks);
    free(p->st);
    free(p->st_slots);
    free(p->tn);
    memset(p, 0, sizeof *p);
}
