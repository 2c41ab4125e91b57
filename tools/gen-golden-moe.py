#!/usr/bin/env python3
"""Golden outputs for `mergekit-c moe`, produced by mergekit-moe itself (tools venv).

Makes small synthetic models with `mergekit-c synth` (bit-identical on every machine): llama
experts for Mixtral, qwen3 experts for Qwen3-MoE, qwen2 experts (and a shared expert) for
Qwen2-MoE. For each case it runs mergekit-moe's `main` in this process after
torch.manual_seed(SEED) (mergekit-moe draws its random gates from torch's default generator,
which torch seeds at random in each process; `mergekit-c moe --seed SEED` draws the same
values), then stores under tests/golden/moe/<case>/:
  config.yaml       the mergekit-moe config (models named base/, e1/, ... as the test makes them)
  args              the mergekit-c moe options (the seed)
  hashes.txt        name, dtype, shape and XXH3-128 of the bytes of every output tensor
  routers.safetensors  the router tensors (mlp.gate, shared_expert_gate) themselves
  config.json       mergekit-moe's config.json
  ppl.json          (deterministic cases) transformers' perplexity of mergekit-moe's model (with
                    the base model's tokenizer files) on text.txt, as `mergekit-c eval` windows
                    it (tools/check-ppl.py --golden)
tests/golden/moe/legacy_mixtral/ holds a tiny Mixtral in the per-expert layout of real Mixtral
checkpoints (mergekit-moe's output renamed) with transformers' perplexity of it, for eval;
and tests/golden/moe/MANIFEST.json records the synth commands and the tool versions.
tests/e2e/moe.sh makes the same models, runs mergekit-c moe and compares.

Usage: .venv-tools/bin/python tools/gen-golden-moe.py   (after `make` and tools/setup-venv.sh)
"""
import importlib.metadata as md
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

import torch
import xxhash
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MK = os.path.join(ROOT, "mergekit-c")
GOLD = os.path.join(ROOT, "tests", "golden", "moe")
PY = sys.executable

DIMS = "--hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 48 --vocab 64 --max-position 64 --std 0.3"
# the models every case draws from (folder, synth arguments)
MODELS = [
    ("base/", f"{DIMS} --seed 1"),
    ("e1/", "--finetune-of base/ --delta 0.5 --seed 2"),
    ("e2/", "--finetune-of base/ --delta 0.5 --seed 3"),
    ("e3/", "--finetune-of base/ --delta 0.5 --seed 4"),
    ("q3/", f"{DIMS} --arch qwen3 --seed 5"),
    ("q3e1/", "--finetune-of q3/ --delta 0.5 --seed 6"),
    ("q3e2/", "--finetune-of q3/ --delta 0.5 --seed 7"),
    ("q3e3/", "--finetune-of q3/ --delta 0.5 --seed 8"),
    ("q2/", f"{DIMS} --arch qwen2 --seed 9"),
    ("q2e1/", "--finetune-of q2/ --delta 0.5 --seed 10"),
    ("q2e2/", "--finetune-of q2/ --delta 0.5 --seed 11"),
]

MIXTRAL_PROMPTS = """experts:
  - source_model: e1/
    positive_prompts: ["tok5 tok17 tok30", "tok6 tok7"]
  - source_model: e2/
    positive_prompts: ["tok40 tok41 tok42 tok43"]
    negative_prompts: ["tok5"]
  - source_model: e3/
    positive_prompts: ["tok50"]
"""

QWEN3_PROMPTS = """experts:
  - source_model: q3e1/
    positive_prompts: ["tok8 tok9 tok10"]
  - source_model: q3e2/
    positive_prompts: ["tok20 tok21", "tok22"]
    negative_prompts: ["tok8 tok9"]
  - source_model: q3e3/
    positive_prompts: ["tok60 tok61 tok3"]
"""

