/* gguf_write.h - a GGUF file (version 3, little-endian) written in one streaming pass.
 *
 * Order of use: key/values and tensor declarations first (each tensor's name, shape and
 * ggml type: its offset follows from the ones before it, aligned to general.alignment, 32),
 * then mk_gguf_w_begin writes the whole header into OUT.tmp (an atomic output, core/mk_io.h),
 * then every tensor's bytes in declaration order through mk_gguf_w_data (or in place, in any
 * order, through mk_gguf_w_at) (padding between
 * tensors is written for the caller), then mk_gguf_w_commit (checks every declared byte was
 * written, fsyncs, renames OUT.tmp to OUT). mk_gguf_w_free removes OUT.tmp unless committed:
 * a failed run never leaves a partial OUT.
 * Must not: quantize (quant/ggml.h does) or know tensor names.
 */
#ifndef MK_GGUF_WRITE_H
#define MK_GGUF_WRITE_H

#include "../core/mk_io.h"
#include "gguf.h"

#define MK_GGUF_ALIGN 32u

typedef struct mk_gguf_w {
    mk_buf kv, ti;          /* encoded key/values and tensor infos */
    uint64_t n_kv, n_tensors;
    uint64_t *nbytes;       /* per declared tensor */
    uint64_t *offs;         /* per declared tensor: its offset in the data section */
    uint64_t data0;         /* file offset of the data section */
    uint64_t placed;        /* mk_gguf_w_at: bytes written (atomic) */
    uint64_t data_size;     /* the data section, padding included */
    uint64_t next;          /* tensor being written, bytes of it written */
    uint64_t done;
    uint64_t pos;           /* file offset of the next byte */
    mk_outdir od;
    char *shared;           /* mk_gguf_w_begin_shared: the file's path */
    int fd;
    bool begun, committed, random;
} mk_gguf_w;

void mk_gguf_w_init(mk_gguf_w *w);
void mk_gguf_w_str(mk_gguf_w *w, const char *key, const char *v);
void mk_gguf_w_u32(mk_gguf_w *w, const char *key, uint32_t v);
void mk_gguf_w_i32(mk_gguf_w *w, const char *key, int32_t v);
void mk_gguf_w_f32(mk_gguf_w *w, const char *key, float v);
void mk_gguf_w_bool(mk_gguf_w *w, const char *key, bool v);
/* Arrays: strings (lens[i] bytes each, or strlen when lens is NULL), i32, f32. */
void mk_gguf_w_arr_str(mk_gguf_w *w, const char *key, const char *const *s, const size_t *lens, uint64_t n);
void mk_gguf_w_arr_i32(mk_gguf_w *w, const char *key, const int32_t *v, uint64_t n);
void mk_gguf_w_arr_f32(mk_gguf_w *w, const char *key, const float *v, uint64_t n);
/* A tensor: ne[0] innermost (a whole number of the type's blocks). */
mk_status mk_gguf_w_tensor(mk_gguf_w *w, const char *name, uint32_t ndim, const uint64_t ne[4], uint32_t type);
/* The header as mk_gguf_w_begin writes it (padded to the alignment), appended to h. */
void mk_gguf_w_header(const mk_gguf_w *w, mk_buf *h);
/* Open OUT.tmp and write the header (OUT must not exist unless force). */
mk_status mk_gguf_w_begin(mk_gguf_w *w, const char *out, bool force);
/* The next bytes of tensor data, in declaration order (any split). */
mk_status mk_gguf_w_data(mk_gguf_w *w, const void *p, size_t len);
/* Or, for tensors computed in any order by several threads: mk_gguf_w_begin_at writes the
 * header and sizes OUT.tmp to the whole file, then mk_gguf_w_at puts bytes [off, off+len) of
 * tensor i in place (thread-safe for disjoint ranges); commit checks every byte was put. */
mk_status mk_gguf_w_begin_at(mk_gguf_w *w, const char *out, bool force);
mk_status mk_gguf_w_at(mk_gguf_w *w, uint64_t i, uint64_t off, const void *p, size_t len);
mk_status mk_gguf_w_commit(mk_gguf_w *w);
/* One part of an output split between processes (--part; formats/parts.h): the file at `path`
 * in the parts' shared OUT.tmp, created if absent and never truncated, sized to the whole file
 * and its header written (every part writes the same bytes); then mk_gguf_w_at for this part's
 * tensors and mk_gguf_w_sync. Nothing is renamed or removed here: finalize renames the file. */
mk_status mk_gguf_w_begin_shared(mk_gguf_w *w, const char *path);
/* The shared file's bytes durable (fsync) and closed. */
mk_status mk_gguf_w_sync(mk_gguf_w *w);
/* tokenizer.ggml.* and tokenizer.chat_template from src's tokenizer files (gguf_write_tok.c);
 * *vocab = false when it has no vocabulary llama.cpp can take (then "no_vocab" is written,
 * with a warning; the caller writes {arch}.vocab_size). */
mk_status mk_gguf_w_tokenizer(mk_gguf_w *w, mk_source *src, long vocab_size, bool *vocab);
void mk_gguf_w_free(mk_gguf_w *w);

#endif
