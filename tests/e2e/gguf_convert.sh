#!/bin/sh
# `convert` (GGUF output): a synthetic model converted to f32 GGUF and read back by our GGUF
# reader is the original safetensors byte for byte (names, Q/K rows un-permuted, values), for
# llama (permuted Q/K), qwen2 (biases) and qwen3 (q/k norms); the golden Llama that gguf-py
# wrote as convert_hf_to_gguf.py does (tests/golden/gguf, tools/gen-golden-gguf.py) comes out
# with the same tensor bytes in f32 and in Q8_0 (gguf-py's quantizer) and the same metadata;
# every --type (the k-quant mixes too: their per-tensor types, thread-count independence)
# writes a file our reader decodes within the type's error; bad input is one
# line, exit 2 (usage, existing OUT) or 1, and nothing written. Quantizer bytes: tests/unit/test_ggml_encode.c;
# llama.cpp itself: tools/compat-gguf.sh.
. "$MK_ROOT/tests/e2e/lib.sh"
G=$ROOT/tests/golden/gguf
sorted_hashes() { tensor_hashes "$1" 2>/dev/null | sort; }

for arch in llama qwen2 qwen3; do
    "$MK" synth "s-$arch" --arch "$arch" --hidden 64 --layers 2 --heads 4 --kv-heads 2 --vocab 96 --dtype float32 -q
    t_ok "$arch: convert to f32 GGUF" "$MK" convert "s-$arch" "s-$arch.gguf" --type f32 -q
    t_ok "$arch: our reader reads it back" "$MK" dequantize "s-$arch.gguf" "b-$arch" -q
    sorted_hashes "s-$arch" >a.txt
    sorted_hashes "b-$arch" >b.txt
    [ -s a.txt ] && t_same "$arch: round trip byte for byte ($(wc -l <a.txt) tensors)" a.txt b.txt ||
        notok "$arch: round trip byte for byte" "no tensors"
done

# the golden tiny Llama (gguf-py GGUFWriter, the converter's layout): its folder converts
# back to the same tensor bytes (f32; Q8_0 by gguf-py's quantizer) and tokenizer metadata
"$MK" dequantize "$G/tiny-f32.gguf" tf -q
t_ok "tiny: convert the folder to f32" "$MK" convert tf t32.gguf --type f32 -q
t_ok "tiny: convert the folder to q8_0" "$MK" convert tf t8.gguf --type q8_0 -q
sorted_hashes t32.gguf >a.txt
sorted_hashes "$G/tiny-f32.gguf" >b.txt
t_same "tiny f32: tensor bytes equal the converter's file" a.txt b.txt
sorted_hashes t8.gguf >a.txt
sorted_hashes "$G/tiny-q8_0.gguf" >b.txt
t_same "tiny q8_0: tensor bytes equal gguf-py's Q8_0 file" a.txt b.txt
ids=$("$MK" tokenize t32.gguf "abc ab a" 2>/dev/null | head -n 1)
[ "$ids" = "8 6 7 9" ] && ok "tiny: tokenizer.ggml.* written and read back (BPE merges, byte-level)" ||
    notok "tiny: tokenizer.ggml.* written and read back" "ids $ids"

# BOS added as gguf-py's SpecialVocab decides: a TemplateProcessing post-processor that starts
# with the BOS token of tokenizer_config.json (checked against gguf-py 0.19.0 by hand: bos 0,
# eos 1, add_bos True); the reader then puts BOS first
mkdir tb
cp tf/config.json tf/model.safetensors tb/
sed 's/"post_processor": *null/"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {}}/' tf/tokenizer.json >tb/tokenizer.json
printf '{"bos_token": "<s>", "eos_token": "</s>"}\n' >tb/tokenizer_config.json
"$MK" convert tb tb.gguf --type f32 -q
ids=$("$MK" tokenize tb.gguf "abc ab a" 2>/dev/null | head -n 1)
[ "$ids" = "0 8 6 7 9" ] && ok "tokenizer: add_bos_token from the post-processor, bos/eos ids from tokenizer_config.json" ||
    notok "tokenizer: add_bos_token from the post-processor" "ids $ids"
printf '{"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": false}\n' >tb/tokenizer_config.json
"$MK" convert tb tb2.gguf --type f32 -q
ids=$("$MK" tokenize tb2.gguf "abc ab a" 2>/dev/null | head -n 1)
[ "$ids" = "8 6 7 9" ] && ok "tokenizer: tokenizer_config.json's add_bos_token wins" || notok "tokenizer: add_bos_token false" "ids $ids"

