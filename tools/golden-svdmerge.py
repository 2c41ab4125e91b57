#!/usr/bin/env python3
"""Regenerate tests/golden/svdmerge/ with the authors' own merge code for tsv, iso_c,
iso_cts and cart (merge/methods/svdmerge.c).

Needs local checkouts of the three reference repositories (not part of mergekit-c, never
committed here):

    git clone https://github.com/AntoAndGar/task_singular_vectors   # TSV-Merge
    git clone https://github.com/danielm1405/iso-merging            # Iso-C, Iso-CTS
    git clone https://github.com/JH-GEECS/CART                      # CART

Run from the repository root in the tools venv (it has torch):

    TSV_REPO=.../task_singular_vectors ISO_REPO=.../iso-merging CART_REPO=.../CART \\
        /work/main/.venv-tools/bin/python tools/golden-svdmerge.py

(or --tsv/--iso/--cart DIR). It writes a base and three finetunes (float32, a few 2-D
tensors of odd shapes, an embedding and a 1-D norm) as model folders, runs each recipe's
method through the authors' functions (TSV: compute_and_sum_svd_mem_reduction in
src/utils/TSVM_utils.py; Iso: iso_c / iso_cts in src/utils/iso.py; CART:
StaticMergeModule._merge_weights("CART") in src/merging.py, its heavy imports - ray, wandb,
datasets, open_clip - replaced by empty stand-ins, since the merge itself uses only torch),
and keeps base + alpha * merged task vector (the authors' apply step) as
expected/<recipe>.safetensors. MANIFEST.json records the repositories, their commits, the
tool versions and every file's SHA-256. tests/e2e/svdmerge_golden.sh merges the same
recipes with mergekit-c and compares.
"""
import argparse
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import types

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLD = os.path.join(ROOT, "tests", "golden", "svdmerge")
REPOS = {
    "tsv": ("TSV_REPO", "https://github.com/AntoAndGar/task_singular_vectors"),
    "iso": ("ISO_REPO", "https://github.com/danielm1405/iso-merging"),
    "cart": ("CART_REPO", "https://github.com/JH-GEECS/CART"),
}
# name -> shape; the names put the 2-D weights on CART's low-rank path ("attn"/"mlp" in the
# name) and leave the embedding and the norm on its plain path
SHAPES = {
    "model.embed_tokens.weight": (40, 24),
    "model.layers.0.self_attn.q_proj.weight": (48, 80),
    "model.layers.0.mlp.down_proj.weight": (96, 32),
    "model.layers.0.mlp.up_proj.weight": (32, 96),
    "model.layers.0.input_layernorm.weight": (24,),
}
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 24, "num_hidden_layers": 1,
          "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 32, "vocab_size": 40,
          "torch_dtype": "float32"}
