#!/bin/sh
# make bench: merge speed as a ratio to the I/O floor measured in the same run, and peak
# resident memory, on synthetic bf16 model pairs of about 1.5 GB and 6 GB each; then every
# tools/bench-*.sh (other areas' benchmarks) but bench-large.sh (make bench-large).
#
# I/O floor = the time plain tools take to read both inputs and write one output of the
# same size, including the final fsync (cat IN1 > /dev/null; dd if=IN2 of=OUT conv=fsync),
# from a cold page cache, exactly as the merge is timed.
#
# Each figure is the median of BENCH_REPS runs (default 3), floor and merge alternating, since
# a shared machine is noisy; the ratio is median run / median floor.
#
# Env: BENCH_DIR (work folder, default ./bench-work; needs ~25 GB free for both sizes),
#      BENCH_SIZES ("1.5G 6G" by default; e.g. "1.5G" for a quick run), BENCH_REPS,
#      BENCH_MERGEKIT=0 to skip the timing of mergekit itself (tools venv),
#      BENCH_COLD=0 to time the per-method (bench-methods.sh) and per-format (bench-quant.sh)
#      tables with the inputs in the page cache instead of cold (default 1: cold, as above).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
sh "$root/tools/install-deps.sh" --tools
mk="$root/mergekit-c"
dir=${BENCH_DIR:-$root/bench-work}
sizes=${BENCH_SIZES:-1.5G 6G}
mkdir -p "$dir"
cd "$dir"

reps=${BENCH_REPS:-3}
. "$root/tools/lib-bench.sh"

shape() {
    case "$1" in
        1.5G) echo "--hidden 2048 --layers 12 --heads 16 --intermediate 5504 --vocab 32000" ;;
        6G) echo "--hidden 4096 --layers 12 --heads 32 --intermediate 11008 --vocab 32000" ;;
        *) echo "unknown size $1" >&2; exit 2 ;;
    esac
}

printf '%-22s %12s %9s %9s %7s %9s\n' case bytes floor_s run_s ratio peak_MB
for sz in $sizes; do
    a=a-$sz b=b-$sz
    # one file per model (--out-shard-size 1T), so the floor can read it with plain tools
    [ -f "$a/model.safetensors" ] || "$mk" synth "$a/" $(shape "$sz") --dtype bf16 --seed 1 -q --force --out-shard-size 1T
    [ -f "$b/model.safetensors" ] || "$mk" synth "$b/" --finetune-of "$a/" --delta 0.01 --seed 2 -q --force --out-shard-size 1T
    printf 'merge_method: linear\nmodels:\n  - model: %s/\n    parameters:\n      weight: 0.5\n  - model: %s/\n    parameters:\n      weight: 0.5\n' "$a" "$b" >linear-$sz.yaml
    bytes=$(stat -c %s "$a/model.safetensors")

    floors= runs= peak=0
    r=0
    while [ $r -lt "$reps" ]; do
        cold "$a/model.safetensors" "$b/model.safetensors"
        t0=$(now)
        cat "$a/model.safetensors" >/dev/null
        dd if="$b/model.safetensors" of=floor.bin bs=8M conv=fsync status=none
        t1=$(now)
        rm -f floor.bin
        floors="$floors $(sub "$t1" "$t0")"
        cold "$a/model.safetensors" "$b/model.safetensors"
        t0=$(now)
        /usr/bin/time -v "$mk" linear-$sz.yaml out-$sz/ --force -q 2>time.log
        t1=$(now)
        runs="$runs $(sub "$t1" "$t0")"
        p=$(peak_mb time.log)
        [ "$p" -gt "$peak" ] && peak=$p
        rm -rf out-$sz
        r=$((r + 1))
    done
    floor=$(echo "$floors" | median)
    run=$(echo "$runs" | median)
    printf '%-22s %12s %9.2f %9.2f %7.2f %9s   (runs:%s; floors:%s)\n' "linear $sz" "$bytes" "$floor" "$run" "$(div "$run" "$floor")" "$peak" "$runs" "$floors"

    if [ "$sz" = 1.5G ] && [ "${BENCH_MERGEKIT:-1}" = 1 ] && "$root/tools/setup-venv.sh" >/dev/null 2>&1; then
        cold "$a/model.safetensors" "$b/model.safetensors"
        t0=$(now)
        /usr/bin/time -v "$root/.venv-tools/bin/mergekit-yaml" linear-$sz.yaml ref-$sz/ --quiet >/dev/null 2>time.log
        t1=$(now)
        ref=$(sub "$t1" "$t0")
        printf '%-22s %12s %9.2f %9.2f %7.2f %9s   (mergekit-c is %sx faster)\n' "mergekit linear $sz" "$bytes" "$floor" "$ref" \
            "$(div "$ref" "$floor")" "$(peak_mb time.log)" "$(div "$ref" "$run")"
        rm -rf ref-$sz
    fi
done

for s in "$root"/tools/bench-*.sh; do
    [ -e "$s" ] || continue
    # the 7B scale is its own target (make bench-large): ~42 GB of disk
    [ "$(basename "$s")" != bench-large.sh ] || continue
    echo "== $(basename "$s")"
    # the per-method and per-format tables from a cold page cache too, as the table above
    BENCH_DIR=$dir BENCH_COLD=${BENCH_COLD:-1} sh "$s"
done
