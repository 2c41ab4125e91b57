#!/bin/sh
# Benchmark of `quantize` on a ~1.9 GB bf16 synthetic Llama (hidden 2048, 16 layers,
# intermediate 5504, vocab 32000; kept in bench-work/quant-model between runs):
#   for nf4, int8, int4, int4 --method search and fp8, at one thread and at all cores:
#   wall time, CPU time, quantized values per second per core (user + system time, and user
#   time alone), time / I/O floor, peak resident memory (/usr/bin/time).
# The I/O floor is measured in the same run with plain tools: reading the model's shards
# (cat > /dev/null) plus writing as many bytes as the output has (dd, fsync).
# Then the kernels alone on one core, data in cache (tools/bench-quant-kernels.c).
# Usage: tools/bench-quant.sh [WORKDIR]   (default: $BENCH_DIR, else bench-work/ at the root)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk=$root/mergekit-c
work=${1:-${BENCH_DIR:-$root/bench-work}}
model=$work/quant-model
[ -x "$mk" ] || { echo "bench-quant: build mergekit-c first (make)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-quant: needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
mkdir -p "$work"
if [ ! -f "$model/config.json" ]; then
    echo "making the model (once): $model"
    "$mk" synth "$model" --hidden 2048 --layers 16 --intermediate 5504 --vocab 32000 --dtype bf16 --seed 1 -q --force
fi
cores=$(nproc)
in_bytes=$(cat "$model"/*.safetensors | wc -c)
echo "model: $model, $(echo "$in_bytes" | awk '{printf "%.2f GB", $1 / 1e9}'), $cores cores"

floor() { # seconds to read the model and write $1 bytes durably
    t0=$(date +%s.%N)
    cat "$model"/*.safetensors >/dev/null
    dd if=/dev/zero of="$work/floor.bin" bs=1M count=$(( ($1 + 1048575) / 1048576 )) conv=fsync status=none
    t1=$(date +%s.%N)
    rm -f "$work/floor.bin"
    echo "$t0 $t1" | awk '{print $2 - $1}'
}

printf '%-16s %3s %8s %8s %10s %12s %12s %9s %8s\n' format -j wall_s cpu_s quantized "M/s/core" "M/s/core(u)" "t/floor" "RSS_MB"
run() { # NAME THREADS ARGS...
    name=$1
    j=$2
    shift 2
    out=$work/q-out
    rm -rf "$out"
    /usr/bin/time -f "%e %U %S %M" -o "$work/time.txt" "$mk" quantize "$model" "$out" "$@" -j "$j" -q --json >"$work/report.json"
    out_bytes=$(cat "$out"/*.safetensors | wc -c)
    fl=$(floor "$out_bytes")
    q=$(sed -n 's/.*"total": {"quantized_tensors": [0-9]*, "parameters": \([0-9]*\).*/\1/p' "$work/report.json")
    read -r wall user sys rss <"$work/time.txt"
    echo "$name $j $wall $user $sys $rss $q $fl" | awk '{cpu = $4 + $5;
        printf "%-16s %3d %8.2f %8.2f %10d %12.1f %12.1f %9.2f %8.1f\n", $1, $2, $3, cpu, $7, $7 / cpu / 1e6, $7 / $4 / 1e6, $3 / $8, $6 / 1024}'
    rm -rf "$out"
}
for j in 1 "$cores"; do
    run nf4 "$j" --format nf4
    run int8 "$j" --format int8
    run int4 "$j" --format int4
    run int4-search "$j" --format int4 --method search
    run fp8 "$j" --format fp8
done
echo "(M/s/core: quantized values per second of CPU time, user + system; (u): user time only.)"

cc -O2 -ffp-contract=off -I"$root" "$root/tools/bench-quant-kernels.c" "$root/build/libmergekit.a" -lm -lpthread -o "$work/bench-quant-kernels"
"$work/bench-quant-kernels"
