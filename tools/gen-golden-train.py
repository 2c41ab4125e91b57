#!/usr/bin/env python3
"""Regenerate tests/golden/train/ with PyTorch and transformers (the reference for training).

Run from the repository root with the tools venv (tools/setup-venv.sh) after `make`:

    .venv-tools/bin/python tools/gen-golden-train.py

llm.c-style debug states. For every case it writes a tiny random model with `mergekit-c synth`
(bit-identical on every machine), loads it with transformers in float32 (eager attention) and
records, for a fixed batch of tokens with a loss weight per token (prompt tokens weighted
PROMPT_W, as `finetune --prompt-loss-weight`):
  CASE.logits        F32 [B, T, vocab]
  CASE.loss          F32 [1]   sum(w * NLL) / sum(w) over the shifted targets
  CASE.grad.NAME     F32       d loss / d parameter, for every parameter
  CASE.losses        F32 [STEPS] the loss of each of STEPS AdamW steps (cosine schedule with
                     warmup, ACCUM micro-batches per step, global-norm clipping, weight decay
                     on matrices only), each before its update
and for the LoRA cases (PEFT, every projection adapted, A and B random):
  CASE.init.NAME     F32       the adapter tensors as PEFT saves them (lora_A / lora_B)
  CASE.loss, CASE.grad.NAME    the loss and the adapters' gradients
and with --dtype bf16 (torch.autocast("cpu", dtype=torch.bfloat16) around the forward: bf16
matmuls, f32 master weights, AdamW moments and loss; debug_state_bf16.safetensors), for the
BF16 cases and BF16_LORA:
  CASE.loss, CASE.grad.NAME, CASE.losses as above, and CASE.final.NAME: every parameter after
  the STEPS AdamW steps (LoRA: the loss and the adapters' gradients)
and for QLORA (transformers + PEFT + bitsandbytes: the base loaded in 4 bits, NF4 in blocks of
64 without double quantization, computing in float32; a model whose projections all have 64 or
more inputs, as bitsandbytes' CPU layout needs; every projection adapted, A and B random):
  CASE.init.NAME, CASE.loss, CASE.grad.NAME    as the LoRA cases
The step batches are "steps.tokens" I32 [STEPS, ACCUM, B, T] and "steps.weights" F32 of the
same shape; "tokens" / "weights" [B, T] the single batch. MANIFEST.json records the synth
commands, the XXH3-128 of each model's weights, the hyperparameters and the tool versions.
tests/unit/test_train.c makes the same models and compares.
"""
import importlib.metadata as md
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLD = os.path.join(ROOT, "tests", "golden", "train")
MK = os.path.join(ROOT, "mergekit-c")

VOCAB = 64
B, T = 2, 8
STEPS, ACCUM = 10, 2
PROMPT_W = 0.25
HP = {"lr": 3e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1, "warmup": 3, "schedule": "cosine",
      "clip": 0.5, "accum": ACCUM, "steps": STEPS, "prompt_loss_weight": PROMPT_W, "prompt_tokens": 3}
BASE = ["--hidden", "32", "--layers", "2", "--heads", "4", "--intermediate", "64", "--vocab", str(VOCAB),
        "--dtype", "float32", "--std", "0.2", "--max-position", "64", "--seed", "21"]

# LoRA cases: name -> (base case, r, alpha, use_rslora); every projection adapted, A and B random
LORA = {
    "lora_llama": ("llama", 4, 8.0, False),
    "lora_qwen2_rslora": ("qwen2", 2, 4.0, True),
}
# QLoRA cases: name -> (arch, kv heads, synth args replacing BASE's, r, alpha)
QLORA = {"qlora_llama": ("llama", 2, ["--hidden", "64", "--intermediate", "128"], 4, 8.0)}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# mixed precision (autocast bf16): full finetune cases, and LoRA cases of LORA
BF16 = ["llama", "qwen2", "qwen3", "llama_tied"]
BF16_LORA = ["lora_llama"]

# case -> (arch, kv heads, extra synth args, config edits)
CASES = {
    "llama": ("llama", 2, [], {}),
    "mistral": ("mistral", 2, [], {"sliding_window": 5}),
    "qwen2": ("qwen2", 2, [], {}),
    "qwen3": ("qwen3", 1, [], {}),
    "llama_tied": ("llama", 4, ["--tie"], {}),
}


