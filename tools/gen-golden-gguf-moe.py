#!/usr/bin/env python3
"""Goldens for `convert --imatrix` on mixtures of experts: llama.cpp's own quantizer (llama-cpp-python's
llama_model_quantize, the C code of llama-quantize, its importance matrix handed over as
llama_model_imatrix_data, one row of importances per expert) on the two models of
tools/make-moe-models.sh.

    MK_VENV=... $MK_VENV/bin/python tools/gen-golden-gguf-moe.py      (mergekit-c built)

For each model M (mx: a Mixtral with 8 fused experts; q2: a Qwen2-MoE with 4 per-expert tensors and a
shared expert; d8: a dense Llama of 8 layers, for llama-quantize's imatrix rules on the first eighth):
  - the f32 GGUF `convert M --type f32` writes is checked here against numpy's stacking of the Hugging
    Face tensors (ffn_*_exps = the experts' matrices in expert order; fused gate_up split in halves);
    generation stops on a difference;
  - tests/golden/gguf/moe-M.imatrix.gguf: an importance matrix in llama-imatrix's GGUF layout (written
    with gguf-py) for every matrix llama.cpp quantizes: NAME.in_sum2 [cols, nmat] and NAME.counts
    [1, nmat], nmat the experts of ffn_*_exps; each expert's sums drawn with its own scale and
    pattern, its own token count, and one expert of each model with count 0 (importance 1); the
    routers (ffn_gate_inp, ffn_gate_inp_shexp: llama.cpp leaves them unquantized) too;
  - for T in TYPES: llama_model_quantize(f32, T's llama_ftype, imatrix: in_sum2 / count per expert,
    1 where the count is 0, as llama-quantize's load_imatrix gives them), not --pure: llama.cpp
    chooses every tensor's type; the lines "M T TYPE XXH3" of tests/golden/gguf/moe-imatrix.txt
    (sorted; XXH3-128 of the tensor's bytes, attn_q / attn_k rows of the llama architecture back in
    Hugging Face order, as `mergekit-c inspect --hashes` reads them).
  - pm f32: tests/golden/moe/legacy_mixtral (Mixtral's per-expert block_sparse_moe.experts.E.w1 / w3 /
    w2) converted to f32, its stacking checked the same way;
  - moe-mx.swap.gguf: the mx matrix with only blk.0.ffn_down_exps.weight, its experts 0 and 1
    exchanged; llama.cpp's q4_k of it: the "mx q4_k-swap" lines.
  - moe-q2.row2.gguf: the q2 matrix with every expert's row (and count) of blk.0.ffn_gate_exps.weight
    that of expert 2: `quantize --method search` and `--sensitivity imatrix` must treat layer 0's
    mlp.experts.2.gate_proj as with moe-q2.imatrix.gguf, and its other experts not.
  - moe-bad-nmat.gguf (blk.0.ffn_up_exps.weight with 4 matrices) and moe-bad-width.gguf (8 matrices of
    128 columns): llama-quantize refuses both for mx (checked here), as convert must.
Versions: tests/golden/gguf/VERSIONS.
"""
import ctypes
import importlib.metadata
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "golden", "gguf")
TYPES = {"q4_k": 15, "q5_k": 17, "q6_k": 18, "q3_k": 12, "q2_k": 10, "iq4_nl": 25, "q4_0": 2}
HEADS = {"mx": {"attn_q": 4, "attn_k": 2}, "pm": {"attn_q": 2, "attn_k": 2}, "d8": {"attn_q": 4, "attn_k": 1}}  # llama-architecture models' heads


def quantize(src, dst, ftype, imatrix):
    import llama_cpp
    keep = []
    arr = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
    for i, (name, v) in enumerate(sorted(imatrix.items())):
        v = np.ascontiguousarray(v, np.float32)
        keep.append((name.encode(), v))
        arr[i].name = keep[-1][0]
        arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[i].size = v.size
    arr[len(imatrix)].name = None
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 1
    p.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    return llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))


