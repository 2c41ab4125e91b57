#!/bin/sh
# GGUF input against gguf-py (tests/golden/gguf, made by tools/gen-golden-gguf.py): every
# ggml type we decode gives gguf-py's values exactly (tolerance: none; compare prints the
# worst element on failure); a Llama GGUF written as llama.cpp's converter writes it
# (llama.cpp names, Q/K rows permuted) reads back under Hugging Face names in the
# original row order, byte for byte, f32 and Q8_0; config.json comes from the metadata.
. "$MK_ROOT/tests/e2e/lib.sh"
G=$ROOT/tests/golden/gguf

t_ok "types: dequantize every ggml type" "$MK" dequantize "$G/types.gguf" types -q
t_ok "types: each equals gguf-py's dequantize exactly" "$MK" compare types "$G/types.f32.safetensors" -q
n=$("$MK" compare types "$G/types.f32.safetensors" --json 2>/dev/null | grep -o '"compared": [0-9]*')
[ "$n" = '"compared": 19' ] && ok "types: all 19 tensors compared" || notok "types: all 19 tensors compared" "got $n"

t_ok "tiny f32: dequantize" "$MK" dequantize "$G/tiny-f32.gguf" tf -q
t_ok "tiny f32: equals the original safetensors (names, order of Q/K rows, values)" "$MK" compare tf "$G/tiny.safetensors" -q
# byte for byte: the same names, and each tensor's bytes the same (XXH3-128); the files
# differ only in the order of the tensors
hashes() { "$MK" inspect "$1" --hashes --json 2>/dev/null | sed -n 's/.*"name": "\([^"]*\)".*"xxh3": "\([0-9a-f]*\)".*/\1 \2/p' | sort; }
hashes tf >a.txt
hashes "$G/tiny.safetensors" >b.txt
[ "$(wc -l <a.txt)" -eq 21 ] && t_same "tiny f32: the same 21 tensor names and bytes as the original" a.txt b.txt ||
    notok "tiny f32: the same 21 tensor names and bytes as the original" "$(wc -l <a.txt) tensors"
grep -q '"num_key_value_heads": 2' tf/config.json && grep -q '"rms_norm_eps": 1e-05' tf/config.json &&
    grep -q '"model_type": "llama"' tf/config.json && grep -q '"tie_word_embeddings": false' tf/config.json &&
    ok "tiny f32: config.json from the llama.* metadata" || notok "tiny f32: config.json from the llama.* metadata" "$(cat tf/config.json)"

t_ok "tiny q8_0: dequantize" "$MK" dequantize "$G/tiny-q8_0.gguf" tq -q
t_ok "tiny q8_0: equals gguf-py's dequantize, Q/K rows put back" "$MK" compare tq "$G/tiny-q8_0.f32.safetensors" -q
t_ok "tiny q8_0: a model for eval's loader (synthesized config, quantized weights)" "$MK" estimate "$G/tiny-q8_0.gguf" -q

# tokenizer.json from tokenizer.ggml.* (gpt2 BPE): eval reads the GGUF directly, and scores
# the text exactly as it scores the dequantized folder (which carries the same tokenizer.json)
printf 'abc ab a abcab ba\nab c abc\n' >text.txt
ids=$("$MK" tokenize "$G/tiny-f32.gguf" "abc ab a" 2>/dev/null | head -n 1)
[ "$ids" = "8 6 7 9" ] && ok "tiny: tokenizer from the GGUF metadata (BPE merges, byte-level)" || notok "tiny: tokenizer from the GGUF metadata (BPE merges, byte-level)" "ids $ids"
for m in f32 q8_0; do
    "$MK" eval "$G/tiny-$m.gguf" --text text.txt --ctx 8 --json 2>/dev/null | grep -o '"ppl": [^,]*' >a.txt
    "$MK" dequantize "$G/tiny-$m.gguf" "d-$m" -q && "$MK" eval "d-$m" --text text.txt --ctx 8 --json 2>/dev/null | grep -o '"ppl": [^,]*' >b.txt
    [ -s a.txt ] && t_same "tiny $m: eval of the GGUF equals eval of its dequantized folder ($(cat a.txt))" a.txt b.txt ||
        notok "tiny $m: eval of the GGUF" "no perplexity"
done

# merges and lora read GGUF weights as values: a merge of the quantized GGUF equals the
# merge of its dequantized folder, byte for byte
linear() { printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters: {weight: 0.5}\n  - model: %s\n    parameters: {weight: 0.5}\ndtype: float32\n' "$1" "$2"; }
linear "$G/tiny-q8_0.gguf" "$G/tiny-f32.gguf" >r1.yaml
linear d-q8_0 "$G/tiny.safetensors" >r2.yaml
t_ok "merge: GGUF inputs (Q8_0 and F32)" "$MK" merge r1.yaml m1 -q
t_ok "merge: the dequantized inputs" "$MK" merge r2.yaml m2 -q
t_ok "merge: the same bytes either way" "$MK" compare m1 m2 -q
t_ok "lora extract: from two GGUF files" "$MK" lora extract "$G/tiny-f32.gguf" "$G/tiny-q8_0.gguf" ad --rank 2 -q
