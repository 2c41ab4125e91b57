#!/bin/sh
# merge to GGUF, in one streaming pass: `merge RECIPE OUT.gguf --out-type T` is byte for byte `merge RECIPE DIR/`
# then `convert DIR OUT2.gguf --type T` (same tensors, types, metadata and tokenizer, named
# after OUT), for f32, f16, q8_0 and q4_0 (and the q4_k_m mix), for a linear merge and a passthrough frankenmerge
# that changes the layer count (block_count follows); the same bytes at -j1 and -j4; bad
# input (--out-type with a folder OUT, an unknown type, --quantize with OUT.gguf, an existing
# OUT) is one line, exit 2, nothing written; a refused architecture or a failure mid-stream
# leaves nothing.
. "$MK_ROOT/tests/e2e/lib.sh"
"$MK" synth base --hidden 64 --layers 4 --heads 4 --kv-heads 2 --vocab 96 --dtype float32 --seed 1 -q &&
    "$MK" synth ft --finetune-of base --delta 0.05 --seed 2 -q ||
    { notok "synth" "could not make the models"; exit 1; }
printf 'merge_method: linear\nmodels:\n  - model: base\n    parameters: {weight: 0.6}\n  - model: ft\n    parameters: {weight: 0.4}\ndtype: float32\n' >lin.yaml
# the golden tiny Llama (a byte-level BPE vocabulary, tests/golden/gguf) merged in f32 into bf16: the
# values are rounded to the folder's dtype before they are encoded; the vocabulary is carried
"$MK" dequantize "$ROOT/tests/golden/gguf/tiny-f32.gguf" tf -q &&
    "$MK" synth tf2 --finetune-of tf --delta 0.05 --seed 3 -q || notok "tiny models" "could not make them"
printf 'merge_method: linear\nmodels:\n  - model: tf\n    parameters: {weight: 0.3}\n  - model: tf2\n    parameters: {weight: 0.7}\ndtype: float32\nout_dtype: bfloat16\n' >tiny.yaml
printf 'merge_method: passthrough\nslices:\n  - sources:\n      - model: base\n        layer_range: [0, 3]\n  - sources:\n      - model: ft\n        layer_range: [1, 4]\ndtype: float32\n' >pt.yaml

for r in lin pt tiny; do
    mkdir "$r"
    "$MK" "$r.yaml" "$r/m" -q || notok "$r: merge to a folder" "failed"
    for t in f32 f16 q8_0 q4_0; do
        "$MK" convert "$r/m" "$r/want-$t.gguf" --type "$t" -q
        mkdir "$r/$t"
        # small chunks at 4 threads: a tensor's rows (Q/K permuted ones too) arrive in pieces, in any order
        t_ok "$r $t: merge to GGUF" "$MK" "$r.yaml" "$r/$t/m.gguf" --out-type "$t" -q -j4 --chunk 96
        t_same "$r $t: the same bytes as merge to a folder, then convert" "$r/want-$t.gguf" "$r/$t/m.gguf"
        t_absent "$r $t: no folder or temporary file left" "$r/$t/m.gguf.tmp" "$r/$t/m"
    done
done
# a k-quant mix (q4_k_m: per-tensor types chosen by layer) on rows of whole 256-value blocks
"$MK" synth kb --hidden 256 --intermediate 512 --layers 3 --heads 4 --kv-heads 2 --vocab 96 --dtype float32 --seed 4 -q &&
    "$MK" synth kf --finetune-of kb --delta 0.05 --seed 5 -q || notok "k models" "could not make them"
