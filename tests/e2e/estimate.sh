# estimate.sh - `mergekit-c estimate` prints the book's worked numbers (Chip Huyen, "AI
# Engineering", ch. 7; GB = 1e9 bytes) from the command line, counts parameters from
# tensors and from config.json, and refuses bad options with one line.
. "$MK_ROOT/tests/e2e/lib.sh"
# has NAME PATTERN: the last command's stdout has a line matching PATTERN (grep -E)
has() { if grep -Eq -- "$2" "$T/.out"; then ok "$1"; else notok "$1" "no /$2/ in: $(tr '\n' '|' <"$T/.out" | head -c 600)"; fi; }

t_ok "13B" "$MK" estimate --params 13B
has "13B bf16 weights: 26 GB" 'weights +26\.0 GB'
has "13B to serve: 31.2 GB" 'x 1\.2.* +31\.2 GB'
t_ok "70B" "$MK" estimate --params 70e9 --dtype fp16 --train none
has "70B fp16 weights: 140 GB" 'weights +140 GB'
t_ok "7B full finetune, Adam" "$MK" estimate --params 7B --train full --optimizer adam
has "  weights 14 GB" '^  weights +14\.0 GB'
has "  gradients + 2 Adam states 42 GB" 'gradients \+ optimizer states +42\.0 GB'
has "  total 56 GB" 'total \(without activations\) +56\.0 GB'
t_ok "13B gradients + Adam" "$MK" estimate --params 13B --json
has "13B: gradients + Adam = 78 GB" '"gradients_bytes": 26000000000, "optimizer_bytes": 52000000000'
t_ok "1B gradients + Adam" "$MK" estimate --params 1B
has "1B: gradients + Adam = 6 GB" 'gradients \+ optimizer states +6\.00 GB'

printf '{"model_type": "gpt2", "n_embd": 12288, "n_layer": 96, "n_head": 96, "n_positions": 2048, "vocab_size": 50257}' >gpt3.json
t_ok "GPT-3 175B LoRA r=2 on q,k,v,o" "$MK" estimate gpt3.json --lora-rank 2 --lora-targets q,k,v,o
has "  18,874,368 trainable" '18,874,368 at rank 2'
has "  37.7 MB of adapter weights" 'adapter weights +37\.7 MB'
mkdir l2 && printf '{"model_type": "llama", "hidden_size": 5120, "intermediate_size": 13824, "num_attention_heads": 40, "num_hidden_layers": 40, "num_key_value_heads": 40, "vocab_size": 32000, "tie_word_embeddings": false}' >l2/config.json
t_ok "Llama 2 13B LoRA r=2" "$MK" estimate l2/ --lora-rank 2 --lora-targets q_proj,k_proj,v_proj,o_proj
has "  13,015,864,320 parameters from config.json" 'parameters: 13,015,864,320'
has "  3.28M trainable" 'trainable parameters +3\.28M'
has "  6.55 MB of adapter weights" 'adapter weights +6\.55 MB'
t_ok "4096x4096 at rank 8, 100 customers" "$MK" estimate --matrix 4096x4096 --lora-rank 8 --adapters 100 --json
has "  65,536 LoRA parameters" '"lora": \{"rank": 8, .*"params": 65536'
has "  1.68B full vs 23.3M shared" '"full_copies_params": 1677721600, "base_plus_adapters_params": 23330816'
t_ok "the same as a table" "$MK" estimate --matrix 4096x4096 --lora-rank 8 --adapters 100
has "  1.68B as full copies" 'as full copies +1\.68B'
has "  23.3M as one base + adapters" 'as one base \+ adapters +23\.3M'

