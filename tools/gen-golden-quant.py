#!/usr/bin/env python3
"""Golden outputs for mergekit-c's quantizers, made by the reference libraries themselves.

    .venv-tools/bin/python tools/gen-golden-quant.py ./mergekit-c

writes tests/golden/quant/:

  edge.safetensors   awkward tensors (sizes that are not multiples of the block or group,
                     a row of zeros, huge outliers, subnormals, exact ties, -0.0) quantized
                     by bitsandbytes (nf4, fp4, double quant, LLM.int8) and by
                     compressed-tensors (int4/int8 pack-quantized sym and asym, fp8), with
                     the reference dequantization of each. The inputs are not stored: the
                     __metadata__ "cases" entry holds each case's recipe (shape, dtype, seed,
                     rows set to zero, single values set), and tests/unit/test_quant_golden.c
                     regenerates them with the same integer generator (gen_values below)
                     and checks an FNV-1a hash of the bytes first.
  model-*.safetensors the quantized tensors of a tiny `mergekit-c synth` model, saved by
                     transformers + bitsandbytes (save_pretrained of a model loaded with
                     BitsAndBytesConfig on the CPU) and by compressed-tensors
                     (apply_quantization_config, min/max observer, ModelCompressor), with
  model-*.qconfig.json the quantization_config they wrote (json indent=2, sort_keys).

bitsandbytes on the CPU quantizes the nested (double-quant) absmax with a 65536-bin lookup
table (csrc/cpu_ops.cpp), an approximation of nearest; its torch backend ("default"
ops) and the CUDA kernel take the exact nearest code. mergekit-c does the latter, so this
script registers the default implementation for the CPU (see use_default_blockwise).
The compressed-tensors observer (llm-compressor's min/max) is a per-group amin/amax of
the weight in its own dtype; those values are exact, so it is emulated with torch.amin/amax.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

# ---- bitsandbytes: use the torch-backend blockwise quantizer on the CPU -------------------
_captured = {}
_orig_register_kernel = torch.library.register_kernel


def _register_kernel(op, device_types, *args, **kwargs):
    if op == "bitsandbytes::quantize_blockwise" and device_types == "cpu":
        return lambda fn: fn  # keep the default (torch) implementation for the CPU
    return _orig_register_kernel(op, device_types, *args, **kwargs)


def use_default_blockwise():
    torch.library.register_kernel = _register_kernel


use_default_blockwise()
import bitsandbytes  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402

torch.library.register_kernel = _orig_register_kernel
import compressed_tensors  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from compressed_tensors.compressors.naive_quantized.base import FloatQuantizationCompressor  # noqa: E402
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme  # noqa: E402
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "quant")
DT = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}

# ---- the input generator (mirrored in tests/unit/test_quant_golden.c) ----------------------
M64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def gen_values(spec):
    """f32 bit patterns: sign, an exponent in [2^-10, 1), a random mantissa cut to the
    dtype's precision; then rows set to zero and single values set (bit patterns)."""
    rows, cols = spec["shape"]
    n = rows * cols
    mant_mask = {"BF16": 0x7F0000, "F16": 0x7FE000, "F32": 0x7FFFFF}[spec["dtype"]]
    bits = np.zeros(n, dtype=np.uint32)
    for i in range(n):
        u = splitmix64(((spec["seed"] & 0xFFFFFFFF) << 32) | i)
        sign = (u >> 63) & 1
        exp = 117 + ((u >> 40) % 10)
        mant = u & mant_mask
        bits[i] = (sign << 31) | (exp << 23) | mant
    for r in spec.get("zero_rows", []):
        bits[r * cols:(r + 1) * cols] = 0
    for idx, b in spec.get("sets", []):
        bits[idx] = b
    return bits


def fnv1a(data):
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & M64
    return h


def f32bits(v):
    return struct.unpack("<I", struct.pack("<f", v))[0]


def tensor_of(spec):
    bits = gen_values(spec)
    x = torch.from_numpy(bits.view(np.float32).copy()).reshape(spec["shape"])
    t = x.to(DT[spec["dtype"]])
    assert torch.equal(t.float().view(torch.int32), x.view(torch.int32)), spec["name"] + ": values not exact in dtype"
    raw = t.contiguous().view(torch.uint8).numpy().tobytes()
    return t, fnv1a(raw)


