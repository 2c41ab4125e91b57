#!/bin/sh
# Benchmark of `quantize` on a bf16 synthetic Llama (default ~1.9 GB: hidden 2048, 16 layers,
# intermediate 5504, vocab 32000; kept in WORKDIR/quant-model-SHAPE between runs).
#
# 1. Every round-to-nearest format `quantize --help` lists (nf4, fp4, int8 in both layouts,
#    int4, fp8, fp8-e5m2, nvfp4, mxfp4, mxfp8, ternary) and int4 --method search, at one
#    thread and at all cores: the median wall time of BENCH_REPS runs (default 3) over the
#    median of the I/O floor measured between them (run and floor alternate), CPU time,
#    quantized values per second per core, peak resident memory (/usr/bin/time).
#    The I/O floor: reading the model's shards (cat > /dev/null) plus writing as many bytes
#    as the output has (dd, fsync), with the page cache as the run finds it (the input cached);
#    with BENCH_COLD=1 the page cache is dropped before every run and every floor (both read
#    the model from the disk, as make bench measures), and the floor reads and writes with
#    O_DIRECT (dd iflag/oflag=direct): the device's own speed.
# 2. Against llama.cpp's llama-quantize (llama-cpp-python's llama_model_quantize, the code of
#    the llama-quantize tool; timed in-process, its nthread = ours) on the same weights: the
#    model converted once to a GGUF file (`mergekit-c convert --type $BENCH_QUANT_GGUF_TYPE`,
#    default bf16: the bytes we read), quantized with --pure to the nearest type: nf4 and
#    int4 against Q4_0, int8 and fp8 against Q8_0. Both quantize every matrix (ours with
#    --include embed_tokens,lm_head, as --pure does), both outputs go to $BENCH_TMPFS (default
#    /dev/shm: neither pays the disk), medians of BENCH_REPS alternating runs; printed: both
#    times and ours / theirs (the issue's goal: at most 0.5).
# 3. The kernels alone on one core, data in cache (tools/bench-quant-kernels.c).
#
# Env: BENCH_QUANT_SHAPE ("H L I V": hidden, layers, intermediate, vocab; e.g. "1024 12 2816
# 4096" for a ~330 MB quick run), BENCH_QUANT_FORMATS (names from the list below),
# BENCH_QUANT_JOBS (thread counts, default "1 $(nproc)"), BENCH_QUANT_BIN (the mergekit-c to time, e.g. an
# older build for a before / after comparison; default the one at the root), BENCH_QUANT_LLAMA=0 / BENCH_QUANT_TABLE=0 / BENCH_QUANT_KERNELS=0 to skip part 2 / 1 / 3, BENCH_REPS, MK_VENV (llama-cpp-python; part 2 is
# skipped with a line when absent).
# Usage: tools/bench-quant.sh [WORKDIR]   (default: $BENCH_DIR, else bench-work/ at the root)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk=${BENCH_QUANT_BIN:-$root/mergekit-c}
work=${1:-${BENCH_DIR:-$root/bench-work}}
reps=${BENCH_REPS:-3}
cold=${BENCH_COLD:-0}
shape=${BENCH_QUANT_SHAPE:-2048 16 5504 32000}
# shellcheck disable=SC2086
set -- $shape
model=$work/quant-model-$1-$2-$3-$4
[ "$shape" = "2048 16 5504 32000" ] && model=$work/quant-model
[ -x "$mk" ] || { echo "bench-quant: build mergekit-c first (make)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-quant: needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
. "$root/tools/lib-bench.sh"
mkdir -p "$work"
if [ ! -f "$model/config.json" ]; then
    echo "making the model (once): $model"
    "$mk" synth "$model" --hidden "$1" --layers "$2" --intermediate "$3" --vocab "$4" --dtype bf16 --seed 1 -q --force
fi
cores=$(nproc)
in_bytes=$(cat "$model"/*.safetensors | wc -c)
echo "model: $model, $(echo "$in_bytes" | awk '{printf "%.2f GB", $1 / 1e9}'), $cores cores, medians of $reps, page cache $([ "$cold" = 0 ] && echo warm || echo 'cold (the model read from the disk)')"

# name: the row's label; the arguments after it: quantize's
formats="nf4:--format,nf4 fp4:--format,fp4 int8:--format,int8 int8-ct:--format,int8,--target,compressed-tensors
int4:--format,int4 int4-asym:--format,int4,--scheme,asym fp8:--format,fp8 fp8-e5m2:--format,fp8-e5m2
nvfp4:--format,nvfp4 mxfp4:--format,mxfp4 mxfp8:--format,mxfp8 ternary:--format,ternary
int4-search:--format,int4,--method,search"
want=${BENCH_QUANT_FORMATS:-}

floor() { # seconds to read the model and write $1 bytes durably
    [ "$cold" = 0 ] || cold "$model"/*.safetensors
    t0=$(now)
    if [ "$cold" = 0 ]; then
        cat "$model"/*.safetensors >/dev/null
        dd if=/dev/zero of="$work/floor.bin" bs=8M count=$((($1 + 8388607) / 8388608)) conv=fsync status=none
    else # the device's speed: O_DIRECT reads and writes (see bench-methods.sh)
        for f in "$model"/*.safetensors; do dd if="$f" of=/dev/null bs=16M iflag=direct status=none; done
        dd if=/dev/zero of="$work/floor.bin" bs=16M count=$((($1 + 16777215) / 16777216)) oflag=direct conv=fsync status=none
    fi
    t1=$(now)
    rm -f "$work/floor.bin"
    sub "$t1" "$t0"
}

[ "${BENCH_QUANT_TABLE:-1}" = 0 ] || printf '%-12s %3s %8s %8s %8s %10s %10s %8s %7s\n' format -j run_s floor_s t/floor cpu_s "M/s/core" quantized RSS_MB
bench_one() { # NAME THREADS ARGS...
    name=$1 j=$2
    shift 2
    out=$work/q-out
    runs='' floors='' cpus='' peak=0
    r=0
    while [ $r -lt "$reps" ]; do
        rm -rf "$out"
        [ "$cold" = 0 ] || cold "$model"/*.safetensors
        t0=$(now)
        /usr/bin/time -f "%U %S %M" -o "$work/time.txt" "$mk" quantize "$model" "$out" "$@" -j "$j" -q --json >"$work/report.json"
        t1=$(now)
        runs="$runs $(sub "$t1" "$t0")"
        read -r user sys rss <"$work/time.txt"
        cpus="$cpus $(awk -v a="$user" -v b="$sys" 'BEGIN { print a + b }')"
        [ "$rss" -gt "$peak" ] && peak=$rss
        out_bytes=$(cat "$out"/*.safetensors | wc -c)
        rm -rf "$out"
        floors="$floors $(floor "$out_bytes")"
        r=$((r + 1))
    done
    q=$(sed -n 's/.*"total": {"quantized_tensors": [0-9]*, "parameters": \([0-9]*\).*/\1/p' "$work/report.json")
    rm -f "$work/report.json" "$work/time.txt"
    run=$(echo "$runs" | median) fl=$(echo "$floors" | median) cpu=$(echo "$cpus" | median)
    awk -v n="$name" -v j="$j" -v r="$run" -v f="$fl" -v c="$cpu" -v q="$q" -v m="$peak" 'BEGIN {
        printf "%-12s %3d %8.2f %8.2f %8.2f %10.2f %10.1f %8.1f %7.1f\n", n, j, r, f, r / f, c, q / c / 1e6, q / 1e6, m / 1024 }'
}
jobs=${BENCH_QUANT_JOBS:-1 $cores}
for j in $jobs; do
    [ "$j" = 1 ] || [ "$cores" != 1 ] || continue
    [ "${BENCH_QUANT_TABLE:-1}" = 1 ] || continue
    for f in $formats; do
        name=${f%%:*}
        case " $want " in "  ") ;; *" $name "*) ;; *) continue ;; esac
        # shellcheck disable=SC2046
        bench_one "$name" "$j" $(echo "${f#*:}" | tr ',' ' ')
    done