# a model on disk: counted from its tensors (= inspect's count), KV cache and activations
"$MK" synth m/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 176 --vocab 128 -q
n=$("$MK" inspect m/ --json 2>/dev/null | grep -o '"parameters": [0-9]*' | head -n 1 | awk '{print $2}')
t_ok "synthetic model --json" "$MK" estimate m/ --train qlora --batch 2 --seq 64 --json
has "  parameters from tensors" '"params_from": "tensors"'
has "  the same count as inspect ($n)" "\"params\": ${n:-none},"
# KV cache = 2 x 2 layers x 2 kv heads x 16 head dim x 2 x 64 x 2 bytes = 32768
has "  KV cache 32768 bytes" '"kv_cache_bytes": 32768,'
t_ok "LoRA count from tensors" "$MK" estimate m/ --lora-rank 4 --lora-targets q_proj,v_proj --json
# per layer: q [64, 64] -> 4 x 128, v [32, 64] -> 4 x 96; two layers: 2 x (512 + 384) = 1792
has "  1792 trainable" '"trainable_params": 1792'
# finetune --device cuda's GPU memory (full finetuning; the CUDA trainer's own formula, nn/cuda/mem.c)
t_ok "GPU memory of finetune --device cuda on a card" "$MK" estimate m/ --batch 2 --seq 64 --dtype float32 --gpu-memory 80GiB
has "  the GPU line fits an 80 GiB card" '^  GPU +[0-9.]+ MB   fits a 85\.9 GB card$'
has "  with --checkpointing too" '^  GPU with --checkpointing +[0-9.]+ MB   fits$'
t_ok "... bf16 on a 10 MB card, --json" "$MK" estimate m/ --batch 2 --seq 64 --dtype bfloat16 --gpu-memory 10M --json
has "  does not fit" '"gpu_bytes": [0-9]+, "gpu_checkpointing_bytes": [0-9]+, "gpu_memory_bytes": 10000000, "gpu_fits": false, "gpu_fits_checkpointing": false'
gpu_of() { grep -o '"gpu_bytes": [0-9]*' | awk '{print $2}'; }
full=$("$MK" estimate m/ --batch 2 --seq 64 --dtype float32 --json 2>/dev/null | gpu_of)
t_ok "... LoRA (f32) on a card, --json" "$MK" estimate m/ --lora-rank 4 --batch 2 --seq 64 --dtype float32 --gpu-memory 80G --json
has "  fits" '"gpu_bytes": [0-9]+, "gpu_checkpointing_bytes": [0-9]+, "gpu_memory_bytes": 80000000000, "gpu_fits": true'
lora=$(gpu_of <"$T/.out")
[ -n "$lora" ] && [ -n "$full" ] && [ "$lora" -lt "$full" ] && ok "  LoRA's GPU figure ($lora) is below full finetuning's ($full)" ||
    notok "LoRA's GPU figure below full finetuning's" "lora '$lora', full '$full'"
t_ok "... QLoRA in bf16" "$MK" estimate m/ --train qlora --lora-rank 4 --batch 2 --seq 64 --dtype bfloat16 --gpu-memory 80G
has "  a GPU line for QLoRA" '^mergekit-c finetune --device cuda --qlora --dtype bf16 '
has "  that fits" '^  GPU +[0-9.]+ MB   fits a 80\.0 GB card$'
t_fail "--gpu-memory without --batch" 2 "--gpu-memory: the GPU figure" \
    "$MK" estimate m/ --lora-rank 4 --gpu-memory 80G

