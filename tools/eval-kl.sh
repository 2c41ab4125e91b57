#!/bin/sh
# eval-kl.sh MODEL REF TEXT...: per text, MODEL's KL divergence to REF (nats per token +- its
# standard error) and perplexity, `mergekit-c eval --ctx 512 --chunks 4`, one line each
# ("NAME on TEXT: KL to the original ..., PPL ..."; NAME: MODEL's file name without .gguf).
# Used by tools/alloc-smollm2.sh and tools/alloc-gguf-smollm2.sh.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
m=$1 ref=$2
shift 2
j=$(mktemp)
trap 'rm -f "$j"' EXIT
for t in "$@"; do
    "$root/mergekit-c" eval "$m" --text "$t" --ref "$ref" --ctx 512 --chunks 4 --json -q >"$j"
    kl=$(sed -n 's/.*"kl_mean": \([0-9.e+-]*\), "kl_stderr": \([0-9.e+-]*\).*/\1 +- \2/p' "$j" | head -n 1)
    ppl=$(sed -n 's/.*"ppl": \([0-9.e+-]*\).*/\1/p' "$j" | head -n 1)
    echo "$(basename "$m" .gguf) on $(basename "$t"): KL to the original $kl, PPL $ppl"
done
