# lora_combine.sh - lora combine beyond the PEFT goldens (lora_golden.sh): cat's ranks add up
# and its update is exactly the weighted sum (linear at full rank gives the same merge),
# dare_linear is keyed by --seed, and results are the same bytes at 1 and 8 threads.
. "$MK_ROOT/tests/e2e/lib.sh"
G=$ROOT/tests/golden/lora
A1=$G/combine_adapters/a1
A2=$G/combine_adapters/a2
grep '^synth float32 ' "$G/manifest.txt" | sed 's/^synth float32 //' >cmd
$MK $(cat cmd) -q
t_ok "synth base" test -f base-float32/model.safetensors

t_ok "cat" "$MK" lora combine "$A1" "$A2" cat/ --method cat --weights 1,-0.5 -q
t_ok "cat: r = 4 + 4" grep -q '"r": 8' cat/adapter_config.json
t_ok "cat: scale 1" grep -q '"lora_alpha": 8' cat/adapter_config.json
"$MK" inspect cat/adapter_model.safetensors >cat.txt
t_ok "cat: q_proj A is [8, 32] (both adapters)" grep -Eq 'layers.0.self_attn.q_proj.lora_A.weight +F32 +\[8, 32\]' cat.txt
t_ok "cat: k_proj A is [4, 32] (second adapter only)" grep -Eq 'layers.0.self_attn.k_proj.lora_A.weight +F32 +\[4, 32\]' cat.txt
t_ok "linear at full rank" "$MK" lora combine "$A1" "$A2" lin/ --method linear --weights 1,-0.5 -q
"$MK" lora apply base-float32/ cat/ mcat -q && "$MK" lora apply base-float32/ lin/ mlin -q
# tolerance: linear re-factors the same sum with an f32 SVD: 1e-5 of the largest |weight|
t_ok "linear (SVD of the sum) == cat (exact sum)" "$MK" compare mlin/model.safetensors mcat/model.safetensors --rel 1e-5

for j in 1 8; do
    "$MK" lora combine "$A1" "$A2" "dare$j" --method dare_linear --density 0.5 --seed 7 -j $j -q
    "$MK" lora combine "$A1" "$A2" "ties$j" --method ties --density 0.3 -j $j -q
done
t_same "dare_linear: -j1 == -j8" dare1/adapter_model.safetensors dare8/adapter_model.safetensors
t_same "ties: -j1 == -j8" ties1/adapter_model.safetensors ties8/adapter_model.safetensors
"$MK" lora combine "$A1" "$A2" dare-s8 --method dare_linear --density 0.5 --seed 8 -q
t_ok "dare_linear: another seed, another adapter" sh -c '! cmp -s dare1/adapter_model.safetensors dare-s8/adapter_model.safetensors'
t_ok "combine --json reports the energy kept" "$MK" lora combine "$A1" "$A2" svdj --method svd --rank 2 --json -q
t_ok "  ... for the 8 modules (q, k, v, down_proj in 2 layers)" test "$(grep -c '"energy_kept"' "$T/.out")" -eq 8
