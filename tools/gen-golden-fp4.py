#!/usr/bin/env python3
"""Golden outputs for mergekit-c's NVFP4 / MXFP4 / MXFP8 quantizers, made by compressed-tensors.

    .venv-tools/bin/python tools/gen-golden-fp4.py

writes tests/golden/quant/fp4.safetensors: awkward tensors (a row of zeros, huge outliers,
subnormals, -0.0, values on the ties between E2M1 codes; bf16, f16 and f32 inputs) quantized
by compressed-tensors' NVFP4PackedCompressor, MXFP4PackedCompressor and
MXFP8QuantizationCompressor with the NVFP4A16 / MXFP4A16 / MXFP8A16 presets' weight args,
and the library's own decompression of each (CASE.deq, as f32). The inputs are regenerated
by tests/unit/test_quant_golden.c from the recipe in __metadata__ "cases" (the generator of
tools/gen-golden-quant.py, checked by an FNV-1a hash).

The observer is llm-compressor's min/max for weights: amin/amax in the weight's own dtype,
per group, and over the whole tensor for NVFP4's global scale (generate_gparam).
"""
import importlib.util
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("ggq", os.path.join(HERE, "gen-golden-quant.py"))
ggq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ggq)

from compressed_tensors.compressors.mxfp4.base import MXFP4PackedCompressor  # noqa: E402
from compressed_tensors.compressors.mxfp8.base import MXFP8QuantizationCompressor  # noqa: E402
from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationScheme, preset_name_to_scheme  # noqa: E402
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT = os.path.join(HERE, "..", "tests", "golden", "quant")
f32bits = ggq.f32bits
KIND = {"nvfp4": ("NVFP4A16", NVFP4PackedCompressor), "mxfp4": ("MXFP4A16", MXFP4PackedCompressor),
        "mxfp8": ("MXFP8A16", MXFP8QuantizationCompressor)}


def ties_fp4(cols, row, absmax):
    """A group whose scale is 1 (absmax 6 for either format: NVFP4's global scale then makes
    the block scale 448 * 6 / 6 / 6 ... so only MX ties are exact) and values on every
    boundary between E2M1 codes, both signs."""
    vals = [absmax, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5.0, -0.0,
            0.203125, -0.203125, 5.5, -5.875]
    return [[row * cols + k, f32bits(v)] for k, v in enumerate(vals[:cols])]


def ties_fp8(cols, row):
    vals = [448.0, 1.0625, -1.1875, 17.0, 19.0, -0.0029296875, 0.0009765625, 240.0, 232.0, -0.0]
    return [[row * cols + k, f32bits(v)] for k, v in enumerate(vals[:cols])]


def recip_absmax(dtype):
    """An absmax (exact in dtype, below 0.5) for which torch's 2688 / x (the reciprocal rounded to
    the dtype, times 2688) differs from the rounded quotient: NVFP4's global scale."""
    dt = ggq.DT[dtype]
    for k in range(1, 4000):
        a = torch.tensor([0.0549 + k * 1e-5]).to(dt)
        if float(a) >= 0.5:
            break
        if not torch.equal(2688.0 / a, (torch.tensor([2688.0]) / a.float()).to(dt)):
            return float(a)
    raise SystemExit("no reciprocal case for " + dtype)


