#!/usr/bin/env python3
"""Golden GGUF files for mergekit-c's GGUF reader, made by gguf-py (llama.cpp's own Python
package: GGUFWriter writes the files, gguf.quants holds the reference block codecs).

    .venv-tools/bin/python tools/gen-golden-gguf.py

writes tests/golden/gguf/:
  types.gguf + types.f32.safetensors   one [3, 256] tensor per ggml type the reader decodes
      (row 0 ~ N(0, 1), row 1 ~ N(0, 1) x 100, row 2 zeros), named by type ("q4_k"), and
      gguf-py's dequantization of each as f32. Types gguf-py can quantize are quantized
      from those values; for the others (the k-quants, IQ4_NL, IQ4_XS) the blocks are random
      bytes with the f16 scales set to finite values, and gguf-py's dequantize is the golden.
  tiny.safetensors + tiny-f32.gguf   a synthetic 2-layer Llama (hidden 32, 4 heads, 2 KV
      heads) and its GGUF as llama.cpp's convert_hf_to_gguf.py writes it: llama.cpp tensor
      names, Q/K rows permuted (LlamaModel.permute), llama.* metadata, a small BPE tokenizer;
      `dequantize` must give tiny.safetensors back byte for byte.
  tiny-q8_0.gguf + tiny-q8_0.f32.safetensors   the same with every matrix in Q8_0, and its
      gguf-py dequantization with the permutation undone (Hugging Face names).
  tiny-spm.gguf + spm/N.txt, spm/N.ids   the same Q8_0 model with a SentencePiece vocabulary
      (tokenizer.ggml.model "llama": scores, byte tokens, no merges), a few texts, and the ids
      llama.cpp's own tokenizer (llama-cpp-python, vocab_only, add_bos) gives for each.
  VERSIONS   the tool versions.
"""
import importlib.metadata
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "golden", "gguf")

QUANTIZABLE = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.TQ1_0, T.TQ2_0, T.MXFP4]
# byte offsets of the f16 scale fields in each block (ggml-common.h)
RANDOM = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.IQ4_NL: [0], T.IQ4_XS: [0]}


def random_blocks(rng, qt, rows, cols):
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    nb = cols // bs
    raw = rng.integers(0, 256, size=(rows, nb, ts), dtype=np.uint8)
    for off in RANDOM[qt]:
        d = rng.uniform(0.001, 0.05, size=(rows, nb)).astype(np.float16)
        d[rows - 1] = 0  # a row of zero scales (zeros, or -min where the type has one)
        raw[:, :, off:off + 2] = d.view(np.uint8).reshape(rows, nb, 2)
    return raw.reshape(rows, nb * ts)


