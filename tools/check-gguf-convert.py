#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) running GGUF files `mergekit-c convert` wrote, against
transformers running the Hugging Face folder they were converted from.

    .venv-tools/bin/python tools/check-gguf-convert.py FOLDER --gguf T=FILE.gguf ... [--tol T=X ...]
        [--tokens 48] [--metadata REF.gguf]

Feeds the same token ids (a fixed pseudo-random sequence, so models without a vocabulary
work too) to both; for each file prints the largest |logit difference| over every position
and vocabulary entry, divided by the largest |logit| transformers gives (the named
tolerance, per type), and whether the arg-max token agrees at each position. With
--metadata, the llama.cpp-relevant keys of FILE (the first --gguf) and of REF (a GGUF file
llama.cpp's converter wrote for the same model) are compared: equal, or each difference
printed (a difference fails). Exit 1 on any failure.
"""
import argparse
import json
import sys

import numpy as np

DEFAULT_TOL = {"f32": 1e-3, "f16": 5e-3, "bf16": 3e-2, "q8_0": 5e-2, "q5_1": 8e-2, "q5_0": 8e-2, "q4_1": 0.15, "q4_0": 0.15}
KEYS = ["general.architecture", "general.file_type", "general.quantization_version"]
ARCH_KEYS = ["block_count", "context_length", "embedding_length", "feed_forward_length", "attention.head_count",
             "attention.head_count_kv", "rope.freq_base", "attention.layer_norm_rms_epsilon", "vocab_size",
             "rope.dimension_count"]
TOK_KEYS = ["tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
            "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.padding_token_id", "tokenizer.chat_template"]


def hf_logits(folder, ids):
    import torch
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].numpy()


def cpp_logits(path, ids):
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_ctx=max(64, len(ids)), logits_all=True, verbose=False, n_threads=2)
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)], dtype=np.float32)


def fields(path):
    import gguf
    r = gguf.GGUFReader(path)
    arch = r.fields["general.architecture"].contents()
    keys = KEYS + [f"{arch}.{k}" for k in ARCH_KEYS] + TOK_KEYS
    out = {}
    for k in keys:
        f = r.fields.get(k)
        out[k] = None if f is None else f.contents()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--gguf", action="append", required=True, help="TYPE=FILE")
    ap.add_argument("--tol", action="append", default=[], help="TYPE=X")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--metadata")
    a = ap.parse_args()
    tol = dict(DEFAULT_TOL)
    for t in a.tol:
        k, v = t.split("=")
        tol[k] = float(v)
    cfg = json.load(open(f"{a.folder}/config.json"))
    rng = np.random.default_rng(17)
    ids = [int(x) for x in rng.integers(3, cfg["vocab_size"], a.tokens)]
    ref = hf_logits(a.folder, ids)
    scale = float(np.abs(ref).max())
    ok = True
    for g in a.gguf:
        t, path = g.split("=", 1)
        got = cpp_logits(path, ids)
        d = np.abs(got - ref)
        pos, tok = np.unravel_index(int(d.argmax()), d.shape)
        rel = float(d.max()) / scale
        agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
        good = rel <= tol[t]
        ok &= good
        print(f"{t}: max |llama.cpp - transformers| / max |logit| = {rel:.3g} (tolerance {tol[t]:g}; worst at position {pos}, "
              f"token {tok}: {got[pos, tok]:.6g} vs {ref[pos, tok]:.6g}); arg-max agrees at {agree * 100:.1f} % of positions"
              + ("" if good else "  FAIL"))
    if a.metadata:
        t0, path = a.gguf[0].split("=", 1)
        ours, theirs = fields(path), fields(a.metadata)
        diff = [k for k in ours if k != "general.file_type" and ours[k] != theirs[k]]
        for k in diff:
            print(f"metadata {k}: ours {str(ours[k])[:80]!r}, llama.cpp's {str(theirs[k])[:80]!r}")
        print(f"metadata: {len(ours) - 1 - len(diff)} of {len(ours) - 1} keys equal the reference file's")
        ok &= not diff
    print("check-gguf-convert:", "ok" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
