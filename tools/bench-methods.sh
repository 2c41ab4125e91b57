#!/bin/sh
# bench-methods.sh - merge-method benchmark on bf16 synthetic models (~1.5 GB each by default):
# every streaming method (task_arithmetic, linear, ties, dare_ties, dare_linear, della,
# breadcrumbs, sce, model_stock, slerp, nuslerp, multislerp, karcher, arcee_fusion, ram), and on
# request the methods on singular vectors (tsv, iso_c, iso_cts, cart: LAPACK SVDs, compute-bound).
# Per method:
#   time / I/O floor   the median of BENCH_RUNS (3) runs, each divided by the mean of the floors
#                      measured just before and just after it (floor = reading the recipe's input
#                      files with cat and writing one output of the same size with dd + fsync)
#   cpu s              user + system seconds of the merge (median), beside the floor's: on a
#                      loaded machine wall time mostly measures the share of the cores it got
#   peak resident memory (/usr/bin/time -v; the largest of the runs)
#   with BENCH_BEFORE=BINARY: the same recipe with another mergekit-c build in the same rounds
#                      (alternating with this one, each against the same floors), its ratio, and
#                      whether both wrote the same bytes
#   the same recipe with mergekit on CPU (one run: time, memory, ratio), when its venv is there
#                      (not for tsv, iso_c, iso_cts, cart: mergekit lacks them).
# Usage: sh tools/bench-methods.sh [WORKDIR]    (default bench-work/methods)
# Env: BENCH_LAYERS (12: ~1.5 GB per model), BENCH_SHAPE (synth options besides --layers, for a
#      smaller model), BENCH_THREADS (all cores), BENCH_RUNS (3), BENCH_MK (the build timed:
#      ./mergekit-c), BENCH_BEFORE, MERGEKIT_VENV
#      (.venv-tools or /work/main/.venv-tools), BENCH_MERGEKIT=0 to skip mergekit,
#      BENCH_METHODS to choose (default: the streaming methods above), BENCH_WARM=0 to skip
#      the sizing run before the timed ones (the output is taken to be the base's size, as
#      it is for every recipe here; for the slow singular-vector methods on a loaded machine),
#      BENCH_COLD=1 to drop the page cache (root; else each input file's pages) before every
#      merge and every floor, so both read the inputs from the disk, as make bench measures;
#      the floor then reads and writes with O_DIRECT (dd iflag/oflag=direct, 16 MiB blocks): the
#      device's speed (default: the page cache as the runs leave it, the inputs cached, and
#      the floor cat + dd through it).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
MK=${BENCH_MK:-$root/mergekit-c}
W=${1:-$root/bench-work/methods}
L=${BENCH_LAYERS:-12}
J=${BENCH_THREADS:-$(nproc)}
R=${BENCH_RUNS:-3}
BEFORE=${BENCH_BEFORE:-}
COLD=${BENCH_COLD:-0}
. "$root/tools/lib-bench.sh"
METHODS=${BENCH_METHODS:-"task_arithmetic linear ties dare_ties dare_linear della breadcrumbs sce model_stock slerp nuslerp multislerp karcher arcee_fusion ram"}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
VENV=${MERGEKIT_VENV:-}
if [ -z "$VENV" ]; then
    for v in "$root/.venv-tools" /work/main/.venv-tools; do [ -x "$v/bin/mergekit-yaml" ] && VENV=$v && break; done
