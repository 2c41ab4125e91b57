#!/usr/bin/env python3
"""Load mergekit-c's ternary (BitNet) checkpoint with transformers, on the CPU.

    check-ternary-load.py ORIGINAL QUANTIZED DEQUANTIZED

QUANTIZED is `mergekit-c quantize ORIGINAL --format ternary`, DEQUANTIZED its
`mergekit-c dequantize`. Checks:
  - transformers loads QUANTIZED with its BitNet quantizer (quantization_config
    quant_method "bitnet"): every quantized Linear becomes a BitLinear and what
    modules_to_not_convert names (lm_head) stays an nn.Linear;
  - each BitLinear's weights, unpacked by transformers' unpack_weights and divided by its
    weight_scale (what BitLinear computes with), equal DEQUANTIZED's bit for bit;
  - every other tensor equals DEQUANTIZED's;
  - a forward pass runs and its logits are finite. BitLinear also quantizes activations to
    int8, so the logits are not compared with ORIGINAL's: the relative L2 gap to
    DEQUANTIZED loaded as a plain model (same weights, float activations) and to ORIGINAL
    are printed as "#".
Run with TORCHDYNAMO_DISABLE=1 (BitLinear's helpers are torch.compile'd). Exits 1 on failure.
"""
import sys

import torch
from transformers import AutoModelForCausalLM
from transformers.integrations.bitnet import BitLinear, unpack_weights

failures = 0


def report(ok, what, detail=""):
    global failures
    print(("ok - " if ok else "not ok - ") + what + ((": " + detail) if detail else ""))
    failures += 0 if ok else 1


def main():
    orig_p, q_p, d_p = sys.argv[1:4]
    q = AutoModelForCausalLM.from_pretrained(q_p).eval()
    d = AutoModelForCausalLM.from_pretrained(d_p).eval()
    o = AutoModelForCausalLM.from_pretrained(orig_p).eval()
    dw = d.state_dict()
    bit = {n: m for n, m in q.named_modules() if isinstance(m, BitLinear)}
    report(len(bit) > 0, "transformers made BitLinear modules", "%d" % len(bit))
    report(isinstance(q.lm_head, torch.nn.Linear) and not isinstance(q.lm_head, BitLinear), "lm_head stays nn.Linear")
    worst = None
    for n, m in bit.items():
        w = unpack_weights(m.weight, torch.float32)[: m.out_features]
        v = (w / m.weight_scale.float()).to(m.dtype)
        ref = dw[n + ".weight"]
        if not torch.equal(v.view(torch.int16 if v.element_size() == 2 else torch.int32),
                           ref.view(torch.int16 if ref.element_size() == 2 else torch.int32)):
            k = int((v.float() != ref.float()).flatten().nonzero()[0]) if (v.float() != ref.float()).any() else -1
            worst = "%s: element %d is %r, dequantize gives %r" % (n, k, float(v.flatten()[k]), float(ref.flatten()[k]))
            break
    report(worst is None, "BitLinear weights / weight_scale equal `mergekit-c dequantize` bit for bit", worst or "%d weights" % len(bit))
    qs = q.state_dict()
    others = [k for k in dw if not any(k == n + ".weight" for n in bit)]
    bad = [k for k in others if k in qs and not torch.equal(qs[k], dw[k])]
    report(not bad and all(k in qs for k in others), "the unquantized tensors equal dequantize's", ", ".join(bad[:3]))
    ids = torch.arange(1, 65).reshape(2, 32) % q.config.vocab_size
    with torch.no_grad():
        lq, ld, lo = (m(ids).logits.float() for m in (q, d, o))
    report(bool(torch.isfinite(lq).all()), "BitLinear forward pass: finite logits", str(tuple(lq.shape)))
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    print("# logits, relative L2: BitLinear vs dequantized (int8 activations) %.4f; vs the original model %.4f" % (rel(lq, ld), rel(lq, lo)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
