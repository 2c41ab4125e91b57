#!/bin/sh
# quantize --target-bpw on SmolLM2-135M (tools/get-smollm2.sh) against the best single format
# at the same budget: the allocation's objective (--sensitivity weight, kld and imatrix) and
# the KL divergence to the original that `eval` measures on two Debian texts (GPL-3, the text
# kld probes and the imatrix is gathered on, and Apache-2.0, which neither sees).
# Usage: tools/alloc-smollm2.sh [BUDGET [SINGLE-FORMAT]]   (default: 4.51 nvfp4)
# Prints one line per model and text; takes some minutes on two cores.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk=$root/mergekit-c
sm=${MK_SMOLLM2:-$root/.models/smollm2}
b=${1:-4.51}
single=${2:-nvfp4}
[ -f "$sm/model.safetensors" ] || { echo "alloc-smollm2: $sm is absent (run tools/get-smollm2.sh)" >&2; exit 1; }
g=/usr/share/common-licenses/GPL-3
a=/usr/share/common-licenses/Apache-2.0
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
"$mk" quantize "$sm" "$w/$single" --format "$single" -q
"$mk" quantize "$sm" "$w/weight" --target-bpw "$b" --json -q >"$w/weight.json"
"$mk" quantize "$sm" "$w/kld" --target-bpw "$b" --sensitivity kld --sensitivity-text "$g" --json -q >"$w/kld.json"
"$mk" imatrix "$sm" --text "$g" -o "$w/im.gguf" -q
"$mk" quantize "$sm" "$w/imatrix" --target-bpw "$b" --sensitivity imatrix --imatrix "$w/im.gguf" --json -q >"$w/imatrix.json"
for s in weight kld imatrix; do
    head -n 1 "$w/$s.json" | sed -n "s/.*\"bpw_quantizable\": \([0-9.]*\).*\"objective\": \([0-9.e+-]*\).*\"format\": \"$single\", \"alone_bpw\": \([0-9.]*\), \"alone_objective\": \([0-9.e+-]*\).*/--sensitivity $s: $b target, \1 achieved; objective \2, $single alone (\3 bpw) \4/p"
done
for m in "$single" weight kld imatrix; do sh "$root/tools/eval-kl.sh" "$w/$m" "$sm" "$g" "$a"; done
