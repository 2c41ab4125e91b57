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

t_fail "bad dtype" 2 "--dtype: 'float8x'" "$MK" estimate --params 7B --dtype float8x
t_fail "bad optimizer" 2 "--optimizer: 'adamw'" "$MK" estimate --params 7B --optimizer adamw
t_fail "batch without seq" 2 "--batch and --seq go together" "$MK" estimate l2/ --batch 8
t_fail "LoRA needs a shape" 2 "LoRA counts need the model's shape" "$MK" estimate --params 7B --train lora
t_fail "unknown target" 2 "unknown target 'qq'" "$MK" estimate l2/ --train lora --lora-targets qq
t_fail "two models" 2 "exactly one of MODEL, --params or --matrix" "$MK" estimate l2/ --params 7B
t_fail "no config" 2 "no weights and no config.json" "$MK" estimate "$T"