def types_file(rng):
    rows, cols = 3, 256
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x[1] *= 100
    x[2] = 0
    w = gguf.GGUFWriter(os.path.join(OUT, "types.gguf"), "mk-test")
    golden = {}
    for qt in QUANTIZABLE + list(RANDOM):
        name = qt.name.lower()
        raw = random_blocks(rng, qt, rows, cols) if qt in RANDOM else quants.quantize(x, qt)
        w.add_tensor(name, raw, raw_dtype=qt)
        golden[name] = np.ascontiguousarray(quants.dequantize(raw, qt).astype(np.float32).reshape(rows, cols))
    # a 3-D tensor (ne = [64, 2, 2]) in Q8_0: more than two dimensions survive the listing
    x3 = rng.standard_normal((2, 2, 64)).astype(np.float32)
    raw = quants.quantize(x3, T.Q8_0)
    w.add_tensor("q8_0_3d", raw, raw_dtype=T.Q8_0)
    golden["q8_0_3d"] = np.ascontiguousarray(quants.dequantize(raw, T.Q8_0).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file(golden, os.path.join(OUT, "types.f32.safetensors"))


# ---- a tiny Llama ----
CFG = dict(vocab=40, hidden=32, layers=2, heads=4, kv_heads=2, ffn=32, eps=1e-5, theta=10000.0, ctx=128)


def permute(w, n_head, n_head_kv):
    # convert_hf_to_gguf.py LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_weights(rng):
    c = CFG
    hd = c["hidden"] // c["heads"]
    t = {"model.embed_tokens.weight": (c["vocab"], c["hidden"]), "model.norm.weight": (c["hidden"],),
         "lm_head.weight": (c["vocab"], c["hidden"])}
    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        t.update({p + "input_layernorm.weight": (c["hidden"],), p + "post_attention_layernorm.weight": (c["hidden"],),
                  p + "self_attn.q_proj.weight": (c["heads"] * hd, c["hidden"]),
                  p + "self_attn.k_proj.weight": (c["kv_heads"] * hd, c["hidden"]),
                  p + "self_attn.v_proj.weight": (c["kv_heads"] * hd, c["hidden"]),
                  p + "self_attn.o_proj.weight": (c["hidden"], c["heads"] * hd),
                  p + "mlp.gate_proj.weight": (c["ffn"], c["hidden"]), p + "mlp.up_proj.weight": (c["ffn"], c["hidden"]),
                  p + "mlp.down_proj.weight": (c["hidden"], c["ffn"])})
    out = {}
    for k, shape in t.items():
        if len(shape) == 1:
            out[k] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[k] = (0.2 * rng.standard_normal(shape)).astype(np.float32)
    return out


GG = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
      "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
      "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
      "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_name(hf):
    stem = hf[:-len(".weight")]
    if stem.startswith("model.layers."):
        _, _, n, rest = stem.split(".", 3)
        return f"blk.{n}.{GG[rest]}.weight"
    return GG[stem] + ".weight"


def tokenizer(w):
    # byte-level BPE as llama.cpp's gpt2 vocabularies: tokens in the GPT-2 byte alphabet
    toks = ["<s>", "</s>", "a", "b", "c", " ", "Ġ", "ab", "abc", "Ġa", "Ġab"]
    toks += [chr(ord("d") + i) for i in range(CFG["vocab"] - len(toks))]
    types = [3, 3] + [1] * (len(toks) - 2)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(["a b", "ab c", "Ġ a", "Ġa b"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)


SPM_PIECES = ["\u2581", "a", "b", "c", "d", "e", "\u00e9", "\u2581a", "ab", "\u2581ab", "bc", "abc", "\u2581abc", "cd", "de",
              "\u2581d", "\u2581c", "cde", "\u2581cd", "h", "l", "o", "he", "ll", "llo", "hello", "\u2581hello", "w", "r",
              "\u2581w", "or", "ld", "wor", "world", "\u2581world", "\u2581\u2581", "\u00e9a", "\u2581\u00e9"]
SPM_TEXTS = ["abc ab a", "hello world", "ab  cd\n", "\u00e9a b\u00e9", "xyz", " leading space", "cdeabc", "hello  worldly"]


def tokenizer_spm(w):
    # a SentencePiece vocabulary as llama.cpp's "llama" tokenizer reads it: control tokens, the
    # 256 byte tokens, then pieces scored by rank (the first scores highest)
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + SPM_PIECES
    types = [2, 3, 3] + [6] * 256 + [1] * len(SPM_PIECES)
    scores = [0.0] * 259 + [-float(i) for i in range(len(SPM_PIECES))]
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)


def tiny_gguf(weights, path, qtype, tok=tokenizer):
    c = CFG
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny")
    w.add_context_length(c["ctx"])
    w.add_embedding_length(c["hidden"])
    w.add_block_count(c["layers"])
    w.add_feed_forward_length(c["ffn"])
    w.add_head_count(c["heads"])
    w.add_head_count_kv(c["kv_heads"])
    w.add_layer_norm_rms_eps(c["eps"])
    w.add_rope_freq_base(c["theta"])
    w.add_rope_dimension_count(c["hidden"] // c["heads"])
    w.add_file_type(0 if qtype == T.F32 else 7)
    tok(w)
    deq = {}
    for hf, x in weights.items():
        if hf.endswith("q_proj.weight"):
            x = permute(x, c["heads"], c["heads"])
        elif hf.endswith("k_proj.weight"):
            x = permute(x, c["heads"], c["kv_heads"])
        qt = qtype if x.ndim == 2 else T.F32
        raw = quants.quantize(x, qt)
        w.add_tensor(gguf_name(hf), raw, raw_dtype=qt)
        y = quants.dequantize(raw, qt).astype(np.float32).reshape(x.shape)
        # undo the permutation: HF row (h, i, j) is GGUF row (h, j, i)
        if hf.endswith("q_proj.weight") or hf.endswith("k_proj.weight"):
            nh = c["heads"] if "q_proj" in hf else c["kv_heads"]
            y = y.reshape(nh, y.shape[0] // nh // 2, 2, *y.shape[1:]).swapaxes(1, 2).reshape(y.shape)
        deq[hf] = np.ascontiguousarray(y)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return deq


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(17)
    types_file(rng)
    weights = tiny_weights(rng)
    save_file(weights, os.path.join(OUT, "tiny.safetensors"))
    back = tiny_gguf(weights, os.path.join(OUT, "tiny-f32.gguf"), T.F32)
    assert all(np.array_equal(back[k], weights[k]) for k in weights), "gguf-py f32 round trip"
    deq = tiny_gguf(weights, os.path.join(OUT, "tiny-q8_0.gguf"), T.Q8_0)
    save_file(deq, os.path.join(OUT, "tiny-q8_0.f32.safetensors"))
    spm = os.path.join(OUT, "tiny-spm.gguf")
    tiny_gguf(weights, spm, T.Q8_0, tokenizer_spm)
    # llama.cpp's own tokenizer on the SentencePiece vocabulary: the ids `tokenize` must give
    from llama_cpp import Llama
    voc = Llama(model_path=spm, vocab_only=True, verbose=False)
    ids = {t: voc.tokenize(t.encode(), add_bos=True, special=False) for t in SPM_TEXTS}
    d = os.path.join(OUT, "spm")
    os.makedirs(d, exist_ok=True)
    for i, t in enumerate(SPM_TEXTS):
        with open(os.path.join(d, f"{i}.txt"), "wb") as f:
            f.write(t.encode())
        with open(os.path.join(d, f"{i}.ids"), "w") as f:
            f.write(" ".join(map(str, ids[t])) + "\n")
    with open(os.path.join(OUT, "VERSIONS"), "w") as f:
        f.write(f"gguf=={importlib.metadata.version('gguf')}\n")
        f.write(f"numpy=={np.__version__}\n")
        f.write(f"llama-cpp-python=={importlib.metadata.version('llama_cpp_python')}\n")
        f.write(f"python=={sys.version.split()[0]}\n")
    for n in sorted(os.listdir(OUT)):
        print(f"{n}: {os.path.getsize(os.path.join(OUT, n))} bytes")


if __name__ == "__main__":
    main()
