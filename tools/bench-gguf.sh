#!/bin/sh
# Benchmark of `convert` (GGUF output) against llama.cpp's own quantizer on the same weights:
# SmolLM2-135M (MK_SMOLLM2, a safetensors f32 folder) converted to f32 GGUF once, then for
# q8_0, q4_0, q5_1, the k-quant mixes q4_k_m, q5_k_m, q6_k and iq4_nl, at one thread and at all
# threads (nproc): `mergekit-c convert FOLDER --type T -j N` (the whole command: start,
# reading, quantizing, writing and fsync of the file) against llama-cpp-python's
# llama_model_quantize (the code of llama-quantize, nthread N; --pure for the single types,
# llama.cpp's own per-tensor choices for the mixes; timed in-process, no fsync) from our f32
# GGUF. Both read f32 weights from the page cache; the runs alternate (ours, MK_BENCH_BASE's,
# llama.cpp's), MK_BENCH_REPS (3) of each; printed for each: millions of weights per second
# per core (the weights over the median CPU time, user + system, of all threads: on a shared
# machine wall time is mostly waiting), the median CPU and wall seconds, the ratios, whether
# every tensor is byte-identical to llama.cpp's (tools/check-gguf-quantize.py, at -j 1), and
# whether N threads wrote the same file as one. Then the
# k-quant types again on a synthetic Llama whose rows are all whole 256-value blocks.
# MK_BENCH_TYPES / MK_BENCH_KTYPES: other type lists for the two models; MK_BENCH_BASE: an
# earlier mergekit-c binary, timed in the same runs (its speed as a ratio, "same file as
# before" when it wrote the same bytes).
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

reps=${MK_BENCH_REPS:-3}
base=${MK_BENCH_BASE:-}

# median of the numbers on stdin
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# run BIN ARGS...: one command; prints its wall and CPU (user + system) seconds
run() {
    /usr/bin/time -f "%e %U %S" -o "$w/time" "$@"
    awk '{ printf "%s %.3f\n", $1, $2 + $3 }' "$w/time"
}

# llama TYPE THREADS: llama.cpp's quantizer on f32.gguf as tools/check-gguf-quantize.py runs
# it, in-process; prints its wall and CPU (all threads) seconds
llama() {
    "$py" - "$w/f32.gguf" "$w/ref.gguf" "$1" "$2" "$root/tools/check-gguf-quantize.py" 2>/dev/null <<'EOF_PY'
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("check_gguf_quantize", sys.argv[5])
cq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cq)
t, mix = sys.argv[3], sys.argv[3] in cq.MIX
c0 = time.process_time()
wall = cq.llama_quantize(sys.argv[1], sys.argv[2], cq.MIX[t] if mix else cq.FTYPE[t], int(sys.argv[4]), pure=not mix)
print(f"{wall:.3f} {time.process_time() - c0:.3f}")
EOF_PY
}

# bench MODEL TYPES...: each type at 1 and all threads, ours against llama.cpp's (and against
# MK_BENCH_BASE, an earlier mergekit-c, when set), the runs alternating, medians of MK_BENCH_REPS
bench() {
    m=$1
    shift
    "$mk" convert "$m" "$w/f32.gguf" --type f32 -q --force
    n=$("$mk" inspect "$m" --json 2>/dev/null | sed -n 's/.*"parameters": \([0-9]*\).*/\1/p' | head -n 1)
    cat "$m"/*.safetensors "$w/f32.gguf" >/dev/null
    echo "model: $m, $n weights; threads: 1 and $all; medians of $reps alternating runs${base:+; before: $base}"
    for t in "$@"; do
        for j in 1 $all; do
            [ "$j" = 1 ] || [ "$all" != 1 ] || continue
            : >"$w/ours"
            : >"$w/ref"
            : >"$w/base"
            r=0
            while [ "$r" -lt "$reps" ]; do
                run "$mk" convert "$m" "$w/ours-$t-$j.gguf" --type "$t" -q -j "$j" --force >>"$w/ours"
                [ -z "$base" ] || run "$base" convert "$m" "$w/base.gguf" --type "$t" -q -j "$j" --force >>"$w/base"
                llama "$t" "$j" >>"$w/ref"
                r=$((r + 1))
            done
            same=""
            [ "$j" != 1 ] || same=$("$py" "$root/tools/check-gguf-quantize.py" "$w/f32.gguf" "$t=$w/ours-$t-$j.gguf" 2>/dev/null |
                sed -n 's/^[a-z0-9_]*: \([0-9]*\) tensors byte-identical.*, \([0-9]*\) differ, \([0-9]*\) in another type.*/; tensors vs llama.cpp: \1 identical, \2 differ, \3 other type/p')
            [ "$j" = 1 ] || { cmp -s "$w/ours-$t-1.gguf" "$w/ours-$t-$j.gguf" && same="; same file as -j 1" || same="; DIFFERS from -j 1"; }
            [ -z "$base" ] || { cmp -s "$w/ours-$t-$j.gguf" "$w/base.gguf" && same="$same; same file as before" || same="$same; DIFFERS from before"; }
            ow=$(cut -d' ' -f1 <"$w/ours" | median) oc=$(cut -d' ' -f2 <"$w/ours" | median)
            rw=$(cut -d' ' -f1 <"$w/ref" | median) rc=$(cut -d' ' -f2 <"$w/ref" | median)
            bc=""
            [ -z "$base" ] || bc=$(cut -d' ' -f2 <"$w/base" | median)
            awk -v n="$n" -v ow="$ow" -v oc="$oc" -v rw="$rw" -v rc="$rc" -v bc="$bc" -v t="$t" -v j="$j" -v s="$same" 'BEGIN {
                printf "%-6s -j %s: mergekit-c %.1f M weights/s per core (CPU %.2f s, wall %.2f s), llama.cpp %.1f (CPU %.2f s, wall %.2f s): %.2fx llama.cpp per core (wall %.2fx)",
                    t, j, n / oc / 1e6, oc, ow, n / rc / 1e6, rc, rw, rc / oc, rw / ow
                if (bc != "") printf "; before: CPU %.2f s, %.2fx", bc, bc / oc
                printf "%s\n", s }'
        done
        rm -f "$w/ours-$t-"*.gguf "$w/base.gguf" "$w/ref.gguf"
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
