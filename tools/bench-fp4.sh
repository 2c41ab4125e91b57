#!/bin/sh
# NVFP4 / MXFP4 / MXFP8 quantization speed, mergekit-c against compressed-tensors on the CPU, in
# the same run: a bf16 synthetic Llama (hidden 1024, 4 layers, intermediate 2816; kept in
# WORKDIR/fp4-model), quantized by `mergekit-c quantize -j 1` (the whole command: reading,
# quantizing, writing) and by compressed-tensors' observer + compressor with one torch thread
# (tools/bench-fp4-ct.py; quantizing only). Figure: quantized values per second of user CPU time.
# Usage: tools/bench-fp4.sh [WORKDIR] [PYTHON]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk=$root/mergekit-c
work=${1:-${BENCH_DIR:-$root/bench-work}}
py=${2:-$root/.venv-tools/bin/python}
model=$work/fp4-model
[ -x "$mk" ] || { echo "bench-fp4: build mergekit-c first (make)" >&2; exit 1; }
[ -x "$py" ] || { echo "bench-fp4: no venv python at $py (run tools/setup-venv.sh, or name it)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-fp4: needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
mkdir -p "$work"
[ -f "$model/config.json" ] || "$mk" synth "$model" --hidden 1024 --layers 4 --heads 16 --kv-heads 4 --intermediate 2816 \
    --vocab 8000 --dtype bf16 --seed 1 -q --force
printf '%-8s %-20s %12s %10s %12s\n' format tool values user_s "M/s/core(u)"
for f in nvfp4 mxfp4 mxfp8; do
    rm -rf "$work/fp4-out"
    /usr/bin/time -f "%U" -o "$work/time.txt" "$mk" quantize "$model" "$work/fp4-out" --format "$f" -j 1 -q --json >"$work/report.json"
    q=$(sed -n 's/.*"total": {"quantized_tensors": [0-9]*, "parameters": \([0-9]*\).*/\1/p' "$work/report.json")
    echo "$f mergekit-c $q $(cat "$work/time.txt")" | awk '{printf "%-8s %-20s %12d %10.2f %12.1f\n", $1, $2 " -j1", $3, $4, $3 / $4 / 1e6}'
done
rm -rf "$work/fp4-out"
"$py" "$root/tools/bench-fp4-ct.py" "$model" nvfp4 mxfp4 mxfp8 2>"$work/ct-err.txt" |
    awk '{printf "%-8s %-20s %12d %10.2f %12.1f\n", $1, "compressed-tensors", $2, $3, $2 / $3 / 1e6}'