t_fail "bad dtype" 2 "--dtype: 'float8x'" "$MK" estimate --params 7B --dtype float8x
# every format of the quantization table is a --dtype, at its bits per code
"$MK" quantize --list-formats --json >formats.json 2>/dev/null || notok "quantize --list-formats --json" "failed"
nf=0 bad=
for f in $(sed -n 's/.*"name": "\([^"]*\)", "bits": \([0-9]*\).*/\1:\2/p' formats.json); do
    name=${f%%:*} bits=${f#*:}
    nf=$((nf + 1))
    "$MK" estimate --params 1e9 --dtype "$name" --train none --json >e.json 2>/dev/null || { bad="$bad $name(exit)"; continue; }
    grep -q "\"bytes_per_value\": $(awk -v b="$bits" 'BEGIN { print b / 8 }')[,}]" e.json || bad="$bad $name($(grep -o '"bytes_per_value": [^,]*' e.json))"
done
[ "$nf" -ge 9 ] && [ -z "$bad" ] && ok "every quantization format ($nf) is a --dtype at its bits per code" ||
    notok "every quantization format is a --dtype" "formats $nf; wrong:$bad"
t_fail "bad optimizer" 2 "--optimizer: 'adamw'" "$MK" estimate --params 7B --optimizer adamw
t_fail "batch without seq" 2 "--batch and --seq go together" "$MK" estimate l2/ --batch 8
t_fail "LoRA needs a shape" 2 "LoRA counts need the model's shape" "$MK" estimate --params 7B --train lora
t_fail "unknown target" 2 "unknown target 'qq'" "$MK" estimate l2/ --train lora --lora-targets qq
t_fail "two models" 2 "exactly one of MODEL, --params or --matrix" "$MK" estimate l2/ --params 7B
t_fail "no config" 2 "no weights and no config.json" "$MK" estimate "$T"

# ---- a quantized model -------------------------------------------------------------------
# Parameters are the model's (a 4-bit weight of n values is n parameters, not the elements that
# store it), LoRA counts come from the logical shapes, and the weights cost the bytes they take
# as stored (= the sum of the stored tensors' sizes inspect reads from the headers), unless
# --dtype prices every weight at that dtype: then the figures are the unquantized model's.
# num FIELD: the first number after "FIELD": in the last command's stdout
num() { grep -o "\"$1\": [0-9.]*" "$T/.out" | head -n 1 | awk '{print $2}'; }
"$MK" synth q/ --hidden 128 --layers 2 --heads 4 --kv-heads 2 --intermediate 256 --vocab 128 --dtype bf16 --seed 3 -q || exit 1
t_ok "the unquantized model" "$MK" estimate q/ --train lora --lora-targets all-linear --json
P=$(num params) L=$(num linear_params) LO=$(num trainable_params) W=$(num weights_bytes)
t_ok "... at bf16" "$MK" estimate q/ --train lora --lora-targets all-linear --dtype bf16 --json
W16=$(num weights_bytes)
# check ID DIR FORMAT: estimate and inspect on the quantized checkpoint DIR against the
# unquantized counts P (parameters), L (linear), LO (LoRA on all-linear) and W16 (bf16 weights)
check_quantized() {
    id=$1 d=$2 f=$3
    "$MK" inspect "$d" --summary --json >"$T/.out" 2>/dev/null
    stored=$(num bytes) ip=$(num parameters)
    t_ok "$id: estimate" "$MK" estimate "$d" --train lora --lora-targets all-linear --json
    got="$(num params) $(num linear_params) $(num trainable_params) $(num weights_bytes)"
    if [ "$got" = "$P $L $LO $stored" ] &&
        grep -q "\"quantized\": {\"format\": \"$f\", .*\"stored_bytes\": $stored, \"weights_as_stored\": true" "$T/.out"; then
        ok "$id: $P parameters (= unquantized), $LO LoRA, weights as stored ($stored bytes)"
    else
        notok "$id: parameters, LoRA and weights as stored" "got params, linear, lora, weights $got; want $P $L $LO $stored"
    fi
    [ "$ip" = "$P" ] && ok "$id: inspect counts $P parameters" || notok "$id: inspect counts the parameters" "$ip, want $P"
    t_ok "$id: estimate --dtype bf16" "$MK" estimate "$d" --train lora --lora-targets all-linear --dtype bf16 --json
    got="$(num params) $(num weights_bytes)"
    [ "$got" = "$P $W16" ] && grep -q '"weights_as_stored": false' "$T/.out" && ok "$id: --dtype bf16 prices every weight at bf16 ($W16 bytes)" ||
        notok "$id: --dtype bf16 prices every weight at bf16" "params, weights $got; want $P $W16"
}
for spec in "nf4" "nf4-dq nf4 --double-quant" "int8" "int8-ct int8 --target compressed-tensors" "int4 int4 --group-size 64" "fp8" "fp4"; do
    set -- $spec
    id=$1
    [ $# -gt 1 ] && shift
    f=$1
    shift
    "$MK" quantize q/ "q-$id" --format "$f" "$@" -q || { notok "$id: quantize" "exit $?"; continue; }
    check_quantized "$id" "q-$id" "$f"
done
t_ok "text" "$MK" estimate q-nf4 --train lora
has "  the stored format" '^stored: nf4 \(bitsandbytes, block 64\); 14 weights \([0-9,]+ parameters\) at 4\.[0-9]+ bits per weight; [0-9.]+ KB as stored$'
has "  values" '^values: the weights as stored, the rest bfloat16 \(2 bytes each\)'
has "  weights as stored" '^  weights \(as stored\) +[0-9.]+ KB$'
has "  LoRA on the base as stored" '^  weights \(base as stored \+ adapters\) '
t_ok "a full finetune trains dequantized weights" "$MK" estimate q-nf4 --json
[ "$(grep -o '"train": {[^}]*' "$T/.out" | grep -o '"weights_bytes": [0-9]*' | awk '{print $2}')" = "$W" ] &&
    ok "  full finetune weights at bf16 ($W bytes)" || notok "  full finetune weights at bf16" "$(grep -o '"train": {[^}]*' "$T/.out")"

# checkpoints written by the reference tools (tests/golden/quant/, tools/gen-golden-quant.py):
# each holds the quantized Linear modules of a tiny model as transformers + bitsandbytes or
# compressed-tensors saved them, so its counts are those of the same modules unquantized
G=$ROOT/tests/golden/quant
"$MK" synth g --hidden 32 --layers 1 --heads 2 --kv-heads 1 --intermediate 64 --vocab 64 --dtype bf16 --seed 5 -q || exit 1
t_ok "the golden model" "$MK" estimate g --train lora --lora-targets all-linear --json
L=$(num linear_params) LO=$(num trainable_params)
P=$L W16=$((2 * L)) # the fixtures hold the Linear modules alone
for spec in "nf4 nf4" "nf4-dq nf4 --double-quant" "fp4 fp4" "int8 int8" "int4 int4 --group-size 32" "int4-asym int4 --group-size 32 --scheme asym" \
    "int8-ct int8 --target compressed-tensors" "fp8 fp8"; do
    set -- $spec
    id=$1 f=$2
    shift 2
    check_quantized "$id (the reference tools')" "$G/model-$id.safetensors" "$f"
    # ours, quantized the same way, stores the same bytes for those modules
    "$MK" quantize g "o-$id" --format "$f" "$@" -q
    "$MK" estimate "o-$id" --json >"$T/.out" 2>/dev/null
    a=$(num quantized_bytes)
    [ "$a" = "$stored" ] && ok "$id: ours stores the reference tools' bytes for the quantized weights ($a)" ||
        notok "$id: ours stores the reference tools' bytes for the quantized weights" "$a vs $stored"
done
