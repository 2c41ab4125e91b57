#!/usr/bin/env python3
"""Golden outputs for the foundation merge tests, produced by mergekit itself.

Makes synthetic inputs with `mergekit-c synth` (bit-identical on every machine), runs
mergekit-yaml on each case's recipe, and stores the merged weights under
tests/golden/merge/<case>/expected.safetensors, with tests/golden/merge/manifest.txt recording
the synth commands, the inputs' XXH3-128 hashes and the tool versions.

Usage: .venv-tools/bin/python tools/gen-golden-merge.py   (after `make` and tools/setup-venv.sh)
"""
import os
import shutil
import subprocess
import sys
import tempfile

import xxhash

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MK = os.path.join(ROOT, "mergekit-c")
OUT = os.path.join(ROOT, "tests", "golden", "merge")
VENV_BIN = os.path.dirname(sys.executable)

# Sizes that are not powers of two, with grouped-query attention (6 heads, 2 kv heads).
SHAPE = "--hidden 48 --heads 6 --kv-heads 2 --intermediate 136 --vocab 100 --layers 3"
INPUTS = {
    "float32": [
        f"synth base/ {SHAPE} --dtype float32 --seed 11",
        "synth ft1/ --finetune-of base/ --delta 0.05 --seed 12",
        "synth ft2/ --finetune-of base/ --delta 0.05 --seed 13",
    ],
    "bfloat16": [
        f"synth base/ {SHAPE} --dtype bfloat16 --seed 11",
        "synth ft1/ --finetune-of base/ --delta 0.05 --seed 12",
        "synth ft2/ --finetune-of base/ --delta 0.05 --seed 13",
    ],
}

CASES = {
    # name: (input dtype, recipe)
    "linear_fp32": ("float32", """merge_method: linear
models:
  - model: base/
    parameters:
      weight: 0.2
  - model: ft1/
    parameters:
      weight: 0.4
  - model: ft2/
    parameters:
      weight: 0.4
"""),
    "linear_bf16": ("bfloat16", """merge_method: linear
models:
  - model: base/
    parameters:
      weight: 0.3
  - model: ft1/
    parameters:
      weight: 0.3
  - model: ft2/
    parameters:
      weight: 0.4
dtype: bfloat16
"""),
    "linear_gradient_filter": ("float32", """merge_method: linear
models:
  - model: base/
    parameters:
      weight: 0.3
  - model: ft1/
    parameters:
      weight:
        - filter: mlp
          value: [0.1, 0.9]
        - filter: self_attn
          value: [1.0, 0.5, 0.25]
        - value: 0.5
  - model: ft2/
    parameters:
      weight: [0.9, 0.1]
"""),
    "linear_unnormalized": ("float32", """merge_method: linear
models:
  - model: base/
    parameters:
      weight: 0.7
  - model: ft1/
    parameters:
      weight: 0.6
  - model: ft2/
    parameters:
      weight: -0.2
parameters:
  normalize: false
"""),
    "passthrough_scale": ("bfloat16", """merge_method: passthrough
models:
  - model: ft1/
    parameters:
      scale:
        - filter: o_proj
          value: 0.5
        - filter: down_proj
          value: 0.25
        - value: 1.0
"""),
}


def run(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True)


def versions():
    out = subprocess.run([os.path.join(VENV_BIN, "pip"), "freeze"], capture_output=True, text=True, check=True).stdout
    keep = ("mergekit==", "torch==", "transformers==", "safetensors==")
    return [l for l in out.splitlines() if l.startswith(keep)]


def main():
    if not os.access(MK, os.X_OK):
        sys.exit("build mergekit-c first (make)")
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    manifest = ["# Golden merge outputs made by tools/gen-golden-merge.py with:"]
    manifest += ["#   " + v for v in versions()]
    manifest.append("# inputs <dtype>: mergekit-c commands, then the XXH3-128 of each model.safetensors")
    hashes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dt, cmds in INPUTS.items():
            d = os.path.join(tmp, dt)
            os.makedirs(d)
            for c in cmds:
                run([MK] + c.split() + ["-q"], d)
            hashes[dt] = {}
            for m in ("base", "ft1", "ft2"):
                with open(os.path.join(d, m, "model.safetensors"), "rb") as f:
                    hashes[dt][m] = xxhash.xxh3_128_hexdigest(f.read())
            for c in cmds:
                manifest.append(f"synth {dt} {c}")
            for m, h in hashes[dt].items():
                manifest.append(f"input {dt} {m}/model.safetensors {h}")
        for name, (dt, recipe) in CASES.items():
            d = os.path.join(tmp, dt)
            case_dir = os.path.join(OUT, name)
            os.makedirs(case_dir)
            with open(os.path.join(case_dir, "recipe.yaml"), "w") as f:
                f.write(recipe)
            out = os.path.join(tmp, "out-" + name)
            run([os.path.join(VENV_BIN, "mergekit-yaml"), os.path.join(case_dir, "recipe.yaml"), out, "--quiet"], d)
            shutil.copy(os.path.join(out, "model.safetensors"), os.path.join(case_dir, "expected.safetensors"))
            manifest.append(f"case {name} {dt}")
    with open(os.path.join(OUT, "manifest.txt"), "w") as f:
        f.write("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
