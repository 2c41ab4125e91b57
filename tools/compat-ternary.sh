#!/bin/sh
# Load check of `quantize --format ternary`: a synthetic Llama quantized to ternary, loaded by
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
