# lora_bad.sh - hostile and broken adapters are refused with one line naming the file,
# module or key, what was expected and what was found; nothing is written.
. "$MK_ROOT/tests/e2e/lib.sh"
$MK synth b/ --hidden 32 --heads 4 --kv-heads 2 --intermediate 72 --vocab 64 --layers 1 --dtype float32 --seed 1 -q
t_ok "synth" test -f b/model.safetensors

# st FILE HEADER N: a safetensors file with HEADER and N zero bytes of data
st() {
    _n=$(printf %s "$2" | wc -c)
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o\\000\\000\\000\\000' $((_n & 255)) $((_n >> 8 & 255)) $((_n >> 16 & 255)) $((_n >> 24 & 255)))" >"$1"
    printf %s "$2" >>"$1"
    head -c "$3" /dev/zero >>"$1"
}
P=base_model.model.model.layers.0.self_attn
A="\"$P.q_proj.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[4,32],\"data_offsets\":[0,512]}"
B="\"$P.q_proj.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[32,4],\"data_offsets\":[512,1024]}"
# adapter NAME CONFIG HEADER BYTES
adapter() {
    mkdir -p "$1"
    printf '%s\n' "$2" >"$1/adapter_config.json"
    st "$1/adapter_model.safetensors" "$3" "$4"
}
CFG='{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}'
adapter good "$CFG" "{$A,$B}" 1024
t_ok "a valid (all-zero) adapter applies" "$MK" lora apply b/ good/ o-good -q
t_ok "a zero update leaves the base as it was" "$MK" compare o-good/model.safetensors b/model.safetensors

adapter r0 '{"r": 0, "lora_alpha": 8, "target_modules": ["q_proj"]}' "{$A,$B}" 1024
t_fail "r = 0" 1 "r0/adapter_config.json: r: expected a positive integer rank .*found 0" "$MK" lora apply b/ r0/ o
adapter rneg '{"r": -2, "target_modules": ["q_proj"]}' "{$A,$B}" 1024
t_fail "r < 0" 1 "r: expected a positive integer rank .*found -2" "$MK" lora apply b/ rneg/ o
adapter r8 '{"r": 8, "lora_alpha": 8, "target_modules": ["q_proj"]}' "{$A,$B}" 1024
t_fail "r does not match the shapes" 1 "module model.layers.0.self_attn.q_proj: r = 8 .* but A is \[4, 32\]" "$MK" lora apply b/ r8/ o
adapter alpha '{"r": 4, "lora_alpha": "sixteen", "target_modules": ["q_proj"]}' "{$A,$B}" 1024
t_fail "non-numeric alpha" 1 "lora_alpha: expected a number, found string" "$MK" lora apply b/ alpha/ o
B16="\"$P.q_proj.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[16,4],\"data_offsets\":[512,768]}"
adapter shape "$CFG" "{$A,$B16}" 768
t_fail "A/B do not match the base tensor" 1 "q_proj: A \[4, 32\] and B \[16, 4\] give a \[16, 32\] update, but the base's model.layers.0.self_attn.q_proj.weight is \[32, 32\]" "$MK" lora apply b/ shape/ o
adapter noB "$CFG" "{$A}" 512
t_fail "missing B" 1 "module model.layers.0.self_attn.q_proj has lora_A.weight but no lora_B.weight" "$MK" lora apply b/ noB/ o
A7=$(printf %s "$A" | sed 's/layers\.0/layers.7/'); B7=$(printf %s "$B" | sed 's/layers\.0/layers.7/')
adapter l7 "$CFG" "{$A7,$B7}" 1024
t_fail "module missing from the base" 1 "base model b/ has no tensor model.layers.7.self_attn.q_proj.weight" "$MK" lora apply b/ l7/ o
adapter nope '{"r": 4, "target_modules": ["q_proj", "nope_proj"]}' "{$A,$B}" 1024
t_fail "target module missing from the base" 1 "target module 'nope_proj' is not in the base model" "$MK" lora apply b/ nope/ o
adapter dora '{"r": 4, "use_dora": true, "target_modules": ["q_proj"]}' "{$A,$B}" 1024
t_fail "DoRA" 1 "use_dora: DoRA adapters are not supported" "$MK" lora apply b/ dora/ o
adapter trunc "$CFG" "{$A,$B}" 1000
t_fail "truncated weights" 1 "trunc/adapter_model.safetensors" "$MK" lora apply b/ trunc/ o
mkdir -p pickle && printf '%s\n' "$CFG" >pickle/adapter_config.json && : >pickle/adapter_model.bin
t_fail "empty adapter_model.bin" 1 "pickle/adapter_model.bin: not a PyTorch checkpoint" "$MK" lora apply b/ pickle/ o
mkdir -p noweights && printf '%s\n' "$CFG" >noweights/adapter_config.json
t_fail "no weights" 1 "noweights/: no adapter_model.safetensors or adapter_model.bin" "$MK" lora apply b/ noweights/ o
t_fail "not an adapter" 1 "no adapter_config.json here; this looks like a full model" "$MK" lora apply b/ b/ o
adapter badjson '{"r": 4, "target_modules": ["q_proj"' "{$A,$B}" 1024
t_fail "broken JSON" 1 "badjson/adapter_config.json" "$MK" lora apply b/ badjson/ o
t_absent "nothing written" o o.tmp

# in a recipe: the error names the recipe position
printf 'merge_method: passthrough\nmodels:\n  - model: b/+r8/\n' >bad.yaml
t_fail "recipe: bad adapter" 1 "bad.yaml:3:.*model 'b/\+r8/'.*r = 8" "$MK" bad.yaml o
printf 'merge_method: passthrough\nmodels:\n  - model: b/+missing/\n' >miss.yaml
t_fail "recipe: missing adapter" 2 "miss.yaml:3:.*LoRA adapter 'missing/' not found" "$MK" miss.yaml o
t_absent "nothing written by the recipes" o o.tmp

# combine refuses adapters of different bases and unknown methods
t_fail "combine: unknown method" 2 "unknown 'tie' .*did you mean 'ties'" "$MK" lora combine good/ good/ o --method tie
t_fail "combine: ties needs a density" 2 "needs --density" "$MK" lora combine good/ good/ o --method ties
adapter other '{"r": 4, "target_modules": ["q_proj"]}' "{$A,$B16}" 768
t_fail "combine: different shapes" 2 "other/: module .*q_proj has a \[16, 32\] update, but good/'s is \[32, 32\]" "$MK" lora combine good/ other/ o --method cat
t_absent "nothing written by combine" o o.tmp
