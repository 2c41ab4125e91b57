#!/usr/bin/env python3
"""Load merged models with transformers and run a forward pass (tools venv only).

    .venv-tools/bin/python tools/check-forward.py MODEL_DIR [MODEL_DIR...] [--layers N]

For each folder: AutoModelForCausalLM.from_pretrained (float32), no missing or unexpected
weights, config.json's layer count equal to the layers the checkpoint holds (and to
--layers when given), logits of the right shape and finite for a short sequence.
Prints one line per model; exits 1 if any check fails. Not used by `make test`.
"""
import argparse
import json
import os
import sys


def layer_count(names):
    """Layers present in the tensor names (model.layers.N. / transformer.h.N. / h.N.)."""
    import re
    seen = set()
    for n in names:
        m = re.match(r"^(?:model\.layers|transformer\.h|h)\.(\d+)\.", n)
        if m:
            seen.add(int(m.group(1)))
    return len(seen), (max(seen) + 1 if seen else 0)


def check(path, want_layers):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    cfg = json.load(open(os.path.join(path, "config.json")))
    names = []
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(path, f), "pt") as st:
                names += list(st.keys())
    distinct, span = layer_count(names)
    key = "n_layer" if cfg.get("model_type") == "gpt2" else "num_hidden_layers"
    problems = []
    if distinct != span:
        problems.append(f"layer numbers are not consecutive ({distinct} layers up to {span - 1})")
    if cfg.get(key) != distinct:
        problems.append(f"config {key} = {cfg.get(key)} but the checkpoint has {distinct} layers")
    if want_layers is not None and distinct != want_layers:
        problems.append(f"{distinct} layers, want {want_layers}")
    model, info = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    missing = [k for k in info.get("missing_keys", []) if "rotary" not in k and "masked_bias" not in k]
    unexpected = [k for k in info.get("unexpected_keys", []) if "rotary" not in k]
    if missing:
        problems.append(f"missing weights: {missing[:5]}")
    if unexpected:
        problems.append(f"unexpected weights: {unexpected[:5]}")
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.arange(0, 12, dtype=torch.long).remainder(vocab).unsqueeze(0)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    if tuple(logits.shape) != (1, 12, model.config.vocab_size):
        problems.append(f"logits shape {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        problems.append("non-finite logits")
    status = "ok" if not problems else "FAIL"
    print(f"{status} {path}: {cfg.get('architectures', ['?'])[0]}, {distinct} layers, vocab {vocab}, "
          f"logits {tuple(logits.shape)} mean {logits.mean().item():.4f}" + ("" if not problems else ": " + "; ".join(problems)))
    return not problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--layers", type=int)
    args = ap.parse_args()
    ok = all([check(m, args.layers) for m in args.models])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
