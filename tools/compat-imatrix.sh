#!/bin/sh
# compat-imatrix.sh (make compat): `mergekit-c imatrix` on a synthetic Llama against PyTorch
# forward hooks on the nn.Linear inputs (tools/check-imatrix.py: every sum within 1e-5 of the
# matrix's largest, counts equal), and the file it writes taken by `convert --imatrix`.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py="$root/.venv-tools/bin/python"
mk="$root/mergekit-c"
w=$(mktemp -d /tmp/mk-compat-imatrix-XXXXXX)
trap 'rm -rf "$w"' EXIT
cd "$w"
"$mk" synth m/ --hidden 256 --layers 2 --heads 4 --kv-heads 2 --intermediate 512 --vocab 300 --dtype float32 --seed 5 -q
awk 'BEGIN { x = 7; for (i = 0; i < 1500; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "tok%d ", 3 + (x % 290) } print "" }' >text.txt
"$mk" imatrix m/ --text text.txt -o im.gguf --ctx 128 --chunks 8 -q
"$py" "$root/tools/check-imatrix.py" m text.txt 128 8 im.gguf
"$mk" convert m/ q.gguf --type q4_k_m --imatrix im.gguf -q
echo "compat-imatrix: passed"