# case -> (config text, seed, deterministic: byte-identical routers and a forward check)
CASES = {
    "mixtral_cheap_embed": ("base_model: base/\ngate_mode: cheap_embed\nexperts_per_token: 2\n" + MIXTRAL_PROMPTS, 0, True),
    "mixtral_hidden": ("base_model: base/\ngate_mode: hidden\nexperts_per_token: 2\n" + MIXTRAL_PROMPTS, 0, False),
    "mixtral_random": ("base_model: base/\ngate_mode: random\nexperts_per_token: 1\n" + MIXTRAL_PROMPTS, 3, True),
    "mixtral_random_f32": ("base_model: base/\ngate_mode: random\ndtype: float32\n" + MIXTRAL_PROMPTS, 4, True),
    "mixtral_uniform_random": ("base_model: base/\ngate_mode: uniform_random\ndtype: float32\n" + MIXTRAL_PROMPTS, 5, True),
    "qwen3_cheap_embed": ("base_model: q3/\ngate_mode: cheap_embed\nexperts_per_token: 2\n" + QWEN3_PROMPTS, 0, True),
    "qwen3_hidden": ("base_model: q3/\ngate_mode: hidden\narchitecture: qwen3\n" + QWEN3_PROMPTS, 0, False),
    # random gates: mergekit-moe tokenizes through AutoTokenizer, which for qwen2 models rebuilds
    # the synthetic word-level tokenizer as a byte-level one, so prompt gates would not compare
    "qwen2_random": ("""base_model: q2/
gate_mode: random
architecture: qwen
experts_per_token: 1
experts:
  - source_model: q2e1/
    positive_prompts: ["tok11 tok12"]
  - source_model: q2e2/
    positive_prompts: ["tok33 tok34 tok35"]
shared_experts:
  - source_model: q2/
    positive_prompts: ["tok1 tok2"]
""", 6, True),
}

# a checkpoint in the per-expert layout real Mixtral checkpoints store
# (block_sparse_moe.experts.N.w1 / w2 / w3, block_sparse_moe.gate), which transformers converts
# on load: mergekit-moe's output of these tiny models, renamed; eval must run it as it is
LEGACY_MODELS = [
    ("tiny/", "--hidden 16 --layers 1 --heads 2 --intermediate 24 --vocab 64 --max-position 64 --std 0.3 --seed 40"),
    ("tiny1/", "--finetune-of tiny/ --delta 0.5 --seed 41"),
    ("tiny2/", "--finetune-of tiny/ --delta 0.5 --seed 42"),
]
LEGACY_CONFIG = """base_model: tiny/
gate_mode: random
experts_per_token: 1
experts:
  - source_model: tiny1/
    positive_prompts: ["tok3"]
  - source_model: tiny2/
    positive_prompts: ["tok4"]
"""

ROUTER_SUFFIXES = (".mlp.gate.weight", ".mlp.shared_expert_gate.weight")