done
[ "${BENCH_QUANT_TABLE:-1}" = 0 ] || echo "(run_s, floor_s: medians; t/floor = their ratio; M/s/core: quantized values (millions) per second of CPU time, user + system)"

# ---- 2. against llama-quantize --------------------------------------------------------------------
py=${MK_VENV:-"$root/.venv-tools"}/bin/python
if [ "${BENCH_QUANT_LLAMA:-1}" = 0 ]; then
    :
elif ! "$py" -c 'import llama_cpp' 2>/dev/null; then
    echo "bench-quant: llama-cpp-python is not in the venv (tools/setup-venv.sh): no llama-quantize comparison"
else
    tmp=${BENCH_TMPFS:-/dev/shm}
    gt=${BENCH_QUANT_GGUF_TYPE:-bf16}
    w=$(mktemp -d "$tmp/mk-bench-quant-XXXXXX")
    trap 'rm -rf "$w"' EXIT
    gg=$work/$(basename "$model")-$gt.gguf
    [ -f "$gg" ] || "$mk" convert "$model" "$gg" --type "$gt" -q --force
    cat "$gg" "$model"/*.safetensors >/dev/null
    echo "llama-quantize (llama-cpp-python $("$py" -c 'import llama_cpp; print(llama_cpp.__version__)'), --pure, from $(basename "$gg")) against quantize --include embed_tokens,lm_head; outputs on $tmp"
    printf '%-6s %-6s %3s %10s %12s %12s\n' ours llama -j ours_s llama_s ours/llama
    # llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_0 = 2, Q8_0 = 7
    for pair in nf4:q4_0:2 int4:q4_0:2 int8:q8_0:7 fp8:q8_0:7; do
        f=${pair%%:*} rest=${pair#*:}
        lt=${rest%%:*} ft=${rest#*:}
        case " $want " in "  ") ;; *" $f "*) ;; *) continue ;; esac
        for j in $jobs; do
            [ "$j" = 1 ] || [ "$cores" != 1 ] || continue
            ours='' theirs=''
            r=0
            while [ $r -lt "$reps" ]; do
                t0=$(now)
                "$mk" quantize "$model" "$w/ours" --format "$f" --include embed_tokens,lm_head -j "$j" -q --force
                t1=$(now)
                ours="$ours $(sub "$t1" "$t0")"
                rm -rf "$w/ours"
                theirs="$theirs $("$py" -c '
import ctypes, sys, time, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype, p.pure, p.nthread = int(sys.argv[3]), True, int(sys.argv[4])
t0 = time.perf_counter()
if llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)) != 0:
    sys.exit("llama_model_quantize failed")
print("%.3f" % (time.perf_counter() - t0))' "$gg" "$w/ref.gguf" "$ft" "$j" 2>/dev/null | tail -n 1)"
                rm -f "$w/ref.gguf"
                r=$((r + 1))
            done
            o=$(echo "$ours" | median) t=$(echo "$theirs" | median)
            awk -v a="$f" -v b="$lt" -v j="$j" -v o="$o" -v t="$t" 'BEGIN { printf "%-6s %-6s %3d %10.2f %12.2f %12.2f\n", a, b, j, o, t, o / t }'
        done
    done
    echo "(ours: the whole command, start to exit; llama: llama_model_quantize alone, in-process)"
fi

[ "${BENCH_QUANT_KERNELS:-1}" = 1 ] || exit 0
cc -O2 -ffp-contract=off -I"$root" "$root/tools/bench-quant-kernels.c" "$root/build/libmergekit.a" -lm -lpthread -o "$work/bench-quant-kernels"
"$work/bench-quant-kernels"
