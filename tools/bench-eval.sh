#!/bin/sh
# bench-eval.sh: `mergekit-c eval` speed and memory, each figure measured in the same run as its
# baseline.
#
# 1. Tokens per second at --ctx 512 on a ~1B synthetic Llama (bf16 and float32) that uses
#    SmolLM2's tokenizer, against llama.cpp's llama-perplexity on the same weights converted to
#    GGUF (float32 and bf16), and against transformers on the CPU (tools/check-ppl.py), all on
#    the same windows of the same text. Whole-process wall time, median of BENCH_REPS runs,
#    the ratio taken run by run.
# 2. Peak resident memory of eval --chunks 1 on a 7B-shaped bf16 synthetic model.
#
# llama.cpp is built from the source inside the llama-cpp-python sdist on PyPI (the version
# pinned in tools/requirements.txt), into BENCH_DIR; nothing of it is kept in the repository.
# Env: BENCH_DIR (default ./bench-work), BENCH_REPS (3), BENCH_EVAL_CHUNKS (4),
#      BENCH_EVAL_7B=0 to skip the 7B model (it needs ~15 GB of disk), BENCH_EVAL_HF=0 to skip
#      transformers, MK_THREADS (threads for every tool; default: all cores).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk="$root/mergekit-c"
py="$root/.venv-tools/bin/python"
dir=${BENCH_DIR:-$root/bench-work}
reps=${BENCH_REPS:-3}
chunks=${BENCH_EVAL_CHUNKS:-4}
threads=${MK_THREADS:-$(nproc)}
text=/usr/share/common-licenses/GPL-3
mkdir -p "$dir"
cd "$dir"
sh "$root/tools/setup-venv.sh"
[ -f "$root/.models/smollm2/tokenizer.json" ] || sh "$root/tools/get-smollm2.sh"
sm="$root/.models/smollm2"

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
peak_mb() { awk '/Maximum resident set size/ {printf "%.0f", $6 / 1024}' "$1"; }
# wall seconds of a command (its output thrown away)
timed() { t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); sub "$t1" "$t0"; }

# ---- llama.cpp from the llama-cpp-python sdist --------------------------------------------------
ver=$(sed -n 's/^llama-cpp-python==//p' "$root/tools/requirements.txt")
lcpp="$dir/llama.cpp-$ver"
if [ ! -x "$lcpp/build/bin/llama-perplexity" ]; then
    "$root/.venv-tools/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$ver" -d "$dir/sdist"
    rm -rf "$dir/sdist-x" && mkdir -p "$dir/sdist-x" && tar -xzf "$dir/sdist/llama_cpp_python-$ver.tar.gz" -C "$dir/sdist-x"
    rm -rf "$lcpp" && mv "$dir/sdist-x/llama_cpp_python-$ver/vendor/llama.cpp" "$lcpp"
    cmake -S "$lcpp" -B "$lcpp/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF \
        >/dev/null
    cmake --build "$lcpp/build" --target llama-perplexity -j "$threads" >/dev/null
fi

# ---- the ~1B model, float32 and bf16, with SmolLM2's tokenizer -----------------------------------
shape="--hidden 2048 --layers 16 --heads 32 --kv-heads 8 --intermediate 5632 --vocab 49152 --max-position 4096"
for dt in float32 bfloat16; do
    m=m1b-$dt
    if [ ! -f "$m/model.safetensors" ]; then
        "$mk" synth "$m/" $shape --dtype $dt --std 0.02 --seed 1 -q --force --out-shard-size 1T
        rm -f "$m/special_tokens_map.json" "$m/tokenizer_config.json" "$m/tokenizer.json"
        cp "$sm/tokenizer.json" "$sm/tokenizer_config.json" "$m/"
    fi
    [ -f "$m.gguf" ] || "$py" "$lcpp/convert_hf_to_gguf.py" "$m" --outtype "$([ $dt = float32 ] && echo f32 || echo bf16)" \
        --outfile "$m.gguf" >/dev/null 2>&1
done

echo "eval at ctx 512, $chunks windows of $text, $threads threads; whole-process wall seconds (median of $reps)"
printf '%-26s %9s %9s %9s %10s\n' case ours_s base_s ratio ours_tok/s
for dt in float32 bfloat16; do
    m=m1b-$dt
    ours= theirs= hf= ratios=
    r=0
    while [ $r -lt "$reps" ]; do
        a=$(timed "$mk" eval "$m" --text "$text" --chunks "$chunks" -j "$threads" -q)
        b=$(timed "$lcpp/build/bin/llama-perplexity" -m "$m.gguf" -f "$text" -c 512 --chunks "$chunks" -t "$threads" -b 2048)
        ours="$ours $a" theirs="$theirs $b" ratios="$ratios $(div "$a" "$b")"
        r=$((r + 1))
    done
    o=$(echo "$ours" | median)
    printf '%-26s %9.2f %9.2f %9.2f %10.0f   (ours/llama.cpp by run:%s)\n' "vs llama.cpp $dt" "$o" "$(echo "$theirs" | median)" \
        "$(echo "$ratios" | median)" "$(awk -v o="$o" -v c="$chunks" 'BEGIN { print 512 * c / o }')" "$ratios"
    if [ "${BENCH_EVAL_HF:-1}" = 1 ] && [ $dt = float32 ]; then
        h=$(timed "$py" "$root/tools/check-ppl.py" "$m" "$text" --chunks "$chunks")
        printf '%-26s %9.2f %9.2f %9.2f   (transformers / ours: %sx)\n' "vs transformers $dt" "$o" "$h" "$(div "$o" "$h")" \
            "$(div "$h" "$o")"
    fi
done

# ---- memory on a 7B shape ---------------------------------------------------------------------
if [ "${BENCH_EVAL_7B:-1}" = 1 ]; then
    m=m7b-bf16
    if [ ! -f "$m/model.safetensors" ]; then
        "$mk" synth "$m/" --hidden 4096 --layers 32 --heads 32 --kv-heads 8 --intermediate 14336 --vocab 49152 --dtype bf16 \
            --seed 1 -q --force --out-shard-size 1T
        rm -f "$m/special_tokens_map.json" "$m/tokenizer_config.json" "$m/tokenizer.json"
        cp "$sm/tokenizer.json" "$sm/tokenizer_config.json" "$m/"
    fi
    /usr/bin/time -v "$mk" eval "$m" --text "$text" --chunks 1 -q 2>time.log >/dev/null
    printf '%-26s %9s MB peak resident memory, %s GB of weights (bf16)\n' "eval 7B-shaped --chunks 1" "$(peak_mb time.log)" \
        "$(awk -v b="$(stat -c %s "$m/model.safetensors")" 'BEGIN { printf "%.1f", b / 1e9 }')"
fi
