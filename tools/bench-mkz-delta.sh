#!/bin/sh
# bench-mkz-delta.sh - `pack --base` on synthetic finetunes, against a plain `pack` and plain
# zstd on the same safetensors bytes.
#
#   tools/bench-mkz-delta.sh [WORKDIR]   (default /tmp/mkz-delta-bench; models kept there)
#
# Base: mergekit-c synth bf16, --hidden 1024 --layers 8 --intermediate 2816 --vocab 32000
# (MKZ_BENCH_QUICK=1: a small one). Finetunes: synth --finetune-of base with --delta 0.001,
# --delta 0.01, and --delta 0.01 --density 0.1 (noise on a tenth of the weights).
# For each: ratio of `pack`, `pack --base`, `zstd -1` (whole file) and `zstd -19` (first
# 64 MiB: a full run takes minutes per 100 MB); MB/s of input per CPU second (user + sys)
# at one thread for pack --base and for unpack --base (checked byte for byte).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
MK=${MK:-$root/mergekit-c}
W=${1:-/tmp/mkz-delta-bench}
mkdir -p "$W"
if [ "${MKZ_BENCH_QUICK:-0}" = 1 ]; then
    SHAPE="--hidden 256 --layers 2 --intermediate 704 --vocab 4000"
else
    SHAPE="--hidden 1024 --layers 8 --intermediate 2816 --vocab 32000"
fi
tag=$(echo "$SHAPE" | tr -d ' -')
B="$W/base-$tag"
[ -f "$B/model.safetensors" ] || "$MK" synth "$B" $SHAPE --seed 1 -q -f

. "$root/tools/lib-bench-mkz.sh"

echo "| finetune | pack | pack --base | zstd -1 | zstd -19 (64 MiB) | pack --base MB/s/core | unpack --base MB/s/core | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
for ft in "delta 0.001:--delta 0.001" "delta 0.01:--delta 0.01" "delta 0.01, density 0.1:--delta 0.01 --density 0.1"; do
    name=${ft%%:*}
    opts=${ft#*:}
    d="$W/ft-$tag-$(echo "$opts" | tr -d ' -')"
    [ -f "$d/model.safetensors" ] || "$MK" synth "$d" --finetune-of "$B" $opts --seed 2 -q -f
    f="$d/model.safetensors"
    raw=$(size "$f")
    cat "$f" "$B/model.safetensors" >/dev/null
    run "pack" "$MK" pack "$f" "$W/plain.mkz" -j 1 -f -q
    plain=$(size "$W/plain.mkz")
    run "pack --base" "$MK" pack "$f" "$W/delta.mkz" --base "$B/model.safetensors" -j 1 -f -q
    p_cpu=$T_CPU p_rss=$T_RSS
    delta=$(size "$W/delta.mkz")
    rm -rf "$W/back"
    run "unpack --base" "$MK" unpack "$W/delta.mkz" "$W/back" --base "$B/model.safetensors" -j 1 -q
    u_cpu=$T_CPU u_rss=$T_RSS
    cmp -s "$f" "$W/back/model.safetensors" || { echo "bench-mkz-delta: $name: unpack is not byte-identical" >&2; exit 1; }
    rm -rf "$W/back"
    z1=$(zstd -1 -T1 -c "$f" | wc -c)
    z19=$(head -c 67108864 "$f" | zstd -19 -T1 -c | wc -c)
    slice=$((raw < 67108864 ? raw : 67108864))
    rss=$((p_rss > u_rss ? p_rss : u_rss))
    echo "| $name | $(ratio "$raw" "$plain") | **$(ratio "$raw" "$delta")** | $(ratio "$raw" "$z1") | $(ratio "$slice" "$z19") | $(mbs "$raw" "$p_cpu") | $(mbs "$raw" "$u_cpu") | $((rss / 1024)) |"
done
echo "($(ratio "$(size "$B/model.safetensors")" 1e6 | awk '{printf "%.0f", $1}') MB bf16 base, $(nproc) cores; one thread)"
