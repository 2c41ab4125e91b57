#!/bin/sh
# Benchmark of `convert` (GGUF output) against llama.cpp's own quantizer on the same weights:
# SmolLM2-135M (MK_SMOLLM2, a safetensors f32 folder) converted to f32 GGUF once, then for
# q8_0, q4_0, q5_1, the k-quant mixes q4_k_m, q5_k_m, q6_k and iq4_nl, at one thread and at all
# threads (nproc): `mergekit-c convert FOLDER --type T -j N` (the whole command: start,
# reading, quantizing, writing and fsync of the file) against llama-cpp-python's
# llama_model_quantize (the code of llama-quantize, nthread N; --pure for the single types,
# llama.cpp's own per-tensor choices for the mixes; timed in-process, no fsync) from our f32
# GGUF. Both read f32 weights from the page cache; printed: seconds and millions of weights
# per second for each, the ratio, whether every tensor is byte-identical to llama.cpp's
# (tools/check-gguf-quantize.py), and whether N threads wrote the same file as one. Then the
# k-quant types again on a synthetic Llama whose rows are all whole 256-value blocks.
# MK_BENCH_TYPES / MK_BENCH_KTYPES: other type lists for the two models.
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
all=$(nproc)

# bench MODEL TYPES...: each type at 1 and all threads, ours against llama.cpp's
bench() {
    m=$1
    shift
    "$mk" convert "$m" "$w/f32.gguf" --type f32 -q --force
    n=$("$mk" inspect "$m" --json 2>/dev/null | sed -n 's/.*"parameters": \([0-9]*\).*/\1/p' | head -n 1)
    cat "$m"/*.safetensors "$w/f32.gguf" >/dev/null
    echo "model: $m, $n weights; threads: 1 and $all"
    for t in "$@"; do
        for j in 1 $all; do
            [ "$j" = 1 ] || [ "$all" != 1 ] || continue
            t0=$(date +%s.%N)
            "$mk" convert "$m" "$w/ours-$t-$j.gguf" --type "$t" -q -j "$j"
            t1=$(date +%s.%N)
            out=$("$py" "$root/tools/check-gguf-quantize.py" "$w/f32.gguf" "$t=$w/ours-$t-$j.gguf" --time --threads "$j" 2>/dev/null || true)
            ref=$(echo "$out" | sed -n 's/.*llama.cpp took \([0-9.]*\) s.*/\1/p')
            same=$(echo "$out" | sed -n 's/^[a-z0-9_]*: \([0-9]*\) tensors byte-identical.*, \([0-9]*\) differ, \([0-9]*\) in another type.*/\1 identical, \2 differ, \3 other type/p')
            thr=""
            [ "$j" = 1 ] || { cmp -s "$w/ours-$t-1.gguf" "$w/ours-$t-$j.gguf" && thr="; same file as -j 1" || thr="; DIFFERS from -j 1"; }
            awk -v n="$n" -v a="$t0" -v b="$t1" -v r="$ref" -v t="$t" -v j="$j" -v s="$same" -v h="$thr" 'BEGIN {
                o = b - a; printf "%-6s -j %-2s mergekit-c %.2f s (%.1f M weights/s), llama.cpp %.2f s (%.1f M weights/s): %.2fx llama.cpp; tensors vs llama.cpp: %s%s\n",
                    t, j, o, n / o / 1e6, r, n / r / 1e6, r / o, s, h }'
        done
        rm -f "$w/ours-$t-"*.gguf
    done
}

# SmolLM2: its 576-wide rows take the 32-value fallbacks in the k-quant mixes (only ffn_down
# stays a k-quant); a synthetic Llama with 256-multiple rows (31 M weights) measures the
# k-quants themselves
# shellcheck disable=SC2086
bench "$sm" ${MK_BENCH_TYPES:-q8_0 q4_0 q5_1 q4_k_m q5_k_m q6_k iq4_nl}
"$mk" synth "$w/wide" --hidden 512 --intermediate 1536 --layers 8 --heads 8 --kv-heads 2 --vocab 4096 --dtype float32 -q
# shellcheck disable=SC2086
bench "$w/wide" ${MK_BENCH_KTYPES:-q4_k_m q5_k_m q6_k iq4_nl}
