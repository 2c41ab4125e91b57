"""finetune's outputs in the reference libraries (tools/compat-train.sh).

Usage: check-finetune.py MERGEKIT-C WORKDIR

On a synthetic llama (and qwen2) model made by `mergekit-c synth`, trained for a few steps on a
Debian text:
1. the full finetune's OUT loads in transformers with no missing or unexpected keys and runs
   (finite logits), and every tensor changed in training (its numerics are held to PyTorch's by
   the goldens of tests/golden/train/);
2. the --lora adapter folder loads in PEFT (no missing or unexpected adapter keys), and PEFT's
   merge_and_unload equals `mergekit-c lora apply` of it (max abs difference printed);
3. the --qlora adapter loads in PEFT the same way.
"""
import os
import subprocess
import sys
import warnings

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

MK, WORK = sys.argv[1], os.path.abspath(sys.argv[2])
TEXT = "/usr/share/common-licenses/Apache-2.0"
failures = []
warnings.filterwarnings("ignore")


def check(cond, what):
    print(("ok - " if cond else "FAIL - ") + what)
    if not cond:
        failures.append(what)


def run(*args):
    r = subprocess.run([MK, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"mergekit-c {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def load(path):
    model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, dtype=torch.float32)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    return model.eval(), bad


for arch in ("llama", "qwen2"):
    base = os.path.join(WORK, f"{arch}-base")
    run("synth", base, "--arch", arch, "--hidden", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
        "--intermediate", "176", "--vocab", "256", "--dtype", "float32", "--seed", "3", "-q")
    full = os.path.join(WORK, f"{arch}-full")
    run("finetune", base, TEXT, full, "--steps", "3", "--seq", "32", "--batch", "2", "--lr", "1e-3", "-q")
    model, bad = load(full)
    check(not bad, f"{arch}: the finetuned folder loads in transformers with no missing or unexpected keys {bad or ''}")
    with torch.no_grad():
        logits = model(torch.arange(1, 17).unsqueeze(0)).logits
    check(bool(torch.isfinite(logits).all()), f"{arch}: transformers runs it (logits finite)")
    trained = load_file(os.path.join(full, "model.safetensors"))
    before = load_file(os.path.join(base, "model.safetensors"))
    moved = sum(int(not torch.equal(trained[k], before[k])) for k in before)
    check(moved == len(before), f"{arch}: every tensor moved in training ({moved} of {len(before)})")

    for mode in ("lora", "qlora"):
        ad = os.path.join(WORK, f"{arch}-{mode}")
        extra = ["--qlora"] if mode == "qlora" else []
        run("finetune", base, TEXT, ad, "--steps", "3", "--seq", "32", "--batch", "2", "--lr", "1e-2", "--lora", "4",
            "--lora-alpha", "8", *extra, "-q")
        bm, _ = load(base)
        pm = PeftModel.from_pretrained(bm, ad)
        merged = pm.merge_and_unload().state_dict()
        applied_dir = os.path.join(WORK, f"{arch}-{mode}-applied")
        run("lora", "apply", base, ad, applied_dir, "-q")
        applied = load_file(os.path.join(applied_dir, "model.safetensors"))
        worst, name, compared, moved = 0.0, "", 0, 0
        base_sd = load_file(os.path.join(base, "model.safetensors"))
        for k, v in applied.items():
            if k not in merged:
                continue
            compared += 1
            moved += int(not torch.equal(v, base_sd[k]))
            d = (merged[k].float() - v.float()).abs().max().item()
            if d > worst:
                worst, name = d, k
        check(compared == len(base_sd) and moved > 0,
              f"{arch} {mode}: the adapter changes {moved} of {compared} tensors (of {len(base_sd)})")
        check(worst <= 1e-6, f"{arch} {mode}: PEFT's merge_and_unload equals `lora apply` (max abs diff {worst:.3g} at {name})")

print(f"{'FAIL' if failures else 'ok'}: finetune compat, {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