def make_cases():
    cases = []

    def add(name, kind, shape, dtype, seed, zero_rows=(), sets=()):
        cases.append({"name": name, "kind": kind, "shape": list(shape), "dtype": dtype, "seed": seed,
                      "zero_rows": list(zero_rows), "sets": [list(s) for s in sets], "params": {}})

    sp = ggq.special_sets
    for kind, g in (("nvfp4", 16), ("mxfp4", 32)):
        r, c = 7, 4 * g
        add(f"{kind}_bf16", kind, (r, c), "BF16", 80, zero_rows=[5],
            sets=sp(r, c, "BF16", ["subnormal"]) + ties_fp4(c, 6, 6.0))
        add(f"{kind}_f16", kind, (5, 2 * g), "F16", 81, zero_rows=[2], sets=sp(5, 2 * g, "F16", []) + ties_fp4(2 * g, 4, 6.0))
        add(f"{kind}_f32", kind, (5, 3 * g), "F32", 82, zero_rows=[0], sets=sp(5, 3 * g, "F32", ["subnormal"]) + ties_fp4(3 * g, 4, 6.0))
        # small weights: f16's 2688 / absmax overflows (NVFP4 global scale 1), tiny MX scales
        tiny = [[k, f32bits((k % 7 + 1) * 2.0 ** -14 * (-1 if k % 2 else 1))] for k in range(2 * g)]
        add(f"{kind}_tiny_f16", kind, (2, 2 * g), "F16", 83, zero_rows=[0, 1], sets=tiny)
        add(f"{kind}_tiny_bf16", kind, (2, 2 * g), "BF16", 84, zero_rows=[0, 1],
            sets=[[k, f32bits((k % 5 + 1) * 2.0 ** -126)] for k in range(2 * g)])
    for dtype in ("BF16", "F16", "F32"):  # the global scale's reciprocal rounding
        a = recip_absmax(dtype)
        sets = [[0, f32bits(a)]] + [[k, f32bits((k % 5 + 1) * 2.0 ** -9 * (-1 if k % 3 else 1))] for k in range(1, 64)]
        add(f"nvfp4_recip_{dtype.lower()}", "nvfp4", (2, 32), dtype, 88, zero_rows=[0, 1], sets=sets)
    for kind in ("mxfp4", "mxfp8"):  # a group max that rounds up to 2^128: the scale is inf (stored as 127)
        add(f"{kind}_huge", kind, (2, 64), "BF16", 89, sets=[[0, 0x7F600000], [1, 0xFF700000], [70, 0x7F5F0000]])
    r, c = 6, 96
    add("mxfp8_bf16", "mxfp8", (r, c), "BF16", 85, zero_rows=[2], sets=sp(r, c, "BF16", ["subnormal"]) + ties_fp8(c, 5))
    add("mxfp8_f16", "mxfp8", (4, 64), "F16", 86, sets=sp(4, 64, "F16", []) + ties_fp8(64, 3))
    add("mxfp8_f32", "mxfp8", (4, 64), "F32", 87, zero_rows=[1], sets=sp(4, 64, "F32", []))
    return cases


def run(case, t, out):
    preset, comp = KIND[case["kind"]]
    args = preset_name_to_scheme(preset, ["Linear"]).weights
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    g = t.unflatten(-1, (t.shape[-1] // args.group_size, args.group_size))
    mn, mx = g.amin(-1), g.amax(-1)
    sd = {"weight": t}
    gs = None
    if args.strategy == "tensor_group":
        gs = generate_gparam(t.amin(), t.amax())
        sd["weight_global_scale"] = gs
    scale, zp = calculate_qparams(mn, mx, args, global_scale=gs)
    sd["weight_scale"] = scale.to(t.dtype)
    sd["weight_zero_point"] = zp
    c = comp.compress(sd, scheme)
    n = case["name"]
    for k, v in c.items():
        out[n + "." + k] = v
    dec = comp.decompress(dict(c), scheme)
    out[n + ".deq"] = dec["weight"].float().reshape(-1)
    out[n + ".deqdtype"] = torch.tensor([{torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}[dec["weight"].dtype]],
                                        dtype=torch.int32)


def main():
    out = {}
    cases = make_cases()
    for case in cases:
        t, h = ggq.tensor_of(case)
        case["fnv1a"] = "%016x" % h
        run(case, t, out)
    out = {k: v.contiguous() for k, v in out.items()}
    meta = {"cases": json.dumps(cases, separators=(",", ":")), "tools": json.dumps(ggq.versions()), "pyfloat": "[]"}
    save_file(out, os.path.join(OUT, "fp4.safetensors"), metadata=meta)
    print("fp4.safetensors: %d cases, %d tensors" % (len(cases), len(out)))


if __name__ == "__main__":
    sys.exit(main())
