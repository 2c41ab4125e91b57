#!/usr/bin/env python3
"""Regenerate tests/golden/methods/ with mergekit itself (the reference tool).

Run from the repository root with the tools venv (tools/setup-venv.sh) after `make`:

    .venv-tools/bin/python tools/gen-golden-methods.py [--only RECIPE] [--venv DIR]

For every configuration (a model shape and a dtype) it writes synthetic models with
`mergekit-c synth` (bit-identical on every machine), runs mergekit-yaml on each golden
recipe in tests/golden/methods/recipes/ and keeps the merged model.safetensors as
tests/golden/methods/<config>/<recipe>.safetensors. MANIFEST.json records the synth
commands, the SHA-256 of every input, the tool versions and each golden's hash; the
end-to-end test tests/e2e/methods_golden.sh regenerates the inputs, checks their hashes
against the manifest, runs mergekit-c and compares.

Ties at a magnitude cut: mergekit selects the top-k with torch.argsort / torch.sort /
torch.topk, which are not stable on CPU, so which of several equal magnitudes survive is
arbitrary. mergekit-c keeps the lower flat index. For the methods that cut by magnitude
this script runs mergekit with those three functions made stable (same math, defined tie
order), and records how many elements the unpatched mergekit output differs in.
"""
import argparse
import hashlib
import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLD = os.path.join(ROOT, "tests", "golden", "methods")
RECIPES = os.path.join(GOLD, "recipes")
MK = os.path.join(ROOT, "mergekit-c")

SHAPES = {
    # sizes that are not powers of two, grouped-query attention, q/k/v biases, 3 layers
    "gqa": ["--arch", "qwen2", "--hidden", "48", "--heads", "6", "--kv-heads", "2", "--intermediate", "40",
            "--vocab", "72", "--layers", "3"],
    # powers of two, plain multi-head attention
    "pow2": ["--arch", "llama", "--hidden", "32", "--heads", "4", "--kv-heads", "4", "--intermediate", "64",
             "--vocab", "32", "--layers", "2"],
}
VOCAB_EXTRA = 16
DTYPES = ["float32", "bfloat16"]
# finetunes of base: (name, synth options)
FINETUNES = [
    ("ft1", ["--delta", "0.05", "--seed", "2"]),
    ("ft2", ["--delta", "0.05", "--density", "0.6", "--seed", "3"]),
    ("ft3", ["--delta", "0.08", "--density", "0.3", "--seed", "4"]),
    ("ft4", ["--delta", "0.005", "--seed", "5"]),
    # far from base: arcee_fusion's KL divergences are sums of tiny terms whose float32
    # rounding decides which side of the threshold an entry falls; large changes make
    # them well conditioned
    ("ft5", ["--delta", "1.5", "--seed", "6"]),
]
CORE = ["linear", "slerp", "nuslerp", "multislerp", "karcher", "task_arithmetic", "ties", "breadcrumbs",
        "breadcrumbs_ties", "model_stock", "sce", "nearswap", "arcee_fusion", "ram", "ramplus_tl",
        "passthrough_slices", "linear_slices"]
# variants: recipe -> configurations
VARIANTS = {
    "nuslerp_rows": ["pow2-float32"],
    "nuslerp_cols": ["pow2-float32"],
    "multislerp_nobase": ["pow2-float32"],
    "model_stock_filter_wise": ["pow2-float32"],
    "sce_topk": ["pow2-float32", "pow2-bfloat16"],
    "slerp_near": ["pow2-float32"],
    "ties_rescale": ["pow2-float32"],
    "linear_dtype": ["pow2-bfloat16"],
    "ties_bf16compute": ["pow2-float32"],
    "vocab": ["gqa-float32", "gqa-bfloat16"],
    "model_stock_f16": ["pow2-float32"],
    "multislerp_f16": ["pow2-float32"],
    "slerp_slices": ["pow2-float32", "pow2-bfloat16"],
}
# recipes whose result depends on the order of equal magnitudes at a cut
TIE_SENSITIVE = {"ties", "breadcrumbs", "breadcrumbs_ties", "sce_topk", "ties_rescale", "ties_bf16compute"}
EXTRA_FLAGS = {"vocab": ["--unsafe-truncate-embeddings"]}

STABLE_RUNNER = r"""
import sys, torch
_argsort, _sort, _topk = torch.argsort, torch.sort, torch.topk
def argsort(input, dim=-1, descending=False, stable=False):
    return _argsort(input, dim=dim, descending=descending, stable=True)
def sort(input, dim=-1, descending=False, stable=None, **kw):
    return _sort(input, dim=dim, descending=descending, stable=True)
def topk(input, k, dim=-1, largest=True, sorted=True, **kw):
    idx = _argsort(input, dim=dim, descending=largest, stable=True).narrow(dim, 0, k)
    return torch.return_types.topk((input.gather(dim, idx), idx))
torch.argsort, torch.sort, torch.topk = argsort, sort, topk
from mergekit.scripts.run_yaml import main
sys.argv = ["mergekit-yaml"] + sys.argv[1:]
main()
"""


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(cmd, cwd=None, env=None):
    r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-4000:]}")
    return r.stdout


