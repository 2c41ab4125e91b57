# methods_stacking.sh - layer stacking and architectures: which source tensor ends up where
# (tensor hashes), renumbering, config.json layer counts, per-architecture names (GPT-2's
# prefix, tied heads), the automatic fallback, vocabulary differences, and the errors a
# user gets for impossible requests.
. "$MK_ROOT/tests/e2e/lib.sh"

"$MK" synth base/ --hidden 32 --layers 32 --heads 4 --kv-heads 2 --intermediate 48 --vocab 48 --dtype bf16 --seed 1 -q &&
    "$MK" synth ft1/ --finetune-of base/ --delta 0.05 --seed 2 -q &&
    "$MK" synth ft2/ --finetune-of base/ --delta 0.05 --seed 3 -q &&
    "$MK" synth ft3/ --finetune-of base/ --delta 0.08 --seed 4 -q || { notok "synth" "could not make the models"; exit 1; }

# check_map NAME OUT RULES: RULES lines "out_layer_lo out_layer_hi model src_offset" say
# that output layers lo..hi hold model's layers (L - src_offset) byte for byte; every
# tensor of those layers is checked, and nothing else may be in between.
check_map() {
    _name=$1 _out=$2 _rules=$3
    tensor_hashes "$_out" >"$T/.out.h"
    for _m in $(echo "$_rules" | awk '{print $3}' | sort -u); do tensor_hashes "$_m" >"$T/.src.$_m.h"; done
    _bad=$(echo "$_rules" | while read -r lo hi m off; do
        [ -z "$lo" ] && continue
        awk -v lo="$lo" -v hi="$hi" -v off="$off" -v srcf="$T/.src.$m.h" '
            BEGIN { while ((getline l < srcf) > 0) { split(l, a, " "); src[a[1]] = a[2] } }
            match($1, /^model\.layers\.[0-9]+\./) {
                n = substr($1, 14) + 0
                if (n < lo || n > hi) next
                rest = substr($1, RLENGTH + 1)
                want = src["model.layers." (n - off) "." rest]
                if (want != $2) { print $1 " (from layer " (n - off) ")"; exit }
            }' "$T/.out.h"
    done | head -n 1)
    if [ -z "$_bad" ]; then ok "$_name: every layer holds its source's tensors"; else notok "$_name" "tensor differs: $_bad"; fi
}

# same_tensor NAME OUT OUTNAME SRC SRCNAME
same_tensor() {
    _a=$(tensor_hashes "$2" | awk -v n="$3" '$1 == n {print $2}')
    _b=$(tensor_hashes "$4" | awk -v n="$5" '$1 == n {print $2}')
    if [ -n "$_a" ] && [ "$_a" = "$_b" ]; then ok "$1"; else notok "$1" "$3 in $2 ($_a) is not $5 of $4 ($_b)"; fi
}

# layers_of MODEL: "config_layers distinct_tensor_layers"
layers_of() {
    "$MK" inspect "$1" --json >"$T/.j"
    _c=$(sed -n 's/.*"layers": \([0-9-]*\).*/\1/p' "$T/.j" | head -n 1)
    _t=$(grep -o '"name": "[a-z.]*\(layers\|h\)\.[0-9]*\.' "$T/.j" | sed 's/.*\.\([0-9]*\)\.$/\1/' | sort -un | wc -l)
    echo "$_c $_t"
}

# ---- SOLAR depth up-scaling: 0-23 + 8-31 = 48 layers --------------------------------------
t_ok "solar: merge" "$MK" "$ROOT/recipes/solar-depth-upscale.yaml" solar -q
[ "$(layers_of solar)" = "48 48" ] && ok "solar: 48 layers in config.json and tensors" || notok "solar: 48 layers" "got $(layers_of solar)"
check_map "solar" solar "0 23 base 0
24 47 base 16"
same_tensor "solar: embeddings from the first slice" solar model.embed_tokens.weight base model.embed_tokens.weight
same_tensor "solar: final norm from the last slice" solar model.norm.weight base model.norm.weight
same_tensor "solar: lm_head from the last slice" solar lm_head.weight base lm_head.weight