# every type: written, read back, each value within tol x the tensor's largest |value|
# (the ternary types on a model whose rows are whole 256-value blocks)
"$MK" synth s-wide --hidden 256 --intermediate 512 --layers 1 --heads 4 --vocab 96 --dtype float32 -q
for spec in f16:0.001 bf16:0.01 q8_0:0.01 q5_1:0.05 q5_0:0.05 q4_1:0.1 q4_0:0.15 tq1_0:0.5 tq2_0:0.5; do
    t=${spec%%:*}
    tol=${spec#*:}
    m=s-llama
    case $t in tq*) m=s-wide ;; esac
    "$MK" convert "$m" "q-$t.gguf" --type "$t" -q && "$MK" dequantize "q-$t.gguf" "d-$t" -q 2>/dev/null
    t_ok "$t: converts and reads back within $tol x max |w| per tensor" "$MK" compare "$m" "d-$t" --rel "$tol" -q
done
"$MK" inspect q-tq1_0.gguf 2>/dev/null | grep -q 'q_proj.weight@TQ1_0' && "$MK" inspect q-tq1_0.gguf 2>/dev/null | grep -q 'embed_tokens.weight  *F16' &&
    ok "tq1_0: matrices TQ1_0, the token embedding F16 (as the converter writes it)" || notok "tq1_0: tensor types" "$("$MK" inspect q-tq1_0.gguf 2>&1 | head -5)"


# the same bytes at any thread count
"$MK" convert s-wide j1.gguf --type q4_1 -q -j 1
"$MK" convert s-wide j2.gguf --type q4_1 -q -j 3
t_same "q4_1: the same file with 1 and 3 threads" j1.gguf j2.gguf

