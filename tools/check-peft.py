#!/usr/bin/env python3
"""Check mergekit-c's LoRA adapters with PEFT itself (not part of `make test`).

1. `lora extract` adapters (bf16 and f32 models; plain, --modules, --embed-lora, --save-module
   with a module's path; and Qwen2 and
   GPT-2 models, whose q/k/v or Conv1D layers have biases that the adapter carries as PEFT's
   base_layer.bias, GPT-2's under PEFT's module paths "transformer.h...") load in PEFT with no
   missing or unexpected adapter keys;
2. each module's PEFT update (get_delta_weight) equals the best rank-k approximation of the
   true difference finetuned - base (truncated SVD in float64), and the energy share that
   `lora extract --json` reports equals sum(S[:k]^2) / sum(S^2);
3. PEFT's merge_and_unload of the extracted adapter equals `lora apply` of it;
4. a `lora combine` result loads in PEFT and merges to what `lora apply` gives (also two
   default Qwen2 / GPT-2 extractions combined by cat over their base).

Usage: .venv-tools/bin/python tools/check-peft.py   (after `make`); exits 1 on any failure.
"""
import json
import os
import subprocess
import sys
import tempfile
import warnings

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MK = os.path.join(ROOT, "mergekit-c")
SHAPE = "--hidden 64 --heads 4 --kv-heads 2 --intermediate 176 --vocab 128 --layers 2".split()
# GPT-2 has no grouped-query attention: as many key/value heads as heads
ARCH_SHAPE = {"qwen2": SHAPE, "gpt2": [("4" if x == "2" and SHAPE[i - 1] == "--kv-heads" else x) for i, x in enumerate(SHAPE)]}
DT = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# tolerances, named
# |PEFT update - best rank-k| / max |true delta|: float32 SVD (as mergekit's), and with
# near-equal singular values at the cut the rank-k subspace is sensitive to rounding
SVD_REL = {"float32": 5e-5, "bfloat16": 1e-2}
ENERGY_ABS = 1e-5                              # |reported energy share - float64 SVD's|

failures = []