# ---- cases -------------------------------------------------------------------------------
def special_sets(rows, cols, dtype, kinds):
    """Single values: outliers, -0.0, subnormals, and exact ties for the format."""
    sets = []
    big = 28672.0 if dtype != "F32" else 31000.5
    sets.append([1 * cols + 3, f32bits(1000.0)])
    sets.append([2 * cols + cols - 1, f32bits(-big)])
    sets.append([0 * cols + 1, 0x80000000])  # -0.0
    if "subnormal" in kinds and rows > 3:  # a row of tiny values (bf16 / f32 subnormals)
        for c in range(cols):
            sets.append([3 * cols + c, ((c % 127) + 1) << 16 | (0x80000000 if c % 3 == 0 else 0)])
    return sets


def ties_nf4(rows, cols, quant_type):
    """A block whose absmax is 1.0 and whose other values are the f32 midpoints (ties)."""
    code = F.get_4bit_type(quant_type, device="cpu")
    s, _ = torch.sort(code)
    mids = ((s[:-1] + s[1:]) / 2).tolist()
    r = rows - 1
    sets = [[r * cols, f32bits(1.0)]]
    for k, m in enumerate(mids):
        if 1 + k < cols:
            sets.append([r * cols + 1 + k, f32bits(m)])
    return sets


def ties_ct_int(cols, group, row, bits):
    """A group with absmax 7.5 (int4) or 127.5 (int8): scale 1, values k + 0.5 tie."""
    half = 7.5 if bits == 4 else 127.5
    sets = [[row * cols, f32bits(half)]]
    for k in range(1, min(group, 12)):
        sets.append([row * cols + k, f32bits((k - 6) + 0.5)])
    return sets


def ties_fp8(cols, row):
    """absmax 448: scale 1; midpoints between E4M3 values round to the even code."""
    vals = [448.0, 1.0625, -1.1875, 17.0, 19.0, -0.0029296875, 0.0009765625, 240.0, 232.0]
    return [[row * cols + k, f32bits(v)] for k, v in enumerate(vals[: cols])]


def ties_int8(cols, row):
    """Row absmax 127 (f16 exact): 127 / SCB = 1, values k + 0.5 tie."""
    vals = [127.0, 2.5, -3.5, 0.5, -0.5, 1.5, 126.5]
    return [[row * cols + k, f32bits(v)] for k, v in enumerate(vals[: cols])]


def recip_rows(nrows, cols):
    """Rows whose absmax a and values x make f16(x) * ((1 / a) * 127) (what torch computes
    for 127.0 / a) round differently from x * (127 / a): the reciprocal trap of LLM.int8."""
    sets, r = [], 0
    a_bits = 0x3C00
    while r < nrows and a_bits < 0x3E00:
        a = np.float32(struct.unpack("<f", struct.pack("<I", a_bits << 16))[0])
        mul_t = np.float32(np.float32(1.0) / a) * np.float32(127.0)
        mul_d = np.float32(127.0) / a
        hits = []
        for xb in range(0x3800, a_bits):
            x = np.float32(struct.unpack("<f", struct.pack("<I", xb << 16))[0])
            if np.rint(x * mul_t) != np.rint(x * mul_d):
                hits.append(xb)
            if len(hits) == cols - 1:
                break
        if hits:
            sets.append([r * cols, f32bits(float(a))])
            for k, xb in enumerate(hits):
                sets.append([r * cols + 1 + k, (xb << 16) | (0x80000000 if k % 2 else 0)])
            for k in range(len(hits) + 1, cols):
                sets.append([r * cols + k, 0])
            r += 1
        a_bits += 7
    return r, sets


