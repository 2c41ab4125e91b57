#!/bin/sh
# compat-gguf-alloc.sh (make compat): llama.cpp (llama-cpp-python) loads what `convert
# --target-bpw` writes, a GGUF file mixing llama.cpp types per matrix: SmolLM2-135M at 5.8 bits
# per weight of the matrices (its k-quants and their 32-value fallbacks, the q6_k... output
# matrix); llama.cpp's tokens equal ours on a Debian text and its perplexity on 4 windows is
# within 1 % of `mergekit-c eval`'s on the same file (llama.cpp's quantized dot products round
# the activations to 8 bits; our f32 arithmetic does not: the tolerance of compat-gguf.sh).
# The tensor bytes are convert --type's (tests/e2e/alloc_gguf.sh), which compat-gguf.sh checks
# against llama.cpp's quantizer. Env: MK_SMOLLM2 (default .models/smollm2), MK_VENV.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${MK_VENV:-"$root/.venv-tools"}
py="$venv/bin/python"
mk="$root/mergekit-c"
sm=${MK_SMOLLM2:-"$root/.models/smollm2"}
text=/usr/share/common-licenses/GPL-3
[ -f "$sm/model.safetensors" ] || sh "$root/tools/get-smollm2.sh" "$sm"
ver=$(sed -n 's/^llama-cpp-python==//p' "$root/tools/requirements.txt")
"$py" -c 'import llama_cpp' 2>/dev/null || "$venv/bin/pip" install -q "llama-cpp-python==$ver"
w=$(mktemp -d /tmp/mk-compat-gguf-alloc-XXXXXX)
trap 'rm -rf "$w"' EXIT
"$mk" convert "$sm" "$w/a.gguf" --target-bpw 5.8 --json -q >"$w/a.json"
types=$(grep -o '"type": "[a-z0-9_]*", "fixed"' "$w/a.json" | sed 's/"type": "\([a-z0-9_]*\)".*/\1/' | sort | uniq -c | tr -s ' ' | tr '\n' ',')
echo "SmolLM2 at 5.8 bits per weight: matrices by type:$types"
"$mk" tokenize "$w/a.gguf" --text "$text" 2>/dev/null | head -n 1 >"$w/ids.txt"
"$py" "$root/tools/check-gguf-llama.py" "$w/a.gguf" "$text" --ids "$w/ids.txt" --chunks 4 >"$w/ref.json"
"$mk" eval "$w/a.gguf" --text "$text" --chunks 4 --json >"$w/ours.json" 2>/dev/null
num() { sed -n "s/.*\"$2\": \([-0-9.e+]*\).*/\1/p" "$1" | head -n 1; }
grep -q '"tokens_equal": true' "$w/ref.json" || { echo "FAIL: token ids differ from llama.cpp's: $(grep first_difference "$w/ref.json")"; exit 1; }
ours=$(num "$w/ours.json" ppl)
ref=$(num "$w/ref.json" ppl_llama_cpp)
echo "llama.cpp loads the mixed file; perplexity: mergekit-c $ours, llama.cpp $ref"
awk "BEGIN { d = ($ours - $ref) / $ref; exit !(d < 0.01 && d > -0.01) }" || { echo "FAIL: more than 1 % apart"; exit 1; }
echo "compat-gguf-alloc: ok"
