#!/usr/bin/env python3
"""Regenerate tests/golden/train/gemma/ with PyTorch, transformers and PEFT: the training
goldens of the gemma family (GemmaForCausalLM: GeGLU with gelu_pytorch_tanh, RMSNorm with
(1 + w), embeddings times sqrt(hidden), tied head).

Run from the repository root with the tools venv (tools/setup-venv.sh) after `make`:

    .venv-tools/bin/python tools/gen-golden-train-gemma.py

The layout is tools/gen-golden-train.py's (MANIFEST.json, debug_state.safetensors and
debug_state_bf16.safetensors, read by tests/unit/test_train.c), made with its functions, for
a tiny Gemma and STEPS AdamW steps:
  gemma.logits, .loss, .grad.NAME   one forward/backward in float32
  gemma.losses, gemma.final.NAME    the loss of each step and every parameter after them
  lora_gemma.init.NAME, .loss, .grad.NAME   PEFT LoRA on every projection (A and B random)
  qlora_gemma.*                     the same on a bitsandbytes NF4 base (hidden 64)
and in debug_state_bf16.safetensors the gemma case under torch.autocast("cpu", bfloat16).
"""
import importlib.util
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLD = os.path.join(ROOT, "tests", "golden", "train", "gemma")
STEPS = 5


def _train_tool():
    spec = importlib.util.spec_from_file_location("gen_golden_train", os.path.join(ROOT, "tools", "gen-golden-train.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.STEPS = STEPS
    mod.HP = dict(mod.HP, steps=STEPS)
    return mod


def main():
    g = _train_tool()
    os.makedirs(GOLD, exist_ok=True)
    rng = np.random.default_rng(18)
    tokens = rng.integers(0, g.VOCAB, size=(g.B, g.T)).astype(np.int32)
    st = rng.integers(0, g.VOCAB, size=(STEPS, g.ACCUM, g.B, g.T)).astype(np.int32)
    weights, sw = g.weights_for(tokens), g.weights_for(st)
    tensors = {"tokens": tokens, "weights": weights, "steps.tokens": st, "steps.weights": sw}
    bt = {}
    manifest = {"generator": "tools/gen-golden-train-gemma.py", "hyperparameters": g.HP, "cases": {}, "lora": {}, "qlora": {}}
    with tempfile.TemporaryDirectory() as work:
        name, kv = "gemma", 1
        path, digest = g.make_model(work, name, "gemma", kv, [], {})
        out = g.run_case(path, tokens, weights, st, sw, final=True)
        tensors.update({f"{name}.{k}": v for k, v in out.items()})
        manifest["cases"][name] = {"synth": ["synth", "--arch", "gemma", "--kv-heads", str(kv), *g.BASE], "config_edits": {},
                                   "weights_xxh128": digest,
                                   "grads": sorted(k[5:] for k in out if k.startswith("grad."))}
        print(f"{name}: loss {out['loss'][0]:.6f}, losses {out['losses'][0]:.4f} .. {out['losses'][-1]:.4f}")
        lrng = np.random.default_rng(19)
        out = g.run_lora(path, tokens, weights, 4, 8.0, False, lrng)
        tensors.update({f"lora_gemma.{k}": v for k, v in out.items()})
        manifest["lora"]["lora_gemma"] = {"base": name, "r": 4, "alpha": 8.0, "rslora": False, "targets": g.LORA_TARGETS,
                                          "grads": sorted(k[5:] for k in out if k.startswith("grad."))}
        print(f"lora_gemma: loss {out['loss'][0]:.6f}")
        extra = ["--hidden", "64", "--intermediate", "128"]
        qpath, qdigest = g.make_model(work, "qlora_gemma", "gemma", 2, extra, {})
        out = g.run_lora(qpath, tokens, weights, 4, 8.0, False, np.random.default_rng(20), qlora=True)
        tensors.update({f"qlora_gemma.{k}": v for k, v in out.items()})
        manifest["qlora"]["qlora_gemma"] = {"synth": ["synth", "--arch", "gemma", "--kv-heads", "2", *g.BASE, *extra],
                                            "config_edits": {}, "weights_xxh128": qdigest, "r": 4, "alpha": 8.0,
                                            "rslora": False, "targets": g.LORA_TARGETS,
                                            "quantization": "bitsandbytes nf4, blocksize 64, no double quant, compute float32",
                                            "grads": sorted(k[5:] for k in out if k.startswith("grad."))}
        print(f"qlora_gemma: loss {out['loss'][0]:.6f}")
        out = g.run_case(path, tokens, weights, st, sw, bf16=True)
        bt.update({f"{name}.{k}": v for k, v in out.items()})
        manifest["bf16"] = {"autocast": "torch.autocast('cpu', dtype=torch.bfloat16) around the forward", "cases": [name],
                            "lora": [], "cpu_bf16": "avx512_bf16" in open("/proc/cpuinfo").read()}
        print(f"{name} bf16: loss {out['loss'][0]:.6f}, losses {out['losses'][0]:.4f} .. {out['losses'][-1]:.4f}")
    g.write_goldens(GOLD, tensors, bt, manifest)


if __name__ == "__main__":
    sys.exit(main())
