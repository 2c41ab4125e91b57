# merge_cli.sh - the quick start, output folder contents, --check, --force, --dry-run,
# --json, sharding, determinism across threads and chunk sizes, layer stacking, and bad
# inputs (one error line, the right exit code, no output left behind).
. "$MK_ROOT/tests/e2e/lib.sh"

# ---- the README quick start --------------------------------------------------------------
t_ok "synth base" "$MK" synth base/ --hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 688 --vocab 1000 --dtype bf16 --seed 1 -q
t_ok "synth ft1" "$MK" synth ft1/ --finetune-of base/ --delta 0.01 --seed 2 -q
t_ok "synth ft2" "$MK" synth ft2/ --finetune-of base/ --delta 0.01 --seed 3 -q
t_ok "merge recipes/linear.yaml" "$MK" "$ROOT/recipes/linear.yaml" out/ -q
t_ok "merge subcommand form" "$MK" merge "$ROOT/recipes/linear.yaml" out-b/ -q
t_same "both forms give the same shards" out/model.safetensors out-b/model.safetensors
t_ok "inspect out" "$MK" inspect out/
grep -q "tensors: 39  parameters: 3414272" "$T/.out" && ok "inspect totals" || notok "inspect totals" "$(tail -n 3 "$T/.out")"
for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json generation_config.json \
    mergekit_config.yml README.md mergekit-c.json model.safetensors; do
    [ -f "out/$f" ] || notok "output has $f" "missing"
done
ok "output folder has config, tokenizer, recipe, card, provenance"
t_same "mergekit_config.yml is the recipe as given" out/mergekit_config.yml "$ROOT/recipes/linear.yaml"
t_same "tokenizer copied from the base" out/tokenizer.json base/tokenizer.json
grep -q '"torch_dtype": "bfloat16"' out/config.json && ok "config torch_dtype" || notok "config torch_dtype" "$(cat out/config.json)"
grep -q 'ft1/' out/README.md && grep -q 'linear' out/README.md && ok "model card names inputs and method" || notok "model card" "$(head -c 300 out/README.md)"
t_absent "no temporary folder left" out.tmp

# ---- provenance and --check -----------------------------------------------------------------
t_ok "--check reproduces" "$MK" "$ROOT/recipes/linear.yaml" out/ --check -q
cp out/config.json config.bak
sed 's/"rope_theta": 10000/"rope_theta": 10001/' config.bak >out/config.json
t_fail "--check finds a changed output" 1 "config.json differs" "$MK" "$ROOT/recipes/linear.yaml" out/ --check -q
cp config.bak out/config.json
t_absent "--check leaves no scratch folder" out.check out.check.tmp

# ---- existing outputs, --force, overlap with inputs ----------------------------------------
t_fail "existing OUT refused" 2 "out: output already exists \(use --force" "$MK" "$ROOT/recipes/linear.yaml" out/
t_ok "--force replaces OUT" "$MK" "$ROOT/recipes/linear.yaml" out/ --force -q
t_fail "OUT equal to an input refused" 2 "overlaps input" "$MK" "$ROOT/recipes/linear.yaml" ft1/ --force
t_fail "OUT inside an input refused" 2 "overlaps input" "$MK" "$ROOT/recipes/linear.yaml" base/sub --force
[ -f ft1/model.safetensors ] && ok "inputs untouched" || notok "inputs untouched" "ft1 damaged"
cp base/model.safetensors single.safetensors
cp base/config.json config.json # a bare file's config.json is the one beside it
printf 'merge_method: passthrough\nmodels:\n  - model: single.safetensors\n' >single.yaml
t_ok "a .safetensors file input, output beside it" "$MK" single.yaml single-out/ -q
t_fail "OUT equal to a file input refused" 2 "output single.safetensors overlaps input single.safetensors" "$MK" single.yaml single.safetensors --force

