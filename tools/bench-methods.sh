#!/bin/sh
# bench-methods.sh - merge-method benchmark: linear, slerp, ties, dare_ties, model_stock and
# the methods on singular vectors (tsv, iso_c, iso_cts, cart: one LAPACK SVD per task matrix
# and per polar factor, so compute-bound) on ~1.5 GB bf16 synthetic models, each reported as
#   time / I/O floor  (floor = reading the recipe's input files with cat and writing one
#                      output of the same size with dd + fsync, measured in the same run)
#   peak resident memory (/usr/bin/time -v)
#   the same recipe with mergekit on CPU (time, memory, ratio), when its venv is there
#   (not for tsv, iso_c, iso_cts, cart: mergekit lacks them).
# Usage: sh tools/bench-methods.sh [WORKDIR]    (default bench-work/methods)
# Env: BENCH_LAYERS (12: ~1.5 GB per model), BENCH_SHAPE (synth options besides --layers, for a
#      smaller model), BENCH_THREADS (all cores), MERGEKIT_VENV
#      (.venv-tools or /work/main/.venv-tools), BENCH_MERGEKIT=0 to skip mergekit,
#      BENCH_METHODS to choose ("linear slerp ties dare_ties model_stock tsv iso_c iso_cts cart").
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
MK=$root/mergekit-c
W=${1:-$root/bench-work/methods}
L=${BENCH_LAYERS:-12}
J=${BENCH_THREADS:-$(nproc)}
METHODS=${BENCH_METHODS:-"linear slerp ties dare_ties model_stock tsv iso_c iso_cts cart"}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
VENV=${MERGEKIT_VENV:-}
if [ -z "$VENV" ]; then
    for v in "$root/.venv-tools" /work/main/.venv-tools; do [ -x "$v/bin/mergekit-yaml" ] && VENV=$v && break; done
fi
[ -x "$MK" ] || { echo "build mergekit-c first (make)"; exit 1; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)"; exit 1; }
mkdir -p "$W" && cd "$W"

shape=${BENCH_SHAPE:-"--hidden 2048 --heads 16 --kv-heads 16 --intermediate 5504 --vocab 32000"}" --layers $L --dtype bf16"
stamp="$shape"
if [ ! -f models.txt ] || [ "$(cat models.txt)" != "$stamp" ]; then
    rm -rf base ft1 ft2
    echo "making models ($shape)..." >&2
    "$MK" synth base/ $shape --seed 1 -q
    "$MK" synth ft1/ --finetune-of base/ --delta 0.02 --seed 2 -q
    "$MK" synth ft2/ --finetune-of base/ --delta 0.02 --seed 3 -q
    echo "$stamp" >models.txt
fi

recipe() { # METHOD -> recipe file; prints the models it reads
    case "$1" in
        linear) printf 'merge_method: linear\nmodels:\n  - model: base/\n    parameters: {weight: 0.5}\n  - model: ft1/\n    parameters: {weight: 0.5}\n' ;;
        slerp) printf 'merge_method: slerp\nbase_model: base/\nmodels:\n  - model: base/\n  - model: ft1/\nparameters: {t: 0.5}\n' ;;
        ties) printf 'merge_method: ties\nbase_model: base/\nmodels:\n  - model: ft1/\n    parameters: {weight: 1.0, density: 0.5}\n' ;;
        dare_ties) printf 'merge_method: dare_ties\nbase_model: base/\nmodels:\n  - model: ft1/\n    parameters: {weight: 1.0, density: 0.5}\nrandom_seed: 1\n' ;;
        # model_stock needs a base and two finetunes: three inputs (the floor reads three)
        model_stock) printf 'merge_method: model_stock\nbase_model: base/\nmodels:\n  - model: ft1/\n  - model: ft2/\n' ;;
        # the singular-vector methods with their defaults, on two finetunes
        tsv | iso_c | iso_cts | cart) printf 'merge_method: %s\nbase_model: base/\nmodels:\n  - model: ft1/\n  - model: ft2/\n' "$1" ;;
    esac >"$1.yaml"
    case "$1" in model_stock | tsv | iso_c | iso_cts | cart) echo "base ft1 ft2" ;; *) echo "base ft1" ;; esac
}

# run LABEL CMD... -> "seconds peak_kb"
run() {
    _l=$1; shift
    sync
    /usr/bin/time -v "$@" >"$_l.log" 2>&1 || { echo "failed: $*" >&2; tail -n 5 "$_l.log" >&2; echo "nan nan"; return; }
    _s=$(sed -n 's/.*Elapsed (wall clock) time.*: \(.*\)/\1/p' "$_l.log" | awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }')
    _k=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$_l.log")
    echo "$_s $_k"
}

floor() { # MODELS OUTBYTES -> seconds
    sync
    _t0=$(date +%s.%N)
    for m in $1; do cat "$m"/*.safetensors >/dev/null; done
    dd if=/dev/zero of=floor.out bs=16M count=$((($2 + 16777215) / 16777216)) conv=fsync status=none
    _t1=$(date +%s.%N)
    rm -f floor.out
    echo "$_t0 $_t1" | awk '{printf "%.2f", $2 - $1}'
}

bytes=$(stat -c %s base/model.safetensors)
printf '%s\n' "model: $(awk "BEGIN {printf \"%.2f\", $bytes / 1e9}") GB bf16 ($shape), threads $J, $(nproc) cores, $(uname -m)"
printf '%-12s %9s %9s %7s %10s   %10s %10s %8s\n' method "time s" "floor s" ratio "peak MB" "mergekit s" "peak MB" speedup
for m in $METHODS; do
    models=$(recipe "$m")
    rm -rf "out-$m" "out-$m.tmp"
    set -- $(run "mk-$m" "$MK" "$m.yaml" "out-$m" -q -j "$J")
    t=$1 rss=$2
    out=$(du -cb "out-$m"/*.safetensors | tail -n 1 | cut -f1)
    fl=$(floor "$models" "$out")
    rm -rf "out-$m"
    mkt=- mkr=- sp=-
    case "$m" in tsv | iso_c | iso_cts | cart) nomk=1 ;; *) nomk=0 ;; esac
    if [ -n "$VENV" ] && [ "${BENCH_MERGEKIT:-1}" != 0 ] && [ $nomk = 0 ]; then
        rm -rf "py-$m"
        set -- $(run "py-$m" "$VENV/bin/mergekit-yaml" "$m.yaml" "py-$m" --no-write-model-card --no-copy-tokenizer)
        mkt=$1 mkr=$(awk "BEGIN {printf \"%.0f\", $2 / 1024}")
        sp=$(awk "BEGIN {printf \"%.1fx\", $mkt / $t}")
        rm -rf "py-$m"
    fi
    printf '%-12s %9.2f %9.2f %7.2f %10.0f   %10s %10s %8s\n' "$m" "$t" "$fl" "$(awk "BEGIN {print $t / $fl}")" \
        "$(awk "BEGIN {print $rss / 1024}")" "$mkt" "$mkr" "$sp"
done
