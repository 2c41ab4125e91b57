#!/bin/sh
# Load check of `quantize --format ternary`: synthetic Llamas (bf16; f32 with weights kept for their
# row count) quantized to ternary, loaded by
# transformers' BitNet integration (tools/check-ternary-load.py) and compared with
# `mergekit-c dequantize` of the same output. Needs no GPU.
# Usage: tools/compat-ternary.sh [PYTHON]   (default: .venv-tools/bin/python at the root)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-$root/.venv-tools/bin/python}
mk=$root/mergekit-c
[ -x "$py" ] || { echo "compat-ternary: no venv python at $py (run tools/setup-venv.sh)" >&2; exit 1; }
[ -x "$mk" ] || { echo "compat-ternary: build mergekit-c first (make)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$mk" synth "$work/m" --hidden 256 --layers 2 --heads 8 --kv-heads 4 --intermediate 704 --vocab 1000 --dtype bf16 --seed 7 -q
"$mk" quantize "$work/m" "$work/q" --format ternary -q
"$mk" dequantize "$work/q" "$work/d" -q
TORCHDYNAMO_DISABLE=1 "$py" "$root/tools/check-ternary-load.py" "$work/m" "$work/q" "$work/d"
# f32, and MLP rows (174) that are not a multiple of 4: gate/up kept and listed in modules_to_not_convert
"$mk" synth "$work/m2" --hidden 64 --layers 1 --heads 4 --intermediate 174 --vocab 300 --dtype f32 --seed 3 -q
"$mk" quantize "$work/m2" "$work/q2" --format ternary -q 2>/dev/null
"$mk" dequantize "$work/q2" "$work/d2" -q
grep -q '"model.layers.0.mlp.gate_proj"' "$work/q2/config.json" || { echo "not ok - gate_proj not in modules_to_not_convert" >&2; exit 1; }
TORCHDYNAMO_DISABLE=1 "$py" "$root/tools/check-ternary-load.py" "$work/m2" "$work/q2" "$work/d2"