# ---- dry run and json ---------------------------------------------------------------------------
t_ok "--dry-run" "$MK" "$ROOT/recipes/linear.yaml" dry/ --dry-run
grep -q "plan: linear over 3 model(s): 39 tensors" "$T/.out" && grep -q "peak memory estimate" "$T/.out" &&
    ok "--dry-run prints the plan" || notok "--dry-run prints the plan" "$(head -n 3 "$T/.out")"
t_absent "--dry-run writes nothing" dry dry.tmp
t_ok "--dry-run --json" "$MK" "$ROOT/recipes/linear.yaml" dry/ --dry-run --json
grep -q '"peak_memory_bytes"' "$T/.out" && grep -q '"name": "model.layers.3.mlp.down_proj.weight"' "$T/.out" &&
    ok "--dry-run --json lists tensors" || notok "--dry-run --json lists tensors" "$(head -c 300 "$T/.out")"
t_ok "--json summary" "$MK" "$ROOT/recipes/linear.yaml" js/ --json -q
grep -q '"outputs"' "$T/.out" && grep -q '"xxh128"' "$T/.out" && ok "--json has provenance" || notok "--json has provenance" "$(head -c 300 "$T/.out")"

# ---- sharding -------------------------------------------------------------------------------------
t_ok "sharded output" "$MK" "$ROOT/recipes/linear.yaml" sh/ --out-shard-size 1M -q
n=$(ls sh/model-*-of-*.safetensors 2>/dev/null | wc -l)
[ "$n" -ge 5 ] && [ -f sh/model.safetensors.index.json ] && ok "shards and index ($n shards)" || notok "shards and index" "$n shards"
grep -q '"total_size": 6828544' sh/model.safetensors.index.json && ok "index total_size" || notok "index total_size" "$(head -n 3 sh/model.safetensors.index.json)"
t_ok "sharded output equals single file" "$MK" compare sh/ out/

# ---- determinism: threads and chunk size ------------------------------------------------------
t_ok "merge -j1" "$MK" "$ROOT/recipes/linear.yaml" j1/ -j1 -q
t_ok "merge -j8" "$MK" "$ROOT/recipes/linear.yaml" j8/ -j 8 -q
t_ok "merge with small chunks" "$MK" "$ROOT/recipes/linear.yaml" c7/ --chunk 7000 -q
t_same "same bytes at 1 and 2 threads" j1/model.safetensors out/model.safetensors
t_same "same bytes at 1 and 8 threads" j1/model.safetensors j8/model.safetensors
t_same "same bytes with other chunk sizes" j1/model.safetensors c7/model.safetensors
t_ok "synth again at -j1" "$MK" synth base1/ --hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 688 --vocab 1000 --dtype bf16 --seed 1 -q -j 1
t_same "synth is deterministic" base1/model.safetensors base/model.safetensors

# ---- layer stacking -------------------------------------------------------------------------------
cat >stack.yaml <<'Y'
merge_method: passthrough
slices:
  - sources:
      - model: base/
        layer_range: [0, 3]
  - sources:
      - model: ft1/
        layer_range: [1, 4]
Y
t_ok "stack 3 + 3 layers" "$MK" stack.yaml stack/ -q
grep -q '"num_hidden_layers": 6' stack/config.json && ok "config num_hidden_layers rewritten" || notok "config num_hidden_layers rewritten" "$(grep layers stack/config.json)"
t_ok "inspect stack" "$MK" inspect stack/ --json
grep -q '"model.layers.5.mlp.down_proj.weight"' "$T/.out" && ! grep -q '"model.layers.6.' "$T/.out" &&
    ok "stacked layers renumbered 0..5" || notok "stacked layers renumbered" "$(grep -o 'model.layers.[0-9]*' "$T/.out" | sort -u | tr '\n' ' ')"

