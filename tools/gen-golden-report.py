#!/usr/bin/env python3
"""Golden values for `mergekit-c report RECIPE.yaml` (tests/e2e/report.sh), computed with torch
and mergekit's own TIES pieces: sparsify.magnitude (trim to density) and
generalized_task_arithmetic.get_mask (sign election on the weighted deltas).

Makes synthetic inputs with `mergekit-c synth` (bit-identical on every machine), then per output
layer: the L2 norm of each task vector (deltas in f32), the cosine of every pair, the share of
elements with a kept delta whose kept deltas disagree in sign, and each model's kept density;
the whole-model cosine matrix. Two cases:
  ties.txt       three f32 models (no ties of |delta| at the trim threshold, so which of equal
                 magnitudes torch's argsort keeps does not matter)
  ties-bf16.txt  one bf16 model: its |delta| has many ties at the threshold; trimming keeps
                 exactly k = max(1, int(density x numel)) of them, and with one model the election
                 keeps every nonzero trimmed delta, so the kept density is k over the elements
                 whichever tied ones are kept
Writes tests/golden/report/CASE.txt (one `KEY<TAB>VALUE` line per plotted point, KEY as the test
reads it off the page: plot id | series | x) and CASE.yaml (the recipe).

Usage: .venv-tools/bin/python tools/gen-golden-report.py   (after `make` and tools/setup-venv.sh)
"""
import importlib.metadata as md
import math
import os
import re
import subprocess
import tempfile

import torch
from safetensors.torch import load_file
from mergekit.sparsify import magnitude
from mergekit.merge_methods.generalized_task_arithmetic import get_mask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MK = os.path.join(ROOT, "mergekit-c")
OUT = os.path.join(ROOT, "tests", "golden", "report")

CASES = {
    "ties": (
        [
            "synth base --hidden 48 --heads 6 --kv-heads 2 --intermediate 136 --vocab 100 --layers 3 --dtype float32 --seed 11",
            "synth ft1 --finetune-of base --delta 0.05 --seed 12",
            "synth ft2 --finetune-of base --delta 0.05 --seed 13 --density 0.5",
            "synth ft3 --finetune-of base --delta 0.08 --seed 14",
        ],
        # weights and densities per model; ft3's negative weight flips its deltas' signs in the election
        [("ft1", 0.5, 0.5), ("ft2", 0.3, 0.3), ("ft3", -0.2, 0.7)],
        "float32",
    ),
    "ties-bf16": (
        [
            "synth base --hidden 48 --heads 6 --kv-heads 2 --intermediate 136 --vocab 100 --layers 3 --seed 11",
            "synth ft1 --finetune-of base --delta 0.05 --seed 12",
        ],
        [("ft1", 1.0, 0.3)],
        "bfloat16",
    ),
}


def main():
    for name, (synth, models, dtype) in CASES.items():
        one_case(name, synth, models, dtype)


def one_case(case, SYNTH, MODELS, dtype):
    os.makedirs(OUT, exist_ok=True)
    recipe = "merge_method: ties\nbase_model: base\nmodels:\n" + "".join(
        f"  - model: {m}\n    parameters:\n      weight: {w}\n      density: {d}\n" for m, w, d in MODELS
    ) + f"dtype: {dtype}\n"
    with tempfile.TemporaryDirectory() as w:
        for c in SYNTH:
            subprocess.run([MK] + c.split() + ["-q"], cwd=w, check=True)
        with open(os.path.join(OUT, case + ".yaml"), "w") as f:
            f.write(recipe)
        base = {k: v.float() for k, v in load_file(os.path.join(w, "base", "model.safetensors")).items()}
        fts = [{k: v.float() for k, v in load_file(os.path.join(w, m, "model.safetensors")).items()} for m, _, _ in MODELS]
    n = len(MODELS)
    layers = 1 + max(int(m.group(1)) for k in base for m in [re.search(r"\.layers\.(\d+)\.", k)] if m)
    rows = layers + 1  # the last: tensors outside the layers
    sq = [[0.0] * n for _ in range(rows)]
    dot = [[[0.0] * n for _ in range(n)] for _ in range(rows)]
    elems, active, conflict = [0] * rows, [0] * rows, [0] * rows
    kept = [[0] * n for _ in range(rows)]
    weights = torch.tensor([wt for _, wt, _ in MODELS], dtype=torch.float32)
    for name, b in base.items():
        m = re.search(r"\.layers\.(\d+)\.", name)
        r = int(m.group(1)) if m else layers
        deltas = [ft[name] - b for ft in fts]  # in f32, as the report reads them
        for i in range(n):
            sq[r][i] += float((deltas[i].double() ** 2).sum())
            for j in range(n):
                dot[r][i][j] += float((deltas[i].double() * deltas[j].double()).sum())
        trimmed = torch.stack([magnitude(d, density=dn) for d, (_, _, dn) in zip(deltas, MODELS)])
        wd = trimmed * weights.view(-1, *([1] * b.dim()))
        mask = get_mask(wd, method="sum")
        elems[r] += b.numel()
        act = (wd != 0).any(dim=0)
        active[r] += int(act.sum())
        conflict[r] += int(((wd > 0).any(dim=0) & (wd < 0).any(dim=0)).sum())
        for i in range(n):
            kept[r][i] += int((mask[i] & (wd[i] != 0)).sum())
    lines = [f"# made by tools/gen-golden-report.py with mergekit=={md.version('mergekit')} torch=={md.version('torch')} "
             f"safetensors=={md.version('safetensors')}", "# inputs: mergekit-c " + "; mergekit-c ".join(SYNTH)]
    names = [m for m, _, _ in MODELS]
    # the page's plots in order: norms, cosines per layer (with two models or more), the
    # whole-model matrix, sign conflicts, kept density
    pid = dict(zip(["norm"] + (["cos"] if n > 1 else []) + ["matrix", "conflict", "kept"], (f"p{i}" for i in range(1, 6))))
    for l in range(layers):  # p1: norms
        for i in range(n):
            lines.append(f"{pid['norm']}|{names[i]}|{l}\t{math.sqrt(sq[l][i]):.9g}")
    for l in range(layers):  # p2: cosines per layer, pairs in order
        for a in range(n):
            for c in range(a + 1, n):
                v = dot[l][a][c] / (math.sqrt(sq[l][a]) * math.sqrt(sq[l][c]))
                lines.append(f"{pid['cos']}|{names[a]} vs {names[c]}|{l}\t{v:.9g}")
    for a in range(n):  # p3: the whole-model matrix
        for c in range(n):
            sa, sc = sum(sq[l][a] for l in range(rows)), sum(sq[l][c] for l in range(rows))
            v = 1.0 if a == c else sum(dot[l][a][c] for l in range(rows)) / math.sqrt(sa) / math.sqrt(sc)
            lines.append(f"{pid['matrix']}|{names[a]} vs {names[c]}\t{v:.9g}")
    for l in range(layers):  # p4: sign conflicts
        lines.append(f"{pid['conflict']}|sign conflicts / elements with a kept delta|{l}\t{conflict[l] / active[l]:.9g}")
    for l in range(layers):  # p5: kept density
        for i in range(n):
            lines.append(f"{pid['kept']}|{names[i]}|{l}\t{kept[l][i] / elems[l]:.9g}")
    with open(os.path.join(OUT, case + ".txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {OUT}/{case}.txt ({len(lines) - 2} values)")


if __name__ == "__main__":
    main()