def make_cases():
    cases = []

    def add(name, kind, shape, dtype, seed, params, zero_rows=(), sets=()):
        cases.append({"name": name, "kind": kind, "shape": list(shape), "dtype": dtype, "seed": seed,
                      "zero_rows": list(zero_rows), "sets": [list(s) for s in sets], "params": params})

    for qt in ("nf4", "fp4"):
        r, c = 7, 37  # 259 values: 4 blocks of 64 and a partial one of 3; odd count
        add(f"{qt}_odd", "bnb4", (r, c), "BF16", 11, {"quant_type": qt, "block": 64, "dq": False},
            zero_rows=[5], sets=special_sets(r, c, "BF16", ["subnormal"]))
        r, c = 6, 50  # f32 input with exact ties in the last row
        add(f"{qt}_ties", "bnb4", (r, c), "F32", 12, {"quant_type": qt, "block": 64, "dq": False},
            zero_rows=[0], sets=special_sets(r, c, "F32", []) + ties_nf4(r, c, qt))
        r, c = 9, 100  # block 128, f16, partial last block
        add(f"{qt}_b128", "bnb4", (r, c), "F16", 13, {"quant_type": qt, "block": 128, "dq": False},
            sets=special_sets(r, c, "F16", []))
        r, c = 97, 90  # 8730 values = 273 blocks of 32: nested blocks of 256 and 17
        add(f"{qt}_dq", "bnb4", (r, c), "BF16", 14, {"quant_type": qt, "block": 32, "dq": True},
            zero_rows=[7, 8], sets=special_sets(r, c, "BF16", ["subnormal"]))
    r, c = 64, 64  # 64 blocks: one partial nested block
    add("nf4_dq_small", "bnb4", (r, c), "BF16", 15, {"quant_type": "nf4", "block": 64, "dq": True})

    r, c = 8, 45
    add("int8_bf16", "int8", (r, c), "BF16", 21, {}, zero_rows=[4],
        sets=special_sets(r, c, "BF16", ["subnormal"]) + ties_int8(c, 6))
    add("int8_f32", "int8", (5, 33), "F32", 22, {}, sets=special_sets(5, 33, "F32", []))
    nr, sets = recip_rows(12, 8)
    add("int8_recip", "int8", (nr, 8), "BF16", 23, {}, sets=sets)

    for bits in (4, 8):
        for asym in (False, True):
            tag = f"int{bits}_{'asym' if asym else 'sym'}"
            r, c = 9, 96
            add(f"{tag}_g32", "ctint", (r, c), "BF16", 30 + bits + asym, {"bits": bits, "group": 32, "asym": asym},
                zero_rows=[4], sets=special_sets(r, c, "BF16", ["subnormal"]) + ties_ct_int(c, 32, 7, bits))
            r, c = 5, 256
            add(f"{tag}_g128", "ctint", (r, c), "BF16", 40 + bits + asym, {"bits": bits, "group": 128, "asym": asym},
                sets=special_sets(r, c, "BF16", []))
            r, c = 7, 40
            add(f"{tag}_chan", "ctint", (r, c), "F16", 50 + bits + asym, {"bits": bits, "group": 0, "asym": asym},
                zero_rows=[6], sets=special_sets(r, c, "F16", []))
    add("int4_asym_f32", "ctint", (6, 64), "F32", 60, {"bits": 4, "group": 16, "asym": True},
        sets=special_sets(6, 64, "F32", []))
    # groups that are all positive, all negative, or constant: zero points at the ends
    sets = [[k, f32bits(0.25 + k / 64)] for k in range(32)] + [[32 + k, f32bits(-0.5 + k / 128)] for k in range(32)]
    sets += [[64 + k, f32bits(0.125)] for k in range(32)]
    add("int4_asym_edges", "ctint", (3, 64), "BF16", 61, {"bits": 4, "group": 32, "asym": True}, sets=sets)

    r, c = 8, 45
    add("fp8_chan", "fp8", (r, c), "BF16", 70, {"tensor": False}, zero_rows=[5],
        sets=special_sets(r, c, "BF16", ["subnormal"]) + ties_fp8(c, 6))
    add("fp8_tensor", "fp8", (6, 33), "BF16", 71, {"tensor": True}, sets=special_sets(6, 33, "BF16", []))
    add("fp8_f16", "fp8", (5, 40), "F16", 72, {"tensor": False}, sets=special_sets(5, 40, "F16", []))
    add("fp8_f32", "fp8", (5, 40), "F32", 73, {"tensor": False}, zero_rows=[2], sets=special_sets(5, 40, "F32", []))
    return cases


