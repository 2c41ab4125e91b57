#!/usr/bin/env python3
"""check-imatrix.py MODEL TEXT CTX CHUNKS OURS.gguf [--process-output]: the importance matrix
mergekit-c wrote (OURS.gguf, `mergekit-c imatrix MODEL --text TEXT --ctx CTX --chunks CHUNKS`)
against PyTorch: transformers runs MODEL (float32) on the same windows (token ids from
`mergekit-c tokenize`, BOS first in each window when the tokenizer adds one), with
torch.nn.functional.linear wrapped so that every call on a weight of the decoder layers (and
lm_head with --process-output) adds each input column's squared activation (float64) and the
rows to that weight's statistics. A 3-D expert tensor (transformers' fused gate_up_proj /
down_proj, one slice per expert) gets one row and count per expert: the tokens routed to it,
as llama-imatrix's MUL_MAT_ID statistics. Per matrix, every in_sum2 within TOL x the matrix's
largest sum, and every count equal; prints the worst element. Exit 1 on failure."""
import os
import re
import subprocess
import sys

import gguf
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

TOL = 1e-5  # relative to the matrix's largest sum: float32 forward passes in different orders
DENSE = {"self_attn.q_proj": ["attn_q"], "self_attn.k_proj": ["attn_k"], "self_attn.v_proj": ["attn_v"],
         "self_attn.o_proj": ["attn_output"], "mlp.gate_proj": ["ffn_gate"], "mlp.up_proj": ["ffn_up"],
         "mlp.down_proj": ["ffn_down"], "mlp.gate": ["ffn_gate_inp"], "mlp.experts.gate_up_proj": ["ffn_gate_exps", "ffn_up_exps"],
         "mlp.experts.down_proj": ["ffn_down_exps"], "mlp.shared_expert.gate_proj": ["ffn_gate_shexp"],
         "mlp.shared_expert.up_proj": ["ffn_up_shexp"], "mlp.shared_expert.down_proj": ["ffn_down_shexp"],
         "mlp.shared_expert_gate": ["ffn_gate_inp_shexp"]}


def gguf_names(param, process_output):
    if param == "lm_head.weight":
        return ["output.weight"] if process_output else []
    m = re.match(r"model\.layers\.(\d+)\.(.*?)(\.weight)?$", param)
    if not m or m.group(2) not in DENSE:
        return []
    return [f"blk.{m.group(1)}.{n}.weight" for n in DENSE[m.group(2)]]


def main():
    model, text, ctx, chunks, ours = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    process_output = "--process-output" in sys.argv[6:]
    mk = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mergekit-c")
    ids = [int(v) for v in subprocess.run([mk, "tokenize", model, "--text", text], check=True, capture_output=True,
                                          text=True).stdout.split("\n")[0].split()]
    pre = AutoTokenizer.from_pretrained(model)("", add_special_tokens=True)["input_ids"]  # the BOS a window starts with, if any
    bos = pre[0] if pre else None
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    for mod in m.modules():  # the experts' eager forward: F.linear on each expert's slice
        if getattr(mod, "config", None) is not None and hasattr(mod.config, "_experts_implementation"):
            mod.config._experts_implementation = "eager"
    spans = []  # (first byte, end byte, bytes per expert or 0, gguf names, experts)
    for name, p in m.named_parameters():
        names = gguf_names(name, process_output)
        if names:
            per = p[0].numel() * p.element_size() if p.dim() == 3 else 0
            spans.append((p.data_ptr(), p.data_ptr() + p.numel() * p.element_size(), per, names, p.shape[0] if per else 1))
    sums, counts = {}, {}
    linear = torch.nn.functional.linear

    def hooked(x, w, b=None):
        ptr = w.data_ptr()
        for lo, hi, per, names, ne in spans:
            if lo <= ptr < hi:
                e = (ptr - lo) // per if per else 0
                xs = x.detach().double().reshape(-1, x.shape[-1])
                for n in names:
                    if n not in sums:
                        sums[n], counts[n] = np.zeros((ne, xs.shape[1])), np.zeros(ne)
                    sums[n][e] += (xs * xs).sum(0).numpy()
                    counts[n][e] += xs.shape[0]
        return linear(x, w, b)

    torch.nn.functional.linear = hooked
    with torch.no_grad():
        for w in range(min(chunks, len(ids) // ctx)):
            win = ids[w * ctx:(w + 1) * ctx]
            if bos is not None:
                win[0] = bos
            m(torch.tensor([win]))
    torch.nn.functional.linear = linear
    r = gguf.GGUFReader(ours)
    got = {t.name: np.array(t.data, np.float64).reshape(-1) for t in r.tensors}
    worst, bad = (0.0, ""), 0
    for name, s in sums.items():
        g, c = got.get(name + ".in_sum2"), got.get(name + ".counts")
        s = s.reshape(-1)
        if g is None or c is None or g.shape != s.shape or not np.array_equal(c, counts[name]):
            print(f"{name}: missing, shaped {None if g is None else g.shape} for {s.shape}, or counts {c} for {counts[name]}")
            bad += 1
            continue
        err = np.abs(g - s) / max(np.abs(s).max(), 1e-30)
        i = int(err.argmax())
        if err[i] > worst[0]:
            worst = (float(err[i]), f"{name}[{i}]: ours {g[i]:.9g}, PyTorch {s[i]:.9g}")
        bad += err[i] > TOL
    if len(got) != 2 * len(sums):
        print(f"{len(got)} tensors in {ours}, expected {2 * len(sums)}: {sorted(set(got) - {n + x for n in sums for x in ('.in_sum2', '.counts')})}")
        bad += 1
    experts = sum(1 for n in sums if counts[n].size > 1)
    print(f"imatrix: {len(sums)} matrices ({experts} of experts) against PyTorch; worst relative error {worst[0]:.3g} at {worst[1]} "
          f"(tolerance {TOL})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
