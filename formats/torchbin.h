/* torchbin.h - PyTorch checkpoints (`pytorch_model.bin`, `.pt`, `.pth`) read WITHOUT
 * unpickling, as a tensor source: a .bin file, a folder with pytorch_model.bin, or a
 * folder with a sharded pytorch_model.bin.index.json.
 *
 * Two containers, both written by torch.save:
 *  - the zip archive (the default since torch 1.6): PREFIX/data.pkl (the object pickle),
 *    PREFIX/data/KEY (one stored entry per storage, raw little-endian bytes),
 *    PREFIX/byteorder, PREFIX/version; entries are stored, never deflated;
 *  - the legacy stream (_use_new_zipfile_serialization=False): pickles of the magic
 *    number, the protocol version 1001 and sys_info, then the object pickle, then the
 *    list of storage keys, then each storage as an 8-byte element count and its bytes.
 *
 * The object pickle runs on a restricted machine (torchbin_pickle.c) that knows only
 * what a state dict needs (the opcodes PyTorch's weights_only unpickler accepts, plus
 * the data-only opcodes of protocols 3-4) and a short list of globals: collections.
 * OrderedDict, the torch._utils tensor rebuild functions, torch.*Storage types,
 * torch.storage.UntypedStorage, torch dtypes, torch.Size. It calls nothing: a global
 * is a name compared with that list. Any other global or opcode is refused with one
 * line naming it and the file, before any tensor data is read. The result must be a
 * dict of name -> tensor (a state dict); anything else is refused.
 *
 * Tensors: f64, f32, f16, bf16, f8 (e4m3fn, e5m2), integer and bool dtypes; shape,
 * stride and storage offset are checked against the storage's size, and the storage's
 * size against its bytes in the file. Views (storage offsets, transposes, slices) read
 * as their logical row-major values; views whose elements overlap (expand, as_strided)
 * are refused. Storages shared by several tensors (tied weights) are read by each.
 * Must not: execute, import or call anything named in a file.
 */
#ifndef MK_TORCHBIN_H
#define MK_TORCHBIN_H

#include "../core/mk_tensor.h"

/* Bounds on what a checkpoint may ask of the reader (hostile input). */
#define MK_TB_MAX_PICKLE (64ull << 20)  /* bytes of the object pickle */
#define MK_TB_MAX_ENTRIES (1u << 20)    /* zip entries */
#define MK_TB_MAX_CDIR (64ull << 20)    /* bytes of the zip central directory */

/* Random access to a checkpoint's bytes: a file (pread) or, for the fuzz target, memory.
 * read must return exactly len bytes at off or an error. */
typedef struct mk_tb_input {
    mk_status (*read)(void *ctx, uint64_t off, void *dst, size_t len);
    void *ctx;
    uint64_t size;
} mk_tb_input;

/* Where a tensor's elements lie. Element (i0, i1, ...) of the tensor is at byte
 * base + (offset + sum(ik * stride[k])) * dtype size of the file. */
typedef struct mk_tb_view {
    uint64_t base;          /* absolute file offset of the storage's first byte */
    uint64_t storage_bytes; /* the storage's size */
    uint64_t offset;        /* storage offset, in elements of the tensor's dtype */
    int64_t stride[MK_MAX_DIMS];
    bool contiguous;        /* row-major dense: t->nbytes bytes at base + offset x size */
} mk_tb_view;

/* One parsed checkpoint file. */
typedef struct mk_tb_file {
    size_t n;
    mk_tensor_info *t; /* in the state dict's order; file = 0, offset = start of the view */
    mk_tb_view *v;     /* [n] */
    bool legacy;       /* the pre-1.6 stream rather than the zip archive */
} mk_tb_file;

/* Parse and validate a whole checkpoint (no tensor data is read). `what` names it in
 * messages. The fuzz entry point. */
mk_status mk_tb_parse(const mk_tb_input *in, const char *what, mk_tb_file *f);
void mk_tb_file_free(mk_tb_file *f);
/* All of tensor t's values, in row-major order, into dst (t->nbytes bytes). */
mk_status mk_tb_gather(const mk_tb_input *in, const mk_tensor_info *t, const mk_tb_view *v, void *dst);

/* True if `path` is a folder holding pytorch_model.bin or pytorch_model.bin.index.json
 * (and no safetensors weights, which win), or a file that starts like a torch checkpoint
 * (a zip archive or a pickle) or is named *.bin, *.pt, *.pth. */
bool mk_torchbin_probe(const char *path);
/* Open a checkpoint file or a model folder. */
mk_status mk_torchbin_open(const char *path, mk_source **out);

#endif