def run(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def tensor_lines(folder):
    """name dtype shape xxh3-128 per tensor, as `mergekit-c inspect --hashes` prints them."""
    rows = []
    for f in sorted(os.listdir(folder)):
        if not f.endswith(".safetensors"):
            continue
        with safe_open(os.path.join(folder, f), "pt") as st:
            for k in st.keys():
                t = st.get_tensor(k).contiguous()
                raw = t.view(torch.uint8) if t.dtype != torch.bfloat16 else t.view(torch.int16).view(torch.uint8)
                dt = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16"}[t.dtype]
                shape = "[" + ", ".join(str(d) for d in t.shape) + "]"
                rows.append(f"{k} {dt} {shape} {xxhash.xxh3_128_hexdigest(raw.numpy().tobytes())}")
    return sorted(rows)


def mergekit_moe(config, out, seed, cwd):
    """mergekit-moe CONFIG OUT after torch.manual_seed(seed), in this process."""
    from mergekit.scripts.moe import main
    here = os.getcwd()
    os.chdir(cwd)
    try:
        torch.manual_seed(seed)
        main.main(args=[config, out], standalone_mode=False)
    finally:
        os.chdir(here)


def legacy(w, manifest):
    """tests/golden/moe/legacy_mixtral/: model.safetensors and config.json in the per-expert
    layout, and transformers' perplexity of it (ppl.json)."""
    for folder, args in LEGACY_MODELS:
        run([MK, "synth", folder] + args.split() + ["-q"], w)
    with open(os.path.join(w, "legacy.yaml"), "w") as f:
        f.write(LEGACY_CONFIG)
    out = os.path.join(w, "out-legacy")
    mergekit_moe("legacy.yaml", out, 1, w)
    tensors = {}
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as st:
        for k in st.keys():
            t = st.get_tensor(k).contiguous()
            pre = k.split(".mlp.")[0]
            if k.endswith(".mlp.experts.gate_up_proj"):
                f = t.shape[1] // 2
                for e in range(t.shape[0]):
                    tensors[f"{pre}.block_sparse_moe.experts.{e}.w1.weight"] = t[e, :f].clone()
                    tensors[f"{pre}.block_sparse_moe.experts.{e}.w3.weight"] = t[e, f:].clone()
            elif k.endswith(".mlp.experts.down_proj"):
                for e in range(t.shape[0]):
                    tensors[f"{pre}.block_sparse_moe.experts.{e}.w2.weight"] = t[e].clone()
            elif k.endswith(".mlp.gate.weight"):
                tensors[f"{pre}.block_sparse_moe.gate.weight"] = t
            else:
                tensors[k] = t
    d = os.path.join(GOLD, "legacy_mixtral")
    os.makedirs(d)
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(out, "config.json"), os.path.join(d, "config.json"))
    chk = os.path.join(w, "legacy-check")
    shutil.copytree(d, chk)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(w, "tiny", fn), os.path.join(chk, fn))
    subprocess.run([PY, os.path.join(ROOT, "tools", "check-ppl.py"), chk, os.path.join(GOLD, "text.txt"), "--ctx", "32",
                    "--chunks", "6", "--golden", os.path.join(d, "ppl.json")], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with open(os.path.join(d, "ppl.json")) as f:
        pj = json.load(f)
    pj["model"] = "legacy_mixtral"
    pj["text"] = "tests/golden/moe/text.txt"
    with open(os.path.join(d, "ppl.json"), "w") as f:
        json.dump(pj, f, indent=2)
        f.write("\n")
    manifest["legacy_mixtral"] = {"synth": [f"mergekit-c synth {f} {a}" for f, a in LEGACY_MODELS], "config": LEGACY_CONFIG,
                                  "seed": 1, "renamed": "fused experts split into block_sparse_moe.experts.N.w1/w3/w2"}
    print("legacy_mixtral:", len(tensors), "tensors")


def main():
    if os.path.exists(GOLD):
        shutil.rmtree(GOLD)
    os.makedirs(GOLD)
    rng = random.Random(18)
    text = " ".join(f"tok{rng.randrange(3, 64)}" for _ in range(400)) + "\n"
    with open(os.path.join(GOLD, "text.txt"), "w") as f:
        f.write(text)
    with tempfile.TemporaryDirectory() as w:
        for folder, args in MODELS:
            run([MK, "synth", folder] + args.split() + ["-q"], w)
        manifest = {"generator": "tools/gen-golden-moe.py",
                    "synth": [f"mergekit-c synth {f} {a}" for f, a in MODELS],
                    "versions": {p: md.version(p) for p in ("mergekit", "torch", "transformers", "tokenizers", "safetensors")},
                    "cases": {}}
        for case, (cfg, seed, det) in CASES.items():
            d = os.path.join(GOLD, case)
            os.makedirs(d)
            with open(os.path.join(d, "config.yaml"), "w") as f:
                f.write(cfg)
            with open(os.path.join(d, "args"), "w") as f:
                f.write(f"--seed {seed}\n")
            shutil.copy(os.path.join(d, "config.yaml"), os.path.join(w, "moe.yaml"))
            out = os.path.join(w, "out-" + case)
            mergekit_moe("moe.yaml", out, seed, w)
            with open(os.path.join(d, "hashes.txt"), "w") as f:
                f.write("\n".join(tensor_lines(out)) + "\n")
            routers = {}
            for fn in sorted(os.listdir(out)):
                if fn.endswith(".safetensors"):
                    with safe_open(os.path.join(out, fn), "pt") as st:
                        for k in st.keys():
                            if k.endswith(ROUTER_SUFFIXES):
                                routers[k] = st.get_tensor(k).contiguous()
            save_file(routers, os.path.join(d, "routers.safetensors"))
            shutil.copy(os.path.join(out, "config.json"), os.path.join(d, "config.json"))
            if det:
                # mergekit-moe re-saves the tokenizer through AutoTokenizer, which for qwen2 models
                # rebuilds it as a byte-level Qwen2Tokenizer that no longer reads the synthetic
                # vocabulary; the forward check scores the base model's own tokenizer, as ours keeps it
                base = cfg.split()[1]
                for fn in ("tokenizer.json", "tokenizer_config.json"):
                    shutil.copy(os.path.join(w, base, fn), os.path.join(out, fn))
                subprocess.run([PY, os.path.join(ROOT, "tools", "check-ppl.py"), out, os.path.join(GOLD, "text.txt"),
                                "--ctx", "32", "--chunks", "6", "--golden", os.path.join(d, "ppl.json")],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                with open(os.path.join(d, "ppl.json")) as f:
                    pj = json.load(f)
                pj["model"] = case  # not the temporary folder
                pj["text"] = "tests/golden/moe/text.txt"
                with open(os.path.join(d, "ppl.json"), "w") as f:
                    json.dump(pj, f, indent=2)
                    f.write("\n")
            manifest["cases"][case] = {"seed": seed, "deterministic": det}
            print(f"{case}: {len(routers)} routers")
        legacy(w, manifest)
        with open(os.path.join(GOLD, "MANIFEST.json"), "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