# ---- reference quantization per kind -------------------------------------------------------
def run_bnb4(case, t, out):
    p = case["params"]
    packed, st = F.quantize_4bit(t, blocksize=p["block"], compress_statistics=p["dq"], quant_type=p["quant_type"])
    d = st.as_dict(packed=True)
    n = case["name"]
    out[n + ".weight"] = packed
    for k, v in d.items():
        out[n + "." + k] = v
    if p["dq"]:
        out[n + ".offset"] = st.offset.reshape(1).float()
    st.dtype = torch.float32  # the f32 products, before the cast to the model dtype
    if t.numel() < 4096 or n == "nf4_dq":  # keep the fixture small
        out[n + ".deq"] = F.dequantize_4bit(packed, st).reshape(-1)


def run_int8(case, t, out):
    p = bitsandbytes.nn.Int8Params(t.clone(), requires_grad=False, has_fp16_weights=False).to("cpu")
    n = case["name"]
    out[n + ".weight"] = p.data
    out[n + ".SCB"] = p.SCB
    out[n + ".deq"] = F.int8_vectorwise_dequant(p.data, p.SCB).reshape(-1)


def observe(w, args):
    """llm-compressor's min/max observer for weights, in the weight's dtype."""
    if args.strategy == "group":
        g = w.unflatten(-1, (w.shape[-1] // args.group_size, args.group_size))
        return g.amin(-1), g.amax(-1)
    if args.strategy == "channel":
        return w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    return w.amin(), w.amax()


def run_ct(case, t, out, comp, args):
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    mn, mx = observe(t, args)
    scale, zp = calculate_qparams(mn, mx, args)
    sd = {"weight": t, "weight_scale": scale.to(t.dtype), "weight_zero_point": zp}
    c = comp.compress(sd, scheme)
    n = case["name"]
    for k, v in c.items():
        out[n + "." + k] = v
    dc = dict(c)
    zpk = dc.get("weight_zero_point")
    if zpk is not None and zpk.shape[0] == 1:
        # compressed-tensors 0.20.1 unpack_from_int32 fails on a single packed row (the
        # transposed [groups, 1] view keeps stride `groups`); give it strides it can view
        dc["weight_zero_point"] = torch.as_strided(zpk.clone(), zpk.shape, (1, 1))
    dec = comp.decompress(dc, scheme)
    out[n + ".deq"] = dec["weight"].float().reshape(-1)


def run_ctint(case, t, out):
    p = case["params"]
    args = QuantizationArgs(num_bits=p["bits"], type="int", symmetric=not p["asym"],
                            strategy="group" if p["group"] else "channel", group_size=p["group"] or None)
    run_ct(case, t, out, PackedQuantizationCompressor, args)


def run_fp8(case, t, out):
    p = case["params"]
    args = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy="tensor" if p["tensor"] else "channel")
    run_ct(case, t, out, FloatQuantizationCompressor, args)


def versions():
    return {"torch": torch.__version__, "bitsandbytes": bitsandbytes.__version__,
            "compressed-tensors": compressed_tensors.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__}


def gen_edge():
    out = {}
    cases = make_cases()
    for case in cases:
        t, h = tensor_of(case)
        case["fnv1a"] = "%016x" % h
        {"bnb4": run_bnb4, "int8": run_int8, "ctint": run_ctint, "fp8": run_fp8}[case["kind"]](case, t, out)
    out["table.nf4"] = F.get_4bit_type("nf4", device="cpu")
    out["table.fp4"] = F.get_4bit_type("fp4", device="cpu")
    out["table.dynamic"] = F.create_dynamic_map().float()
    out = {k: v.contiguous() for k, v in out.items()}
    # Python's float repr (the nested_offset text in the bitsandbytes blob) of f32 values
    # widened to double, and of a few doubles: [hex of the double's bits, repr]
    rng = np.random.default_rng(7)
    vals = [0.05548858642578125, 1e-05, 2.0, 1e16, 9999999999999998.0, 0.0001, 123.456, -0.0, 5e-324, 0.1, 1.5e-07,
            -3.4028234663852886e+38, 1e-38, 65504.0, 0.3]
    vals += [float(np.float32(v)) for v in rng.standard_normal(40) * np.exp(rng.uniform(-30, 30, 40))]
    pyf = [["%016x" % struct.unpack("<Q", struct.pack("<d", v))[0], repr(v)] for v in vals]
    meta = {"cases": json.dumps(cases, separators=(",", ":")), "tools": json.dumps(versions()),
            "pyfloat": json.dumps(pyf, separators=(",", ":"))}
    save_file(out, os.path.join(OUT, "edge.safetensors"), metadata=meta)
    print("edge.safetensors: %d cases, %d tensors" % (len(cases), len(out)))


# ---- model-level goldens -------------------------------------------------------------------
SYNTH = ["--hidden", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--intermediate", "64",
         "--vocab", "64", "--dtype", "bf16", "--seed", "5"]


def save_model_golden(name, model_dir, qcfg):
    from safetensors import safe_open
    keep = {}
    with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            # only what quantization produced: the unquantized tensors are the input's
            if t.dtype in (torch.bfloat16,) and not k.endswith("weight_scale"):
                continue
            keep[k] = t.contiguous()
    save_file(keep, os.path.join(OUT, "model-%s.safetensors" % name), metadata={"tools": json.dumps(versions())})
    with open(os.path.join(OUT, "model-%s.qconfig.json" % name), "w") as fh:
        fh.write(json.dumps(qcfg, indent=2, sort_keys=True) + "\n")
    print("model-%s: %d tensors" % (name, len(keep)))


def gen_models(mk):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "synth")
        subprocess.run([mk, "synth", src] + SYNTH + ["-q"], check=True)
        bnb = {
            "nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16),
            "nf4-dq": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                         bnb_4bit_compute_dtype=torch.bfloat16),
            "fp4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=torch.bfloat16),
            "int8": BitsAndBytesConfig(load_in_8bit=True),
        }
        for name, cfg in bnb.items():
            m = AutoModelForCausalLM.from_pretrained(src, quantization_config=cfg, device_map="cpu")
            d = os.path.join(tmp, name)
            m.save_pretrained(d)
            with open(os.path.join(d, "config.json")) as fh:
                save_model_golden(name, d, json.load(fh)["quantization_config"])
        ct = {
            "int4": QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=32),
            "int4-asym": QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group", group_size=32),
            "int8-ct": QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="channel"),
            "fp8": QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy="channel"),
        }
        for name, wargs in ct.items():
            gen_ct_model(src, os.path.join(tmp, name), name, wargs)
    finally:
        shutil.rmtree(tmp)