def _forward_tool():
    """tools/gen-golden-forward.py as a module, for its xxh128."""
    spec = importlib.util.spec_from_file_location("gen_golden_forward", os.path.join(ROOT, "tools", "gen-golden-forward.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


xxh128 = _forward_tool().xxh128


def make_model(work, name, arch, kv, extra, edits):
    d = os.path.join(work, name)
    subprocess.run([MK, "synth", d, "--arch", arch, "--kv-heads", str(kv), *BASE, *extra, "-q"], check=True)
    cfg_path = os.path.join(d, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.update(edits)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    return d, xxh128(os.path.join(d, "model.safetensors"))


def weights_for(tokens):
    """Loss weight of each token as a target: the first prompt_tokens of a row are the prompt."""
    w = np.ones(tokens.shape, dtype=np.float32)
    w[..., :HP["prompt_tokens"]] = PROMPT_W
    return w


def wsum_nll(model, tok, w, bf16=False):
    """sum over shifted targets of w * NLL (float32, as the model computes), and the logits;
    bf16: the forward under CPU autocast to bfloat16, the loss on the logits made float32."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(torch.tensor(tok, dtype=torch.long)).logits
    lg = logits[:, :-1, :].float().reshape(-1, logits.shape[-1])
    tgt = torch.tensor(tok[:, 1:], dtype=torch.long).reshape(-1)
    nll = torch.nn.functional.cross_entropy(lg, tgt, reduction="none")
    return (nll * torch.tensor(w[:, 1:]).reshape(-1)).sum(), logits


def cosine(step, warmup, total):
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def run_case(path, tokens, weights, st, sw, bf16=False, final=False):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model.train()  # no dropout in these configs
    out = {}
    s, logits = wsum_nll(model, tokens, weights, bf16)
    loss = s / float(weights[:, 1:].sum())
    loss.backward()
    if not bf16:
        out["logits"] = logits.detach().numpy().astype(np.float32)
    out["loss"] = np.array([loss.item()], dtype=np.float32)
    for n, p in model.named_parameters():
        out["grad." + n] = p.grad.detach().numpy().astype(np.float32).copy()
    model.zero_grad(set_to_none=True)
    decay = [p for n, p in model.named_parameters() if p.ndim == 2]
    nodecay = [p for n, p in model.named_parameters() if p.ndim != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": HP["weight_decay"]},
                             {"params": nodecay, "weight_decay": 0.0}], lr=HP["lr"], betas=tuple(HP["betas"]),
                            eps=HP["eps"], foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, HP["warmup"], STEPS))
    losses = []
    for step in range(STEPS):
        total_w = float(sw[step][:, :, 1:].sum())
        step_loss = 0.0
        for a in range(ACCUM):
            s, _ = wsum_nll(model, st[step, a], sw[step, a], bf16)
            (s / total_w).backward()
            step_loss += s.item() / total_w
        losses.append(step_loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), HP["clip"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    out["losses"] = np.array(losses, dtype=np.float32)
    if bf16 or final:
        for n, p in model.named_parameters():
            out["final." + n] = p.detach().numpy().astype(np.float32).copy()
    return out


def run_lora(path, tokens, weights, r, alpha, rslora, rng, bf16=False, qlora=False):
    """One forward/backward of a PEFT LoRA model with random A and B: the loss and the adapters'
    gradients, named as PEFT saves them (no adapter name). qlora: the base loaded by bitsandbytes
    in 4 bits (NF4 in blocks of 64, no double quantization, float32 compute)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    bc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                            bnb_4bit_use_double_quant=False) if qlora else None
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager",
                                                 quantization_config=bc)
    for mod in model.modules():
        qs = getattr(getattr(mod, "weight", None), "quant_state", None)
        assert qs is None or (qs.blocksize == 64 and qs.quant_type == "nf4" and not qs.nested), qs
    cfg = LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, target_modules=LORA_TARGETS, lora_dropout=0.0,
                     init_lora_weights=False, task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    if qlora:
        pm.train()  # bitsandbytes' CPU inference path repacks the weights and needs in_features >= 64
    out = {}
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.tensor(rng.normal(0, 0.2, size=tuple(p.shape)).astype(np.float32)))
                out["init." + n.replace(".default", "")] = p.detach().numpy().copy()
    s, _ = wsum_nll(pm, tokens, weights, bf16)
    loss = s / float(weights[:, 1:].sum())
    loss.backward()
    out["loss"] = np.array([loss.item()], dtype=np.float32)
    for n, p in pm.named_parameters():
        if "lora_" in n:
            out["grad." + n.replace(".default", "")] = p.grad.detach().numpy().astype(np.float32).copy()
    return out


