#!/bin/sh
# make bench-large (opt-in: not part of `make test` nor `make bench`): the 7B scale. Two
# 7B-shaped bf16 models (Llama: 4096 hidden, 32 layers, 32 heads, 11008 MLP, 32000 vocab,
# ~13.5 GB each; the second a `synth --finetune-of` the first) merged with linear and ties, the
# linear merge quantized to nf4 and packed into .mkz; each step timed against its I/O floor
# measured in the same run, with its peak resident memory (/usr/bin/time -v).
#
# I/O floor = plain tools reading the inputs' safetensors files and writing one output of the
# step's size, with the final fsync, from a cold page cache (tools/lib-bench.sh's cold): for
# the merges as tools/bench.sh (`cat A >/dev/null; dd if=B of=floor.bin conv=fsync`), for
# quantize and pack as tools/bench-quant.sh (cat the input, then dd writes as many bytes as
# the output has, with fsync). Each figure is the median of BENCH_REPS runs, step and floor
# alternating; ratio = median step / median floor; cpu_s: the step's user + system seconds;
# read_GB: what it read from the disk (time -v's file system inputs; more than in_GB when
# pages are read again).
#
# Disk: two models plus one output of a model's size at once (3 x ~13.5 GB at full size); the
# script checks the free space first and stops, saying how much it needs, when it is short.
# Each output is deleted once measured, the models at the end (BENCH_LARGE_KEEP=1 keeps them).
#
# Env: BENCH_DIR (work folder, default ./bench-work; this uses BENCH_DIR/large),
#      BENCH_LARGE_LAYERS (32; fewer for a smaller run: each layer is ~405 MB per model),
#      BENCH_REPS (3),
#      BENCH_LARGE_STACK=N: synthesise N-layer models and stack their layers (a passthrough
#        merge repeating layers 0..N-1) up to BENCH_LARGE_LAYERS, instead of synthesising every
#        layer: synth draws ~10 M normal values per second per core, so two full models cost
#        ~25 CPU-minutes, where stacking is a copy at the disk's speed. The stacked second model
#        is still a finetune of the first, layer by layer (the same timings; not the same bytes).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk="$root/mergekit-c"
[ -x "$mk" ] || { echo "bench-large: build mergekit-c first (make)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-large: needs /usr/bin/time (tools/install-deps.sh --tools)" >&2; exit 1; }
dir=${BENCH_DIR:-$root/bench-work}/large
L=${BENCH_LARGE_LAYERS:-32}
reps=${BENCH_REPS:-3}
stack=${BENCH_LARGE_STACK:-0}
case "$L$reps$stack" in *[!0-9]*) echo "bench-large: BENCH_LARGE_LAYERS, BENCH_REPS and BENCH_LARGE_STACK take whole numbers" >&2; exit 2 ;; esac
if [ "$L" -lt 1 ] || [ "$reps" -lt 1 ]; then echo "bench-large: BENCH_LARGE_LAYERS and BENCH_REPS must be at least 1" >&2; exit 2; fi
[ "$stack" -le "$L" ] || stack=$L
H=4096 I=11008 V=32000
shape="--hidden $H --heads 32 --intermediate $I --vocab $V --dtype bf16"
mkdir -p "$dir"
cd "$dir"
. "$root/tools/lib-bench.sh"

