#!/bin/sh
# bench-pipeline.sh (in `make bench`): a merge all the way to a quantized GGUF file, the whole
# pipeline, against the usual reference one on the same recipe:
#   ours:      mergekit-c RECIPE OUT.gguf --out-type q4_k_m   (one command, no intermediate file)
#   reference: mergekit-yaml RECIPE folder/                     (mergekit, tools venv)
#              convert_hf_to_gguf.py folder/ --outtype bf16     (llama.cpp's converter; lossless
#                                                               here, the merge is bf16)
#              llama-quantize in.gguf out.gguf q4_k_m           (llama-cpp-python's
#                                                               llama_model_quantize: its C code,
#                                                               its own per-tensor types)
# The recipe: a linear merge (0.5/0.5, dtype bfloat16) of SmolLM2-135M (MK_SMOLLM2, float32)
# with a `synth --finetune-of` it. Printed: wall seconds (median of BENCH_REPS, default 3, the
# two pipelines alternating, each with its inputs out of the page cache, the reference's steps
# each), CPU seconds (user + system), peak resident memory of any step (/usr/bin/time -v), the
# bytes of intermediate files, and the peak disk use (the output plus intermediates, each
# deleted as soon as the next step is done with it). Then the final files compared tensor by
# tensor (and, to explain any difference, the merged folders: mergekit's and `mergekit-c
# merge`'s), with tools/bench-pipeline.py.
# Needs MK_VENV (mergekit, llama-cpp-python, gguf; tools/setup-venv.sh) and llama.cpp's
# converter from the llama-cpp-python sdist of the pinned version (fetched into BENCH_DIR as
# tools/compat-eval.sh does; MK_LLAMA_CPP: a llama.cpp source tree instead). Skips, saying
# why, when something is absent.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk=$root/mergekit-c
venv=${MK_VENV:-"$root/.venv-tools"}
py=$venv/bin/python
sm=${MK_SMOLLM2:-"$root/.models/smollm2"}
dir=${BENCH_DIR:-$root/bench-work}
reps=${BENCH_REPS:-3}
. "$root/tools/lib-bench.sh"
[ -f "$sm/model.safetensors" ] || { echo "bench-pipeline: skipped: $sm/model.safetensors is absent (tools/get-smollm2.sh)"; exit 0; }
if [ ! -x "$venv/bin/mergekit-yaml" ] || ! "$py" -c 'import llama_cpp' 2>/dev/null; then
    echo "bench-pipeline: skipped: mergekit or llama-cpp-python is not in $venv (tools/setup-venv.sh)"
    exit 0
fi
[ -x /usr/bin/time ] || { echo "bench-pipeline: skipped: needs /usr/bin/time (tools/install-deps.sh --tools)"; exit 0; }
ver=$(sed -n 's/^llama-cpp-python==//p' "$root/tools/requirements.txt")
lcpp=${MK_LLAMA_CPP:-$dir/llama.cpp-$ver}
if [ ! -f "$lcpp/convert_hf_to_gguf.py" ] && [ -z "${MK_LLAMA_CPP:-}" ]; then
    mkdir -p "$dir"
    { "$venv/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$ver" -d "$dir/sdist" &&
        rm -rf "$dir/sdist-x" && mkdir -p "$dir/sdist-x" && tar -xzf "$dir/sdist/llama_cpp_python-$ver.tar.gz" -C "$dir/sdist-x" &&
        rm -rf "$lcpp" && mv "$dir/sdist-x/llama_cpp_python-$ver/vendor/llama.cpp" "$lcpp" && rm -rf "$dir/sdist-x"; } || true
