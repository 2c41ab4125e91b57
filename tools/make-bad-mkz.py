#!/usr/bin/env python3
"""Forged .mkz containers for tests/bad/ (called by tools/make-bad-corpus.sh).

Usage: make-bad-mkz.py SMALL.mkz LARGE.mkz OUTDIR

Reads valid containers (docs/mkz-format.md) and writes variants that lie, each with the
checksums recomputed the way a forger would, so that the reader's own limits must catch them:
  frame-size.mkz      a zstd frame whose Frame_Content_Size claims about 4 GiB (from LARGE, which
                      needs a tensor of at least 65792 elements for a 4-byte size field)
  raw-size.mkz        a tensor stream claiming 2^60 uncompressed bytes
  block-count.mkz     a stream claiming more blocks than it owns
  index-counts.mkz    index record counts that do not add up to the index size
  index-size.mkz      a footer claiming a 1 TiB index (nothing resealed: the footer must not be trusted)
  file-name.mkz       a stored file named ../onfig.json
  plane-bound.mkz     a zstd plane larger than ZSTD_compressBound of its raw size
Needs the xxhash package (in the tools venv).
"""
import os
import struct
import sys

import xxhash

INDEX_HEAD, STREAM_REC, BLOCK_REC = 64, 128, 64


def u64(b, o):
    return struct.unpack_from("<Q", b, o)[0]


def u32(b, o):
    return struct.unpack_from("<I", b, o)[0]


def reseal_index(img):
    n = len(img)
    off, size = u64(img, n - 48), u64(img, n - 40)
    h = xxhash.xxh3_128_intdigest(bytes(img[off:off + size]))
    struct.pack_into("<QQ", img, n - 32, h & (2**64 - 1), h >> 64)


def layout(img):
    n = len(img)
    io = u64(img, n - 48)
    n_streams, n_blocks = u32(img, io + 8), u32(img, io + 12)
    streams = io + INDEX_HEAD
    blocks = streams + n_streams * STREAM_REC
    return io, n_streams, n_blocks, streams, blocks


def first_tensor_stream(img):
    io, n_streams, _, streams, _ = layout(img)
    for k in range(n_streams):
        rec = streams + k * STREAM_REC
        if img[rec + 12] != 0 and u32(img, rec + 96) > 0:
            return rec
    sys.exit("no tensor stream with blocks")


def fcs_field(img, fr):
    """(offset, width) of a zstd frame's Frame_Content_Size field (RFC 8878 3.1.1.1)."""
    assert img[fr:fr + 4] == b"\x28\xb5\x2f\xfd", "not a zstd frame"
    fhd = img[fr + 4]
    fcs_flag, single, did = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    return fr + 5 + (0 if single else 1) + [0, 1, 2, 4][did], [1 if single else 0, 2, 4, 8][fcs_flag]


def zstd_plane(img, min_fcs=0):
    """(block record offset, plane index, plane file offset) of the first zstd plane whose
    frame has a content-size field of at least min_fcs bytes."""
    _, _, n_blocks, _, blocks = layout(img)
    for g in range(n_blocks):
        rec = blocks + g * BLOCK_REC
        off = u64(img, rec)
        for p in range(8):
            if img[rec + 12 + p] == 1:
                start = off + sum(u32(img, rec + 24 + 4 * q) for q in range(p))
                if fcs_field(img, start)[1] >= min_fcs:
                    return rec, p, start
    sys.exit("no zstd plane large enough; pack a model with a tensor of at least 65792 elements")


def reseal_block(img, rec):
    off, csize = u64(img, rec), u32(img, rec + 8)
    struct.pack_into("<Q", img, rec + 56, xxhash.xxh3_64_intdigest(bytes(img[off:off + csize])))


def main():
    small, large, out = sys.argv[1], sys.argv[2], sys.argv[3]
    base = bytearray(open(small, "rb").read())
    os.makedirs(out, exist_ok=True)

    def save(name, img):
        with open(os.path.join(out, name), "wb") as f:
            f.write(img)

    # a frame that lies about its decompressed size
    img = bytearray(open(large, "rb").read())
    rec, p, fr = zstd_plane(img, 4)
    at, _ = fcs_field(img, fr)
    struct.pack_into("<I", img, at, 0xFFFFFFF0)
    reseal_block(img, rec)
    reseal_index(img)
    save("frame-size.mkz", img)

    img = bytearray(base)
    struct.pack_into("<Q", img, first_tensor_stream(img) + 80, 1 << 60)
    reseal_index(img)
    save("raw-size.mkz", img)

    img = bytearray(base)
    rec = first_tensor_stream(img)
    struct.pack_into("<I", img, rec + 96, u32(img, rec + 96) + 5)
    reseal_index(img)
    save("block-count.mkz", img)

    img = bytearray(base)
    io = layout(img)[0]
    struct.pack_into("<I", img, io + 12, 0x7FFFFFFF)
    reseal_index(img)
    save("index-counts.mkz", img)

    img = bytearray(base)
    struct.pack_into("<Q", img, len(img) - 40, 1 << 40)
    save("index-size.mkz", img)

    img = bytearray(base)
    io = layout(img)[0]
    at = img.find(b"config.json", io)
    assert at > 0, "no config.json in the index"
    img[at:at + 11] = b"../onfig.js"
    reseal_index(img)
    save("file-name.mkz", img)

    img = bytearray(base)
    rec, p, _ = zstd_plane(img)
    struct.pack_into("<I", img, rec + 24 + 4 * p, 0x7FFFFFFF)
    reseal_index(img)
    save("plane-bound.mkz", img)


if __name__ == "__main__":
    main()
