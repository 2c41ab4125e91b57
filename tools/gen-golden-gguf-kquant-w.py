#!/usr/bin/env python3
"""Goldens for mergekit-c's k-quants with an importance matrix (quant/ggml_kquant.c,
mk_ggml_kquant_encode_w), made by llama.cpp itself: libggml-base's quantize_q4_0, q4_1, q5_0, q5_1,
quantize_q2_K ... quantize_q6_K and quantize_iq4_nl (src, dst, nrows, n_per_row, quant_weights), what
llama-quantize runs with --imatrix.

    MK_VENV=... $MK_VENV/bin/python tools/gen-golden-gguf-kquant-w.py

writes tests/golden/gguf/kquant-w.safetensors: f32 inputs "CASE" ([rows, n_per_row]), their
importance weights "CASE.w" ([n_per_row]: one per column, as an imatrix gives), and for T in
q4_0 ... q5_1, q2_k ... q6_k, iq4_nl "CASE.T": llama.cpp's blocks as U8 [rows, bytes a row]. Cases: normal
values at several scales with log-normal weights; weights with zeros and whole zero groups;
outliers where the weights favour the small values; constant and all-zero rows; uniform weights.

With mergekit-c built, also (convert --imatrix end to end):
  tests/golden/gguf/imatrix-w256.gguf: an importance matrix in llama-imatrix's GGUF layout
      (general.type imatrix, NAME.in_sum2 [cols, 1] and NAME.counts [1, 1], imatrix.datasets /
      chunk_count / chunk_size), written with gguf-py, for the synthetic Llama SYNTH below:
      every layer matrix, one with count 0 (importance 1), and one name the model lacks;
  tests/golden/gguf/imatrix-convert.txt: for each mix in CONV_MIXES, lines "MIX TYPE XXH3" (sorted;
      the hash inspect --hashes gives: Q/K rows in Hugging Face order) of every tensor of `convert SYNTH --type MIX --imatrix imatrix-w256.gguf` as llama.cpp
      makes it: weighted matrices quantized by libggml-base's quantize_* with weights
      in_sum2 / count (what llama-quantize hands them), the rest as the unweighted convert.
Versions: tests/golden/gguf/VERSIONS (llama-cpp-python).
"""
import ctypes
import importlib.metadata
import importlib.util
import os
import sys

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "golden", "gguf")
TYPES = {"q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24, "q2_k": 84, "q3_k": 110, "q4_k": 144, "q5_k": 176, "q6_k": 210, "iq4_nl": 18}
BLOCK = {"q4_0": 32, "q4_1": 32, "q5_0": 32, "q5_1": 32, "q2_k": 256, "q3_k": 256, "q4_k": 256, "q5_k": 256, "q6_k": 256, "iq4_nl": 32}


def ggml_base():
    """libggml-base, as tools/gen-golden-gguf-kquant.py loads it"""
    spec = importlib.util.spec_from_file_location("gen_golden_gguf_kquant", os.path.join(HERE, "gen-golden-gguf-kquant.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ggml_base()


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
    fn = getattr(lib, "quantize_" + (t[:2] + "_K" if t.endswith("_k") else t))
    fn.restype = ctypes.c_size_t
    got = fn(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(rows), ctypes.c_int64(n),
             w.ctypes.data_as(ctypes.c_void_p))
    if got != out.size:
        raise SystemExit(f"quantize {t}: {got} bytes, expected {out.size}")
    return out.reshape(rows, -1)


SYNTH = ["--hidden", "256", "--intermediate", "512", "--layers", "2", "--heads", "4", "--kv-heads", "1", "--vocab", "300",
         "--dtype", "float32"]
CONV_MIXES = ["q4_0", "q5_1", "q2_k", "q3_k_m", "q4_k_m", "q5_k_s", "q6_k", "iq4_nl"]
WEIGHTED = {"Q4_0": "q4_0", "Q4_1": "q4_1", "Q5_0": "q5_0", "Q5_1": "q5_1", "Q2_K": "q2_k", "Q3_K": "q3_k", "Q4_K": "q4_k", "Q5_K": "q5_k", "Q6_K": "q6_k", "IQ4_NL": "iq4_nl"}


def convert_goldens(lib, rng):
    import subprocess
    import tempfile

    import gguf
    import xxhash
    mk = os.path.join(HERE, "..", "mergekit-c")
    if not os.access(mk, os.X_OK):
        raise SystemExit("build mergekit-c first (make)")
    im_path = os.path.join(OUT, "imatrix-w256.gguf")
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "m")
        subprocess.run([mk, "synth", d, *SYNTH, "-q"], check=True)
        f32 = os.path.join(tmp, "f32.gguf")
        subprocess.run([mk, "convert", d, f32, "--type", "f32", "-q"], check=True)
        vals = {t.name: np.array(t.data, np.float32).reshape(-1, int(t.shape[0])) for t in gguf.GGUFReader(f32).tensors if len(t.shape) == 2}
        w = gguf.GGUFWriter(im_path, arch="llama")
        w.add_string("general.type", "imatrix")
        w.add_array("imatrix.datasets", ["synthetic.txt"])
        w.add_uint32("imatrix.chunk_count", 4)
        w.add_uint32("imatrix.chunk_size", 512)
        imp = {}
        names = sorted(n for n in vals if n.startswith("blk."))
        for i, n in enumerate(names):
            cols = vals[n].shape[1]
            count = 0 if i == 3 else 2048
            sums = (np.exp(rng.standard_normal(cols) * 1.5) * max(count, 1)).astype(np.float32)
            w.add_tensor(n + ".in_sum2", sums.reshape(1, cols))
            w.add_tensor(n + ".counts", np.array([[count]], np.float32))
            imp[n] = sums / np.float32(count) if count else np.ones(cols, np.float32)
        w.add_tensor("blk.9.ffn_up.weight.in_sum2", np.ones((1, 512), np.float32))
        w.add_tensor("blk.9.ffn_up.weight.counts", np.array([[1]], np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        for mix in CONV_MIXES:
            plain = os.path.join(tmp, mix + ".gguf")
            subprocess.run([mk, "convert", d, plain, "--type", mix, "-q"], check=True)
            got = []
            for t in gguf.GGUFReader(plain).tensors:
                ty = t.tensor_type.name
                data = bytes(t.data.tobytes())
                if t.name in imp and ty in WEIGHTED:
                    data = blocks(lib, vals[t.name], imp[t.name], WEIGHTED[ty]).tobytes()
                heads = {"attn_q": 4, "attn_k": 1}.get(t.name.split(".")[-2]) if t.name.startswith("blk.") else None
                if heads:  # inspect reads Q/K rows back in Hugging Face order (llama's permute undone)
                    rows = np.frombuffer(data, np.uint8).reshape(int(t.shape[1]), -1)
                    data = rows.reshape(heads, rows.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).tobytes()
                got.append(f"{mix} {ty.lower()} {xxhash.xxh3_128_hexdigest(data)}")
            lines += sorted(got)
    with open(os.path.join(OUT, "imatrix-convert.txt"), "w") as f:
        f.write(f"# convert --imatrix imatrix-w256.gguf as llama.cpp quantizes (llama-cpp-python "
                f"{importlib.metadata.version('llama-cpp-python')}); tools/gen-golden-gguf-kquant-w.py\n")
        f.write("\n".join(lines) + "\n")


def main():
    lib = ggml_base()
    convert_goldens(lib, np.random.default_rng(1719))
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
