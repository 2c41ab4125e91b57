# lora_arches.sh - what `lora extract` writes, `lora apply` reads, for every architecture
# `synth` makes (biases of LoRA layers in Qwen2 and GPT-2, GPT-2's Conv1D layers and its
# module paths): at full rank extract-then-apply gives the finetune back; two default
# extractions of one base combine (cat, over --base) to the sum of their updates; a module
# one adapter saves whole and another adapts with LoRA is refused by name.
. "$MK_ROOT/tests/e2e/lib.sh"

# worst GOT WANT: the compared tensor with the largest |got - want| and its worst element
worst() {
    "$MK" compare "$1" "$2" --json 2>/dev/null |
        sed -n 's/.*"name": "\([^"]*\)".*"max_abs_diff": \([^,]*\),.*"worst": {"index": \([0-9]*\), "got": \([^,]*\), "want": \([^}]*\)}.*/\2 \1 [\3] got \4 want \5/p' |
        sort -g | tail -n 1
}

# The report: a bf16 Qwen2 with the default dtype, rank 4, applied.
t_ok "qwen2 (bf16) synth" sh -c "'$MK' synth q/ --arch qwen2 --hidden 128 --layers 4 --heads 4 --kv-heads 2 --vocab 500 -q &&
    '$MK' synth f/ --finetune-of q/ --seed 5 -q"
t_ok "qwen2 (bf16): extract --rank 4" "$MK" lora extract q/ f/ l/ --rank 4 -q
t_ok "  ... applies" "$MK" lora apply q/ l/ a/ -q
t_ok "  ... biases of LoRA layers saved as PEFT's base_layer.bias (bias: lora_only)" grep -q '"bias": "lora_only"' l/adapter_config.json
t_ok "  ... and q_proj is not in modules_to_save" sh -c "! grep -q 'modules_to_save.*q_proj' l/adapter_config.json"
t_ok "  ... the biases come back bit for bit" sh -c "'$MK' inspect a/ --json --hashes | grep -o '\"name\": \"[^\"]*bias\"[^}]*xxh3\": \"[0-9a-f]*\"' | sed 's/\"shard[^,]*,//' >ab.txt &&
    '$MK' inspect f/ --json --hashes | grep -o '\"name\": \"[^\"]*bias\"[^}]*xxh3\": \"[0-9a-f]*\"' | sed 's/\"shard[^,]*,//' >fb.txt &&
    test -s ab.txt && cmp -s ab.txt fb.txt"

# Every architecture, float32: full rank (48 >= every matrix's smaller side) reproduces the
# finetune; tolerance: f32 SVD rounding, |got - want| <= 1e-5 x the tensor's largest |want|.
for a in llama mistral qwen2 qwen3 gemma gemma2 phi3 gpt2; do
    kv=2
    [ "$a" = gpt2 ] && kv=4
    "$MK" synth "b-$a/" --arch "$a" --hidden 32 --layers 2 --heads 4 --kv-heads $kv --intermediate 48 --vocab 64 \
        --dtype float32 --seed 3 -q &&
        "$MK" synth "f-$a/" --finetune-of "b-$a/" --delta 0.05 --seed 4 -q &&
        "$MK" synth "g-$a/" --finetune-of "b-$a/" --delta 0.05 --seed 5 -q
    t_ok "$a: extract at full rank" "$MK" lora extract "b-$a/" "f-$a/" "full-$a/" --rank 48 -q
    t_ok "$a: apply it" "$MK" lora apply "b-$a/" "full-$a/" "back-$a/" -q
    t_ok "$a: extract + apply at full rank == the finetune (rel 1e-5; worst: $(worst "back-$a/" "f-$a/"))" \
        "$MK" compare "back-$a/" "f-$a/" --rel 1e-5
    # two default extractions (rank 4: embeddings, norms and biases saved whole) combine by
    # cat over their base; applied, that is base + both updates, which task_arithmetic over
    # base+adapter gives (the result passed through a passthrough recipe too, so that both
    # carry the names merges write: GPT-2's with "transformer."). Tolerance: f32 rounding of
    # two sums, 1e-5 of the largest |want|.
    t_ok "$a: default extraction 1" "$MK" lora extract "b-$a/" "f-$a/" "d1-$a/" --rank 4 -q
    t_ok "$a: default extraction 2" "$MK" lora extract "b-$a/" "g-$a/" "d2-$a/" --rank 4 -q
    t_ok "$a: combine --method cat --base" "$MK" lora combine "d1-$a/" "d2-$a/" "cat-$a/" --method cat --base "b-$a/" -q
    t_ok "$a: apply the combination" "$MK" lora apply "b-$a/" "cat-$a/" "catm-$a/" -q
    printf 'merge_method: task_arithmetic\nbase_model: b-%s/\nmodels:\n  - model: b-%s/+d1-%s/\n    parameters:\n      weight: 1\n  - model: b-%s/+d2-%s/\n    parameters:\n      weight: 1\ndtype: float32\n' \
        "$a" "$a" "$a" "$a" "$a" >"sum-$a.yaml"
    printf 'merge_method: passthrough\nmodels:\n  - model: catm-%s/\ndtype: float32\n' "$a" >"pass-$a.yaml"
    "$MK" "sum-$a.yaml" "sum-$a/" -q && "$MK" "pass-$a.yaml" "catp-$a/" -q
    t_ok "$a: combined adapter == base + both updates (rel 1e-5; worst: $(worst "catp-$a/" "sum-$a/"))" \
        "$MK" compare "catp-$a/" "sum-$a/" --rel 1e-5
done

# --save-module with a module's path saves that module alone (modules_to_save takes the path,
# so PEFT still wraps the other layers' q_proj in LoRA)
t_ok "llama: extract --save-module model.layers.0.self_attn.q_proj" "$MK" lora extract b-llama/ f-llama/ sp/ --rank 4 \
    --save-module model.layers.0.self_attn.q_proj -q
t_ok "  ... modules_to_save names the path" grep -q '"modules_to_save": \[.*"model.layers.0.self_attn.q_proj"' sp/adapter_config.json
t_ok "  ... layer 1's q_proj stays LoRA" grep -q 'layers.1.self_attn.q_proj.lora_A' "$(cd sp && pwd)/adapter_model.safetensors"
t_ok "  ... applies" "$MK" lora apply b-llama/ sp/ spa/ -q

# without the base, two adapters that save the same tensor cannot be combined
t_fail "combine without --base: tensors saved by both" 2 "d1-llama/ and d2-llama/ both save model.embed_tokens.weight whole; combining them needs the base model .*--base" \
    "$MK" lora combine d1-llama/ d2-llama/ o/ --method cat
# GPT-2's wpe: saved whole by a default extraction, a LoRA embedding with --embed-lora
t_ok "gpt2: extract --embed-lora" "$MK" lora extract b-gpt2/ g-gpt2/ e-gpt2/ --rank 4 --embed-lora -q
t_fail "combine: wpe saved whole by one adapter, LoRA in the other" 2 \
    "d1-gpt2/ saves wpe whole \(modules_to_save\) but e-gpt2/ adapts module transformer.wpe with LoRA; PEFT cannot load one adapter that does both" \
    "$MK" lora combine d1-gpt2/ e-gpt2/ o/ --method cat --base b-gpt2/
t_absent "nothing written" o o.tmp
