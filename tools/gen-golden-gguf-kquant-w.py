#!/usr/bin/env python3
"""Goldens for mergekit-c's k-quants with an importance matrix (quant/ggml_kquant.c,
mk_ggml_kquant_encode_w), made by llama.cpp itself: libggml-base's quantize_q4_K, quantize_q5_K,
quantize_q6_K and quantize_iq4_nl (src, dst, nrows, n_per_row, quant_weights), what
llama-quantize runs with --imatrix.

    MK_VENV=... $MK_VENV/bin/python tools/gen-golden-gguf-kquant-w.py

writes tests/golden/gguf/kquant-w.safetensors: f32 inputs "CASE" ([rows, n_per_row]), their
importance weights "CASE.w" ([n_per_row]: one per column, as an imatrix gives), and for T in
q4_k, q5_k, q6_k, iq4_nl "CASE.T": llama.cpp's blocks as U8 [rows, bytes a row]. Cases: normal
values at several scales with log-normal weights; weights with zeros and whole zero groups;
outliers where the weights favour the small values; constant and all-zero rows; uniform weights.
Versions: tests/golden/gguf/VERSIONS (llama-cpp-python).
"""
import ctypes
import glob
import importlib.metadata
import os
import sys

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "golden", "gguf")
TYPES = {"q4_k": 144, "q5_k": 176, "q6_k": 210, "iq4_nl": 18}
BLOCK = {"q4_k": 256, "q5_k": 256, "q6_k": 256, "iq4_nl": 32}


def ggml_base():
    import llama_cpp
    libs = glob.glob(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    if not libs:
        raise SystemExit("libggml-base.so not found next to llama_cpp")
    return ctypes.CDLL(libs[0])


def cases(rng):
    c = {}
    x = rng.standard_normal((4, 512)).astype(np.float32) * np.array([[1], [0.02], [300], [1e-3]], np.float32)
    c["normal"] = (x, np.exp(rng.standard_normal(512) * 2).astype(np.float32))
    x = rng.standard_normal((3, 256)).astype(np.float32)
    w = rng.uniform(0, 5, 256).astype(np.float32)
    w[::7] = 0
    w[32:64] = 0          # a whole Q4_K / IQ4_NL group unweighted
    w[160:176] = 0        # a whole Q6_K group
    c["zeros"] = (x, w)
    x = rng.standard_normal((2, 256)).astype(np.float32) * 0.01
    x[0, ::37] = 50
    x[1, 3::29] = -50
    w = np.full(256, 10, np.float32)
    w[::37] = 1e-3
    w[3::29] = 1e-3
    c["outlier"] = (x, w)
    x = np.zeros((3, 256), np.float32)
    x[0] = 0.75
    x[1, 5] = 1000
    x[2] = rng.uniform(0, 1, 256) + 2  # all positive: the minimum matters
    c["const"] = (x, rng.uniform(0.1, 2, 256).astype(np.float32))
    x = rng.standard_normal((2, 768)).astype(np.float32)
    c["uniform"] = (x, np.ones(768, np.float32))
    return c


def blocks(lib, x, w, t):
    x = np.ascontiguousarray(x, np.float32)
    w = np.ascontiguousarray(w, np.float32)
    rows, n = x.shape
    out = np.zeros(rows * (n // BLOCK[t]) * TYPES[t], np.uint8)
    fn = getattr(lib, "quantize_" + (t if t == "iq4_nl" else t[:2] + "_K"))
    fn.restype = ctypes.c_size_t
    got = fn(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(rows), ctypes.c_int64(n),
             w.ctypes.data_as(ctypes.c_void_p))
    if got != out.size:
        raise SystemExit(f"quantize {t}: {got} bytes, expected {out.size}")
    return out.reshape(rows, -1)


def main():
    lib = ggml_base()
    rng = np.random.default_rng(1718)
    out = {}
    for name, (x, w) in cases(rng).items():
        out[name] = x
        out[name + ".w"] = w
        for t in TYPES:
            out[f"{name}.{t}"] = blocks(lib, x, w, t)
    ver = importlib.metadata.version("llama-cpp-python")
    save_file(out, os.path.join(OUT, "kquant-w.safetensors"), metadata={"llama-cpp-python": ver})
    print("wrote", len(out), "tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