# bytes of one model: embeddings and lm_head, per layer q/k/v/o, gate/up/down and two norms,
# the final norm; bf16. The header and small files are under a megabyte.
model_bytes() { awk -v l="$1" -v h=$H -v i=$I -v v=$V 'BEGIN { printf "%.0f", 2 * (2 * v * h + l * (4 * h * h + 3 * h * i + 2 * h) + h) }'; }
M=$(model_bytes "$L")
have=0
for m in a b; do [ -f "$m/model.safetensors" ] && have=$((have + $(stat -c %s "$m/model.safetensors"))); done
need=$((3 * M - have + 1073741824))
avail=$(df -B1 --output=avail . | tail -n 1 | tr -d ' ')
gb() { awk -v b="$1" 'BEGIN { printf "%.1f GB", b / 1e9 }'; }
echo "bench-large: $L layers, $(gb "$M") per model; needs $(gb "$need") free in $dir (two models and one output at once, 1 GB spare), $(gb "$avail") free"
if [ "$avail" -lt "$need" ]; then
    echo "bench-large: not enough disk space: needs $(gb "$need"), $(gb "$avail") free in $dir; free some, or set BENCH_LARGE_LAYERS lower (each layer ~$(gb $(($(model_bytes 1) - $(model_bytes 0)))) per model, so ~$(gb $((3 * ($(model_bytes 1) - $(model_bytes 0))))) per layer in all)" >&2
    exit 1
fi
keep=${BENCH_LARGE_KEEP:-0}
cleanup() {
    rm -rf out merged merged.mkz nf4 floor.bin out.tmp merged.tmp merged.mkz.tmp nf4.tmp a.tmp b.tmp stack-a.tmp stack-b.tmp
    [ "$keep" = 1 ] || rm -rf a b stack-a stack-b stamp.txt stack.txt
}
trap cleanup EXIT
trap 'exit 1' INT TERM
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"

# the models, kept between runs (with BENCH_LARGE_KEEP=1) when their shape matches
stamp="$shape --layers $L stack $stack"
if [ ! -f a/model.safetensors ] || [ ! -f b/model.safetensors ] || [ "$(cat stamp.txt 2>/dev/null)" != "$stamp" ]; then
    rm -rf a b stamp.txt
    t0=$(now)
    if [ "$stack" -ge 1 ] && [ "$stack" -lt "$L" ]; then
        if [ "$(cat stack.txt 2>/dev/null)" != "$shape --layers $stack" ]; then
            # shellcheck disable=SC2086
            "$mk" synth stack-a/ $shape --layers "$stack" --seed 1 -q --force --out-shard-size 1T
            "$mk" synth stack-b/ --finetune-of stack-a/ --delta 0.01 --seed 2 -q --force --out-shard-size 1T
            echo "$shape --layers $stack" >stack.txt
        fi
        for m in a b; do
            { echo "merge_method: passthrough"; echo "slices:"
              n=0
              while [ $n -lt "$L" ]; do
                  e=$((L - n < stack ? L - n : stack))
                  printf '  - sources:\n      - model: stack-%s/\n        layer_range: [0, %d]\n' "$m" "$e"
                  n=$((n + e))
              done
              echo "dtype: bfloat16"; } >stack-$m.yaml
            "$mk" merge stack-$m.yaml $m/ -q --force --out-shard-size 1T
        done
        [ "$keep" = 1 ] || rm -rf stack-a stack-b stack.txt
    else
        # shellcheck disable=SC2086
        "$mk" synth a/ $shape --layers "$L" --seed 1 -q --force --out-shard-size 1T
        "$mk" synth b/ --finetune-of a/ --delta 0.01 --seed 2 -q --force --out-shard-size 1T
    fi
    echo "$stamp" >stamp.txt
    echo "models made in $(sub "$(now)" "$t0") s$([ "$stack" -ge 1 ] && [ "$stack" -lt "$L" ] && echo " ($stack synthesised layers stacked to $L)")"
fi
printf 'merge_method: linear\nmodels:\n  - model: a/\n    parameters: {weight: 0.5}\n  - model: b/\n    parameters: {weight: 0.5}\ndtype: bfloat16\n' >linear.yaml
printf 'merge_method: ties\nbase_model: a/\nmodels:\n  - model: b/\n    parameters: {weight: 1.0, density: 0.5}\ndtype: bfloat16\n' >ties.yaml

size_of() { du -sb "$@" | awk '{ s += $1 } END { printf "%.0f", s }'; }
tensors_of() { find "$@" -name '*.safetensors' | sort; }

