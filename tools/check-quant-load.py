#!/usr/bin/env python3
"""Load mergekit-c's quantized checkpoints where people load them, on the CPU.

    check-quant-load.py ORIGINAL WORKDIR NAME...

For each NAME, WORKDIR/q-NAME is `mergekit-c quantize ORIGINAL ...` and WORKDIR/d-NAME is
`mergekit-c dequantize WORKDIR/q-NAME` (in the original dtype). Checks:

  bitsandbytes layouts (nf4, fp4, int8): transformers loads q-NAME with its bitsandbytes
    integration (the weights are not quantized again: they are read as saved); each
    Linear's weight, dequantized by bitsandbytes itself, equals d-NAME's (bit for bit); the
    logits of q-NAME match those of d-NAME loaded as a plain model, as closely as for
    bitsandbytes' own quantization of ORIGINAL (its CPU kernels run their own matmul, and
    LLM.int8 also quantizes the activations): relative L2 difference at most 1.25x that gap
    + 0.001. Quantizing itself moves the logits by 2 % (8-bit) to 30 % (4-bit) on this
    model, printed as "#".
  compressed-tensors layouts (int4, int8-ct, fp8, fp8-e5m2, nvfp4, mxfp4, mxfp8): transformers loads q-NAME
    with CompressedTensorsConfig(run_compressed=False), i.e. compressed-tensors'
    decompressor; every decompressed weight equals d-NAME's bit for bit, and so do the logits.
  nvfp4, mxfp4, mxfp8 also: compressed-tensors itself quantizes ORIGINAL with the NVFP4A16 /
    MXFP4A16 / MXFP8A16 weight settings (apply_quantization_config, llm-compressor's min/max
    observer in the weight's dtype, ModelCompressor); its stored tensors equal q-NAME's byte
    for byte and its quantization_config equals ours.

Prints one line per check and exits 1 if any fails.
"""
import json
import os
import sys

import torch

failures = 0


def report(ok, what, detail=""):
    global failures
    print(("ok - " if ok else "not ok - ") + what + ((": " + detail) if detail else ""))
    failures += 0 if ok else 1


def plain(path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.float()


def weights_of(model):
    return {k: v for k, v in model.state_dict().items() if k.endswith(".weight")}


def bnb_dequantized(m):
    """{module name: its weight as bitsandbytes dequantizes it (bf16)}"""
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    out = {}
    for mod_name, mod in m.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            out[mod_name] = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state).to(torch.bfloat16)
        elif isinstance(mod, bnb.nn.Linear8bitLt):
            scb = mod.weight.SCB if getattr(mod.weight, "SCB", None) is not None else mod.state.SCB
            out[mod_name] = F.int8_vectorwise_dequant(mod.weight.data, scb).to(torch.bfloat16)
    return out


