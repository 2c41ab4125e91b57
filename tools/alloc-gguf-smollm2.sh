#!/bin/sh
# convert --target-bpw on SmolLM2-135M (tools/get-smollm2.sh) against llama.cpp's Q4_K_M and
# Q5_K_M mixes (without and with the imatrix) at the same bits per weight of the matrices: the allocation's predicted error
# (--sensitivity weight and imatrix) and the KL divergence to the original and perplexity that
# `eval` measures on two Debian texts (GPL-3, which the imatrix is gathered on, and Apache-2.0,
# which it never sees); 4 windows of 512 tokens each.
# Usage: tools/alloc-gguf-smollm2.sh [MIX...]   (default: q4_k_m q5_k_m)
# Prints one line per model and text; takes some minutes on two cores.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk=$root/mergekit-c
sm=${MK_SMOLLM2:-$root/.models/smollm2}
[ -f "$sm/model.safetensors" ] || { echo "alloc-gguf-smollm2: $sm is absent (run tools/get-smollm2.sh)" >&2; exit 1; }
g=/usr/share/common-licenses/GPL-3
a=/usr/share/common-licenses/Apache-2.0
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
"$mk" imatrix "$sm" --text "$g" -o "$w/im.gguf" -q
ev() { sh "$root/tools/eval-kl.sh" "$w/$1.gguf" "$sm" "$g" "$a"; }
for mix in ${*:-q4_k_m q5_k_m}; do
    "$mk" convert "$sm" "$w/$mix.gguf" --type "$mix" -q
    b=$("$mk" inspect "$w/$mix.gguf" --json | sed -n 's/.*"quantization": {.*"bits_per_weight": \([0-9.]*\).*/\1/p' | head -n 1)
    echo "$mix: $b bits per weight of the matrices"
    ev "$mix"
    "$mk" convert "$sm" "$w/$mix-im.gguf" --type "$mix" --imatrix "$w/im.gguf" -q
    ev "$mix-im"
    for s in weight imatrix; do
        set -- --target-bpw "$b" --sensitivity "$s" --imatrix "$w/im.gguf"
        [ $s = weight ] && set -- --target-bpw "$b"
        "$mk" convert "$sm" "$w/$mix-$s.gguf" "$@" --json -q >"$w/$s.json"
        sed -n 's/.*"allocation": {[^[]*"bpw": \([0-9.]*\).*"objective": \([0-9.e+-]*\).*/--sensitivity '"$s"': \1 achieved, objective \2/p' "$w/$s.json" | head -n 1
        grep -o '"type": "[a-z0-9_]*", "fixed"' "$w/$s.json" | sort | uniq -c | tr -s ' ' | tr '\n' ';'
        echo
        ev "$mix-$s"
    done
done
