#!/usr/bin/env python3
"""Decompress mergekit-c's mixed-precision checkpoints (`quantize --target-bpw`) with
compressed-tensors' own per-module machinery, on the CPU.

    check-alloc-load.py WORKDIR NAME...

WORKDIR/q-NAME is the mixed checkpoint and WORKDIR/d-NAME its `mergekit-c dequantize`
output. compressed-tensors assigns each Linear its scheme from the config groups' targets and
"ignore" (apply_quantization_config on the model built from config.json: exact names first,
as in compressed_tensors.utils.match), then each module's stored tensors are decompressed by
the compressor its scheme's format names (BaseCompressor registry, `decompress` of one
module's state dict). Checks, per NAME: every Linear the checkpoint stores quantized tensors
for gets a scheme and no other does; its scheme's format and num_bits fit what is stored;
every decompressed weight equals d-NAME's bit for bit; the model with those weights gives
the same logits as d-NAME loaded as a plain model.

transformers' own loader (CompressedTensorsConfig(run_compressed=False), transformers as
installed in the tools venv) decompresses every dense module with one config group's scheme
(get_dense_scheme), so it cannot load dense layers whose groups differ; this script does what
compressed-tensors itself does per module instead.

Prints one line per check and exits 1 if any fails.
"""
import importlib.util
import json
import os
import sys

import torch

# report() and the failure count: the single-format checks' (tools/check-quant-load.py)
_spec = importlib.util.spec_from_file_location("check_quant_load", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                                "check-quant-load.py"))
cql = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cql)
report = cql.report


def tensors(path):
    from safetensors.torch import load_file
    out = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            out.update(load_file(os.path.join(path, f)))
    return out


def check(q, d, name):
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from transformers import AutoConfig, AutoModelForCausalLM
    with open(os.path.join(q, "config.json")) as fh:
        qc = json.load(fh)["quantization_config"]
    cfg = QuantizationConfig.model_validate(qc)
    hf = AutoConfig.from_pretrained(d)
    torch.manual_seed(0)
    skel = AutoModelForCausalLM.from_config(hf, dtype=torch.bfloat16)
    apply_quantization_config(skel, cfg, show_progress=False)
    stored, want = tensors(q), tensors(d)
    quantized = {k.rsplit(".", 1)[0] for k in stored if k.endswith(".weight_scale")}
    schemed = {n for n, m in skel.named_modules() if getattr(m, "quantization_scheme", None) is not None}
    report(schemed == quantized, "%s: compressed-tensors assigns a scheme to exactly the %d modules stored quantized" % (name, len(quantized)),
           "extra %s, missing %s" % (sorted(schemed - quantized)[:3], sorted(quantized - schemed)[:3]))
    bad, n, worst, per = 0, 0, "", {}
    dec = {}
    for mn, mod in skel.named_modules():
        scheme = getattr(mod, "quantization_scheme", None)
        if scheme is None:
            continue
        local = {k[len(mn) + 1:]: v for k, v in stored.items() if k.startswith(mn + ".") and "." not in k[len(mn) + 1:]}
        comp = BaseCompressor.get_value_from_registry(scheme.format or cfg.format)
        w = comp.decompress(local, scheme)["weight"]
        key = mn + ".weight"
        per[scheme.format + "/%d" % scheme.weights.num_bits] = per.get(scheme.format + "/%d" % scheme.weights.num_bits, 0) + 1
        n += 1
        ref = want[key]
        if w.shape != ref.shape or not torch.equal(w.to(ref.dtype), ref):
            bad += 1
            diff = (w.float().reshape(-1) - ref.float().reshape(-1)).abs() if w.numel() == ref.numel() else torch.tensor([float("inf")])
            worst = "%s: %d of %d differ, max %g" % (key, int((diff > 0).sum()), ref.numel(), float(diff.max()))
        dec[key] = w.to(ref.dtype)
    report(bad == 0 and n == len(quantized), "%s: compressed-tensors decompresses all %d quantized weights (%s) to mergekit-c's dequantize output "
           "bit for bit" % (name, n, ", ".join("%s x%d" % kv for kv in sorted(per.items()))), worst)
    # logits: the decompressed weights in a plain model against d-NAME
    plain = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).eval()
    mixed = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).eval()
    sd = mixed.state_dict()
    for k, v in dec.items():
        sd[k].copy_(v)
    ids = torch.randint(0, hf.vocab_size, (2, 48))
    with torch.no_grad():
        a, b = plain(ids).logits.float(), mixed(ids).logits.float()
    report(torch.equal(a, b), "%s: logits with compressed-tensors' weights equal the dequantized model's (max |diff| %.3g)" %
           (name, float((a - b).abs().max())))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    work, names = sys.argv[1], sys.argv[2:]
    for name in names:
        check(os.path.join(work, "q-" + name), os.path.join(work, "d-" + name), name)
    print("%d failed" % cql.failures)
    sys.exit(1 if cql.failures else 0)


if __name__ == "__main__":
    main()
