#!/bin/sh
# quantize --target-bpw on SmolLM2-135M (tools/get-smollm2.sh) with each --sensitivity at each
# budget: the formats chosen, the bits per weight, the objective, the measuring pass's wall and
# CPU time, and the KL divergence to the original and the perplexity that `eval` measures on
# Apache-2.0 (a Debian text that neither the imatrix nor fisher nor kld-probe sees; they run on
# GPL-3). MK_ALLOC_TEXTS="GPL-3 Apache-2.0" evaluates on both.
# Usage: tools/alloc-smollm2.sh [BUDGETS [SENSITIVITIES]]   (default: "4.5 5 6" "weight imatrix fisher")
# SENSITIVITIES may also name kld (fisher's other name), kld-probe, or a single format (nvfp4, mxfp4: that format alone).
# MK_ALLOC_TEXT_ARGS: more options for fisher and kld-probe (say "--sensitivity-chunks 4").
# Prints one line per model; takes some minutes per model on two cores.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk=${MK_BIN:-$root/mergekit-c}
sm=${MK_SMOLLM2:-$root/.models/smollm2}
budgets=${1:-4.5 5 6}
sens=${2:-weight imatrix fisher}
jobs=${MK_ALLOC_JOBS:-2}
[ -f "$sm/model.safetensors" ] || { echo "alloc-smollm2: $sm is absent (run tools/get-smollm2.sh)" >&2; exit 1; }
g=/usr/share/common-licenses/GPL-3
texts=${MK_ALLOC_TEXTS:-Apache-2.0}
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
field() { sed -n "1s/.*\"$1\": \([0-9.e+-]*\).*/\1/p" "$2"; }
for s in $sens; do
    if [ "$s" = imatrix ] && [ ! -f "$w/im.gguf" ]; then "$mk" imatrix "$sm" --text "$g" -o "$w/im.gguf" -q -j "$jobs"; fi
done
for b in $budgets; do
    for s in $sens; do
        case $s in
        weight) extra="" ;;
        imatrix) extra="--sensitivity imatrix --imatrix $w/im.gguf" ;;
        fisher | kld | kld-probe) extra="--sensitivity $s --sensitivity-text $g ${MK_ALLOC_TEXT_ARGS:-}" ;;
        *) extra="" ;;
        esac
        rm -rf "$w/q"
        case $s in
        weight | imatrix | fisher | kld | kld-probe)
            # shellcheck disable=SC2086
            "$mk" quantize "$sm" "$w/q" --target-bpw "$b" $extra --json -q -j "$jobs" >"$w/a.json"
            fm=$(sed 1d "$w/a.json" | grep -o '"numel": [0-9]*, "format": "[^"]*"' | sed 's/.*"format": "//; s/"$//' | sort | uniq -c | sort -rn |
                awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')
            desc="budget $b, --sensitivity $s: $(field bpw_quantizable "$w/a.json") bpw; $fm; objective $(field objective "$w/a.json"); measured in $(field seconds "$w/a.json") s, $(field cpu_seconds "$w/a.json") s CPU" ;;
        *)
            "$mk" quantize "$sm" "$w/q" --format "$s" -q -j "$jobs"
            desc="$s alone" ;;
        esac
        for t in $texts; do
            "$mk" eval "$w/q" --text "/usr/share/common-licenses/$t" --ref "$sm" --ctx 512 --chunks 4 --json -q -j "$jobs" >"$w/ev.json"
            kl=$(sed -n 's/.*"kl_mean": \([0-9.e+-]*\), "kl_stderr": \([0-9.e+-]*\).*/\1 +- \2/p' "$w/ev.json" | head -n 1)
            ppl=$(sed -n 's/.*"ppl": \([0-9.e+-]*\).*/\1/p' "$w/ev.json" | head -n 1)
            desc="$desc; on $t: KL $kl, PPL $ppl"
        done
        echo "$desc"
    done
done