# ---- the overlap merged instead of stacked: 16 + 8 + 16 = 40 layers ----------------------
t_ok "summed overlap: merge" "$MK" "$ROOT/recipes/solar-summed-overlap.yaml" summed -q
[ "$(layers_of summed)" = "40 40" ] && ok "summed overlap: 40 layers" || notok "summed overlap: 40 layers" "got $(layers_of summed)"
check_map "summed overlap: copied ranges" summed "0 15 base 0
24 39 ft1 8"
same_tensor "summed overlap: lm_head from the last slice (ft1)" summed lm_head.weight ft1 lm_head.weight
# the blended layers are neither input's layer
a=$(tensor_hashes summed | awk '$1 == "model.layers.20.mlp.up_proj.weight" {print $2}')
b=$(tensor_hashes base | awk '$1 == "model.layers.20.mlp.up_proj.weight" {print $2}')
c=$(tensor_hashes ft1 | awk '$1 == "model.layers.12.mlp.up_proj.weight" {print $2}')
[ "$a" != "$b" ] && [ "$a" != "$c" ] && ok "summed overlap: layer 20 is a blend" || notok "summed overlap: layer 20 is a blend" "copied"

# the same with slerp: t = 0 and t = 1 slices copy one model exactly
t_ok "slerp overlap: merge" "$MK" "$ROOT/recipes/solar-slerp-overlap.yaml" slerped -q
[ "$(layers_of slerped)" = "40 40" ] && ok "slerp overlap: 40 layers" || notok "slerp overlap: 40 layers" "got $(layers_of slerped)"
check_map "slerp overlap: t = 0 and t = 1 slices" slerped "0 15 base 0
24 39 ft1 8"

# ---- Goliath-style interleave of two models: 72 layers ------------------------------------
t_ok "goliath: merge" "$MK" "$ROOT/recipes/goliath-interleave.yaml" goliath -q
[ "$(layers_of goliath)" = "72 72" ] && ok "goliath: 72 layers" || notok "goliath: 72 layers" "got $(layers_of goliath)"
check_map "goliath: interleaved ranges" goliath "0 15 base 0
16 31 ft1 8
32 47 base 16
48 63 ft1 36"
same_tensor "goliath: unscaled tensor of the scaled slice" goliath model.layers.64.mlp.up_proj.weight base model.layers.24.mlp.up_proj.weight
a=$(tensor_hashes goliath | awk '$1 == "model.layers.64.self_attn.o_proj.weight" {print $2}')
b=$(tensor_hashes base | awk '$1 == "model.layers.24.self_attn.o_proj.weight" {print $2}')
[ -n "$a" ] && [ "$a" != "$b" ] && ok "goliath: o_proj scaled by the filtered parameter" || notok "goliath: o_proj scaled" "unchanged"

# ---- architectures ---------------------------------------------------------------------
for arch in qwen3 gemma gemma2 phi3 mistral; do
    "$MK" synth "$arch/" --arch "$arch" --hidden 32 --layers 3 --heads 4 --kv-heads 2 --intermediate 48 --vocab 40 --seed 5 -q
    "$MK" synth "$arch-ft/" --finetune-of "$arch/" --delta 0.05 --seed 6 -q
    cat >"$arch.yaml" <<EOF
merge_method: passthrough
slices:
  - sources: [{model: $arch/, layer_range: [0, 2]}]
  - sources: [{model: $arch-ft/, layer_range: [1, 3]}]
EOF
    if "$MK" "$arch.yaml" "out-$arch" -q 2>"$T/.err"; then
        [ "$(layers_of "out-$arch")" = "4 4" ] && ok "$arch: stacked to 4 layers" || notok "$arch: stacked to 4 layers" "got $(layers_of "out-$arch")"
        check_map "$arch" "out-$arch" "0 1 $arch 0
