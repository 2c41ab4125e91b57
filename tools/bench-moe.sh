#!/bin/sh
# bench-moe.sh (make bench, after tools/bench.sh): an 8-expert Mixtral upcycle of a ~1.1 GB
# bf16 dense model (hidden 2048, 8 layers, intermediate 5504, vocab 32000; experts are the base
# and three seeded finetunes, twice each; gate_mode cheap_embed), timed as a ratio to the I/O
# floor measured in the same run (reading the four inputs and writing an output of the same
# size with plain tools, fsync included, from a cold page cache), with peak resident memory;
# then mergekit-moe (tools venv) on the same config, once.
# Env: BENCH_DIR (default ./bench-work; needs ~12 GB free), BENCH_REPS (default 3),
#      BENCH_MERGEKIT=0 to skip mergekit-moe; MK_VENV the tools venv (default .venv-tools).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk="$root/mergekit-c"
dir=${BENCH_DIR:-$root/bench-work}
reps=${BENCH_REPS:-3}
mkdir -p "$dir/moe"
cd "$dir/moe"
. "$root/tools/lib-bench.sh"

[ -f base/model.safetensors ] || "$mk" synth base/ --hidden 2048 --layers 8 --heads 16 --intermediate 5504 --vocab 32000 \
    --dtype bf16 --seed 1 -q --force --out-shard-size 1T
for i in 1 2 3; do
    [ -f "ft$i/model.safetensors" ] || "$mk" synth "ft$i/" --finetune-of base/ --delta 0.01 --seed $((i + 1)) -q --force --out-shard-size 1T
done
# distinct prompts per expert (mergekit refuses identical ones)
{
    printf 'base_model: base/\ngate_mode: cheap_embed\nexperts_per_token: 2\nexperts:\n'
    n=0
    for m in base ft1 ft2 ft3 base ft1 ft2 ft3; do
        printf '  - source_model: %s/\n    positive_prompts: ["tok%d tok%d"]\n' "$m" $((10 + n)) $((100 + n))
        n=$((n + 1))
    done
} >moe8.yaml
inputs="base/model.safetensors ft1/model.safetensors ft2/model.safetensors ft3/model.safetensors"
"$mk" moe moe8.yaml probe/ --force -q --out-shard-size 1T
out_bytes=$(stat -c %s probe/model.safetensors)
rm -rf probe
floors= runs= peak=0 r=0
while [ $r -lt "$reps" ]; do
    # shellcheck disable=SC2086
    cold $inputs
    t0=$(now)
    # shellcheck disable=SC2086
    cat $inputs >/dev/null
    head -c "$out_bytes" /dev/zero | dd of=floor.bin bs=8M conv=fsync status=none
    t1=$(now)
    rm -f floor.bin
    floors="$floors $(sub "$t1" "$t0")"
    # shellcheck disable=SC2086
    cold $inputs
    t0=$(now)
    /usr/bin/time -v "$mk" moe moe8.yaml out/ --force -q --out-shard-size 1T 2>time.log
    t1=$(now)
    runs="$runs $(sub "$t1" "$t0")"
    p=$(peak_mb time.log)
    [ "$p" -gt "$peak" ] && peak=$p
    rm -rf out
    r=$((r + 1))
done
floor=$(echo "$floors" | median)
run=$(echo "$runs" | median)
printf '%-22s %12s %9s %9s %7s %9s\n' case out_bytes floor_s run_s ratio peak_MB
printf '%-22s %12s %9.2f %9.2f %7.2f %9s   (runs:%s; floors:%s)\n' "moe 8 experts" "$out_bytes" "$floor" "$run" \
    "$(div "$run" "$floor")" "$peak" "$runs" "$floors"
venv=${MK_VENV:-$root/.venv-tools}
if [ "${BENCH_MERGEKIT:-1}" = 1 ] && [ -x "$venv/bin/mergekit-moe" ]; then
    # shellcheck disable=SC2086
    cold $inputs
    t0=$(now)
    /usr/bin/time -v "$venv/bin/mergekit-moe" moe8.yaml ref/ >/dev/null 2>time.log || true
    t1=$(now)
    printf '%-22s %12s %9.2f %9.2f %7.2f %9s\n' "mergekit-moe" "$out_bytes" "$floor" "$(sub "$t1" "$t0")" \
        "$(div "$(sub "$t1" "$t0")" "$floor")" "$(peak_mb time.log)"
    rm -rf ref
fi
