#!/usr/bin/env python3
"""Goldens for mergekit-c's k-quants (quant/ggml_kquant.c, quant/ggml_mix.c), made by llama.cpp
itself: the C library llama-cpp-python ships (libggml-base's quantize_row_q*_K_ref, what
llama-quantize runs without an imatrix, and llama_model_quantize for the mixes).

    MK_VENV=... $MK_VENV/bin/python tools/gen-golden-gguf-kquant.py   (after `make`)

writes
  tests/golden/gguf/kquant.safetensors: awkward f32 inputs "CASE" ([rows, 256 k]) and, for
      T in q2_k, q3_k, q4_k, q5_k, q6_k (and iq4_nl: quantize_iq4_nl), "CASE.T": llama.cpp's blocks as U8 [rows, bytes a row].
      Cases: normal values at several scales, ties after scaling, constant and zero and -0
      blocks, one outlier, all-positive / all-negative groups, magnitudes whose f16 scales
      overflow or are subnormal, groups below llama.cpp's all-zero threshold (1e-15).
  tests/golden/gguf/kquant-mix.txt: for two synthetic Llamas that mergekit-c synthesizes and
      converts to f32 GGUF (one with 256-value rows and 4 query heads a KV head, 16 layers; one
      with 288-value rows, so that llama.cpp falls back to 32-value types, 3 query heads a KV
      head, 12 layers, tied embeddings), the ggml type llama_model_quantize gives each tensor
      under each mix: lines "MODEL MIX TENSOR COLS TYPE", and "model MODEL layers L gqa G tied B".
Versions are in tests/golden/gguf/VERSIONS (llama-cpp-python).
"""
import ctypes
import glob
import importlib.metadata
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
OUT = os.path.join(ROOT, "tests", "golden", "gguf")
TYPES = {"q2_k": 84, "q3_k": 110, "q4_k": 144, "q5_k": 176, "q6_k": 210, "iq4_nl": 18}
MIXES = {"q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25}


def ggml_base():
    import llama_cpp
    libs = glob.glob(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    if not libs:
        raise SystemExit("libggml-base.so not found next to llama_cpp")
    return ctypes.CDLL(libs[0])


def cases(rng):
    c = {}
    c["normal"] = rng.standard_normal((4, 512)).astype(np.float32) * np.array([[1], [0.02], [300], [1e-3]], np.float32)
    t = (rng.integers(-16, 17, size=(2, 256)) / 2).astype(np.float32)
    t[:, ::16] = 8
    c["ties"] = t
    k = np.zeros((6, 256), np.float32)
    k[0] = 0.75                    # constant positive
    k[1] = -1.5                    # constant negative
    k[2, :128] = -0.0              # -0 and +0
    k[3, 5] = 1000                 # one value
    k[3, 200] = -1000
    k[4] = np.tile(np.array([3, -3], np.float32), 128)
    k[5, :] = 1e-20                # below the all-zero threshold
    c["const"] = k
    o = rng.standard_normal((2, 256)).astype(np.float32) * 0.01
    o[0, ::37] = 50
    o[1, 3::29] = -50
    c["outlier"] = o
    r = rng.standard_normal((5, 256)).astype(np.float32)
    r[0] = rng.uniform(0, 1, 256) + 2      # all positive: the minimum matters
    r[1] = rng.uniform(-1, 0, 256) - 2     # all negative
    r[2] *= 1e6                            # f16 scales overflow
    r[3] *= 1e-6                           # f16 scales subnormal
    r[4] = rng.integers(-8, 8, 256)        # small integers
    c["range"] = r
    return c


def blocks(lib, x, t):
    x = np.ascontiguousarray(x, np.float32)
    if t == "iq4_nl":  # what llama-quantize calls (quantize_row_iq4_nl_ref takes no scale search)
        out = np.zeros(x.size // 32 * TYPES[t], np.uint8)
        lib.quantize_iq4_nl(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size // 32), ctypes.c_int64(32), None)
        return out.reshape(x.shape[0], -1)
    out = np.zeros(x.size // 256 * TYPES[t], np.uint8)
    getattr(lib, f"quantize_row_{t[:2]}_K_ref")(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
    return out.reshape(x.shape[0], -1)


MODELS = {  # name: synth arguments
    "w256": ["--hidden", "256", "--intermediate", "512", "--layers", "16", "--heads", "4", "--kv-heads", "1", "--vocab", "300"],
    "w288": ["--hidden", "288", "--intermediate", "512", "--layers", "12", "--heads", "9", "--kv-heads", "3", "--vocab", "300", "--tie"],
}


def mix_types(mk, tmp):
    import gguf
    import llama_cpp
    lines = []
    for name, args in MODELS.items():
        d = os.path.join(tmp, name)
        subprocess.run([mk, "synth", d, *args, "--dtype", "float32", "-q"], check=True)
        f32 = os.path.join(tmp, name + ".gguf")
        subprocess.run([mk, "convert", d, f32, "--type", "f32", "-q"], check=True)
        r = gguf.GGUFReader(f32)
        heads = int(r.fields["llama.attention.head_count"].contents())
        kv = int(r.fields["llama.attention.head_count_kv"].contents())
        layers = int(r.fields["llama.block_count"].contents())
        tied = "output.weight" not in {t.name for t in r.tensors}
        lines.append(f"model {name} layers {layers} gqa {heads // kv} tied {int(tied)}")
        for mix, ftype in MIXES.items():
            out = os.path.join(tmp, f"{name}-{mix}.gguf")
            p = llama_cpp.llama_model_quantize_default_params()
            p.ftype = ftype
            p.nthread = 1
            if llama_cpp.llama_model_quantize(f32.encode(), out.encode(), ctypes.byref(p)) != 0:
                raise SystemExit(f"llama_model_quantize {mix} failed")
            for t in gguf.GGUFReader(out).tensors:
                if len(t.shape) == 2:
                    lines.append(f"{name} {mix} {t.name} {int(t.shape[0])} {t.tensor_type.name.lower()}")
    return lines


def main():
    mk = os.path.join(ROOT, "mergekit-c")
    if not os.access(mk, os.X_OK):
        raise SystemExit("build mergekit-c first (make)")
    lib = ggml_base()
    rng = np.random.default_rng(1717)
    out = {}
    for name, x in cases(rng).items():
        out[name] = x
        with np.errstate(over="ignore", invalid="ignore"):
            for t in TYPES:
                out[f"{name}.{t}"] = blocks(lib, x, t)
    ver = importlib.metadata.version("llama-cpp-python")
    save_file(out, os.path.join(OUT, "kquant.safetensors"), metadata={"llama-cpp-python": ver})
    with tempfile.TemporaryDirectory() as tmp:
        lines = mix_types(mk, tmp)
    with open(os.path.join(OUT, "kquant-mix.txt"), "w") as f:
        f.write(f"# llama_model_quantize (llama-cpp-python {ver}) tensor types; tools/gen-golden-gguf-kquant.py\n")
        f.write("\n".join(lines) + "\n")
    print("wrote", len(out), "tensors and", len(lines), "type lines", file=sys.stderr)


if __name__ == "__main__":
    main()
