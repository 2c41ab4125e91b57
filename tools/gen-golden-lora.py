#!/usr/bin/env python3
"""Golden outputs for the LoRA tests, produced by PEFT itself.

Base models are made with `mergekit-c synth` (bit-identical on every machine; the manifest
records the commands and the XXH3-128 of each base). Adapters are made by PEFT
(get_peft_model with seeded random A and B, so that every update is non-zero) and saved
with save_pretrained; they are inputs of the tests and are committed. The expected
outputs are what PEFT makes of them:

  apply_<case>/expected.safetensors   PeftModel.from_pretrained(base, adapter).merge_and_unload()
  combine_<m>/expected.safetensors    add_weighted_adapter(...) of adapters a1 and a2 on the f32
                                      base, the new adapter merged into the base

Layout: tests/golden/lora/<case>/{adapter/, recipe.txt, expected.safetensors} and
tests/golden/lora/manifest.txt (tool versions, synth commands, base hashes, cases).

Usage: .venv-tools/bin/python tools/gen-golden-lora.py   (after `make` and tools/setup-venv.sh)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import xxhash
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MK = os.path.join(ROOT, "mergekit-c")
OUT = os.path.join(ROOT, "tests", "golden", "lora")
VENV_BIN = os.path.dirname(sys.executable)

# Small, with grouped-query attention and sizes that are not powers of two.
SHAPE = "--hidden 32 --heads 4 --kv-heads 2 --intermediate 72 --vocab 64 --layers 2"
BASES = {
    "float32": f"synth base-float32/ {SHAPE} --dtype float32 --seed 21",
    "bfloat16": f"synth base-bfloat16/ {SHAPE} --dtype bfloat16 --seed 21",
}
TORCH_DT = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# name: (base dtype, LoraConfig kwargs, adapter save dtype, seed, also train lm_head copy)
APPLY = {
    "plain_bf16": ("bfloat16", dict(r=4, lora_alpha=8, target_modules=ALL), torch.bfloat16, 1, False),
    "plain_fp32": ("float32", dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), torch.float32, 2, False),
    "rslora_patterns": ("float32", dict(r=6, lora_alpha=5, use_rslora=True, target_modules=ALL,
                                        rank_pattern={"q_proj": 2, "model.layers.1.mlp.down_proj": 3},
                                        alpha_pattern={"k_proj": 7}, modules_to_save=["lm_head"]),
                        torch.float32, 3, True),
    "embedding_bf16": ("bfloat16", dict(r=3, lora_alpha=6, target_modules=["embed_tokens", "o_proj"]),
                       torch.float32, 4, False),
    "regex_layers": ("float32", dict(r=4, lora_alpha=16, target_modules=r".*\.layers\.1\.self_attn\.(q|v)_proj"),
                     torch.bfloat16, 5, False),
}

# combine: PEFT add_weighted_adapter on two adapters (same rank, as PEFT's A/B-wise
# methods need; the svd methods do not) of the float32 base.
COMBINE_ADAPTERS = {
    "a1": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]),
    "a2": dict(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "down_proj"]),
}
WEIGHTS = [0.7, 0.5]
COMBINE = {
    # case: (peft combination_type, kwargs, our method + options)
    "cat": ("cat", {}, "--method cat"),
    "linear_vs_cat": ("cat", {}, "--method linear"),  # our linear = the exact weighted sum = PEFT cat's update
    "svd": ("svd", dict(svd_rank=3), "--method svd --rank 3"),
    "ties": ("ties_svd", dict(density=0.5, svd_rank=4), "--method ties --density 0.5 --rank 4"),
    "dare_linear_d1": ("dare_linear_svd", dict(density=1.0, svd_rank=8), "--method dare_linear --density 1 --rank 8"),
}


def run(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True)


def versions():
    out = subprocess.run([os.path.join(VENV_BIN, "pip"), "freeze"], capture_output=True, text=True, check=True).stdout
    keep = ("peft==", "torch==", "transformers==", "safetensors==")
    return [l for l in out.splitlines() if l.startswith(keep)]


def randomize(model, seed):
    """Seeded random A and B for every LoRA layer (PEFT inits B to zero), and a trained
    copy of every modules_to_save module."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.copy_((torch.randn(p.shape, generator=g) * 0.05).to(p.dtype))


