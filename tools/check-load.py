#!/usr/bin/env python3
"""Load a mergekit-c output with transformers and run a forward pass.

Usage: .venv-tools/bin/python tools/check-load.py MODEL_DIR [REFERENCE_DIR]

Loads MODEL_DIR with AutoModelForCausalLM (and its tokenizer with AutoTokenizer), checks that
every tensor in the checkpoint was used (no missing or unexpected keys), runs a forward pass
on a few tokens and checks the logits are finite. With REFERENCE_DIR (e.g. the same merge made
by mergekit), also checks the two models' logits agree (max abs difference printed).
"""
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def load(path):
    model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, dtype="auto")
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        sys.exit(f"{path}: loading info reports problems: {bad}")
    model.eval()
    return model


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    model = load(path)
    tok = AutoTokenizer.from_pretrained(path)
    ids = torch.tensor([[1, 5, 17, 42, 3, 9, 77, 2]]) % model.config.vocab_size
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    if not torch.isfinite(logits).all():
        sys.exit(f"{path}: non-finite logits")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{path}: loaded {type(model).__name__}, {n_params} parameters, {model.config.num_hidden_layers} layers, "
          f"dtype {next(model.parameters()).dtype}, tokenizer {type(tok).__name__} ({len(tok)} tokens); "
          f"logits {tuple(logits.shape)} finite")
    if len(sys.argv) > 2:
        ref = load(sys.argv[2])
        with torch.no_grad():
            rl = ref(input_ids=ids).logits.float()
        diff = (logits - rl).abs().max().item()
        print(f"max |logits - reference logits| = {diff:.3g}")
        if diff > 1e-2 * max(1.0, rl.abs().max().item()):
            sys.exit("logits differ from the reference")


if __name__ == "__main__":
    main()