def mk(*args, cwd):
    r = subprocess.run([MK, *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"mergekit-c {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def load(path, dt):
    return AutoModelForCausalLM.from_pretrained(path, dtype=DT[dt])


def peft_load(base_dir, adapter, dt):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(load(base_dir, dt), adapter)
    bad = [str(x.message) for x in w if "missing" in str(x.message).lower() or "unexpected" in str(x.message).lower()]
    return model, bad


def key_in(sd, name):
    """The key of `sd` for tensor `name`: itself, or under the other spelling GPT-2 checkpoints
    use (stored without the model's "transformer." prefix that PEFT's module paths carry)."""
    for k in (name, name.removeprefix("transformer."), "transformer." + name):
        if k in sd:
            return k
    return name


def same_as_apply(merged, ours):
    """Elements of our `lora apply` output that differ from PEFT's merge_and_unload."""
    return sum(int((merged[key_in(merged, k)] != ours[k]).sum()) for k in ours)


def extract_case(tmp, dt, name, opts, tag=None):
    tag = tag or dt
    base, ft = os.path.join(tmp, f"b-{tag}"), os.path.join(tmp, f"f-{tag}")
    ad = os.path.join(tmp, f"ad-{tag}-{name}")
    report = json.loads(mk("lora", "extract", base, ft, ad, "--json", "-q", *opts, cwd=tmp))
    kept = {m["module"]: (m["rank"], m["energy_kept"]) for m in report["modules"]}
    model, bad = peft_load(base, ad, dt)
    check(not bad, f"[{tag} {name}] PEFT loads the adapter with no missing/unexpected keys {bad[:1]}")
    bsd, fsd = load_file(os.path.join(base, "model.safetensors")), load_file(os.path.join(ft, "model.safetensors"))
    worst, worst_mod, worst_e = 0.0, None, 0.0
    n = 0
    for mod_name, module in model.base_model.model.named_modules():
        if not hasattr(module, "get_delta_weight") or "default" not in getattr(module, "scaling", {}):
            continue
        if mod_name not in kept:
            check(False, f"[{tag} {name}] PEFT has a LoRA layer {mod_name} that extract did not report")
            continue
        k, e_rep = kept[mod_name]
        got = module.get_delta_weight("default").double()
        w = key_in(fsd, mod_name + ".weight")
        true = fsd[w].double() - bsd[w].double()
        u, s, vh = torch.linalg.svd(true, full_matrices=False)
        best = (u[:, :k] * s[:k]) @ vh[:k]
        err = ((got - best).abs().max() / true.abs().max()).item()
        e = (s[:k].pow(2).sum() / s.pow(2).sum()).item() if s.pow(2).sum() > 0 else 1.0
        if err > worst:
            worst, worst_mod = err, mod_name
        worst_e = max(worst_e, abs(e - e_rep))
        n += 1
    check(n == len(kept), f"[{tag} {name}] {n} LoRA modules in PEFT, {len(kept)} extracted")
    check(worst <= SVD_REL[dt], f"[{tag} {name}] PEFT update vs best rank-k of the true delta: worst {worst:.3g} "
          f"of max|delta| ({worst_mod}); tolerance {SVD_REL[dt]}")
    check(worst_e <= ENERGY_ABS, f"[{tag} {name}] reported energy share vs float64 SVD: worst |diff| {worst_e:.3g}; "
          f"tolerance {ENERGY_ABS}")
    # PEFT's merge of our adapter == our apply of it
    merged = model.merge_and_unload().state_dict()
    out = os.path.join(tmp, f"ap-{tag}-{name}")
    mk("lora", "apply", base, ad, out, "-q", cwd=tmp)
    ours = load_file(os.path.join(out, "model.safetensors"))
    diff = same_as_apply(merged, ours)
    check(diff == 0, f"[{tag} {name}] PEFT merge_and_unload == mergekit-c lora apply ({diff} elements differ)")
    # the biases of LoRA layers come back as the finetune's, bit for bit
    biases = [k for k in fsd if k.endswith(".bias") and not torch.equal(bsd[k], fsd[k])]
    bad = [k for k in biases if not torch.equal(merged[key_in(merged, k)], fsd[k])]
    if biases:
        check(not bad, f"[{tag} {name}] PEFT's merge carries the {len(biases)} changed biases exactly {bad[:1]}")
    return ad


def arch_cases(tmp, dt):
    """Qwen2 (q/k/v biases) and GPT-2 (Conv1D, biases everywhere, module paths under
    "transformer."): extraction at full rank and by default, and two default extractions
    combined by cat over their base."""
    for arch, shape in ARCH_SHAPE.items():
        tag = f"{arch}-{dt}"
        mk("synth", f"b-{tag}", "--arch", arch, *shape, "--dtype", dt, "--seed", "5", "-q", cwd=tmp)
        mk("synth", f"f-{tag}", "--finetune-of", f"b-{tag}", "--delta", "0.05", "--seed", "6", "-q", cwd=tmp)
        mk("synth", f"g-{tag}", "--finetune-of", f"b-{tag}", "--delta", "0.05", "--seed", "7", "-q", cwd=tmp)
        extract_case(tmp, dt, "full", ["--rank", "64"], tag)
        a1 = extract_case(tmp, dt, "rank4", ["--rank", "4"], tag)
        a2 = os.path.join(tmp, f"ad-{tag}-g")
        mk("lora", "extract", f"b-{tag}", f"g-{tag}", a2, "--rank", "4", "-q", cwd=tmp)
        cb = os.path.join(tmp, f"cb-{tag}")
        mk("lora", "combine", a1, a2, cb, "--method", "cat", "--base", f"b-{tag}", "-q", cwd=tmp)
        combined_case(tmp, dt, tag, cb)


def combined_case(tmp, dt, tag, cb):
    model, bad = peft_load(os.path.join(tmp, f"b-{tag}"), cb, dt)
    check(not bad, f"[{tag}] PEFT loads a combined adapter with no missing/unexpected keys {bad[:1]}")
    merged = model.merge_and_unload().state_dict()
    mk("lora", "apply", f"b-{tag}", cb, f"cbm-{tag}", "-q", cwd=tmp)
    ours = load_file(os.path.join(tmp, f"cbm-{tag}", "model.safetensors"))
    diff = same_as_apply(merged, ours)
    check(diff == 0, f"[{tag}] combined adapter: PEFT merge == mergekit-c apply ({diff} elements differ)")


def main():
    if not os.access(MK, os.X_OK):
        sys.exit("build mergekit-c first (make)")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for dt in DT:
            mk("synth", f"b-{dt}", *SHAPE, "--dtype", dt, "--seed", "5", "-q", cwd=tmp)
            mk("synth", f"f-{dt}", "--finetune-of", f"b-{dt}", "--delta", "0.05", "--seed", "6", "-q", cwd=tmp)
            a1 = extract_case(tmp, dt, "rank8", ["--rank", "8"])
            extract_case(tmp, dt, "qv-rank3", ["--rank", "3", "--modules", "q_proj,v_proj"])
            extract_case(tmp, dt, "embed-lora", ["--rank", "5", "--embed-lora"])
            # one layer's q_proj saved whole by its path: PEFT wraps the other q_proj in LoRA
            extract_case(tmp, dt, "save-path", ["--rank", "3", "--save-module", "model.layers.0.self_attn.q_proj"])
            # combine: PEFT loads it, and its merge equals ours
            a2 = extract_case(tmp, dt, "qkv-no-embed", ["--rank", "4", "--modules", "q_proj,k_proj,v_proj",
                                                         "--exclude", "embed_tokens,lm_head", "--skip-undecomposable"])
            cb = os.path.join(tmp, f"cb-{dt}")
            mk("lora", "combine", a1, a2, cb, "--method", "svd", "--rank", "6", "--weights", "0.6,0.4", "-q", cwd=tmp)
            combined_case(tmp, dt, dt, cb)
            arch_cases(tmp, dt)
    print(f"{'all checks passed' if not failures else f'{len(failures)} check(s) failed'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