fi
[ -x "$MK" ] || { echo "build mergekit-c first (make)"; exit 1; }
[ -z "$BEFORE" ] || [ -x "$BEFORE" ] || { echo "BENCH_BEFORE=$BEFORE is not an executable"; exit 1; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)"; exit 1; }
[ "$R" -ge 1 ] 2>/dev/null || { echo "BENCH_RUNS must be a positive integer"; exit 1; }
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
    _w='    parameters: {weight: 0.5}\n'
    case "$1" in
        task_arithmetic) printf 'merge_method: task_arithmetic\nbase_model: base/\nmodels:\n  - model: ft1/\n    parameters: {weight: 1.0}\n' ;;
        linear) printf "merge_method: linear\nmodels:\n  - model: base/\n$_w  - model: ft1/\n$_w" ;;
        slerp) printf 'merge_method: slerp\nbase_model: base/\nmodels:\n  - model: base/\n  - model: ft1/\nparameters: {t: 0.5}\n' ;;
        ties | dare_ties | dare_linear) printf 'merge_method: %s\nbase_model: base/\nmodels:\n  - model: ft1/\n    parameters: {weight: 1.0, density: 0.5}\nrandom_seed: 1\n' "$1" ;;
        della) printf 'merge_method: della\nbase_model: base/\nmodels:\n  - model: ft1/\n    parameters: {weight: 1.0, density: 0.5, epsilon: 0.1}\nrandom_seed: 1\n' ;;
        breadcrumbs) printf 'merge_method: breadcrumbs\nbase_model: base/\nmodels:\n  - model: ft1/\n    parameters: {weight: 1.0, density: 0.9, gamma: 0.01}\n' ;;
        # the methods below read a base and two finetunes (the floor reads three)
        sce) printf 'merge_method: sce\nbase_model: base/\nmodels:\n  - model: ft1/\n  - model: ft2/\nparameters: {select_topk: 0.5}\n' ;;
        model_stock | ram) printf 'merge_method: %s\nbase_model: base/\nmodels:\n  - model: ft1/\n  - model: ft2/\n' "$1" ;;
        nuslerp | multislerp) printf "merge_method: %s\nbase_model: base/\nmodels:\n  - model: ft1/\n$_w  - model: ft2/\n$_w" "$1" ;;
        karcher) printf 'merge_method: karcher\nmodels:\n  - model: base/\n  - model: ft1/\n  - model: ft2/\n' ;;
        arcee_fusion) printf 'merge_method: arcee_fusion\nbase_model: base/\nmodels:\n  - model: base/\n  - model: ft1/\n' ;;
        # the singular-vector methods with their defaults, on two finetunes
        tsv | iso_c | iso_cts | cart) printf 'merge_method: %s\nbase_model: base/\nmodels:\n  - model: ft1/\n  - model: ft2/\n' "$1" ;;
        *) echo "bench-methods: no recipe for method '$1'" >&2; exit 2 ;;
    esac >"$1.yaml"
    case "$1" in
        sce | model_stock | ram | nuslerp | multislerp | karcher | tsv | iso_c | iso_cts | cart) echo "base ft1 ft2" ;;
        *) echo "base ft1" ;;
    esac
}

# run LABEL CMD... -> "seconds peak_kb cpu_seconds" (cpu: user + system)
run() {
    _l=$1; shift
    sync
    /usr/bin/time -v "$@" >"$_l.log" 2>&1 || { echo "failed: $*" >&2; tail -n 5 "$_l.log" >&2; echo "nan nan nan"; return; }
    _s=$(sed -n 's/.*Elapsed (wall clock) time.*: \(.*\)/\1/p' "$_l.log" | awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }')
    _k=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$_l.log")
    _c=$(sed -n 's/.*\(User\|System\) time (seconds): //p' "$_l.log" | awk '{ c += $1 } END { print c }')
    echo "$_s $_k $_c"
}

