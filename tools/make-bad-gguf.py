#!/usr/bin/env python3
"""Forged GGUF files for tests/bad/ (called by tools/make-bad-corpus.sh).

Usage: make-bad-gguf.py OUTDIR

Writes NAME.gguf for each case below: small files built field by field (ggml/docs/gguf.md),
each lying in one way that llama.cpp's own reader has been attacked through (count, length
and offset overflows, misaligned or overlapping data, forged types and dimensions). Plain
Python: no third-party package, the same bytes every run.
"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def kv(key, t, payload):
    return s(key) + struct.pack("<I", t) + payload


def kv_u32(key, v):
    return kv(key, U32, struct.pack("<I", v))


def tensor(name, dims, ggml_type, offset):
    return s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ggml_type, offset)


def gguf(kvs, tensors, data=b"", version=3, n_tensors=None, n_kv=None, align=32):
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    pad = (-len(body)) % align
    return body + b"\0" * pad + data


ARCH = kv("general.architecture", STR, s("mk-test"))
F32_4x4 = [tensor("a", [4, 4], 0, 0)]
DATA64 = b"\0" * 64


def cases():
    yield "version", gguf([ARCH], F32_4x4, DATA64, version=1)
    yield "big-endian", b"GGUF" + struct.pack(">IQQ", 3, 1, 1) + b"\0" * 64
    yield "tensor-count", gguf([ARCH], F32_4x4, DATA64, n_tensors=1 << 40)
    yield "kv-count", gguf([ARCH], F32_4x4, DATA64, n_kv=(1 << 63) + 1)
    yield "key-length", gguf([struct.pack("<Q", 1 << 62) + b"general.name"], F32_4x4, DATA64)
    yield "string-length", gguf([kv("general.name", STR, struct.pack("<Q", 1 << 20) + b"abc")], [], b"")
    yield "array-count", gguf([kv("x.list", ARR, struct.pack("<IQ", U32, 1 << 61))], F32_4x4, DATA64)
    yield "string-array-count", gguf([kv("tokenizer.ggml.tokens", ARR, struct.pack("<IQ", STR, 1 << 40) + s("a"))], F32_4x4, DATA64)
    yield "nested-array", gguf([kv("x.list", ARR, struct.pack("<IQ", ARR, 1) + struct.pack("<IQ", U8, 1) + b"\1")], F32_4x4, DATA64)
    yield "value-type", gguf([kv("x.y", 13, struct.pack("<I", 0))], F32_4x4, DATA64)
    yield "bool-value", gguf([kv("x.flag", BOOL, b"\x02")], F32_4x4, DATA64)
    yield "duplicate-key", gguf([ARCH, kv("general.architecture", STR, s("llama"))], F32_4x4, DATA64)
    yield "alignment", gguf([ARCH, kv_u32("general.alignment", 48)], F32_4x4, DATA64, align=48)
    yield "alignment-type", gguf([ARCH, kv("general.alignment", U64, struct.pack("<Q", 32))], F32_4x4, DATA64)
    yield "tensor-type", gguf([ARCH], [tensor("a", [4, 4], 4, 0)], DATA64)
    yield "tensor-type-huge", gguf([ARCH], [tensor("a", [4, 4], 0xFFFFFFFF, 0)], DATA64)
    yield "unsupported-type", gguf([ARCH], [tensor("a", [256], 16, 0)], b"\0" * 96)
    yield "too-many-dims", gguf([ARCH], [tensor("a", [1, 1, 1, 1, 4], 0, 0)], DATA64)
    yield "zero-dim", gguf([ARCH], [tensor("a", [4, 0], 0, 0)], DATA64)
    yield "dim-overflow", gguf([ARCH], [tensor("a", [1 << 32, 1 << 32], 0, 0)], DATA64)
    yield "byte-size-overflow", gguf([ARCH], [tensor("a", [1 << 31, 1 << 31], 0, 0)], DATA64)
    yield "partial-block", gguf([ARCH], [tensor("a", [33, 2], 2, 0)], DATA64)
    yield "misaligned-offset", gguf([ARCH], [tensor("a", [4, 4], 0, 8)], DATA64 + b"\0" * 8)
    yield "offset-past-end", gguf([ARCH], [tensor("a", [4, 4], 0, 1 << 40)], DATA64)
    yield "offset-wraps", gguf([ARCH], [tensor("a", [4, 4], 0, (1 << 64) - 32)], DATA64)
    yield "data-short", gguf([ARCH], [tensor("a", [4, 4], 0, 0)], b"\0" * 60)
    yield "overlap", gguf([ARCH], [tensor("a", [4, 4], 0, 0), tensor("b", [4, 2], 0, 32)], DATA64)
    yield "duplicate-tensor", gguf([ARCH], [tensor("a", [4], 0, 0), tensor("a", [4], 0, 32)], DATA64)
    yield "name-length", gguf([ARCH], [tensor("w" * 100, [4, 4], 0, 0)], DATA64)
    yield "truncated", gguf([ARCH], F32_4x4, DATA64)[:40]
    # a Llama attention weight whose rows cannot be the rotary pairs of its heads
    llama = [kv("general.architecture", STR, s("llama")), kv_u32("llama.attention.head_count", 3)]
    yield "qk-heads", gguf(llama, [tensor("blk.0.attn_q.weight", [4, 4], 0, 0)], DATA64)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in cases():
        with open(os.path.join(out, name + ".gguf"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