sed 's/model: base/model: kb/; s/model: ft/model: kf/' lin.yaml >klin.yaml
mkdir kd kg
"$MK" klin.yaml kd/m -q && "$MK" convert kd/m want-k.gguf --type q4_k_m -q
t_ok "q4_k_m: merge to GGUF" "$MK" klin.yaml kg/m.gguf --out-type q4_k_m -q -j4 --chunk 96
t_same "q4_k_m: the same bytes as merge to a folder, then convert" want-k.gguf kg/m.gguf
"$MK" inspect pt/q8_0/m.gguf >ins.txt 2>&1
n=$(grep -c 'self_attn\.q_proj\.weight' ins.txt)
[ "$n" = 6 ] && ok "passthrough: 6 layers of tensors" || notok "passthrough: 6 layers of tensors" "$n"
# the reader takes num_hidden_layers from llama.block_count
head -n 1 ins.txt | grep -q ', 6 layers$' && ok "passthrough: block_count follows the merge (6)" ||
    notok "passthrough: block_count 6" "$(head -n 1 ins.txt)"

# with --out-shard-size, the folder has many shards, read back in name order: the GGUF file
# declares its tensors in that order too
mkdir sh shg
"$MK" lin.yaml sh/m -q --out-shard-size 40K && "$MK" convert sh/m sh/m.gguf --type q8_0 -q
"$MK" lin.yaml shg/m.gguf -q --out-shard-size 40K --out-type q8_0
[ "$(ls sh/m/*.safetensors | wc -l)" -gt 3 ] && t_same "sharded folder, then convert: the same bytes" sh/m.gguf shg/m.gguf ||
    notok "sharded folder" "not several shards: $(ls sh/m)"
ids=$("$MK" tokenize tiny/q8_0/m.gguf "abc ab a" 2>/dev/null | head -n 1)
[ "$ids" = "8 6 7 9" ] && ok "tiny: the donor's vocabulary is in the GGUF file" || notok "tiny: vocabulary" "ids $ids"

mkdir j1 j4 d
"$MK" lin.yaml j1/m.gguf --out-type q8_0 -q -j1
"$MK" lin.yaml j4/m.gguf --out-type q8_0 -q -j4 --chunk 96
t_same "the same bytes at -j1 and -j4" j1/m.gguf j4/m.gguf
t_ok "default type" "$MK" lin.yaml d/m.gguf -q
t_same "default type: f16" lin/want-f16.gguf d/m.gguf

t_fail "--out-type with a folder OUT" 2 "out-type" "$MK" lin.yaml fold --out-type q8_0
t_absent "--out-type with a folder OUT: nothing written" fold fold.tmp
t_fail "unknown --out-type" 2 "q9_9" "$MK" lin.yaml bad.gguf --out-type q9_9
t_fail "--quantize with OUT.gguf" 2 "quantize" "$MK" lin.yaml bad.gguf --quantize int8
t_absent "bad input: nothing written" bad.gguf bad.gguf.tmp bad.gguf.merge bad.gguf.merge.tmp
t_fail "existing OUT.gguf without --force" 2 "already exists" "$MK" lin.yaml d/m.gguf
t_ok "--force replaces it" "$MK" lin.yaml d/m.gguf --out-type q4_0 --force -q
t_same "--force: the new type" lin/want-q4_0.gguf d/m.gguf

# an architecture GGUF has no names for here: refused before anything is computed
"$MK" synth g2 --arch gemma --hidden 32 --layers 1 --heads 2 --vocab 40 --dtype float32 -q
printf 'merge_method: passthrough\nmodels:\n  - model: g2\n' >g.yaml
t_fail "gemma: no GGUF names, one line" 1 "model_type 'gemma'" "$MK" g.yaml g.gguf
t_absent "gemma: nothing written" g.gguf g.gguf.tmp
# a failure in the middle of the stream (a NaN input with --on-nonfinite error) leaves nothing
hl=$(od -An -t u8 -N8 ft/model.safetensors | tr -d ' ')
printf '\000\000\300\177' | dd of=ft/model.safetensors bs=1 seek=$((8 + hl + 100)) conv=notrunc status=none
t_fail "NaN input with --on-nonfinite error: one line" 1 "NaN/Inf" "$MK" lin.yaml nan.gguf --on-nonfinite error -q
t_absent "failure mid-stream: nothing written" nan.gguf nan.gguf.tmp
