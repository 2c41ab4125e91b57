#!/usr/bin/env python3
"""Helpers of tools/bench-pipeline.sh (the tools venv: llama-cpp-python, gguf, safetensors).

    bench-pipeline.py quantize SRC.gguf DST.gguf TYPE THREADS
        llama.cpp's llama-quantize (llama-cpp-python's llama_model_quantize, its C code) with
        its own per-tensor choices for the mix TYPE (q4_k_m, ...), as `llama-quantize SRC DST TYPE`.
    bench-pipeline.py compare-folders OURS/ THEIRS/
        tensors of two safetensors folders by name: how many have the same dtype, shape and bytes.
    bench-pipeline.py compare-gguf OURS.gguf THEIRS.gguf
        tensors of two GGUF files by name: how many have the same type and bytes.
Each compare prints one line "N of M tensors byte-identical; ..." (and the differing names, up
to five) and exits 0; names only one side has are counted as differing.
"""
import ctypes
import glob
import json
import os
import struct
import sys

MIX = {"q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17,
       "q6_k": 18, "iq4_nl": 25}


def quantize(src, dst, t, threads):
    import llama_cpp
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = MIX[t]
    p.nthread = int(threads)
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)) != 0:
        raise SystemExit(f"bench-pipeline: llama_model_quantize {src} -> {dst} failed")


def safetensors_tensors(folder):
    """name -> (dtype, shape, bytes) over every shard of FOLDER."""
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            head = json.loads(f.read(n))
            base = 8 + n
            for name, v in head.items():
                if name == "__metadata__":
                    continue
                a, b = v["data_offsets"]
                f.seek(base + a)
                out[name] = (v["dtype"], tuple(v["shape"]), f.read(b - a))
    return out


def gguf_tensors(path):
    import gguf
    import numpy as np
    r = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape), np.asarray(t.data).view(np.uint8).tobytes())
            for t in r.tensors}


def report(what, mine, theirs):
    names = sorted(set(mine) | set(theirs))
    same = [n for n in names if n in mine and n in theirs and mine[n] == theirs[n]]
    typed = [n for n in names if n in mine and n in theirs and mine[n][:2] != theirs[n][:2]]
    only = [n for n in names if (n in mine) != (n in theirs)]
    diff = [n for n in names if n not in same and n not in typed and n not in only]
    line = f"{what}: {len(same)} of {len(names)} tensors byte-identical; {len(diff)} differ in bytes"
    line += f", {len(typed)} in another type or shape, {len(only)} on one side only"
    if diff:
        line += " (" + ", ".join(diff[:5]) + (", ..." if len(diff) > 5 else "") + ")"
    if typed:
        line += "; other type: " + ", ".join(f"{n} {mine[n][0]}/{theirs[n][0]}" for n in typed[:5])
    print(line)


def main(argv):
    if len(argv) == 5 and argv[0] == "quantize":
        quantize(*argv[1:])
    elif len(argv) == 3 and argv[0] == "compare-folders":
        report("merged folders", safetensors_tensors(argv[1]), safetensors_tensors(argv[2]))
    elif len(argv) == 3 and argv[0] == "compare-gguf":
        report("GGUF files", gguf_tensors(argv[1]), gguf_tensors(argv[2]))
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