FINETUNES = ["ft1", "ft2", "ft3"]
# recipe -> (method, global parameters, per-model weights or None)
RECIPES = {
    "tsv": ("tsv", {}, None),
    "tsv_weighted": ("tsv", {"alpha": 0.7}, [1.0, 0.5, 1.5]),
    "tsv_two": ("tsv", {}, "two"),
    "iso_c": ("iso_c", {}, None),
    "iso_c_alpha": ("iso_c", {"alpha": 1.3}, [1.0, 2.0, 0.5]),
    "iso_cts": ("iso_cts", {}, None),
    "iso_cts_half": ("iso_cts", {"common_space_fraction": 0.5, "alpha": 1.5}, None),
    "cart": ("cart", {}, None),
    "cart_r05": ("cart", {"lambda": 1.0, "rank_ratio": 0.5}, None),
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def git_commit(path):
    try:
        return subprocess.check_output(["git", "-C", path, "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def load_file(repo, rel, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(repo, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_orthonormal(g, m, k):
    q, r = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def make_models():
    """Base ~ N(0, 0.02); each finetune adds a task matrix with a geometric spectrum (well
    separated singular values, so every truncation the methods make is well defined)."""
    g = torch.Generator().manual_seed(20250101)
    base = {k: (0.02 * torch.randn(*s, generator=g, dtype=torch.float64)).float() for k, s in SHAPES.items()}
    fts = []
    for t in range(len(FINETUNES)):
        ft = {}
        for k, s in SHAPES.items():
            if len(s) == 2:
                m, n = s
                kf = min(m, n)
                sv = 0.01 * (1.0 + 0.5 * t) * 0.9 ** torch.arange(kf, dtype=torch.float64)
                d = random_orthonormal(g, m, kf) @ torch.diag(sv) @ random_orthonormal(g, n, kf).T
            else:
                d = 0.003 * torch.randn(*s, generator=g, dtype=torch.float64)
            ft[k] = (base[k].double() + d).float()
        fts.append(ft)
    return base, fts


class Cfg(types.SimpleNamespace):
    """The attribute-style config the authors' functions read (OmegaConf in their code)."""


class TV:
    """A task vector as the TSV / Iso code reads it: .vector, a dict of tensors."""

    def __init__(self, vector):
        self.vector = vector


def stub_modules(names):
    for n in names:
        if n not in sys.modules:
            m = types.ModuleType(n)
            m.__path__ = []
            sys.modules[n] = m


def cart_module(repo):
    """src/merging.py with its experiment-only imports stubbed out."""
    sys.path.insert(0, repo)
    stub_modules(["ray", "wandb", "omegaconf", "src.dataset", "src.dataset.common", "src.dataset.registry", "src.eval",
                  "src.models.heads", "src.models.modeling", "src.utils", "src.logger"])
    sys.modules["omegaconf"].OmegaConf = type("OmegaConf", (), {})
    sys.modules["omegaconf"].DictConfig = dict
    for fn in ["get_dataloader", "maybe_dictionarize", "get_dataloader_shuffle"]:
        setattr(sys.modules["src.dataset.common"], fn, None)
    sys.modules["src.dataset.registry"].get_dataset = None
    sys.modules["src.eval"].eval_single_dataset = None
    sys.modules["src.models.heads"].get_classification_head = None
    sys.modules["src.models.modeling"].ImageEncoder = object
    for fn in ["is_TA_mode", "get_dir_dict", "garbage_collect"]:
        setattr(sys.modules["src.utils"], fn, None)
    sys.modules["src.logger"].ExperimentResult = None
    return load_file(repo, "src/merging.py", "cart_merging")


class Encoder:
    def __init__(self, sd):
        self.sd = sd

    def state_dict(self):
        return {k: v.clone() for k, v in self.sd.items()}


def run_reference(method, params, weights, base, fts, mods):
    n = len(fts)
    w = weights if isinstance(weights, list) else [1.0] * n
    tvs = [TV({k: w[i] * (fts[i][k] - base[k]) for k in base}) for i in range(n)]
    cfg = Cfg(DATASETS=[f"task{i}" for i in range(n)], device="cpu", num_tasks=n,
              method=Cfg(common_space_fraction=params.get("common_space_fraction", 0.8)))
    if method == "cart":
        tv_cls = mods["cart_tv"].TaskVector
        tvecs = [tv_cls(vector={k: fts[i][k] - base[k] for k in base}) for i in range(n)]
        ccfg = Cfg(tasks=cfg.DATASETS, device="cpu", prior=params.get("lambda", 2.0),
                   initial_rank_ratio=float(params.get("rank_ratio", 0.12)))
        mod = mods["cart"].StaticMergeModule(ccfg, Encoder(base), tvecs)
        mod._merge_weights("CART")
        return {k: v.float() for k, v in mod._merged_state_dict.items()}
    if method == "tsv":
        merged = mods["tsv"].compute_and_sum_svd_mem_reduction(tvs, cfg)
    elif method == "iso_c":
        merged = mods["iso"].iso_c(tvs, cfg)
    else:
        merged = mods["iso"].iso_cts(tvs, cfg)
    alpha = params.get("alpha", 1.0)
    # the authors' apply step: pretrained + scaling_coef * task vector
    return {k: base[k] + alpha * merged[k] for k in base}


def write_model(path, sd):
    os.makedirs(path, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(path, "model.safetensors"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=1)
        f.write("\n")


def recipe_text(method, params, weights, n):
    lines = [f"# golden: {method} against the authors' code (tools/golden-svdmerge.py)", f"merge_method: {method}",
             "base_model: base/", "models:"]
    for i in range(n):
        lines.append(f"  - model: {FINETUNES[i]}/")
        if isinstance(weights, list) and weights[i] != 1.0:
            lines.append(f"    parameters: {{weight: {weights[i]}}}")
    if params:
        lines.append("parameters:")
        lines += [f"  {k}: {v}" for k, v in params.items()]
    lines.append("dtype: float32")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for key, (env, _) in REPOS.items():
        ap.add_argument(f"--{key}", default=os.environ.get(env), help=f"checkout of {REPOS[key][1]} (or ${env})")
    a = ap.parse_args()
    missing = [k for k in REPOS if not getattr(a, k) or not os.path.isdir(getattr(a, k))]
    if missing:
        for k in missing:
            env, url = REPOS[k]
            print(f"missing {k}: git clone {url} and pass --{k} DIR (or set {env})", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)
    mods = {
        "tsv": load_file(a.tsv, "src/utils/TSVM_utils.py", "tsv_utils"),
        "iso": load_file(a.iso, "src/utils/iso.py", "iso_utils"),
        "cart_tv": load_file(a.cart, "src/models/task_vectors.py", "cart_task_vectors"),
        "cart": cart_module(a.cart),
    }
    base, fts = make_models()
    if os.path.isdir(GOLD):
        shutil.rmtree(GOLD)
    os.makedirs(os.path.join(GOLD, "expected"))
    os.makedirs(os.path.join(GOLD, "recipes"))
    write_model(os.path.join(GOLD, "base"), base)
    for name, ft in zip(FINETUNES, fts):
        write_model(os.path.join(GOLD, name), ft)
    files = {}
    for r, (method, params, weights) in RECIPES.items():
        n = 2 if weights == "two" else len(fts)
        out = run_reference(method, params, weights, base, fts[:n], mods)
        p = os.path.join(GOLD, "expected", f"{r}.safetensors")
        save_file({k: v.contiguous() for k, v in out.items()}, p)
        with open(os.path.join(GOLD, "recipes", f"{r}.yaml"), "w") as f:
            f.write(recipe_text(method, params, weights, n))
    for dp, _, fs in os.walk(GOLD):
        for f in sorted(fs):
            p = os.path.join(dp, f)
            files[os.path.relpath(p, GOLD)] = sha256(p)
    manifest = {
        "generator": "tools/golden-svdmerge.py",
        "references": {k: {"repo": REPOS[k][1], "commit": git_commit(getattr(a, k))} for k in REPOS},
        "functions": {
            "tsv": "src/utils/TSVM_utils.py compute_and_sum_svd_mem_reduction",
            "iso_c": "src/utils/iso.py iso_c",
            "iso_cts": "src/utils/iso.py iso_cts",
            "cart": "src/merging.py StaticMergeModule._merge_weights('CART')",
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     "platform": platform.platform()},
        "files": dict(sorted(files.items())),
    }
    with open(os.path.join(GOLD, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"wrote {len(RECIPES)} goldens to {os.path.relpath(GOLD, ROOT)}")


if __name__ == "__main__":
    main()
