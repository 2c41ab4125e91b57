#!/usr/bin/env python3
"""Golden outputs for mergekit-c's ternary (BitNet b1.58) quantizer, packed by transformers.

    TORCHDYNAMO_DISABLE=1 .venv-tools/bin/python tools/gen-golden-ternary.py

writes tests/golden/quant/ternary.safetensors: small awkward tensors (rows not a multiple
of 4, a zero tensor, huge and tiny magnitudes, values on rounding ties; f32, bf16 and f16)
with, per case CASE:
  CASE.input         the weight (its own dtype)
  CASE.weight        U8 [ceil(rows / 4), cols]: transformers' pack_weights of the codes
  CASE.weight_scale  [1] in the weight's dtype: 1 / max(mean |W|, 1e-5), rounded to it
  CASE.deq           F32: dt(code / weight_scale), what BitLinear computes with

The rule (docs/quantization.md, quant/ternary.h) is BitNet b1.58's absmean rule as
transformers' WeightQuant writes it: scale = 1 / mean|W|.clamp(min=1e-5), codes
round(W * scale).clamp(-1, 1). Two choices of ours are spelt out here: the mean is summed
exactly (math.fsum) and rounded to f32, and the codes are made with the scale as stored in
the weight's dtype (so that the stored checkpoint reproduces them). For f32 cases the script
checks the dequantized values against WeightQuant itself (they differ only for "huge", where
WeightQuant's f32 sum overflows and gives NaN; ours is summed in double), and every case's
packed bytes against unpack_weights. tests/unit/test_ternary.c compares our bytes exactly.
"""
import json
import math
import os

import numpy as np
import torch
from safetensors.torch import save_file

import transformers
from transformers.integrations.bitnet import WeightQuant, pack_weights, unpack_weights

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "golden", "quant", "ternary.safetensors")


def cases():
    g = torch.Generator().manual_seed(19)
    n = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    ties = torch.tensor([[0.5, -0.5, 1.5, -1.5], [-1.5, 1.5, -0.5, 0.5], [0.5, 1.5, -0.5, -1.5], [1.5, -0.5, 0.5, -1.5]])
    huge = n(8, 6) * 1e30
    huge[3, 2] = 3.0e38
    huge[5, 1] = -2.5e38
    return [
        ("odd5x7", n(5, 7)),
        ("rows9_bf16", (n(9, 12) * 0.02).to(torch.bfloat16)),
        ("rows6_f16", (n(6, 10) * 0.05).to(torch.float16)),
        ("one_row", n(1, 5)),
        ("zeros", torch.zeros(4, 8)),
        ("huge", huge),
        ("tiny", n(3, 5) * 1e-20),
        ("tiny_bf16", (n(4, 3) * 1e-7).to(torch.bfloat16)),
        ("ties", ties),
        ("wide_bf16", (n(12, 40) * 0.03).to(torch.bfloat16)),
    ]


def quantize(w):
    dt = w.dtype
    x = w.float()
    mean = np.float32(math.fsum(abs(float(v)) for v in x.flatten().tolist()) / x.numel())
    mean = max(mean, np.float32(1e-5))
    scale = np.float32(1.0) / mean
    if dt == torch.float16 and scale >= 65520.0:
        scale = np.float32(65504.0)  # our documented choice: float16 cannot hold 1 / 1e-5
    stored = torch.tensor([float(scale)], dtype=torch.float32).to(dt)
    s = stored.float()
    q = (x * s).round().clamp(-1, 1)
    return q, stored, s


def main():
    out, report = {}, {}
    for name, w in cases():
        q, stored, s = quantize(w)
        packed = pack_weights(q.clone())
        assert packed.dtype == torch.uint8 and packed.shape == ((w.shape[0] + 3) // 4, w.shape[1])
        back = unpack_weights(packed, torch.float32)[: w.shape[0]]
        assert torch.equal(back, q), name
        deq = (back / s).to(w.dtype).float()  # the unpacked codes (a code 0 is +0.0, as BitLinear sees it)
        mism = None
        if w.dtype == torch.float32:
            ref = WeightQuant.apply(w.clone())
            mism = int((ref != deq).sum())
        report[name] = {"shape": list(w.shape), "dtype": str(w.dtype), "scale": float(stored.float()), "weightquant_mismatches": mism}
        out[name + ".input"] = w.contiguous()
        out[name + ".weight"] = packed.contiguous()
        out[name + ".weight_scale"] = stored.contiguous()
        out[name + ".deq"] = deq.contiguous()
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    save_file(out, OUT, metadata={"tools": json.dumps(versions), "cases": json.dumps(report)})
    for k, v in report.items():
        print(k, v)
    print("wrote", OUT, versions)


if __name__ == "__main__":
    main()
