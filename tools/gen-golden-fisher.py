#!/usr/bin/env python3
"""Regenerate tests/golden/fisher/ with PyTorch and transformers: the Fisher diagonal that
`quantize --sensitivity fisher` accumulates (train/fisher.h), with given labels.

Run from the repository root with the tools venv (tools/setup-venv.sh) after `make`:

    .venv-tools/bin/python tools/gen-golden-fisher.py

For each case a tiny random Llama from `mergekit-c synth` (bit-identical on every machine) is
loaded with transformers in float32 (eager attention); for W rows of T tokens ("tokens" I32
[W, T]) and a label per position ("targets" I32 [W, T]: position j predicts targets[r, j + 1])
each row's gradient g_r of sum_j NLL_j is taken alone, and
  CASE.fisher.NAME   F32   sum over rows of g_r^2 / (W * (T - 1)), for every parameter
is what mk_fisher_diag gives with those targets. MANIFEST.json records the synth commands, the
XXH3-128 of each model's weights and the tool versions. tests/unit/test_fisher.c compares.
"""
import importlib.metadata as md
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLD = os.path.join(ROOT, "tests", "golden", "fisher")
MK = os.path.join(ROOT, "mergekit-c")

VOCAB = 64
W, T = 3, 8
BASE = ["--arch", "llama", "--hidden", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--intermediate", "64",
        "--vocab", str(VOCAB), "--dtype", "float32", "--std", "0.2", "--max-position", "64", "--seed", "23"]
CASES = {"llama": [], "llama_tied": ["--tie"]}


_spec = importlib.util.spec_from_file_location("gen_golden_forward", os.path.join(ROOT, "tools", "gen-golden-forward.py"))
_fwd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fwd)
xxh128 = _fwd.xxh128  # the same digest the other goldens record


def fisher(path, tokens, targets):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    acc = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in model.named_parameters()}
    for r in range(W):
        model.zero_grad(set_to_none=True)
        logits = model(torch.tensor(tokens[r:r + 1], dtype=torch.long)).logits[0, :-1, :]
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(targets[r, 1:], dtype=torch.long), reduction="sum")
        nll.backward()
        for n, p in model.named_parameters():
            acc[n] += p.grad.detach().double() ** 2
    return {"fisher." + n: (a / (W * (T - 1))).numpy().astype(np.float32) for n, a in acc.items()}


def main():
    os.makedirs(GOLD, exist_ok=True)
    rng = np.random.default_rng(19)
    tokens = rng.integers(0, VOCAB, size=(W, T)).astype(np.int32)
    targets = rng.integers(0, VOCAB, size=(W, T)).astype(np.int32)
    tensors = {"tokens": tokens, "targets": targets}
    manifest = {"generator": "tools/gen-golden-fisher.py", "rows": W, "T": T, "cases": {}}
    with tempfile.TemporaryDirectory() as work:
        for name, extra in CASES.items():
            d = os.path.join(work, name)
            subprocess.run([MK, "synth", d, *BASE, *extra, "-q"], check=True)
            out = fisher(d, tokens, targets)
            for k, v in out.items():
                tensors[f"{name}.{k}"] = v
            manifest["cases"][name] = {"synth": ["synth", *BASE, *extra], "weights_xxh128": xxh128(os.path.join(d, "model.safetensors")),
                                       "params": sorted(k[7:] for k in out)}
            print(f"{name}: {len(out)} parameters, largest Fisher {max(float(v.max()) for v in out.values()):.4g}")
    save_file(tensors, os.path.join(GOLD, "fisher.safetensors"))
    manifest.update(versions={p: md.version(p) for p in ["torch", "transformers", "safetensors", "numpy"]},
                    python=platform.python_version())
    with open(os.path.join(GOLD, "MANIFEST.json"), "w") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")

if __name__ == "__main__":
    sys.exit(main())