# floor OUTBYTES COPY INPUT... -> seconds, from a cold cache: read the inputs' safetensors
# files and write OUTBYTES with fsync. With COPY (a merge: the output is a model's size),
# as tools/bench.sh: cat the other files, then dd copies COPY; without (-), as
# tools/bench-quant.sh: cat every file, then dd writes OUTBYTES of zeros.
floor() {
    _o=$1 _copy=$2
    shift 2
    _f=$(tensors_of "$@")
    # shellcheck disable=SC2086
    cold $_f
    _t0=$(now)
    if [ "$_copy" != - ]; then
        # shellcheck disable=SC2046
        cat $(echo "$_f" | grep -vxF "$_copy") >/dev/null
        dd if="$_copy" of=floor.bin bs=8M conv=fsync status=none
    else
        # shellcheck disable=SC2086
        cat $_f >/dev/null
        dd if=/dev/zero of=floor.bin bs=1M count=$(((_o + 1048575) / 1048576)) conv=fsync status=none
    fi
    _t1=$(now)
    rm -f floor.bin
    sub "$_t1" "$_t0"
}

# step LABEL OUT COPY "INPUTS" CMD... : BENCH_REPS runs of CMD (writing OUT) and of the floor,
# alternating; prints one table row. OUT is deleted after each run, except the last when
# KEEP_OUT=1.
step() {
    _label=$1 _out=$2 _cp=$3 _in=$4
    shift 4
    # shellcheck disable=SC2086
    _inb=$(size_of $_in)
    _runs='' _floors='' _cpus='' _reads='' _peak=0 _r=0
    while [ $_r -lt "$reps" ]; do
        # shellcheck disable=SC2046,SC2086
        cold $(tensors_of $_in)
        _t0=$(now)
        /usr/bin/time -v "$@" 2>time.log || { echo "bench-large: failed: $*" >&2; tail -n 20 time.log >&2; exit 1; }
        _t1=$(now)
        _runs="$_runs $(sub "$_t1" "$_t0")"
        _cpus="$_cpus $(awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.1f", s }' time.log)"
        _reads="$_reads $(awk -F': ' '/File system inputs/ { printf "%.1f", $2 * 512 / 1e9 }' time.log)"
        _p=$(peak_mb time.log)
        [ "$_p" -gt "$_peak" ] && _peak=$_p
        _outb=$(size_of "$_out")
        _r=$((_r + 1))
        if [ "${KEEP_OUT:-0}" != 1 ] || [ $_r -lt "$reps" ]; then rm -rf "$_out"; fi
        # shellcheck disable=SC2086
        _floors="$_floors $(floor "$_outb" "$_cp" $_in)"
    done
    _run=$(echo "$_runs" | median)
    _floor=$(echo "$_floors" | median)
    printf '%-14s %6s %6s %8.1f %8.1f %6.2f %7s %7s %8s   (runs:%s; floors:%s; load %s)\n' "$_label" "$(gb "$_inb" | cut -d' ' -f1)" \
        "$(gb "$_outb" | cut -d' ' -f1)" "$_floor" "$_run" "$(div "$_run" "$_floor")" "$(echo "$_cpus" | median)" \
        "$(echo "$_reads" | median)" "$_peak" "$_runs" "$_floors" "$(cut -d' ' -f1 /proc/loadavg)"
}

echo "medians of $reps; sizes in GB"
printf '%-14s %6s %6s %8s %8s %6s %7s %7s %8s\n' step in_GB out_GB floor_s run_s ratio cpu_s read_GB peak_MB
step "ties" out b/model.safetensors "a b" "$mk" ties.yaml out/ -q --force
KEEP_OUT=1
step "linear" merged b/model.safetensors "a b" "$mk" linear.yaml merged/ -q --force
KEEP_OUT=0
[ "$keep" = 1 ] || rm -rf a b stamp.txt
step "quantize nf4" nf4 - merged "$mk" quantize merged/ nf4/ --format nf4 -q --force
step "pack (.mkz)" merged.mkz - merged "$mk" pack merged/ merged.mkz -q --force
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