def synth_commands(shape, dtype):
    base = ["synth", "base/"] + SHAPES[shape] + ["--dtype", dtype, "--seed", "1", "-q"]
    cmds = [base]
    for name, opts in FINETUNES:
        cmds.append(["synth", f"{name}/", "--finetune-of", "base/"] + opts + ["-q"])
    big = list(SHAPES[shape])
    v = big.index("--vocab")
    big[v + 1] = str(int(big[v + 1]) + VOCAB_EXTRA)
    cmds.append(["synth", "bigvocab/"] + big + ["--dtype", dtype, "--seed", "9", "-q"])
    return cmds


def count_diff(a, b):
    from safetensors.torch import load_file
    ta, tb = load_file(a), load_file(b)
    return sum(int((ta[k].float() != tb[k].float()).sum()) for k in ta)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="regenerate only this recipe")
    ap.add_argument("--venv", default=os.path.dirname(os.path.dirname(sys.executable)))
    args = ap.parse_args()
    mergekit_yaml = os.path.join(args.venv, "bin", "mergekit-yaml")
    python = os.path.join(args.venv, "bin", "python")
    if not os.access(MK, os.X_OK):
        sys.exit("build mergekit-c first (make)")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    manifest_path = os.path.join(GOLD, "MANIFEST.json")
    old = json.load(open(manifest_path)) if os.path.exists(manifest_path) and args.only else None
    manifest = {
        "generator": "tools/gen-golden-methods.py",
        "tools": {p: md.version(p) for p in ["mergekit", "torch", "transformers", "safetensors", "numpy"]},
        "python": platform.python_version(),
        "mergekit_flags": ["--no-write-model-card", "--no-copy-tokenizer"],
        "tie_rule": "torch.argsort/sort/topk made stable: equal magnitudes at a cut ordered by flat index, lower first",
        "configs": {},
        "goldens": old["goldens"] if old else {},
    }
    work = tempfile.mkdtemp(prefix="mk-golden-")
    try:
        for shape in SHAPES:
            for dtype in DTYPES:
                cfg = f"{shape}-{dtype}"
                d = os.path.join(work, cfg)
                os.makedirs(d)
                cmds = synth_commands(shape, dtype)
                for c in cmds:
                    run([MK] + c, cwd=d)
                inputs = {}
                for name in ["base"] + [f for f, _ in FINETUNES] + ["bigvocab"]:
                    inputs[name] = sha256(os.path.join(d, name, "model.safetensors"))
                manifest["configs"][cfg] = {"synth": [" ".join(["mergekit-c"] + c) for c in cmds], "inputs": inputs}
                os.makedirs(os.path.join(GOLD, cfg), exist_ok=True)
                # the same facts in shell-friendly form for tests/e2e/methods_golden.sh
                with open(os.path.join(GOLD, cfg, "synth.txt"), "w") as f:
                    f.write("".join(" ".join(c) + "\n" for c in cmds))
                with open(os.path.join(GOLD, cfg, "inputs.sha256"), "w") as f:
                    f.write("".join(f"{h}  {n}/model.safetensors\n" for n, h in sorted(inputs.items())))
                todo = [r for r in CORE] + [r for r, cs in VARIANTS.items() if cfg in cs]
                for recipe in todo:
                    if args.only and recipe != args.only:
                        continue
                    rpath = os.path.join(RECIPES, recipe + ".yaml")
                    out = os.path.join(d, "out-" + recipe)
                    flags = manifest["mergekit_flags"] + EXTRA_FLAGS.get(recipe, [])
                    entry = {"recipe": os.path.relpath(rpath, ROOT), "recipe_sha256": sha256(rpath), "flags": flags}
                    if recipe in TIE_SENSITIVE:
                        run([python, "-c", STABLE_RUNNER, rpath, out] + flags, cwd=d, env=env)
                        raw = out + "-unstable"
                        run([mergekit_yaml, rpath, raw] + flags, cwd=d, env=env)
                        entry["stable_sort"] = True
                        entry["unstable_sort_differing_elements"] = count_diff(
                            os.path.join(out, "model.safetensors"), os.path.join(raw, "model.safetensors"))
                    else:
                        run([mergekit_yaml, rpath, out] + flags, cwd=d, env=env)
                    src = os.path.join(out, "model.safetensors")
                    dst = os.path.join(GOLD, cfg, recipe + ".safetensors")
                    shutil.copyfile(src, dst)
                    entry["sha256"] = sha256(dst)
                    cfgjson = json.load(open(os.path.join(out, "config.json")))
                    entry["num_hidden_layers"] = cfgjson.get("num_hidden_layers")
                    manifest["goldens"][f"{cfg}/{recipe}"] = entry
                    print(f"{cfg}/{recipe}: {os.path.getsize(dst)} bytes", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
