#!/usr/bin/env python3
"""Golden PyTorch checkpoints for the .bin reader, written by torch.save itself, and the
tensors torch.load makes of them, as safetensors.

Every case is one small state dict covering what the reader must get right:
bf16/f16/f32 (and f64, f8, integer, bool) tensors, a tied embedding/lm_head (one tensor
under two names), tensors that share a storage (a matrix and its transpose), views at a
storage offset (rows of a bigger tensor), non-contiguous views (a column slice, a
permutation, rows far apart, single elements far apart), a scalar and an empty tensor.

  zip/pytorch_model.bin        torch.save (the zip archive, the default since torch 1.6)
  legacy/pytorch_model.bin     torch.save(..., _use_new_zipfile_serialization=False), without
                               the u16 and f8 tensors (torch cannot load those from this format)
  proto4/model.pt              torch.save(..., pickle_protocol=4) (FRAME, MEMOIZE, STACK_GLOBAL)
  module/pytorch_model.bin     nn.Module.state_dict() (an OrderedDict with _metadata: BUILD)
  params/params.pth            a dict of nn.Parameter (torch._utils._rebuild_parameter)
  zip64/pytorch_model.bin      zip/'s entries rewritten by Python's zipfile with its Zip64 limit
                               lowered to 64 bytes, so sizes and offsets are saturated and carried
                               in Zip64 extra fields and end records, as torch writes them past 4 GiB
  sharded/                     pytorch_model-0000k-of-00002.bin + pytorch_model.bin.index.json
  adapter/                     tests/golden/lora/apply_plain_fp32's PEFT adapter saved as
                               adapter_model.bin (PEFT's save_pretrained(safe_serialization=False)
                               torch.saves the same dict); applying it must give that case's
                               expected output
  <case>/expected.safetensors  torch.load(weights_only=True) of the case (weights_only=False for
                               proto4, which the weights-only unpickler refuses; the file is ours)

MANIFEST records the torch and safetensors versions and the SHA-256 of every file.
tests/e2e/torchbin.sh and tests/unit/test_torchbin.c check that mergekit-c reads exactly
these tensors, bit for bit.

Usage: .venv-tools/bin/python tools/gen-golden-torchbin.py
"""
import collections
import hashlib
import json
import os
import platform
import shutil
import sys
import zipfile

import safetensors
import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "torchbin")
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 1,
          "hidden_size": 8, "vocab_size": 16, "num_attention_heads": 2, "num_key_value_heads": 2,
          "intermediate_size": 5}


