#!/usr/bin/env python3
"""Load `mergekit-c moe` outputs in transformers and check them against our forward pass
(tools venv only; run by tools/compat-moe.sh, `make compat`).

    .venv-tools/bin/python tools/check-moe.py TEXT MODEL_DIR OURS.json [MODEL_DIR OURS.json ...]

For each folder: AutoModelForCausalLM.from_pretrained (float32, eager attention) with no
missing or unexpected weights, the MoE class config.json names (MixtralForCausalLM,
Qwen2MoeForCausalLM, Qwen3MoeForCausalLM), then the windows `mergekit-c eval --ctx 32` scores
on TEXT (tokenized with the folder's tokenizer.json, BOS first, second half of each window),
and the mean negative log-likelihood of the scored tokens (log-softmax of the logits at the
next token) compared with OURS.json, the `mergekit-c eval --json` of the same folder:
within MOE_NLL_ABS. Prints one line per model; exits 1 if any check fails.
"""
import json
import sys

import numpy as np
import torch

MOE_NLL_ABS = 1e-5  # nats per token; measured: below 1e-6
CTX = 32
CHUNKS = 6


def nll(model, ids, bos):
    total, count = 0.0, 0
    for w in range(min(len(ids) // CTX, CHUNKS)):
        win = list(ids[w * CTX:(w + 1) * CTX])
        run = list(win)
        if bos is not None:
            run[0] = bos
        with torch.no_grad():
            logits = model(torch.tensor([run])).logits[0].to(torch.float64)
        lp = torch.log_softmax(logits, dim=-1).numpy()
        for i in range(CTX // 2, CTX - 1):
            total -= lp[i, win[i + 1]]
            count += 1
    return total / count


def check(text, path, ours):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    problems = []
    cfg = json.load(open(f"{path}/config.json"))
    arch = cfg.get("architectures", ["?"])[0]
    if arch not in ("MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"):
        problems.append(f"architecture {arch}")
    model, info = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager",
                                                       output_loading_info=True)
    model.eval()
    if type(model).__name__ != arch:
        problems.append(f"transformers made a {type(model).__name__}")
    missing = [k for k in info.get("missing_keys", []) if "rotary" not in k]
    unexpected = [k for k in info.get("unexpected_keys", []) if "rotary" not in k]
    if missing:
        problems.append(f"missing weights: {sorted(missing)[:4]}")
    if unexpected:
        problems.append(f"unexpected weights: {sorted(unexpected)[:4]}")
    tok = Tokenizer.from_file(f"{path}/tokenizer.json")
    ids = tok.encode(open(text, encoding="utf-8").read(), add_special_tokens=True).ids
    pre = tok.encode("", add_special_tokens=True).ids
    theirs = nll(model, ids, pre[0] if pre else None)
    mine = json.load(open(ours))["nll_mean"]
    diff = abs(mine - theirs)
    if not np.isfinite(theirs) or diff > MOE_NLL_ABS:
        problems.append(f"mean NLL {mine:.8f} (mergekit-c eval) vs {theirs:.8f} (transformers), |diff| {diff:.2e} > {MOE_NLL_ABS}")
    print(f"{'ok' if not problems else 'FAIL'} {path}: {arch}, {cfg.get('num_local_experts', cfg.get('num_experts'))} experts, "
          f"mean NLL ours {mine:.8f} transformers {theirs:.8f} (|diff| {diff:.1e})" + ("" if not problems else ": " + "; ".join(problems)))
    return not problems


def main():
    if len(sys.argv) < 4 or len(sys.argv) % 2 != 0:
        print(__doc__)
        return 2
    ok = True
    for i in range(2, len(sys.argv), 2):
        ok &= check(sys.argv[1], sys.argv[i], sys.argv[i + 1])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
