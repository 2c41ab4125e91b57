#!/usr/bin/env python3
"""Golden blocks for mergekit-c's ggml quantizers (quant/ggml_quant.c), made by gguf-py's
gguf.quants (llama.cpp's own Python package; its quantizers are bit-exact ports of
quantize_row_*_ref in ggml-quants.c).

    .venv-tools/bin/python tools/gen-golden-gguf-write.py

writes tests/golden/gguf/encode.safetensors: awkward f32 inputs "CASE" ([rows, 96], three
32-value blocks a row; "wide": [3, 512] for the 256-value TQ1_0 / TQ2_0 too) and, for each type T gguf-py encodes the same way llama.cpp does,
"CASE.T": its blocks as U8 [rows, bytes per row]. Cases: normal values at several scales,
ties at .5 after scaling, constant blocks, zeros and -0, one outlier, the largest magnitude
negative or positive and repeated with both signs, f16 overflow / subnormal ranges for the
scales. tests/golden/gguf/VERSIONS records the gguf version.
"""
import importlib.metadata
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "golden", "gguf")
TYPES = [T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
TYPES_256 = [T.TQ1_0, T.TQ2_0]  # 256-value blocks: the "wide" cases only
COLS = 96


def cases(rng):
    c = {}
    c["normal"] = rng.standard_normal((4, COLS)).astype(np.float32) * np.array([[1], [0.02], [300], [1e-3]], np.float32)
    # values on the rounding ties of each scale: k/2 steps of a power-of-two scale
    t = (rng.integers(-16, 17, size=(3, COLS)) / 2).astype(np.float32)
    t[:, 0] = 8
    t[:, 32] = -8
    t[:, 64] = 16
    c["ties"] = t
    k = np.zeros((4, COLS), np.float32)
    k[0] = 0.75
    k[1, :32] = -1.5
    k[1, 32:64] = -0.0
    k[2, 5] = 1000
    k[2, 40] = -1000
    k[2, 70] = 1e-20
    k[3] = np.tile(np.array([3, -3], np.float32), COLS // 2)
    c["const"] = k
    o = rng.standard_normal((2, COLS)).astype(np.float32) * 0.01
    o[0, ::32] = 50
    o[1, 1::32] = -50
    c["outlier"] = o
    r = rng.standard_normal((3, COLS)).astype(np.float32)
    r[0] *= 1e5    # f16 scales overflow to inf
    r[1] *= 1e-6   # f16 scales subnormal
    r[2] = rng.uniform(-1, 1, COLS).astype(np.float32) + 2  # all positive: min matters
    c["range"] = r
    w = rng.standard_normal((3, 512)).astype(np.float32)
    w[1, :256] = np.tile(np.array([1, -1, 0.5, -0.5, 0.49, 0], np.float32), 43)[:256]  # ternary ties at +-0.5
    w[2, 256:] = 0
    c["wide"] = w
    return c


def main():
    rng = np.random.default_rng(17)
    out = {}
    for name, x in cases(rng).items():
        out[name] = x
        for t in TYPES + (TYPES_256 if x.shape[1] % 256 == 0 else []):
            with np.errstate(over="ignore", invalid="ignore"):
                q = quants.quantize(x, t)
            out[f"{name}.{t.name.lower()}"] = np.ascontiguousarray(q.view(np.uint8).reshape(x.shape[0], -1))
    save_file(out, os.path.join(OUT, "encode.safetensors"), metadata={"gguf": importlib.metadata.version("gguf")})
    print("wrote", len(out), "tensors")


if __name__ == "__main__":
    main()
