#!/bin/sh
# bench-mkz-delta.sh - `pack --base` on finetunes, against a plain `pack`, plain zstd and ZipNN
# on the same safetensors bytes.
#
#   tools/bench-mkz-delta.sh [WORKDIR]   (default /tmp/mkz-delta-bench; models kept there)
#
# Synthetic: base mergekit-c synth bf16, --hidden 1024 --layers 8 --intermediate 2816 --vocab
# 32000 (MKZ_BENCH_QUICK=1: a small one). Finetunes: synth --finetune-of base with --delta
# 0.001, --delta 0.01, and --delta 0.01 --density 0.1 (noise on a tenth of the weights).
# Trained: when SmolLM2-135M is there (MK_SMOLLM2, default .models/smollm2; tools/get-smollm2.sh),
# its weights as bf16 are the base, and `mergekit-c finetune` of the f32 model on the GPL-3 text
# (/usr/share/common-licenses/GPL-3, 60 rows of 128 tokens), written as bf16, makes two
# finetunes: 20 steps at lr 2e-5 and 20 steps at lr 1e-4 (cosine, 2 warmup steps, batch 2).
# MKZ_DELTA_TRAINED=0 skips them. For each: ratio of `pack`, `pack --base`, `zstd -1` (whole
# file), `zstd -19` (first 64 MiB: a full run takes minutes per 100 MB), ZipNN (one thread) on
# the file and in its delta mode (the file XOR the base's), from the tools venv (MK_VENV); MB/s
# of input per CPU second (user + sys) at one thread for pack --base and for unpack --base
# (checked byte for byte).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
MK=${MK:-$root/mergekit-c}
W=${1:-/tmp/mkz-delta-bench}
mkdir -p "$W"
VENV=${MK_VENV:-$root/.venv-tools}
PY=$VENV/bin/python
SMOL=${MK_SMOLLM2:-$root/.models/smollm2}
if [ "${MKZ_BENCH_QUICK:-0}" = 1 ]; then
    SHAPE="--hidden 256 --layers 2 --intermediate 704 --vocab 4000"
else
    SHAPE="--hidden 1024 --layers 8 --intermediate 2816 --vocab 32000"
fi
tag=$(echo "$SHAPE" | tr -d ' -')
B="$W/base-$tag"
[ -f "$B/model.safetensors" ] || "$MK" synth "$B" $SHAPE --seed 1 -q -f

. "$root/tools/lib-bench-mkz.sh"

zipnn() { # zipnn FILE [BASE]: the ratio, or "-" without ZipNN
    if "$PY" -c "import zipnn" 2>/dev/null; then
        run "zipnn" "$PY" "$root/tools/bench-zipnn.py" "$1" bfloat16 ${2:+"$2"}
        cut -d' ' -f1 "$W/.out"
    else
        echo "-"
    fi
}

# row NAME FINETUNE BASE: one line of the table
row() {
    f=$2
    raw=$(size "$f")
    cat "$f" "$3" >/dev/null
    run "pack" "$MK" pack "$f" "$W/plain.mkz" -j 1 -f -q
    plain=$(size "$W/plain.mkz")
    run "pack --base" "$MK" pack "$f" "$W/delta.mkz" --base "$3" -j 1 -f -q
    p_cpu=$T_CPU p_rss=$T_RSS
    delta=$(size "$W/delta.mkz")
    rm -rf "$W/back"
    run "unpack --base" "$MK" unpack "$W/delta.mkz" "$W/back" --base "$3" -j 1 -q
    u_cpu=$T_CPU u_rss=$T_RSS
    cmp -s "$f" "$W/back/$(basename "$f")" || { echo "bench-mkz-delta: $1: unpack is not byte-identical" >&2; exit 1; }
    rm -rf "$W/back" "$W/plain.mkz" "$W/delta.mkz"
    z1=$(zstd -1 -T1 -c "$f" | wc -c)
    z19=$(head -c 67108864 "$f" | zstd -19 -T1 -c | wc -c)
    slice=$((raw < 67108864 ? raw : 67108864))
    zn=$(zipnn "$f")
    znd=$(zipnn "$f" "$3")
    rss=$((p_rss > u_rss ? p_rss : u_rss))
    echo "| $1 | $(ratio "$raw" "$plain") | **$(ratio "$raw" "$delta")** | $(ratio "$raw" "$z1") | $(ratio "$slice" "$z19") | $zn | $znd | $(mbs "$raw" "$p_cpu") | $(mbs "$raw" "$u_cpu") | $((rss / 1024)) |"
}

echo "| finetune | pack | pack --base | zstd -1 | zstd -19 (64 MiB) | ZipNN | ZipNN delta | pack --base MB/s/core | unpack --base MB/s/core | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for ft in "delta 0.001:--delta 0.001" "delta 0.01:--delta 0.01" "delta 0.01, density 0.1:--delta 0.01 --density 0.1"; do
    name=${ft%%:*}
    opts=${ft#*:}
    d="$W/ft-$tag-$(echo "$opts" | tr -d ' -')"
    [ -f "$d/model.safetensors" ] || "$MK" synth "$d" --finetune-of "$B" $opts --seed 2 -q -f
    row "synthetic, $name" "$d/model.safetensors" "$B/model.safetensors"
done
echo "(synthetic: $(ratio "$(size "$B/model.safetensors")" 1e6 | awk '{printf "%.0f", $1}') MB bf16 base, $(nproc) cores; one thread)"

if [ "${MKZ_DELTA_TRAINED:-1}" = 1 ] && [ -f "$SMOL/model.safetensors" ]; then
    text=/usr/share/common-licenses/GPL-3
    SB="$W/smollm2-bf16"
    if [ ! -f "$SB/model.safetensors" ]; then
        printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters:\n      weight: 1.0\ndtype: bfloat16\n' "$SMOL" >"$W/to-bf16.yaml"
        "$MK" "$W/to-bf16.yaml" "$SB" -q -f
    fi
    for lr in 2e-5 1e-4; do
        d="$W/smollm2-ft-$lr"
        [ -f "$d/model.safetensors" ] ||
            "$MK" finetune "$SMOL" "$text" "$d" --steps 20 --seq 128 -b 2 --lr $lr --warmup 2 --out-dtype bfloat16 -q -f
        row "SmolLM2-135M, finetune 20 steps, lr $lr" "$d/model.safetensors" "$SB/model.safetensors"
    done
    echo "(trained: SmolLM2-135M as bf16 the base, $(ratio "$(size "$SB/model.safetensors")" 1e6 | awk '{printf "%.0f", $1}') MB)"
else
    echo "(trained finetunes skipped: no SmolLM2 at $SMOL, or MKZ_DELTA_TRAINED=0)"
fi
