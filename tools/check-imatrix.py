#!/usr/bin/env python3
"""check-imatrix.py MODEL TEXT CTX CHUNKS OURS.gguf: the importance matrix mergekit-c wrote
(OURS.gguf, `mergekit-c imatrix MODEL --text TEXT --ctx CTX --chunks CHUNKS`) against PyTorch:
transformers runs MODEL (float32) on the same windows (token ids from `mergekit-c tokenize`,
BOS first in each window when the tokenizer adds one), forward pre-hooks on every nn.Linear of the decoder layers add each
input column's squared activation (float64) and the rows. Per matrix, every in_sum2 within
TOL x the matrix's largest sum, and counts equal; prints the worst element. Exit 1 on failure."""
import os
import subprocess
import sys

import gguf
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

TOL = 1e-5  # relative to the matrix's largest sum: float32 forward passes in different orders
GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def main():
    model, text, ctx, chunks, ours = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    mk = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mergekit-c")
    ids = [int(v) for v in subprocess.run([mk, "tokenize", model, "--text", text], check=True, capture_output=True,
                                          text=True).stdout.split("\n")[0].split()]
    pre = AutoTokenizer.from_pretrained(model)("", add_special_tokens=True)["input_ids"]  # the BOS a window starts with, if any
    bos = pre[0] if pre else None
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    sums, counts = {}, {}

    def hook(name):
        def f(_mod, inp):
            x = inp[0].detach().double().reshape(-1, inp[0].shape[-1])
            sums[name] = sums.get(name, 0) + (x * x).sum(0).numpy()
            counts[name] = counts.get(name, 0) + x.shape[0]
        return f
    for n, mod in m.named_modules():
        if isinstance(mod, torch.nn.Linear) and n.startswith("model.layers."):
            l, rest = n[len("model.layers."):].split(".", 1)
            mod.register_forward_pre_hook(hook(f"blk.{l}.{GGUF[rest]}.weight"))
    with torch.no_grad():
        for w in range(min(chunks, len(ids) // ctx)):
            win = ids[w * ctx:(w + 1) * ctx]
            if bos is not None:
                win[0] = bos
            m(torch.tensor([win]))
    r = gguf.GGUFReader(ours)
    got = {t.name: np.array(t.data, np.float64).ravel() for t in r.tensors}
    worst, bad = (0.0, ""), 0
    for name, s in sums.items():
        g, c = got.get(name + ".in_sum2"), got.get(name + ".counts")
        if g is None or c is None or g.shape != s.shape or c[0] != counts[name]:
            print(f"{name}: missing, shaped {None if g is None else g.shape} for {s.shape}, or count {c} for {counts[name]}")
            bad += 1
            continue
        err = np.abs(g - s) / max(np.abs(s).max(), 1e-30)
        i = int(err.argmax())
        if err[i] > worst[0]:
            worst = (float(err[i]), f"{name}[{i}]: ours {g[i]:.9g}, PyTorch {s[i]:.9g}")
        bad += err[i] > TOL
    if len(got) != 2 * len(sums):
        print(f"{len(got)} tensors in {ours}, expected {2 * len(sums)}")
        bad += 1
    print(f"imatrix: {len(sums)} matrices against PyTorch; worst relative error {worst[0]:.3g} at {worst[1]} (tolerance {TOL})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