2 3 $arch-ft 1"
    else
        notok "$arch: stack" "$(cat "$T/.err")"
    fi
    cat >"$arch-ties.yaml" <<EOF
merge_method: ties
base_model: $arch/
models:
  - model: $arch-ft/
    parameters: {weight: 1, density: 0.5}
EOF
    t_ok "$arch: ties merge" "$MK" "$arch-ties.yaml" "ties-$arch" -q
done
grep -q '"final_logit_softcapping": 30.0,' out-gemma2/config.json && grep -q '"num_hidden_layers": 4,' out-gemma2/config.json &&
    ok "gemma2: config keeps float literals (30.0), layer count rewritten" || notok "gemma2: config floats" "$(grep -n 'softcapping\|num_hidden' out-gemma2/config.json)"
"$MK" inspect out-gemma --json | grep -q '"name": "lm_head' && notok "gemma: tied, no lm_head" "lm_head written" || ok "gemma: tied, no lm_head written"

# GPT-2 checkpoints store names without "transformer."; mergekit writes the prefixed names
"$MK" synth gpt2/ --arch gpt2 --hidden 32 --layers 3 --heads 4 --intermediate 64 --vocab 40 --max-position 32 --seed 7 -q
"$MK" synth gpt2-ft/ --finetune-of gpt2/ --delta 0.05 --seed 8 -q
cat >gpt2.yaml <<'EOF'
merge_method: passthrough
slices:
  - sources: [{model: gpt2/, layer_range: [0, 3]}]
  - sources: [{model: gpt2-ft/, layer_range: [1, 3]}]