# the k-quant mixes (llama.cpp's own bytes and types: tests/unit/test_ggml_kquant.c and
# tools/compat-gguf.sh): each written and read back within its type's error, on a model with
# 256-value rows (8 layers) and one with 288-value rows (the 32-value fallbacks, tied embeddings)
"$MK" synth s-k --hidden 256 --intermediate 512 --layers 8 --heads 4 --kv-heads 2 --vocab 96 --dtype float32 -q
"$MK" synth s-k288 --hidden 288 --intermediate 512 --layers 2 --heads 9 --kv-heads 3 --vocab 96 --dtype float32 --tie -q
for spec in q2_k:0.4 q3_k_s:0.3 q3_k_m:0.3 q3_k_l:0.3 q4_k_s:0.1 q4_k_m:0.1 q5_k_s:0.075 q5_k_m:0.075 q6_k:0.03 iq4_nl:0.15; do
    t=${spec%%:*}
    tol=${spec#*:}
    for m in s-k s-k288; do
        "$MK" convert "$m" "k-$m-$t.gguf" --type "$t" -q && "$MK" dequantize "k-$m-$t.gguf" "dk-$m-$t" -q 2>/dev/null
        t_ok "$t ($m): converts and reads back within $tol x max |w| per tensor" "$MK" compare "$m" "dk-$m-$t" --rel "$tol" -q
    done
done
types() { "$MK" inspect "$1" 2>/dev/null | sed -n 's/^  *\([^ ]*\)@\([A-Z0-9_]*\) .*/\1 \2/p'; }
types k-s-k-q4_k_m.gguf >ty.txt
grep -q '^lm_head.weight Q6_K$' ty.txt && grep -q '^model.layers.0.self_attn.v_proj.weight Q6_K$' ty.txt &&
    grep -q '^model.layers.2.self_attn.v_proj.weight Q4_K$' ty.txt && grep -q '^model.layers.7.mlp.down_proj.weight Q6_K$' ty.txt &&
    grep -q '^model.layers.3.self_attn.q_proj.weight Q4_K$' ty.txt && grep -q '^model.embed_tokens.weight Q4_K$' ty.txt &&
    ok "q4_k_m: output Q6_K, attn_v / ffn_down Q6_K in the first and last layers, the rest Q4_K" || notok "q4_k_m tensor types" "$(cat ty.txt)"
types k-s-k288-q4_k_m.gguf >ty.txt
grep -q '^model.embed_tokens.weight Q8_0$' ty.txt && grep -q '^model.layers.1.self_attn.q_proj.weight Q5_0$' ty.txt &&
    grep -q '^model.layers.1.mlp.down_proj.weight Q6_K$' ty.txt &&
    ok "q4_k_m, 288-value rows: tied embedding Q8_0, Q4_K falls back to Q5_0, 512-value rows stay k-quants" || notok "q4_k_m 288 tensor types" "$(cat ty.txt)"
# general.file_type: the u32 after the key and its value type (llama.cpp's LLAMA_FTYPE_MOSTLY_*)
file_type() { at=$(grep -obUa 'general.file_type' "$1" | head -n 1 | cut -d: -f1) && od -An -tu4 -j $((at + 21)) -N4 "$1" | tr -d ' '; }
fts=""
for t in q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k; do fts="$fts $(file_type "k-s-k-$t.gguf")"; done
[ "$fts" = " 10 11 12 13 14 15 16 17 18" ] && ok "general.file_type of the mixes is llama.cpp's (10 ... 18)" || notok "general.file_type" "$fts"
"$MK" convert s-k k-j1.gguf --type q3_k_m -q -j 1 && "$MK" convert s-k k-j3.gguf --type q3_k_m -q -j 3
t_same "q3_k_m: the same file with 1 and 3 threads" k-j1.gguf k-j3.gguf
# quantize --format gguf-T is convert --type T
t_ok "quantize --format gguf-q4_k_m" "$MK" quantize s-k qz.gguf --format gguf-q4_k_m -q
t_same "quantize --format gguf-q4_k_m: convert --type q4_k_m's file" qz.gguf k-s-k-q4_k_m.gguf
t_fail "quantize --format gguf-T: unknown T" 2 "gguf-T: 'q9_k' is not one of" "$MK" quantize s-k qx.gguf --format gguf-q9_k
t_fail "quantize --format gguf-T: OUT not .gguf" 2 "OUT must end in .gguf" "$MK" quantize s-k qx --format gguf-q8_0
t_fail "quantize --format gguf-T: no block settings" 2 "--group-size: not with --format gguf-q8_0" "$MK" quantize s-k qx.gguf --format gguf-q8_0 --group-size 32
t_absent "quantize --format gguf-T: nothing written after errors" qx.gguf qx qx.gguf.tmp
cmp -s k-j1.gguf k-s-k-q3_k_m.gguf && ok "q3_k_m: the same file at the default thread count" || notok "q3_k_m: default threads differ"
"$MK" convert s-k k-alias.gguf --type q4_k -q
t_same "q4_k is q4_k_m (llama-quantize's alias)" k-alias.gguf k-s-k-q4_k_m.gguf

# RoPE scaling: linear is written (and read back into config.json); Llama 3's is refused
mkdir rl
cp s-llama/model.safetensors s-llama/tokenizer.json rl/
sed 's/"rope_theta": 10000.0,/"rope_theta": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 2.0},/' s-llama/config.json >rl/config.json
"$MK" convert rl rl.gguf --type f32 -q 2>/dev/null && "$MK" dequantize rl.gguf rl-back -q
tr -d ' \n' <rl-back/config.json | grep -q '"rope_scaling":{"rope_type":"linear","factor":2}' &&
    ok "linear RoPE scaling: written and read back" || notok "linear RoPE scaling" "$(grep -A3 rope_scaling rl-back/config.json)"
sed 's/"rope_theta": 10000.0,/"rope_theta": 10000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},/' s-llama/config.json >rl/config.json
t_fail "Llama 3 RoPE scaling: refused" 1 "RoPE scaling 'llama3' is not written to GGUF yet" "$MK" convert rl x.gguf
t_absent "Llama 3 RoPE scaling: nothing written" x.gguf x.gguf.tmp

# bad input: one line, exit code, nothing written
t_fail "unknown --type" 2 "'q7_k' is not one of" "$MK" convert s-llama x.gguf --type q7_k
t_absent "unknown --type: nothing written" x.gguf x.gguf.tmp
"$MK" synth s-gemma --arch gemma --hidden 64 --layers 1 --heads 4 --vocab 96 -q
t_fail "an architecture without GGUF names" 1 "model_type 'gemma' has no GGUF tensor names" "$MK" convert s-gemma x.gguf
t_absent "no GGUF names: nothing written" x.gguf x.gguf.tmp
cp q-q8_0.gguf before.gguf
t_fail "OUT exists without --force" 2 "q-q8_0.gguf already exists" "$MK" convert s-llama q-q8_0.gguf --type f16
t_same "OUT exists: left as it was" q-q8_0.gguf before.gguf
t_ok "--force replaces it" "$MK" convert s-llama q-q8_0.gguf --type f16 --force -q
cp -r tb tbad
printf '{"model": ' >tbad/tokenizer.json
t_fail "a tokenizer.json that is not JSON" 1 "tbad/tokenizer.json: not valid JSON" "$MK" convert tbad x.gguf
t_absent "bad tokenizer.json: nothing written" x.gguf x.gguf.tmp
t_fail "not a model" 1 "no such file|not a model" "$MK" convert nothere x.gguf
t_absent "not a model: nothing written" x.gguf x.gguf.tmp

# a write that fails half-way (file-size limit): one error line, exit 1, no OUT, no OUT.tmp
(ulimit -f 64; "$MK" convert s-llama big.gguf --type f32 -q) >"$T/.out" 2>"$T/.err"
rc=$?
if [ $rc -eq 1 ] && grep -q "big.gguf.tmp: .*File too large" "$T/.err" && [ "$(grep -c . "$T/.err")" -eq 1 ]; then
    ok "file-size limit mid-write: one error line, exit 1"
else
    notok "file-size limit mid-write" "exit $rc: $(cat "$T/.err")"
fi
t_absent "file-size limit: no partial output" big.gguf big.gguf.tmp
