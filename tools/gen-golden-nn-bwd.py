#!/usr/bin/env python3
"""Regenerate tests/golden/nn/ with torch's autograd: the references of LayerNorm's and GeGLU's
forward and backward (nn/ops.c mk_nn_layernorm, nn/ops_bwd.c mk_nn_layernorm_bwd,
mk_nn_act_gated(MK_ACT_GELU_TANH) and mk_nn_geglu_bwd, which the CUDA kernels of
nn/cuda/mk_cuda_norm.h are held to).

Run from the repository root with the tools venv (tools/setup-venv.sh):

    .venv-tools/bin/python tools/gen-golden-nn-bwd.py

tests/golden/nn/norm_geglu.safetensors holds, in float32, the inputs (numpy's generator with a
fixed seed) and torch's outputs and gradients for each case: torch.nn.functional.layer_norm over
the last dimension (with and without a bias, a row longer than a CUDA block) and
gelu(gate, approximate="tanh") * up, the output's gradient given. MANIFEST.json records the cases
and the tool versions. tests/unit/test_nn_norm_geglu.c compares.
"""
import importlib.metadata as md
import json
import os
import platform

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLD = os.path.join(ROOT, "tests", "golden", "nn")
EPS = 1e-5


def layernorm(name, rng, T, d, bias, out):
    x = rng.uniform(-2, 3, (T, d)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, d).astype(np.float32)
    b = rng.uniform(-1, 1, d).astype(np.float32)
    dy = rng.uniform(-1, 1, (T, d)).astype(np.float32)
    xt, wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    y = torch.nn.functional.layer_norm(xt, (d,), wt, bt if bias else None, EPS)
    y.backward(torch.tensor(dy, dtype=torch.float64))
    out.update({f"{name}.x": x, f"{name}.w": w, f"{name}.dy": dy, f"{name}.y": y.detach().float().numpy(),
                f"{name}.dx": xt.grad.float().numpy(), f"{name}.dw": wt.grad.float().numpy()})
    if bias:
        out.update({f"{name}.b": b, f"{name}.db": bt.grad.float().numpy()})
    return {"op": "layer_norm", "T": T, "d": d, "bias": bias, "eps": EPS}


def geglu(name, rng, n, out):
    g = rng.uniform(-6, 6, n).astype(np.float32)
    u = rng.uniform(-2, 2, n).astype(np.float32)
    dy = rng.uniform(-1, 1, n).astype(np.float32)
    gt, ut = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (g, u))
    y = torch.nn.functional.gelu(gt, approximate="tanh") * ut
    y.backward(torch.tensor(dy, dtype=torch.float64))
    out.update({f"{name}.gate": g, f"{name}.up": u, f"{name}.dy": dy, f"{name}.y": y.detach().float().numpy(),
                f"{name}.dgate": gt.grad.float().numpy(), f"{name}.dup": ut.grad.float().numpy()})
    return {"op": "gelu_tanh_gated", "n": n}


def main():
    os.makedirs(GOLD, exist_ok=True)
    rng = np.random.default_rng(20261207)
    out, cases = {}, {}
    cases["ln_bias"] = layernorm("ln_bias", rng, 5, 64, True, out)
    cases["ln_long"] = layernorm("ln_long", rng, 3, 1000, False, out)
    cases["geglu"] = geglu("geglu", rng, 1000, out)
    save_file(out, os.path.join(GOLD, "norm_geglu.safetensors"))
    manifest = {"generator": "tools/gen-golden-nn-bwd.py", "note": "torch autograd in float64 on float32 inputs, "
                "outputs rounded to float32", "cases": cases,
                "versions": {p: md.version(p) for p in ["torch", "numpy", "safetensors"]},
                "python": platform.python_version()}
    with open(os.path.join(GOLD, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
