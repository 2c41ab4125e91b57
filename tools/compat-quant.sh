#!/bin/sh
# Load checks of `quantize`: a synthetic Llama quantized to every format and layout,
# dequantized by mergekit-c, then loaded with transformers + bitsandbytes and with
# compressed-tensors (tools/check-quant-load.py) in the tools venv. Needs no GPU.
# Usage: tools/compat-quant.sh [PYTHON]   (default: .venv-tools/bin/python at the root)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-$root/.venv-tools/bin/python}
mk=$root/mergekit-c
[ -x "$py" ] || { echo "compat-quant: no venv python at $py (run tools/setup-venv.sh)" >&2; exit 1; }
[ -x "$mk" ] || { echo "compat-quant: build mergekit-c first (make)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# intermediate 704: a multiple of 32 (bitsandbytes' CPU 4-bit kernel needs that of out_features) but not of
# 128, so int4's default groups leave down_proj unquantized (it goes to "ignore")
"$mk" synth "$work/m" --hidden 256 --layers 2 --heads 8 --kv-heads 4 --intermediate 704 --vocab 1000 --dtype bf16 --seed 7 -q
names=""
q() { # NAME ARGS...: quantize and dequantize
    n=$1
    shift
    "$mk" quantize "$work/m" "$work/q-$n" "$@" -q
    "$mk" dequantize "$work/q-$n" "$work/d-$n" -q
    names="$names $n"
}
q nf4 --format nf4
q nf4-dq --format nf4 --double-quant
q fp4 --format fp4
q int8 --format int8
q int4 --format int4
q int4-g32-asym-search --format int4 --group-size 32 --scheme asym --method search
q int8-ct --format int8 --target compressed-tensors
q fp8 --format fp8
q fp8-tensor --format fp8 --per-tensor
q fp8-e5m2 --format fp8-e5m2
q nvfp4 --format nvfp4
q mxfp4 --format mxfp4
q mxfp8 --format mxfp8
# shellcheck disable=SC2086
"$py" "$root/tools/check-quant-load.py" "$work/m" "$work" $names