fi
[ -f "$lcpp/convert_hf_to_gguf.py" ] || { echo "bench-pipeline: skipped: no llama.cpp converter at $lcpp (set MK_LLAMA_CPP)"; exit 0; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$lcpp/gguf-py"
w=$dir/pipeline
mkdir -p "$w"
cd "$w"
trap 'rm -rf ours.gguf ours.gguf.tmp ref ref.tmp ref-bf16.gguf ref-q4_k_m.gguf ours-merged time-*.log' EXIT
threads=$(nproc)

[ -f ft/model.safetensors ] || "$mk" synth ft/ --finetune-of "$sm" --delta 0.01 --seed 2 -q --force
printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters: {weight: 0.5}\n  - model: ft/\n    parameters: {weight: 0.5}\ndtype: bfloat16\n' "$sm" >linear.yaml

# the inputs' pages only (not the whole page cache: both pipelines start with their programs
# and libraries cached, as they would on a second run)
cold_inputs() { sync; for f in "$sm/model.safetensors" ft/model.safetensors; do dd if="$f" iflag=nocache count=0 status=none; done; }
size_of() { du -sb "$@" | awk '{ s += $1 } END { printf "%.0f", s }'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b) ? a : b }'; }
# timed LABEL CMD... : runs CMD under /usr/bin/time -v; sets t (wall s), cpu (user + sys s), rss (MB)
timed() {
    _l=$1
    shift
    _t0=$(now)
    /usr/bin/time -v "$@" >"time-$_l.out" 2>"time-$_l.log" || { echo "bench-pipeline: failed: $*" >&2; tail -n 20 "time-$_l.log" >&2; exit 1; }
    _t1=$(now)
    t=$(sub "$_t1" "$_t0")
    cpu=$(awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.2f", s }' "time-$_l.log")
    rss=$(peak_mb "time-$_l.log")
}

ours_t='' ours_c='' ref_t='' ref_c='' mk_t='' cv_t='' q_t='' ours_rss=0 ref_rss=0 ours_disk=0 ref_disk=0 ref_mid=0
r=0
while [ $r -lt "$reps" ]; do
    cold_inputs
    timed ours "$mk" linear.yaml ours.gguf --out-type q4_k_m -q --force
    ours_t="$ours_t $t" ours_c="$ours_c $cpu" ours_rss=$(max "$ours_rss" "$rss") ours_disk=$(size_of ours.gguf)

    cold_inputs
    rm -rf ref ref-bf16.gguf ref-q4_k_m.gguf
    timed mergekit "$venv/bin/mergekit-yaml" linear.yaml ref/ --quiet
    a_t=$t a_c=$cpu ref_rss=$(max "$ref_rss" "$rss")
    timed convert "$py" "$lcpp/convert_hf_to_gguf.py" ref/ --outtype bf16 --outfile ref-bf16.gguf
    b_t=$t b_c=$cpu ref_rss=$(max "$ref_rss" "$rss")
    folder=$(size_of ref) mid=$(size_of ref-bf16.gguf)
    [ $r -eq $((reps - 1)) ] || rm -rf ref
    timed quantize "$py" "$root/tools/bench-pipeline.py" quantize ref-bf16.gguf ref-q4_k_m.gguf q4_k_m "$threads"
    c_t=$t c_c=$cpu ref_rss=$(max "$ref_rss" "$rss")
    final=$(size_of ref-q4_k_m.gguf)
    ref_mid=$((folder + mid))
    ref_disk=$(max $((folder + mid)) $((mid + final)))
    mk_t="$mk_t $a_t" cv_t="$cv_t $b_t" q_t="$q_t $c_t"
    ref_t="$ref_t $(awk -v a="$a_t" -v b="$b_t" -v c="$c_t" 'BEGIN { printf "%.3f", a + b + c }')"
    ref_c="$ref_c $(awk -v a="$a_c" -v b="$b_c" -v c="$c_c" 'BEGIN { printf "%.2f", a + b + c }')"
    [ $r -eq $((reps - 1)) ] || rm -f ours.gguf ref-bf16.gguf ref-q4_k_m.gguf
    r=$((r + 1))
done

o=$(echo "$ours_t" | median) rf=$(echo "$ref_t" | median)
oc=$(echo "$ours_c" | median) rc=$(echo "$ref_c" | median)
mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1e6 }'; }
echo "linear merge of SmolLM2-135M (float32) and a finetune, bf16, to GGUF q4_k_m; $threads threads; load average $(cut -d' ' -f1 /proc/loadavg); median of $reps"
printf '%-44s %8s %8s %8s %8s %10s %9s\n' pipeline wall_s ratio cpu_s peak_MB interm_MB disk_MB
printf '%-44s %8.2f %8.2f %8.2f %8s %10s %9s\n' "mergekit-c RECIPE OUT.gguf --out-type q4_k_m" "$o" 1 "$oc" "$ours_rss" 0 "$(mb "$ours_disk")"
printf '%-44s %8.2f %8.2f %8.2f %8s %10s %9s\n' "mergekit + convert_hf_to_gguf + llama-quantize" "$rf" "$(div "$rf" "$o")" "$rc" "$ref_rss" \
    "$(mb "$ref_mid")" "$(mb "$ref_disk")"
echo "reference steps (median wall s): mergekit-yaml $(echo "$mk_t" | median), convert_hf_to_gguf $(echo "$cv_t" | median), llama-quantize $(echo "$q_t" | median); runs ours:$ours_t; reference:$ref_t"

# the last run's files: the final tensors, and the merged folders behind them
"$mk" linear.yaml ours-merged/ -q --force
"$py" "$root/tools/bench-pipeline.py" compare-folders ours-merged ref
"$py" "$root/tools/bench-pipeline.py" compare-gguf ours.gguf ref-q4_k_m.gguf