# ---- bad inputs -----------------------------------------------------------------------------------------
le64() { _n=$1; _i=0; while [ $_i -lt 8 ]; do printf "\\$(printf '%03o' $((_n % 256)))"; _n=$((_n / 256)); _i=$((_i + 1)); done; }
mkst() { mkdir -p "$1"; cp base/config.json "$1/"; { le64 ${#2}; printf '%s' "$2"; head -c "$3" /dev/zero; } >"$1/model.safetensors"; }
one_model() { printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters:\n      weight: 1.0\n' "$1" >"$2"; }

mkst bad_header '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}' 12
one_model bad_header/ r_overlap.yaml
t_fail "overlapping offsets" 1 "bad_header/model.safetensors: tensor b: data_offsets \[4, 12\) overlap" "$MK" r_overlap.yaml o1/
t_absent "no output after a bad input" o1 o1.tmp
mkst bad_json '{"a":{"dtype":"F32","shape":[2],' 8
one_model bad_json/ r_json.yaml
t_fail "bad header JSON" 1 "bad_json/model.safetensors: header: invalid JSON" "$MK" r_json.yaml o2/
mkdir trunc && cp base/config.json trunc/ && head -c 100000 base/model.safetensors >trunc/model.safetensors
one_model trunc/ r_trunc.yaml
t_fail "truncated file" 1 "trunc/model.safetensors: data section is .* \(file truncated\)" "$MK" r_trunc.yaml o3/
t_absent "no output after a truncated input" o3 o3.tmp
t_fail "inspect a truncated file" 1 "file truncated" "$MK" inspect trunc/
mkdir shards && "$MK" "$ROOT/recipes/linear.yaml" shards/m --out-shard-size 1M -q && rm shards/m/model-00002-of-*.safetensors
one_model shards/m r_shard.yaml
t_fail "missing shard" 1 "index lists shard 'model-00002-of-0000[0-9].safetensors'" "$MK" r_shard.yaml o4/
printf 'merge_method: lineer\nmodels:\n  - model: base/\n    parameters:\n      weight: 1\n' >r_method.yaml
t_fail "unknown method" 2 "r_method.yaml:1:15: unknown merge_method 'lineer' \(did you mean 'linear'\?\)" "$MK" r_method.yaml o5/
printf 'merge_method: linear\nmodels:\n  - model: nowhere/\n    parameters:\n      weight: 1\n' >r_missing.yaml
t_fail "missing model" 2 "r_missing.yaml:3:12: model 'nowhere/' not found" "$MK" r_missing.yaml o6/
"$MK" synth wide/ --hidden 64 --layers 4 --heads 8 --kv-heads 4 --intermediate 200 --vocab 1000 -q
"$MK" synth narrow/ --hidden 64 --layers 4 --heads 8 --kv-heads 4 --intermediate 176 --vocab 1000 -q
printf 'merge_method: linear\nmodels:\n  - model: wide/\n  - model: narrow/\nparameters:\n  weight: 0.5\n' >r_shape.yaml
t_fail "shape mismatch" 2 "tensor model.layers.0.mlp.gate_proj.weight: shape \[200, 64\] in model wide/ vs \[176, 64\] in model narrow/" "$MK" r_shape.yaml o7/
"$MK" synth q2/ --arch qwen2 --hidden 64 --layers 4 --heads 8 --kv-heads 4 --intermediate 176 --vocab 1000 -q
printf 'merge_method: linear\nmodels:\n  - model: narrow/\n  - model: q2/\nparameters:\n  weight: 0.5\n' >r_arch.yaml
t_fail "different architectures" 2 "narrow/ is LlamaForCausalLM but q2/ is Qwen2ForCausalLM" "$MK" r_arch.yaml o8/
printf 'merge_method: linear\nmodels:\n  - model: q2/\n  - model: narrow/\nparameters:\n  weight: 0.5\n' >r_missing_t.yaml
t_fail "missing tensor" 2 "tensor model.layers.0.self_attn.q_proj.bias required but not present in model narrow/" "$MK" r_missing_t.yaml o9/ --allow-crimes
printf 'merge_method: linear\nmodels:\n  - model: base/\n' >r_noweight.yaml
t_fail "missing weight" 2 "model base/ has no 'weight'" "$MK" r_noweight.yaml o10/
printf 'merge_method: linear\nmodels:\n  - model: base/\n    parameters:\n      weight: 1\n      wieght: 2\n' >r_param.yaml
t_fail "unknown parameter" 2 "r_param.yaml:6:7: unknown parameter 'wieght' for merge_method 'linear' \(did you mean 'weight'\?\)" "$MK" r_param.yaml o11/
printf 'merge_method: linear\nmodels:\n  - model: base/\n    parameters:\n      weight: 1\n  - model: ft1/\n    parameters:\n      weight: -1\n' >r_zero.yaml
t_fail "weights summing to zero" 2 "weights sum to 0" "$MK" r_zero.yaml o12/
printf 'merge_method: passthrough\nslices:\n  - sources:\n      - model: base/\n        layer_range: [0, 9]\n' >r_range.yaml
t_fail "layer range past the end" 2 "r_range.yaml:4:9: slices\[0\].sources\[0\]: layer_range \[0, 9\] but base/ has 4 layers" "$MK" r_range.yaml o13/
t_fail "missing recipe file" 2 "cannot read recipe: nope.yaml" "$MK" nope.yaml o14/
t_fail "unknown option" 2 "unknown option '--shard-size' \(did you mean '--out-shard-size'\?\)" "$MK" "$ROOT/recipes/linear.yaml" o15/ --shard-size 1G
t_fail "bad size" 2 "--out-shard-size expects a size" "$MK" "$ROOT/recipes/linear.yaml" o16/ --out-shard-size lots
t_absent "no output from any failed run" o2 o4 o5 o6 o7 o8 o9 o10 o11 o12 o13 o14 o15 o16 o2.tmp o7.tmp

# ---- narrowing that overflows -----------------------------------------------------------------------
"$MK" synth big/ --hidden 64 --layers 1 --heads 8 --kv-heads 4 --intermediate 176 --vocab 100 --dtype float32 --std 30000 -q
printf 'merge_method: linear\nmodels:\n  - model: big/\n    parameters:\n      weight: 1\nout_dtype: float16\n' >r_over.yaml
t_fail "fp16 overflow names the tensor" 1 "tensor [a-z_.0-9]+: [0-9]+ value\(s\) overflow F16 \(first at element [0-9]+: " "$MK" r_over.yaml o17/
t_absent "no output after overflow" o17 o17.tmp
t_ok "--allow-crimes writes Inf instead" "$MK" r_over.yaml o17/ --allow-crimes -q
# bf16: two finite f32 values past bf16's largest + half an ulp (0x7f7f9000, 3.39701e38) placed
# in the first tensor at elements 25 and 1000; the count, the first one and its value are named
"$MK" synth bigb/ --hidden 64 --layers 1 --heads 8 --kv-heads 4 --intermediate 176 --vocab 100 --dtype float32 -q
hl=$(od -An -t u8 -N8 bigb/model.safetensors | tr -d ' ')
for e in 25 1000; do printf '\000\220\177\177' | dd of=bigb/model.safetensors bs=1 seek=$((8 + hl + 4 * e)) conv=notrunc status=none; done
printf 'merge_method: linear\nmodels:\n  - model: bigb/\n    parameters:\n      weight: 1\nout_dtype: bfloat16\n' >r_overb.yaml
for j in 1 2; do
    t_fail "bf16 overflow at -j $j: count, first element, value" 1 \
        "^mergekit-c: error: tensor model\.embed_tokens\.weight: 2 value\(s\) overflow BF16 \(first at element 25: 3\.39701e\+38\); pass --allow-crimes to write them as Inf$" \
        "$MK" r_overb.yaml o17b/ -j $j
done
t_absent "no output after bf16 overflow" o17b o17b.tmp
t_ok "bf16 --allow-crimes" "$MK" r_overb.yaml o17b/ --allow-crimes -q
hb=$(od -An -t u8 -N8 o17b/model.safetensors | tr -d ' ')
inf=$(od -An -t x2 -j $((8 + hb + 2 * 25)) -N2 o17b/model.safetensors | tr -d ' ')
[ "$inf" = 7f80 ] && ok "bf16 --allow-crimes: +Inf at element 25" || notok "bf16 --allow-crimes: +Inf at element 25" "got $inf"