def kernel_gap(orig, qcfg, ids):
    """How far bitsandbytes' own kernels move the logits from a plain model holding the same
    dequantized weights, for bitsandbytes' own quantization of the original model."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    cfg = BitsAndBytesConfig.from_dict(dict(qcfg))
    m = AutoModelForCausalLM.from_pretrained(orig, quantization_config=cfg, device_map="cpu").eval()
    p = plain(orig)
    sd = p.state_dict()
    for k, w in bnb_dequantized(m).items():
        sd[k + ".weight"] = w
    p.load_state_dict(sd)
    a, b = logits(m, ids), logits(p, ids)
    return float((a - b).norm() / b.norm())


def check_bnb(name, q, d, ids, orig):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(q, device_map="cpu").eval()
    ref = plain(d)
    ref_w = weights_of(ref)
    n_q = bad = 0
    worst = ""
    for mod_name, w in bnb_dequantized(m).items():
        n_q += 1
        want = ref_w[mod_name + ".weight"]
        if not torch.equal(w, want):
            bad += 1
            diff = (w.float() - want.float()).abs()
            worst = "%s: %d of %d differ, max %g" % (mod_name, int((diff > 0).sum()), w.numel(), float(diff.max()))
    report(n_q > 0 and bad == 0, "%s: transformers+bitsandbytes reads %d quantized Linear layers; each dequantizes to mergekit-c's "
           "dequantize output bit for bit" % (name, n_q), worst)
    got, want = logits(m, ids), logits(ref, ids)
    rel = float((got - want).norm() / want.norm())
    with open(os.path.join(q, "config.json")) as fh:
        gap = kernel_gap(orig, json.load(fh)["quantization_config"], ids)
    tol = 1.25 * gap + 1e-3
    report(rel <= tol, "%s: logits of the bitsandbytes model vs the dequantized model: relative L2 difference %.4f; bitsandbytes' "
           "own quantization of the same model shows %.4f (tolerance 1.25x that + 0.001 = %.4f)" % (name, rel, gap, tol))
    return got


def check_ct(name, q, d, ids):
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig
    m = AutoModelForCausalLM.from_pretrained(q, dtype=torch.bfloat16,
                                             quantization_config=CompressedTensorsConfig(run_compressed=False)).eval()
    ref = plain(d)
    got_w, ref_w = weights_of(m), weights_of(ref)
    with open(os.path.join(q, "config.json")) as fh:
        ignore = set(json.load(fh)["quantization_config"]["ignore"])
    n = bad = 0
    worst = ""
    for k, want in ref_w.items():
        if k not in got_w:
            bad += 1
            worst = k + " missing"
            continue
        n += 1
        if not torch.equal(got_w[k].to(want.dtype), want):
            bad += 1
            diff = (got_w[k].float() - want.float()).abs()
            worst = "%s: %d of %d differ, max %g" % (k, int((diff > 0).sum()), want.numel(), float(diff.max()))
    report(bad == 0, "%s: compressed-tensors decompresses all %d weights (%d modules ignored) to mergekit-c's dequantize output "
           "bit for bit" % (name, n, len(ignore)), worst)
    got, want = logits(m, ids), logits(ref, ids)
    report(torch.equal(got, want), "%s: logits equal those of the dequantized model (max |diff| %.3g)" % (name, float((got - want).abs().max())))
    return got


PRESETS = {"nvfp4": "NVFP4A16", "mxfp4": "MXFP4A16", "mxfp8": "MXFP8A16"}


def check_ct_same(name, orig, q, work):
    """compressed-tensors' own compression of ORIGINAL against q-NAME."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (QuantizationConfig, QuantizationScheme, apply_quantization_config,
                                                 preset_name_to_scheme)
    from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(orig, dtype=torch.bfloat16)
    w = preset_name_to_scheme(PRESETS[name], ["Linear"]).weights
    with open(os.path.join(q, "config.json")) as fh:
        ours = json.load(fh)["quantization_config"]
    apply_quantization_config(m, QuantizationConfig(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=w)},
                                                    ignore=ours["ignore"]))
    for _, mod in m.named_modules():
        if getattr(mod, "quantization_scheme", None) is None:
            continue
        x = mod.weight.data
        gs = None
        if w.strategy == "tensor_group":
            gs = generate_gparam(x.amin(), x.amax())
            mod.weight_global_scale.data = gs
        g = x.unflatten(-1, (x.shape[-1] // w.group_size, w.group_size))
        sc, _ = calculate_qparams(g.amin(-1), g.amax(-1), w, global_scale=gs)
        mod.weight_scale.data = sc.to(mod.weight_scale.dtype).reshape(mod.weight_scale.shape)
    mc = ModelCompressor.from_pretrained_model(m, None)
    mc.compress_model(m)
    out = os.path.join(work, "ct-" + name)
    m.save_pretrained(out)
    mc.update_config(out)
    with open(os.path.join(out, "config.json")) as fh:
        ref = json.load(fh)["quantization_config"]
    a, b = load_file(os.path.join(out, "model.safetensors")), load_file(os.path.join(q, "model.safetensors"))

    def raw(t):
        return t.contiguous().view(torch.uint8)
    bad = sorted(k for k in set(a) | set(b) if k not in a or k not in b or a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
                 or not torch.equal(raw(a[k]), raw(b[k])))
    report(not bad, "%s: compressed-tensors' own compression of the model stores the same %d tensors, byte for byte" % (name, len(a)),
           ", ".join(bad[:4]))
    report(ref == ours, "%s: and writes the same quantization_config" % name)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    orig, work, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    torch.manual_seed(0)
    base = plain(orig)
    ids = torch.randint(0, base.config.vocab_size, (2, 48))
    base_logits = logits(base, ids)
    for name in names:
        q, d = os.path.join(work, "q-" + name), os.path.join(work, "d-" + name)
        with open(os.path.join(q, "config.json")) as fh:
            method = json.load(fh)["quantization_config"]["quant_method"]
        got = check_bnb(name, q, d, ids, orig) if method == "bitsandbytes" else check_ct(name, q, d, ids)
        if name in PRESETS:
            check_ct_same(name, orig, q, work)
        rel = float((got - base_logits).norm() / base_logits.norm())
        print("# %s: logits vs the unquantized model: relative L2 difference %.4f" % (name, rel))
    print("%d failed" % failures)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