def gen_ct_model(src, d, name, wargs):
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    inp = None
    if wargs.type == "float":
        inp = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy="token", dynamic=True)
    scheme = QuantizationScheme(targets=["Linear"], weights=wargs, input_activations=inp)
    apply_quantization_config(m, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"]))
    for _, mod in m.named_modules():
        if getattr(mod, "quantization_scheme", None) is None:
            continue
        a = mod.quantization_scheme.weights
        scale, zp = calculate_qparams(*observe(mod.weight.data, a), a)
        mod.weight_scale.data = scale.to(mod.weight_scale.dtype).reshape(mod.weight_scale.shape)
        if hasattr(mod, "weight_zero_point"):
            mod.weight_zero_point.data = zp.to(mod.weight_zero_point.dtype).reshape(mod.weight_zero_point.shape)
    mc = ModelCompressor.from_pretrained_model(m, None)
    mc.compress_model(m)
    m.save_pretrained(d)
    mc.update_config(d)
    with open(os.path.join(d, "config.json")) as fh:
        save_model_golden(name, d, json.load(fh)["quantization_config"])


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen-golden-quant.py PATH/TO/mergekit-c")
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen_edge()
    gen_models(os.path.abspath(sys.argv[1]))
    with open(os.path.join(OUT, "VERSIONS"), "w") as fh:
        fh.write(json.dumps(versions(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
