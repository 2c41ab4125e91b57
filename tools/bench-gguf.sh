#!/bin/sh
# Benchmark of `convert` (GGUF output) against llama.cpp's own quantizer on the same weights:
# SmolLM2-135M (MK_SMOLLM2, a safetensors f32 folder) converted to f32 GGUF once, then for
# q8_0, q4_0 and q5_1: `mergekit-c convert FOLDER --type T -j 1` (the whole command: start,
# reading, quantizing, writing and fsync of the file) against llama-cpp-python's
# llama_model_quantize (the code of llama-quantize, --pure, one thread; timed in-process, no
# fsync) from our f32 GGUF. Both read f32 weights from the page cache; printed: seconds and
# millions of weights per second on one core for each, and the ratio.
# Needs MK_VENV (llama-cpp-python, tools/requirements.txt). Usage: tools/bench-gguf.sh
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk=$root/mergekit-c
py=${MK_VENV:-"$root/.venv-tools"}/bin/python
sm=${MK_SMOLLM2:-"$root/.models/smollm2"}
[ -f "$sm/model.safetensors" ] || { echo "bench-gguf: $sm/model.safetensors is absent (tools/get-smollm2.sh)"; exit 0; }
"$py" -c 'import llama_cpp' 2>/dev/null || { echo "bench-gguf: llama-cpp-python is not in the venv (tools/setup-venv.sh)"; exit 0; }
w=$(mktemp -d /tmp/mk-bench-gguf-XXXXXX)
trap 'rm -rf "$w"' EXIT
"$mk" convert "$sm" "$w/f32.gguf" --type f32 -q
n=$("$mk" inspect "$sm" --json 2>/dev/null | sed -n 's/.*"parameters": \([0-9]*\).*/\1/p' | head -n 1)
cat "$sm/model.safetensors" "$w/f32.gguf" >/dev/null
echo "model: $sm, $n weights, one thread each"
for t in q8_0 q4_0 q5_1; do
    t0=$(date +%s.%N)
    "$mk" convert "$sm" "$w/ours-$t.gguf" --type "$t" -q -j 1
    t1=$(date +%s.%N)
    ref=$("$py" "$root/tools/check-gguf-quantize.py" "$w/f32.gguf" "$t=$w/ours-$t.gguf" --time --threads 1 2>/dev/null |
        sed -n 's/.*llama.cpp took \([0-9.]*\) s.*/\1/p')
    awk -v n="$n" -v a="$t0" -v b="$t1" -v r="$ref" -v t="$t" 'BEGIN {
        o = b - a; printf "%-5s mergekit-c %.2f s (%.1f M weights/s), llama.cpp %.2f s (%.1f M weights/s): %.2fx llama.cpp\n",
            t, o, n / o / 1e6, r, n / r / 1e6, r / o }'
    rm -f "$w/ours-$t.gguf"
done