EOF
t_ok "gpt2: stack" "$MK" gpt2.yaml out-gpt2 -q
"$MK" inspect out-gpt2 --json >"$T/.j"
if grep -q '"name": "transformer.h.4.attn.c_attn.weight"' "$T/.j" && grep -q '"name": "transformer.wte.weight"' "$T/.j" &&
    ! grep -q '"name": "h\.' "$T/.j"; then ok "gpt2: canonical transformer.* names, layers renumbered"; else notok "gpt2: canonical names" "$(grep -o '"name": "[^"]*"' "$T/.j" | head -n 5 | tr '\n' ' ')"; fi
grep -q '"n_layer": 5' out-gpt2/config.json && ok "gpt2: config n_layer = 5" || notok "gpt2: config n_layer" "$(grep n_layer out-gpt2/config.json)"
same_tensor "gpt2: layer 4 is the finetune's layer 2" out-gpt2 transformer.h.4.mlp.c_fc.weight gpt2-ft h.2.mlp.c_fc.weight

# an architecture mergekit-c does not know: layers found by the ".N." pattern
mkdir unknown && cp base/model.safetensors base/tokenizer.json unknown/ &&
    sed 's/LlamaForCausalLM/NewThingForCausalLM/; s/"llama"/"newthing"/' base/config.json >unknown/config.json
cat >unknown.yaml <<'EOF'
merge_method: passthrough
slices:
  - sources: [{model: unknown/, layer_range: [0, 4]}]
  - sources: [{model: unknown/, layer_range: [2, 6]}]
EOF
t_ok "unknown architecture: stack by the layer pattern" "$MK" unknown.yaml out-unknown -q
[ "$(layers_of out-unknown)" = "8 8" ] && ok "unknown architecture: 8 layers, config rewritten" || notok "unknown architecture: 8 layers" "got $(layers_of out-unknown)"
check_map "unknown architecture" out-unknown "0 3 unknown 0
4 7 unknown 2"

# ---- a tied model lends its embeddings as lm_head (mergekit tied_names) -------------------
"$MK" synth tied/ --hidden 32 --layers 2 --heads 4 --vocab 48 --seed 11 --tie -q
"$MK" synth untied/ --hidden 32 --layers 2 --heads 4 --vocab 48 --seed 12 -q
for w in "1 0" "0 1"; do
    set -- $w
    cat >tie.yaml <<EOF
merge_method: linear
models:
  - model: tied/
    parameters: {weight: $1}
  - model: untied/
    parameters: {weight: $2}
EOF
    "$MK" tie.yaml "out-tie-$1" -q
done
same_tensor "tied + untied: lm_head uses the tied model's embeddings" out-tie-1 lm_head.weight tied model.embed_tokens.weight
same_tensor "tied + untied: and the other model's lm_head" out-tie-0 lm_head.weight untied lm_head.weight

# ---- vocabulary sizes that differ: the common first rows, config agrees -------------------
"$MK" synth big/ --hidden 32 --layers 32 --heads 4 --kv-heads 2 --intermediate 48 --vocab 56 --dtype bf16 --seed 9 -q
cat >vocab.yaml <<'EOF'
merge_method: linear
models:
  - model: base/
    parameters: {weight: 0.5}
  - model: big/
    parameters: {weight: 0.5}
EOF
if "$MK" vocab.yaml out-vocab 2>"$T/.err" >/dev/null; then
    grep -q 'model.embed_tokens.weight: vocabulary sizes differ' "$T/.err" && grep -q 'lm_head.weight: vocabulary sizes differ' "$T/.err" &&
        ok "vocab: a warning names each cut tensor" || notok "vocab: warning" "$(cat "$T/.err")"
    "$MK" inspect out-vocab --json | grep -q '"name": "model.embed_tokens.weight", "dtype": "BF16", "shape": \[48, 32\]' &&
        ok "vocab: embeddings cut to the common 48 rows" || notok "vocab: 48 rows" "$("$MK" inspect out-vocab | grep embed)"
    grep -q '"vocab_size": 48' out-vocab/config.json && ok "vocab: config vocab_size = 48" || notok "vocab: config" "$(grep vocab_size out-vocab/config.json)"
else
    notok "vocab: merge" "$(cat "$T/.err")"
fi
"$MK" synth wide/ --hidden 40 --layers 32 --heads 4 --kv-heads 2 --intermediate 48 --vocab 48 --dtype bf16 --seed 9 -q
sed 's/big/wide/' vocab.yaml >wide.yaml
t_fail "hidden size differs: error" 2 "tensor model.embed_tokens.weight: shape \[48, 32\] in model base/ vs \[48, 40\] in model wide/" "$MK" wide.yaml out-wide -q

# ---- mergekit's post-weight pairing: last slice limited to the first slice's source count --
cat >quirk.yaml <<'EOF'
merge_method: linear
slices:
  - sources: [{model: base/, layer_range: [0, 2]}]
  - sources: [{model: base/, layer_range: [2, 4]}, {model: ft1/, layer_range: [2, 4]}]
parameters:
  weight: 1.0
EOF
"$MK" quirk.yaml out-quirk 2>"$T/.err" >/dev/null
grep -q "first 1 source(s) of the last slice" "$T/.err" && ok "post weights: mergekit's pairing, with a warning" || notok "post weights warning" "$(cat "$T/.err")"
same_tensor "post weights: only the first source of the last slice" out-quirk model.norm.weight base model.norm.weight

# ---- errors ------------------------------------------------------------------------------
# bad_recipe NAME PATTERN: the recipe on stdin fails with exit 2 and one error line matching PATTERN
bad_recipe() {
    cat >bad.yaml
    t_fail "$1" 2 "$2" "$MK" bad.yaml o -q
}
bad_recipe "layer past the end" "bad.yaml:3:.*layer_range \[20, 40\] but base/ has 32 layers" <<'EOF'
merge_method: passthrough
slices:
  - sources: [{model: base/, layer_range: [20, 40]}]
EOF
bad_recipe "a model twice in one slice" "model base/ appears twice in one slice" <<'EOF'
merge_method: linear
slices:
  - sources: [{model: base/, layer_range: [0, 8]}, {model: base/, layer_range: [8, 16]}]
parameters: {weight: 1}
EOF
bad_recipe "slerp with three models" "merge_method 'slerp' takes exactly 2 models, got 3" <<'EOF'
merge_method: slerp
base_model: base/
models: [{model: base/}, {model: ft1/}, {model: big/}]
parameters: {t: 0.5}
EOF
bad_recipe "ties without a base" "merge_method 'ties' needs a base_model" <<'EOF'
merge_method: ties
models: [{model: ft1/, parameters: {weight: 1, density: 0.5}}]
EOF
bad_recipe "base not among a slice's sources" "slices\[0\]: the base model is not among the inputs" <<'EOF'
merge_method: task_arithmetic
base_model: base/
slices:
  - sources: [{model: ft1/, layer_range: [0, 32], parameters: {weight: 1}}]
EOF
bad_recipe "model_stock with one finetune" "takes at least 3 models, got 2" <<'EOF'
merge_method: model_stock
base_model: base/
models: [{model: ft1/}]
EOF
bad_recipe "della epsilon out of range" "della needs density - epsilon > 0 and density \+ epsilon < 1, got density 0.9, epsilon 0.2" <<'EOF'
merge_method: della
base_model: base/
models: [{model: ft1/, parameters: {weight: 1, density: 0.9, epsilon: 0.2}}]
EOF
bad_recipe "linear: the added base needs a weight too" "model base/ has no 'weight'" <<'EOF'
merge_method: linear
base_model: base/
models: [{model: ft1/, parameters: {weight: 1}}]
EOF
bad_recipe "passthrough with an added base" "merge_method 'passthrough' takes exactly 1 model, got 2" <<'EOF'
merge_method: passthrough
base_model: base/
models: [{model: ft1/}]
EOF
t_absent "no partial output after errors" o o.tmp

# ---- result dtypes: ramplus_tl and arcee_fusion return float32 in mergekit -----------------
t_ok "ramplus_tl on bf16 models" "$MK" "$ROOT/recipes/ramplus_tl.yaml" out-ram -q
"$MK" inspect out-ram | grep -q "F32" && notok "ramplus_tl: out_dtype bfloat16 honoured" "F32 tensors" || ok "ramplus_tl: out_dtype bfloat16 honoured"
sed '/out_dtype/d' "$ROOT/recipes/ramplus_tl.yaml" >ram32.yaml
"$MK" ram32.yaml out-ram32 -q && "$MK" inspect out-ram32 -s | grep -q "F32 .* 291 tensors" &&
    ok "ramplus_tl: float32 result without out_dtype" || notok "ramplus_tl: float32 result" "$("$MK" inspect out-ram32 -s | tail -n 2)"

# ---- random methods: same bytes at 1, 2 and 8 threads -------------------------------------
same=yes
for j in 1 2 8; do "$MK" "$ROOT/recipes/dare_ties.yaml" "dare-$j" -q -j "$j" --out-shard-size 20K || same="no: -j $j failed"; done
for f in dare-1/*.safetensors dare-1/model.safetensors.index.json; do
    for j in 2 8; do cmp -s "$f" "dare-$j/$(basename "$f")" || same="no: $f vs dare-$j"; done
done
[ "$same" = yes ] && ok "dare_ties: same shards at 1, 2 and 8 threads" || notok "dare_ties: threads" "$same"
if "$MK" "$ROOT/recipes/dare_ties.yaml" dare-seed -q --random-seed 43 --out-shard-size 20K &&
    ! cmp -s dare-1/model-00002-of-*.safetensors dare-seed/model-00002-of-*.safetensors; then
    ok "dare_ties: another seed, other masks"
else
    notok "dare_ties: another seed, other masks" "failed or same bytes"
fi