def main():
    os.makedirs(GOLD, exist_ok=True)
    rng = np.random.default_rng(15)
    tokens = rng.integers(0, VOCAB, size=(B, T)).astype(np.int32)
    st = rng.integers(0, VOCAB, size=(STEPS, ACCUM, B, T)).astype(np.int32)
    weights, sw = weights_for(tokens), weights_for(st)
    tensors = {"tokens": tokens, "weights": weights, "steps.tokens": st, "steps.weights": sw}
    manifest = {"generator": "tools/gen-golden-train.py", "hyperparameters": HP, "cases": {}, "lora": {}}
    paths = {}
    with tempfile.TemporaryDirectory() as work:
        for name, (arch, kv, extra, edits) in CASES.items():
            path, digest = make_model(work, name, arch, kv, extra, edits)
            out = run_case(path, tokens, weights, st, sw)
            for k, v in out.items():
                tensors[f"{name}.{k}"] = v
            manifest["cases"][name] = {"synth": ["synth", "--arch", arch, "--kv-heads", str(kv), *BASE, *extra],
                                       "config_edits": edits, "weights_xxh128": digest,
                                       "grads": sorted(k[5:] for k in out if k.startswith("grad."))}
            print(f"{name}: loss {out['loss'][0]:.6f}, losses {out['losses'][0]:.4f} .. {out['losses'][-1]:.4f}")
            paths[name] = path
        lrng = np.random.default_rng(16)
        for name, (base, r, alpha, rslora) in LORA.items():
            out = run_lora(paths[base], tokens, weights, r, alpha, rslora, lrng)
            for k, v in out.items():
                tensors[f"{name}.{k}"] = v
            manifest["lora"][name] = {"base": base, "r": r, "alpha": alpha, "rslora": rslora, "targets": LORA_TARGETS,
                                      "grads": sorted(k[5:] for k in out if k.startswith("grad."))}
            print(f"{name}: loss {out['loss'][0]:.6f}")
        manifest["qlora"] = {}
        qrng = np.random.default_rng(17)
        for name, (arch, kv, extra, r, alpha) in QLORA.items():
            path, digest = make_model(work, name, arch, kv, extra, {})
            out = run_lora(path, tokens, weights, r, alpha, False, qrng, qlora=True)
            for k, v in out.items():
                tensors[f"{name}.{k}"] = v
            manifest["qlora"][name] = {"synth": ["synth", "--arch", arch, "--kv-heads", str(kv), *BASE, *extra],
                                       "config_edits": {}, "weights_xxh128": digest, "r": r, "alpha": alpha,
                                       "rslora": False, "targets": LORA_TARGETS,
                                       "quantization": "bitsandbytes nf4, blocksize 64, no double quant, compute float32",
                                       "grads": sorted(k[5:] for k in out if k.startswith("grad."))}
            print(f"{name}: loss {out['loss'][0]:.6f}")
        bt = {}
        manifest["bf16"] = {"autocast": "torch.autocast('cpu', dtype=torch.bfloat16) around the forward", "cases": BF16,
                            "lora": BF16_LORA, "cpu_bf16": "avx512_bf16" in open("/proc/cpuinfo").read()}
        for name in BF16:
            out = run_case(paths[name], tokens, weights, st, sw, bf16=True)
            for k, v in out.items():
                bt[f"{name}.{k}"] = v
            print(f"{name} bf16: loss {out['loss'][0]:.6f}, losses {out['losses'][0]:.4f} .. {out['losses'][-1]:.4f}")
        lrng = np.random.default_rng(16)  # the same adapters as the f32 LoRA cases
        for name, (base, r, alpha, rslora) in LORA.items():
            out = run_lora(paths[base], tokens, weights, r, alpha, rslora, lrng, bf16=True)
            if name not in BF16_LORA:
                continue
            for k, v in out.items():
                bt[f"{name}.{k}"] = v
            print(f"{name} bf16: loss {out['loss'][0]:.6f}")
    write_goldens(GOLD, tensors, bt, manifest)


def write_goldens(gold, tensors, bt, manifest):
    """debug_state.safetensors, debug_state_bf16.safetensors and MANIFEST.json (with the tool versions) in gold."""
    save_file(bt, os.path.join(gold, "debug_state_bf16.safetensors"))
    save_file(tensors, os.path.join(gold, "debug_state.safetensors"))
    manifest["versions"] = {p: md.version(p) for p in ["torch", "transformers", "peft", "bitsandbytes", "safetensors", "numpy"]}
    manifest["python"] = platform.python_version()
    with open(os.path.join(gold, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