def state_dict(v3=True):
    g = torch.Generator().manual_seed(1234)

    def rnd(*shape, dtype=torch.float32):
        return (torch.randn(*shape, generator=g) * 3).to(dtype)

    sd = collections.OrderedDict()
    emb = rnd(16, 8, dtype=torch.bfloat16)
    sd["model.embed_tokens.weight"] = emb
    sd["lm_head.weight"] = emb  # tied: the same tensor under two names
    big = rnd(12, 10, dtype=torch.float16)
    sd["model.layers.0.mlp.up_proj.weight"] = big[2:7]  # contiguous, at a storage offset
    sd["model.layers.0.mlp.gate_proj.weight"] = big[:, 3:8]  # a column slice of the same storage
    w = rnd(6, 9)
    sd["model.layers.0.self_attn.q_proj.weight"] = w
    sd["model.layers.0.self_attn.o_proj.weight"] = w.t()  # a transpose, sharing q_proj's storage
    sd["model.layers.0.self_attn.k_proj.weight"] = rnd(2, 3, 4).permute(2, 0, 1)  # 3-D permutation
    long = rnd(600, dtype=torch.bfloat16)
    sd["model.layers.0.self_attn.v_proj.weight"] = long.view(100, 6)[::25, 1:4]  # rows far apart
    sd["model.layers.0.sparse"] = long[::200]  # single elements far apart
    sd["model.norm.weight"] = rnd(8, dtype=torch.float16)
    sd["model.layers.0.input_layernorm.weight"] = rnd(8, dtype=torch.float64)
    sd["scale"] = torch.tensor(3.5)  # a scalar
    sd["num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
    sd["empty"] = torch.zeros(0, 4, dtype=torch.bfloat16)
    sd["mask"] = torch.tensor([True, False, True])
    sd["ids"] = torch.arange(-3, 3, dtype=torch.int32).view(2, 3).t()
    sd["i16"] = torch.arange(-4, 4, dtype=torch.int16)
    sd["i8"] = torch.arange(-4, 4, dtype=torch.int8)[1::2]
    sd["u8"] = torch.arange(250, 256, dtype=torch.uint8)
    u16 = torch.arange(65530, 65536, dtype=torch.int32).to(torch.uint16)
    f8 = rnd(2, 4).to(torch.float8_e4m3fn)
    if v3:  # untyped storages (_rebuild_tensor_v3), which torch's legacy loader cannot read back
        sd["u16"] = u16
        sd["f8"] = f8
    return sd


def expected(path, weights_only=True):
    sd = torch.load(path, weights_only=weights_only)
    # safetensors stores each tensor on its own: contiguous copies, no shared storage
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def zip64_copy(src, dst):
    """The same entries, stored, with every size and offset over 64 bytes in Zip64 form."""
    limit = zipfile.ZIP64_LIMIT
    zipfile.ZIP64_LIMIT = 64
    try:
        with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zo:
            for info in zi.infolist():
                with zo.open(zipfile.ZipInfo(info.filename), "w", force_zip64=True) as f:
                    f.write(zi.read(info))
    finally:
        zipfile.ZIP64_LIMIT = limit


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    sd = state_dict()

    def case(name, fname, save, weights_only=True, config=True):
        d = os.path.join(OUT, name)
        os.makedirs(d)
        p = os.path.join(d, fname)
        save(p)
        if config:
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(CONFIG, f)
        save_file(expected(p, weights_only), os.path.join(d, "expected.safetensors"))

    case("zip", "pytorch_model.bin", lambda p: torch.save(sd, p))
    case("zip64", "pytorch_model.bin", lambda p: zip64_copy(os.path.join(OUT, "zip", "pytorch_model.bin"), p))
    legacy = state_dict(v3=False)
    case("legacy", "pytorch_model.bin", lambda p: torch.save(legacy, p, _use_new_zipfile_serialization=False))
    case("proto4", "model.pt", lambda p: torch.save(sd, p, pickle_protocol=4), weights_only=False, config=False)

    torch.manual_seed(5)
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2, bias=False))
    m = m.to(torch.bfloat16)
    case("module", "pytorch_model.bin", lambda p: torch.save(m.state_dict(), p))
    case("params", "params.pth", lambda p: torch.save(dict(m.named_parameters()), p), config=False)

    # sharded as transformers' save_pretrained(safe_serialization=False) names it
    d = os.path.join(OUT, "sharded")
    os.makedirs(d)
    names = list(sd)
    parts = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for k, part in enumerate(parts):
        fname = f"pytorch_model-{k + 1:05d}-of-{len(parts):05d}.bin"
        torch.save(collections.OrderedDict((n, sd[n]) for n in part), os.path.join(d, fname))
        weight_map.update({n: fname for n in part})
    total = sum(sd[n].numel() * sd[n].element_size() for n in names)
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    loaded = {}
    for k in range(len(parts)):
        loaded.update(expected(os.path.join(d, f"pytorch_model-{k + 1:05d}-of-{len(parts):05d}.bin")))
    save_file(loaded, os.path.join(d, "expected.safetensors"))

    d = os.path.join(OUT, "adapter")
    os.makedirs(d)
    src = os.path.join(ROOT, "tests", "golden", "lora", "apply_plain_fp32", "adapter")
    shutil.copy(os.path.join(src, "adapter_config.json"), d)
    torch.save(load_file(os.path.join(src, "adapter_model.safetensors")), os.path.join(d, "adapter_model.bin"))

    lines = [f"torch {torch.__version__}", f"safetensors {safetensors.__version__}",
             f"python {platform.python_version()}", "generator tools/gen-golden-torchbin.py"]
    for dirpath, _, files in sorted(os.walk(OUT)):
        for fn in sorted(files):
            p = os.path.join(dirpath, fn)
            if fn == "MANIFEST":
                continue
            with open(p, "rb") as f:
                lines.append(f"sha256 {hashlib.sha256(f.read()).hexdigest()} {os.path.relpath(p, OUT)}")
    with open(os.path.join(OUT, "MANIFEST"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
