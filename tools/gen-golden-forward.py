#!/usr/bin/env python3
"""Regenerate tests/golden/forward/ with transformers itself (the reference for the forward pass).

Run from the repository root with the tools venv (tools/setup-venv.sh) after `make`:

    .venv-tools/bin/python tools/gen-golden-forward.py

For every case it writes a tiny random model with `mergekit-c synth` (bit-identical on every
machine), edits its config.json where the case says (RoPE scaling variants, sliding windows),
optionally quantizes it with `mergekit-c quantize`, loads it with transformers in float32 on
the CPU (bitsandbytes / compressed-tensors for the quantized ones), runs fixed token ids and
keeps the logits. tests/golden/forward/logits.safetensors holds "tokens" (I32 [2, 12]) and
one F32 [2, 12, vocab] tensor per case; MANIFEST.json records the synth commands, the config
edits, the XXH3-128 of each model's weights and the tool versions. tests/unit/test_forward.c
makes the same models and compares.
"""
import importlib.metadata as md
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
import xxhash
import torch
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLD = os.path.join(ROOT, "tests", "golden", "forward")
MK = os.path.join(ROOT, "mergekit-c")

VOCAB = 96
SEQ = 12
BASE = ["--hidden", "64", "--layers", "2", "--heads", "4", "--intermediate", "128", "--vocab", str(VOCAB),
        "--dtype", "float32", "--std", "0.25", "--max-position", "64", "--seed", "11"]

# case -> (arch, kv heads, config edits, quantize args or None)
CASES = {
    "llama": ("llama", 2, {}, None),
    "mistral": ("mistral", 2, {"sliding_window": 5}, None),
    "qwen2": ("qwen2", 2, {}, None),
    "qwen3": ("qwen3", 2, {}, None),
    "qwen2_layer_types": ("qwen2", 2, {"use_sliding_window": True, "sliding_window": 3, "max_window_layers": 0,
                                       "layer_types": ["sliding_attention", "full_attention"]}, None),
    "gemma": ("gemma", 1, {}, None),
    "gemma2": ("gemma2", 2, {"sliding_window": 4}, None),
    "phi3": ("phi3", 4, {}, None),
    "gpt2": ("gpt2", 4, {}, None),
    "llama_tied": ("llama", 2, {}, None),
    "rope_linear": ("llama", 2, {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, None),
    "rope_dynamic": ("llama", 2, {"max_position_embeddings": 8, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
                     None),
    "rope_llama3": ("llama", 2, {"rope_theta": 500000.0, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}}, None),
    "rope_yarn": ("llama", 2, {"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                "original_max_position_embeddings": 16}}, None),
    "rope_longrope": ("phi3", 4, {"max_position_embeddings": 64, "original_max_position_embeddings": 8, "rope_scaling": {
        "type": "longrope", "long_factor": [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0],
        "short_factor": [1.0, 1.1, 1.2, 1.3, 1.5, 1.7, 2.0, 2.5]}}, None),
    "nf4": ("llama", 2, {}, ["--format", "nf4"]),
    "int4": ("llama", 2, {}, ["--format", "int4", "--group-size", "32"]),
}


def run(*args):
    subprocess.run([str(a) for a in args], check=True, stdout=subprocess.DEVNULL)


def xxh128(path):
    """XXH3-128 of a file, as mergekit-c's inspect --hashes and xxhsum -H2 print it."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def make_model(work, name, arch, kv, edits, quant):
    d = os.path.join(work, name)
    args = [MK, "synth", d, "--arch", arch, "--kv-heads", str(kv), *BASE, "-q"]
    if name == "llama_tied":
        args.append("--tie")
    run(*args)
    cfg_path = os.path.join(d, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.update(edits)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    digest = xxh128(os.path.join(d, "model.safetensors"))
    if quant:
        q = d + "-q"
        run(MK, "quantize", d, q, *quant, "-q")
        d = q
    return d, digest


def logits_of(path, tokens):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    # bitsandbytes on CPUs with AVX512-BF16 repacks 4-bit weights and computes in bf16 (its
    # absmax rounded to bf16): an approximation of its own dequantizer. Take the generic path,
    # dequantize_4bit then a float32 matmul, which is what the layout means.
    for mod in model.modules():
        if hasattr(mod, "support_avx512bf16_for_cpu"):
            mod.support_avx512bf16_for_cpu = False
    with torch.no_grad():
        out = model(torch.tensor(tokens, dtype=torch.long)).logits
    return out.float().numpy()


def main():
    os.makedirs(GOLD, exist_ok=True)
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, VOCAB, size=(2, SEQ)).astype(np.int32)
    tensors = {"tokens": tokens}
    manifest = {"generator": "tools/gen-golden-forward.py", "vocab": VOCAB, "seq": SEQ, "cases": {}}
    with tempfile.TemporaryDirectory() as work:
        for name, (arch, kv, edits, quant) in CASES.items():
            path, digest = make_model(work, name, arch, kv, edits, quant)
            tensors[name] = logits_of(path, tokens.tolist()).astype(np.float32)
            manifest["cases"][name] = {"synth": ["synth", "--arch", arch, "--kv-heads", str(kv), *BASE] +
                                       (["--tie"] if name == "llama_tied" else []),
                                       "config_edits": edits, "quantize": quant, "weights_xxh128": digest}
            print(f"{name}: logits {tensors[name].shape}, |max| {np.abs(tensors[name]).max():.3f}")
    save_file(tensors, os.path.join(GOLD, "logits.safetensors"))
    versions = {p: md.version(p) for p in ["torch", "transformers", "bitsandbytes", "compressed-tensors", "safetensors"]}
    manifest["versions"] = versions
    manifest["python"] = platform.python_version()
    with open(os.path.join(GOLD, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