floor() { # MODELS OUTBYTES -> "seconds cpu_seconds"
    sync
    _f=$(for m in $1; do printf '%s ' "$m"/*.safetensors; done)
    # shellcheck disable=SC2086
    [ "$COLD" = 0 ] || cold $_f
    _n=$((($2 + 16777215) / 16777216))
    if [ "$COLD" = 0 ]; then
        /usr/bin/time -f '%e %U %S' -o floor.time sh -c "cat $_f >/dev/null && dd if=/dev/zero of=floor.out bs=16M count=$_n conv=fsync status=none"
    else
        # cold: the device's own speed, reads and writes with O_DIRECT (no page cache to fill:
        # on a VM whose memory the host backs on first touch, cat and dd's page-cache copies
        # of freshly dropped pages cost more than the disk)
        /usr/bin/time -f '%e %U %S' -o floor.time sh -c "for f in $_f; do dd if=\$f of=/dev/null bs=16M iflag=direct status=none || exit 1; done && dd if=/dev/zero of=floor.out bs=16M count=$_n oflag=direct conv=fsync status=none"
    fi
    rm -f floor.out
    awk '{printf "%.3f %.3f", $1, $2 + $3}' floor.time
}

maxof() { tr ' ' '\n' | grep . | sort -g | tail -n 1; }

# one merge: BINARY LABEL METHOD -> "seconds peak_kb" (output left in out-LABEL)
merge() {
    rm -rf "out-$2" "out-$2.tmp"
    # shellcheck disable=SC2046
    [ "$COLD" = 0 ] || cold $(for _m in base ft1 ft2; do printf '%s ' "$_m"/*.safetensors; done)
    run "$2" "$1" "$3.yaml" "out-$2" -q -j "$J"
}

bytes=$(stat -c %s base/model.safetensors)
printf '%s\n' "model: $(awk "BEGIN {printf \"%.2f\", $bytes / 1e9}") GB bf16 ($shape), threads $J, $(nproc) cores, $(uname -m), load $(cut -d' ' -f1-3 /proc/loadavg), median of $R, page cache $([ "$COLD" = 0 ] && echo warm || echo 'cold (inputs read from the disk)')"
hdr_before=""
[ -z "$BEFORE" ] || hdr_before=$(printf ' %7s %7s %6s %5s' "before" "cpu s" "MB" "same")
printf '%-16s %7s %7s %6s %7s %7s %6s%s  %10s %8s %8s\n' method "time s" "floor s" ratio "cpu s" "fl cpu" "MB" "$hdr_before" "mergekit s" "MB" speedup
for m in $METHODS; do
    models=$(recipe "$m")
    # a first run sizes the output (and warms the page cache like the runs after it)
    if [ "${BENCH_WARM:-1}" = 0 ]; then
        out=$(du -cb base/*.safetensors | tail -n 1 | cut -f1)
    else
        merge "$MK" "mk-$m" "$m" >/dev/null
        out=$(du -cb "out-mk-$m"/*.safetensors 2>/dev/null | tail -n 1 | cut -f1)
    fi
    [ -n "$out" ] || { echo "$m: no output" >&2; continue; }
    set -- $(floor "$models" "$out")
    f0=$1 fc0=$2
    ts="" tt="" cs="" rs="" fs="" fcs="" bts="" bcs="" brs="" same=yes
    i=0
    while [ $i -lt "$R" ]; do
        set -- $(merge "$MK" "mk-$m" "$m")
        t=$1 rss=$2 cpu=$3
        if [ -n "$BEFORE" ]; then
            set -- $(merge "$BEFORE" "before-$m" "$m")
            bt=$1 brss=$2 bcpu=$3
            for f in "out-mk-$m"/*.safetensors; do cmp -s "$f" "out-before-$m/${f##*/}" || same=no; done
            rm -rf "out-before-$m"
        fi
        set -- $(floor "$models" "$out")
        fl=$(awk "BEGIN {print ($f0 + $1) / 2}") fc=$(awk "BEGIN {print ($fc0 + $2) / 2}")
        f0=$1 fc0=$2
        ts="$ts $(awk "BEGIN {print $t / $fl}")" tt="$tt $t" cs="$cs $cpu" rs="$rs $rss" fs="$fs $fl" fcs="$fcs $fc"
        [ -z "$BEFORE" ] || bts="$bts $(awk "BEGIN {print $bt / $fl}")" bcs="$bcs $bcpu" brs="$brs $brss"
        i=$((i + 1))
    done
    rm -rf "out-mk-$m"
    ratio=$(echo "$ts" | median) fl=$(echo "$fs" | median) rss=$(echo "$rs" | maxof)
    col_before=""
    [ -z "$BEFORE" ] || col_before=$(printf ' %7.2f %7.2f %6.0f %5s' "$(echo "$bts" | median)" "$(echo "$bcs" | median)" \
        "$(awk "BEGIN {print $(echo "$brs" | maxof) / 1024}")" "$same")
    mkt=- mkr=- sp=-
    case "$m" in tsv | iso_c | iso_cts | cart) nomk=1 ;; *) nomk=0 ;; esac
    if [ -n "$VENV" ] && [ "${BENCH_MERGEKIT:-1}" != 0 ] && [ $nomk = 0 ]; then
        rm -rf "py-$m"
        set -- $(run "py-$m" "$VENV/bin/mergekit-yaml" "$m.yaml" "py-$m" --no-write-model-card --no-copy-tokenizer)
        mkt=$1 mkr=$(awk "BEGIN {printf \"%.0f\", $2 / 1024}")
        sp=$(awk "BEGIN {printf \"%.1fx\", $mkt / $(echo "$tt" | median)}")
        rm -rf "py-$m"
    fi
    printf '%-16s %7.2f %7.2f %6.2f %7.2f %7.2f %6.0f%s  %10s %8s %8s\n' "$m" "$(echo "$tt" | median)" "$fl" "$ratio" \
        "$(echo "$cs" | median)" "$(echo "$fcs" | median)" "$(awk "BEGIN {print $rss / 1024}")" "$col_before" "$mkt" "$mkr" "$sp"
done