def save_adapter(model, path, dtype, base_name):
    model.save_pretrained(path)
    cfg_path = os.path.join(path, "adapter_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["base_model_name_or_path"] = base_name  # not the temporary folder it was made in
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    st = os.path.join(path, "adapter_model.safetensors")
    sd = load_file(st)
    save_file({k: v.to(dtype).contiguous() for k, v in sd.items()}, st, metadata={"format": "pt"})
    for extra in ("README.md",):
        p = os.path.join(path, extra)
        if os.path.exists(p):
            os.remove(p)


def load_base(d, dt):
    return AutoModelForCausalLM.from_pretrained(d, dtype=TORCH_DT[dt])


def merged_state(model):
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def main():
    if not os.access(MK, os.X_OK):
        sys.exit("build mergekit-c first (make)")
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    manifest = ["# Golden LoRA outputs made by tools/gen-golden-lora.py with:"]
    manifest += ["#   " + v for v in versions()]
    manifest.append("# synth <dtype> <mergekit-c command>; base <dtype> <xxh3-128 of model.safetensors>;")
    manifest.append("# apply <case> <base dtype>; combine <case> <mergekit-c options>")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for dt, cmd in BASES.items():
            run([MK] + cmd.split() + ["-q"], tmp)
            with open(os.path.join(tmp, f"base-{dt}", "model.safetensors"), "rb") as f:
                manifest.append(f"synth {dt} {cmd}")
                manifest.append(f"base {dt} {xxhash.xxh3_128_hexdigest(f.read())}")
        for case, (dt, kw, save_dt, seed, _) in APPLY.items():
            base_dir = os.path.join(tmp, f"base-{dt}")
            cdir = os.path.join(OUT, f"apply_{case}")
            os.makedirs(cdir)
            cfg = LoraConfig(lora_dropout=0.0, **kw)
            model = get_peft_model(load_base(base_dir, dt), cfg)
            randomize(model, seed)
            save_adapter(model, os.path.join(cdir, "adapter"), save_dt, f"base-{dt}")
            # what PEFT makes of the saved adapter
            merged = PeftModel.from_pretrained(load_base(base_dir, dt), os.path.join(cdir, "adapter")).merge_and_unload()
            save_file(merged_state(merged), os.path.join(cdir, "expected.safetensors"), metadata={"format": "pt"})
            manifest.append(f"apply {case} {dt}")
        # combine
        base_dir = os.path.join(tmp, "base-float32")
        adir = os.path.join(OUT, "combine_adapters")
        os.makedirs(adir)
        for i, (name, kw) in enumerate(COMBINE_ADAPTERS.items()):
            model = get_peft_model(load_base(base_dir, "float32"), LoraConfig(lora_dropout=0.0, **kw))
            randomize(model, 100 + i)
            save_adapter(model, os.path.join(adir, name), torch.float32, "base-float32")
        for case, (ctype, kw, ours) in COMBINE.items():
            cdir = os.path.join(OUT, f"combine_{case}")
            os.makedirs(cdir)
            model = PeftModel.from_pretrained(load_base(base_dir, "float32"), os.path.join(adir, "a1"), adapter_name="a1")
            model.load_adapter(os.path.join(adir, "a2"), adapter_name="a2")
            model.add_weighted_adapter(["a1", "a2"], WEIGHTS, "mix", combination_type=ctype, **kw)
            model.set_adapter("mix")
            model.delete_adapter("a1")
            model.delete_adapter("a2")
            merged = model.merge_and_unload()
            save_file(merged_state(merged), os.path.join(cdir, "expected.safetensors"), metadata={"format": "pt"})
            manifest.append(f"combine {case} {' '.join(str(w) for w in WEIGHTS)} {ours}")
    with open(os.path.join(OUT, "manifest.txt"), "w") as f:
        f.write("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