def hashes(path, model, label):
    import gguf
    import xxhash
    out = []
    for t in gguf.GGUFReader(path).tensors:
        data = bytes(t.data.tobytes())
        role = t.name.split(".")[-2] if t.name.startswith("blk.") else ""
        if role in HEADS.get(model, {}):  # llama's permute undone, as inspect reads it
            heads = HEADS[model][role]
            rows = np.frombuffer(data, np.uint8).reshape(int(t.shape[1]), -1)
            data = rows.reshape(heads, rows.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).tobytes()
        out.append(f"{model} {label} {t.tensor_type.name.lower()} {xxhash.xxh3_128_hexdigest(data)}")
    return sorted(out)


def check_stacking(folder, f32):
    """ffn_*_exps of our f32 GGUF against numpy's stacking of the Hugging Face tensors"""
    import gguf
    from safetensors.torch import load_file
    hf = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):  # bf16 too: widened to f32 exactly, as convert --type f32 does
            hf.update({k: v.float().numpy() for k, v in load_file(os.path.join(folder, f)).items()})
    n = 0
    for t in gguf.GGUFReader(f32).tensors:
        if "_exps" not in t.name:
            continue
        layer, kind = int(t.name.split(".")[1]), t.name.split(".")[2]
        got = np.array(t.data, np.float32).reshape([int(x) for x in reversed(t.shape)])
        pre = f"model.layers.{layer}.mlp.experts"
        if f"{pre}.gate_up_proj" in hf:
            gu, down = hf[f"{pre}.gate_up_proj"], hf[f"{pre}.down_proj"]
            f = gu.shape[1] // 2
            want = {"ffn_gate_exps": gu[:, :f], "ffn_up_exps": gu[:, f:], "ffn_down_exps": down}[kind]
        elif f"model.layers.{layer}.block_sparse_moe.experts.0.w1.weight" in hf:  # Mixtral's checkpoints
            pre = f"model.layers.{layer}.block_sparse_moe.experts"
            proj = {"ffn_gate_exps": "w1", "ffn_up_exps": "w3", "ffn_down_exps": "w2"}[kind]
            E = len([k for k in hf if k.startswith(pre + ".") and k.endswith(f".{proj}.weight")])
            want = np.stack([hf[f"{pre}.{e}.{proj}.weight"] for e in range(E)])
        else:
            proj = {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"}[kind]
            E = len([k for k in hf if k.startswith(pre + ".") and k.endswith(f".{proj}.weight")])
            want = np.stack([hf[f"{pre}.{e}.{proj}.weight"] for e in range(E)])
        if got.shape != want.shape or not np.array_equal(got, want):
            raise SystemExit(f"{f32}: {t.name} is not the stacked experts of {folder}")
        n += 1
    return n


def write_imatrix(path, entries):
    import gguf
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["synthetic.txt"])
    w.add_uint32("imatrix.chunk_count", 4)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, (sums, counts) in sorted(entries.items()):
        w.add_tensor(name + ".in_sum2", sums.astype(np.float32))
        w.add_tensor(name + ".counts", counts.astype(np.float32).reshape(-1, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def importances(entries):
    """llama-quantize's load_imatrix: in_sum2 / count per matrix in f32, 1 where the count is 0"""
    out = {}
    for name, (sums, counts) in entries.items():
        rows = [s / np.float32(c) if c > 0 else np.ones_like(s) for s, c in zip(sums.astype(np.float32), counts.astype(np.float32))]
        out[name] = np.concatenate(rows).astype(np.float32)
    return out


def main():
    import gguf
    mk = os.path.join(HERE, "..", "mergekit-c")
    if not os.access(mk, os.X_OK):
        raise SystemExit("build mergekit-c first (make)")
    rng = np.random.default_rng(1917)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([os.path.join(HERE, "make-moe-models.sh"), mk, tmp], check=True)
        for model, zero in (("mx", "blk.0.ffn_up_exps.weight"), ("q2", "blk.1.ffn_gate_exps.weight"), ("d8", "blk.7.ffn_up.weight")):
            f32 = os.path.join(tmp, model + ".f32.gguf")
            subprocess.run([mk, "convert", os.path.join(tmp, model), f32, "--type", "f32", "-q"], check=True)
            print(f"{model}: {check_stacking(os.path.join(tmp, model), f32)} stacked expert tensors equal numpy's", file=sys.stderr)
            lines += hashes(f32, model, "f32")
            entries = {}
            for t in gguf.GGUFReader(f32).tensors:
                dims = [int(x) for x in t.shape]
                if len(dims) < 2 or "_norm" in t.name or t.name == "token_embd.weight":
                    continue
                cols, nmat = dims[0], dims[2] if len(dims) > 2 else 1
                counts = rng.integers(200, 4000, nmat).astype(np.float64)
                sums = np.stack([np.exp(rng.standard_normal(cols) * rng.uniform(0.5, 2.5)) * rng.uniform(0.1, 10) for _ in range(nmat)])
                sums *= counts[:, None]
                if t.name == zero:
                    counts[nmat // 2] = 0
                entries[t.name] = (sums, counts)
            im = os.path.join(OUT, f"moe-{model}.imatrix.gguf")
            write_imatrix(im, entries)
            imp = importances(entries)
            for label, ft in TYPES.items():
                dst = os.path.join(tmp, f"{model}-{label}.gguf")
                if quantize(f32, dst, ft, imp) != 0:
                    raise SystemExit(f"llama_model_quantize {model} {label} failed")
                lines += hashes(dst, model, label)
            if model == "q2":  # quantize --method search / --sensitivity imatrix: each expert its row
                name = "blk.0.ffn_gate_exps.weight"
                sums, counts = entries[name]
                write_imatrix(os.path.join(OUT, "moe-q2.row2.gguf"), {**entries, name: (sums[[2] * len(counts)], counts[[2] * len(counts)])})
            if model != "mx":
                continue
            name = "blk.0.ffn_down_exps.weight"
            sums, counts = entries[name]
            swap = {name: (sums[[1, 0] + list(range(2, len(counts)))], counts[[1, 0] + list(range(2, len(counts)))])}
            write_imatrix(os.path.join(OUT, "moe-mx.swap.gguf"), swap)
            dst = os.path.join(tmp, "mx-swap.gguf")
            if quantize(f32, dst, TYPES["q4_k"], importances(swap)) != 0:
                raise SystemExit("llama_model_quantize mx swap failed")
            lines += hashes(dst, model, "q4_k-swap")
            bad = {"nmat": {"blk.0.ffn_up_exps.weight": (sums[:4], counts[:4])},
                   "width": {"blk.0.ffn_up_exps.weight": (sums[:, :128], counts)}}
            for kind, e in bad.items():
                write_imatrix(os.path.join(OUT, f"moe-bad-{kind}.gguf"), e)
                try:
                    rc = quantize(f32, os.path.join(tmp, "bad.gguf"), TYPES["q4_k"], importances(e))
                except Exception:  # noqa: BLE001 - llama.cpp's refusal, however it comes
                    rc = 1
                if rc == 0:
                    raise SystemExit(f"llama.cpp took moe-bad-{kind}.gguf")
        # Mixtral's per-expert checkpoint layout (block_sparse_moe.experts.E.w1 / w3 / w2)
        pm = os.path.join(HERE, "..", "tests", "golden", "moe", "legacy_mixtral")
        f32 = os.path.join(tmp, "pm.f32.gguf")
        subprocess.run([mk, "convert", pm, f32, "--type", "f32", "-q"], check=True)
        print(f"pm: {check_stacking(pm, f32)} stacked expert tensors equal numpy's", file=sys.stderr)
        lines += hashes(f32, "pm", "f32")
    with open(os.path.join(OUT, "moe-imatrix.txt"), "w") as f:
        f.write(f"# convert --imatrix on tools/make-moe-models.sh's models as llama_model_quantize makes them (llama-cpp-python "
                f"{importlib.metadata.version('llama-cpp-python')}); tools/gen-golden-gguf-moe.py\n")
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} tensor hashes", file=sys.stderr)


if __name__ == "__main__":
    main()
