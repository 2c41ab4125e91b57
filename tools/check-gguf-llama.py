#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) on a GGUF file, against `mergekit-c` reading the same file.

    .venv-tools/bin/python tools/check-gguf-llama.py MODEL.gguf TEXT --ids OURS.txt [--ctx 512]
        [--chunks 4] [--golden OUT.json]

Tokenizes TEXT with llama.cpp's own tokenizer (the vocabulary, merges and pre-tokenizer of
the GGUF; add_special as `mergekit-c eval` encodes) and compares the ids with OURS.txt (the
first line of `mergekit-c tokenize MODEL.gguf --text TEXT`): equal, or the first difference.
Then llama.cpp scores the windows eval scores (tools/check-ppl.py's recipe: non-overlapping
windows of --ctx tokens, the second half of each scored) of those ids: ppl_llama_cpp. Prints
(and with --golden writes) a JSON summary with the SHA-256 of llama.cpp's token ids, which
tests/e2e/gguf.sh checks our tokenizer against without Python.
"""
import argparse
import hashlib
import importlib.util
import json
import math
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("cppl", os.path.join(HERE, "check-ppl.py"))
cppl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cppl)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("text")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--golden")
    a = ap.parse_args()
    from llama_cpp import Llama

    with open(a.text, "rb") as f:
        raw = f.read()
    voc = Llama(model_path=a.gguf, vocab_only=True, verbose=False)
    theirs = voc.tokenize(raw, add_bos=True, special=False)
    del voc
    with open(a.ids) as f:
        ours = [int(x) for x in f.readline().split()]
    first = next((i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y), None)
    if first is None and len(ours) != len(theirs):
        first = min(len(ours), len(theirs))
    llm = Llama(model_path=a.gguf, n_ctx=a.ctx, n_batch=a.ctx, logits_all=True, verbose=False)
    n = cppl.windows(ours, a.ctx, a.chunks)
    total, count = 0.0, 0
    for w in range(n):
        win = list(ours[w * a.ctx:(w + 1) * a.ctx])
        llm.reset()
        llm.eval(win)
        total += cppl.score(np.array(llm.scores[:a.ctx], dtype=np.float32), win, a.ctx)[0]
        count += a.ctx - 1 - a.ctx // 2
    import importlib.metadata as md
    out = {"gguf": os.path.basename(a.gguf), "text": a.text, "ctx": a.ctx, "windows": n, "scored": count,
           "tokens_llama_cpp": len(theirs), "tokens_ours": len(ours), "tokens_equal": first is None,
           "first_difference": first,
           "ids_sha256_llama_cpp": hashlib.sha256(" ".join(map(str, theirs)).encode()).hexdigest(),
           "ppl_llama_cpp": math.exp(total / count),
           "text_sha256": hashlib.sha256(raw).hexdigest(),
           "generator": "tools/check-gguf-llama.py",
           "versions": {"llama_cpp_python": md.version("llama_cpp_python")}}
    if a.golden:
        with open(a.golden, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
