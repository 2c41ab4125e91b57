# lora_extract.sh - lora extract: full rank reproduces the finetune, a low rank reports the
# energy it keeps, --modules / --embed-lora / modules_to_save follow mergekit's rules, the
# output is the same bytes at 1, 2 and 8 threads, and nothing is left behind on failure.
. "$MK_ROOT/tests/e2e/lib.sh"
S="--hidden 32 --heads 4 --kv-heads 2 --intermediate 72 --vocab 64 --layers 2"
$MK synth b32/ $S --dtype float32 --seed 41 -q && $MK synth f32/ --finetune-of b32/ --delta 0.05 --seed 42 -q
$MK synth b16/ $S --dtype bfloat16 --seed 41 -q && $MK synth f16/ --finetune-of b16/ --delta 0.05 --seed 42 -q
t_ok "synth" test -f f16/model.safetensors

# float32: full rank (32 >= min(rows, cols) everywhere), then apply == finetune.
# Tolerance: f32 SVD rounding, |got - want| <= 1e-5 x the tensor's largest |weight|.
t_ok "extract full rank (f32)" "$MK" lora extract b32/ f32/ ad32/ --rank 32 -q
t_ok "apply it" "$MK" lora apply b32/ ad32/ back32/ -q
t_ok "extract + apply at full rank reproduces the f32 finetune (rel 1e-5)" "$MK" compare back32/ f32/ --rel 1e-5
# bfloat16 with an f32 adapter: the f32 update lands within one bf16 step of the finetune
# (the finetune's exact difference is not always one rounding away). Tolerance: 1 ulp of
# bf16 on at most 1% of the elements.
t_ok "extract full rank (bf16 -> f32 adapter)" "$MK" lora extract b16/ f16/ ad16/ --rank 32 --dtype float32 -q
t_ok "apply it (bf16)" "$MK" lora apply b16/ ad16/ back16/ -q
t_ok "reproduces the bf16 finetune (1 ulp, <= 1% of elements)" "$MK" compare back16/ f16/ --max-ulp 1 --max-diff-share 0.01

# low rank: each module keeps part of the energy, never more than all of it
t_ok "extract rank 4 --json" "$MK" lora extract b32/ f32/ ad4/ --rank 4 --json -q
cp "$T/.out" r4.json
n=$(grep -c '"energy_kept"' r4.json)
t_ok "14 modules reported" test "$n" -eq 14
bad=$(grep -o '"energy_kept": [0-9.e-]*' r4.json | awk '{ if ($2 <= 0.05 || $2 >= 1) print }')
t_ok "rank 4 keeps between 5% and 100% of each module's energy" test -z "$bad"
t_ok "rank 4 adapter config" grep -q '"r": 4' ad4/adapter_config.json
t_ok "embeddings and lm_head saved whole" grep -q '"modules_to_save": \["embed_tokens".*"lm_head"\]' ad4/adapter_config.json

# --modules: only those; --embed-lora: embeddings as lora_embedding_A/B, lm_head as lora_A/B
t_ok "extract --modules q_proj,v_proj --skip-undecomposable" "$MK" lora extract b32/ f32/ adq/ --rank 4 --modules q_proj,v_proj --skip-undecomposable -q
t_ok "only q_proj and v_proj" grep -q '"target_modules": \["q_proj", "v_proj"\]' adq/adapter_config.json
"$MK" inspect adq/adapter_model.safetensors >adq.txt
t_ok "no k_proj tensors" sh -c "! grep -q k_proj adq.txt"
t_ok "embeddings still saved whole (mergekit's rule)" grep -q 'base_model.model.model.embed_tokens.weight' adq.txt
t_ok "extract --embed-lora" "$MK" lora extract b32/ f32/ ade/ --rank 8 --embed-lora -q
"$MK" inspect ade/adapter_model.safetensors >ade.txt
t_ok "lora_embedding_A [8, 64]" grep -Eq 'embed_tokens.lora_embedding_A +F32 +\[8, 64\]' ade.txt
t_ok "lm_head as lora_A" grep -q 'lm_head.lora_A.weight' ade.txt
t_ok "apply --embed-lora adapter" "$MK" lora apply b32/ ade/ backe/ -q

# determinism: same bytes at 1, 2 and 8 threads
for j in 1 2 8; do "$MK" lora extract b16/ f16/ "adj$j" --rank 4 -j $j -q; done
t_same "extract -j1 == -j2" adj1/adapter_model.safetensors adj2/adapter_model.safetensors
t_same "extract -j1 == -j8" adj1/adapter_model.safetensors adj8/adapter_model.safetensors
for j in 1 8; do "$MK" lora apply b16/ adj1/ "apj$j" -j $j -q; done
t_same "apply -j1 == -j8" apj1/model.safetensors apj8/model.safetensors

# randomized SVD: never keeps more energy than the exact one, same bytes at 1 and 8 threads
for j in 1 8; do "$MK" lora extract b32/ f32/ "adr$j" --rank 4 --svd randomized -j $j --json -q >"r$j.json"; done
t_same "randomized: -j1 == -j8" adr1/adapter_model.safetensors adr8/adapter_model.safetensors
grep -o '"energy_kept": [0-9.e-]*' r4.json | awk '{print $2}' >exact.txt
grep -o '"energy_kept": [0-9.e-]*' r1.json | awk '{print $2}' >rand.txt
paste exact.txt rand.txt | awk '{ if ($2 > $1 + 1e-6 || $2 < 0.8 * $1) print }' >worse
t_ok "randomized keeps 80-100% of the exact SVD's energy" test ! -s worse
t_fail "bad --svd" 2 "--svd: 'fast'" "$MK" lora extract b32/ f32/ bad/ --rank 4 --svd fast

# errors: one line, nothing left behind
t_fail "rank 0" 2 "--rank" "$MK" lora extract b32/ f32/ bad/ --rank 0
t_fail "different shapes" 2 "o/: tensor .* is \\[16\\] but \\[32\\] in the base" "$MK" lora extract b32/ "$($MK synth o/ --hidden 16 --heads 2 --layers 2 --vocab 64 -q; echo o/)" bad/ --rank 4
t_fail "output inside an input" 2 "overlaps input" "$MK" lora extract b32/ f32/ b32/sub --rank 4
t_fail "existing output" 2 "exists" "$MK" lora extract b32/ f32/ ad4/ --rank 4
t_absent "no partial output" bad bad.tmp b32/sub
