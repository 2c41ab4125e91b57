#!/usr/bin/env python3
"""Perplexity the way `mergekit-c eval` computes it, with the reference tools.

    .venv-tools/bin/python tools/check-ppl.py MODEL_DIR TEXT [--ctx 512] [--chunks N]
        [--gguf FILE] [--json]

transformers (float32, CPU) runs MODEL_DIR on TEXT: the text tokenized once with the model's
tokenizer.json (add_special_tokens=True, as eval does), non-overlapping windows of --ctx
tokens, the first token of each replaced by the BOS the tokenizer adds (if any), the second
half of each window scored (llama.cpp's llama-perplexity recipe). With --gguf, llama.cpp
(llama-cpp-python) runs the same windows of the same token ids on the GGUF file. Prints the
perplexities (with --json, one JSON object), so the suite and compat checks can compare.
"""
import argparse
import json
import math
import sys

import numpy as np
import torch


def windows(ids, ctx, chunks):
    n = len(ids) // ctx
    if chunks:
        n = min(n, chunks)
    return n


def score(logits, ids, ctx):
    """Sum of NLL over the scored half of one window, and the count."""
    first = ctx // 2
    lp = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), dim=-1)
    tgt = torch.as_tensor(ids[first + 1:ctx])
    nll = -lp[first:ctx - 1].gather(1, tgt[:, None]).squeeze(1)
    return float(nll.sum()), len(tgt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=0)
    ap.add_argument("--gguf")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-transformers", action="store_true", help="only llama.cpp (with --gguf)")
    ap.add_argument("--golden", help="write the result, the text's SHA-256 and the tool versions to this JSON file")
    a = ap.parse_args()
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    tok = Tokenizer.from_file(f"{a.model}/tokenizer.json")
    with open(a.text, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    ids = tok.encode(text, add_special_tokens=True).ids
    pre = tok.encode("", add_special_tokens=True).ids
    bos = pre[0] if pre else None
    n = windows(ids, a.ctx, a.chunks)
    model = None
    if not a.no_transformers:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager")
        model.eval()
    total, count = 0.0, 0
    llm = None
    if a.gguf:
        from llama_cpp import Llama
        llm = Llama(model_path=a.gguf, n_ctx=a.ctx, n_batch=a.ctx, logits_all=True, verbose=False)
    g_total = 0.0
    for w in range(n):
        win = list(ids[w * a.ctx:(w + 1) * a.ctx])
        run = list(win)
        if bos is not None:
            run[0] = bos
        if model is not None:
            with torch.no_grad():
                logits = model(torch.tensor([run])).logits[0].numpy()
            total += score(logits, win, a.ctx)[0]
        count += a.ctx - 1 - a.ctx // 2
        if llm is not None:
            llm.reset()
            llm.eval(run)
            gl = np.array(llm.scores[:a.ctx], dtype=np.float32)
            g_total += score(gl, win, a.ctx)[0]
    out = {"model": a.model, "text": a.text, "tokens": len(ids), "ctx": a.ctx, "windows": n, "scored": count,
           "bos": bos}
    if model is not None:
        out["ppl_transformers"] = math.exp(total / count)
    if llm is not None:
        out["ppl_llama_cpp"] = math.exp(g_total / count)
    if a.golden:
        import hashlib
        import importlib.metadata as md
        with open(a.text, "rb") as f:
            out["text_sha256"] = hashlib.sha256(f.read()).hexdigest()
        out["generator"] = "tools/check-ppl.py"
        out["versions"] = {p: md.version(p) for p in ["torch", "transformers", "tokenizers"] +
                           (["llama_cpp_python"] if llm is not None else [])}
        with open(a.golden, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    sys.exit(main())
