#!/bin/sh
# make-moe-models.sh MERGEKIT DIR: the two small mixtures of experts that tests/e2e/imatrix_moe.sh
# and tools/gen-golden-gguf-moe.py quantize (deterministic: the same tensors on every run):
#   DIR/mx  a Mixtral (8 experts, 2 a token; transformers 5's fused mlp.experts.gate_up_proj /
#           down_proj), hidden 256, expert width 256, 2 layers, 4 heads over 2 key-value heads;
#   DIR/q2  a Qwen2-MoE (4 experts as mlp.experts.E.{gate,up,down}_proj, and a shared expert
#           with its gate), the same sizes;
# both made by `mergekit-c moe` from `mergekit-c synth` models (random gates); and
#   DIR/d8  a dense Llama of 8 layers, hidden 256 (llama-quantize's rules for the first eighth of the
#           layers with an importance matrix: q4_0's ffn_down in Q4_1, iq4_nl's not promoted).
set -eu
mk=$1
d=$2
mkdir -p "$d"
cd "$d"
"$mk" synth base/ --hidden 256 --layers 2 --heads 4 --kv-heads 2 --intermediate 256 --vocab 300 --dtype float32 --std 0.3 -q
"$mk" synth q2base/ --hidden 256 --layers 2 --heads 4 --kv-heads 2 --intermediate 256 --vocab 300 --dtype float32 --std 0.3 --arch qwen2 -q
printf 'base_model: base/\ngate_mode: random\ndtype: float32\nexperts_per_token: 2\nexperts:\n' >mx.yaml
printf 'base_model: q2base/\ngate_mode: random\narchitecture: qwen\ndtype: float32\nexperts_per_token: 2\nexperts:\n' >q2.yaml
for i in 1 2 3 4 5 6 7 8; do
    "$mk" synth "e$i/" --finetune-of base/ --delta 0.5 --seed $((i + 1)) -q
    printf '  - source_model: e%s/\n    positive_prompts: ["tok%s"]\n' "$i" "$i" >>mx.yaml
done
for i in 1 2 3 4; do
    "$mk" synth "qe$i/" --finetune-of q2base/ --delta 0.5 --seed $((i + 5)) -q
    printf '  - source_model: qe%s/\n    positive_prompts: ["tok%s"]\n' "$i" "$i" >>q2.yaml
done
printf 'shared_experts:\n  - source_model: q2base/\n    positive_prompts: ["tok1"]\n' >>q2.yaml
"$mk" synth d8/ --hidden 256 --layers 8 --heads 4 --kv-heads 1 --intermediate 256 --vocab 300 --dtype float32 --seed 8 -q
"$mk" moe mx.yaml mx/ --seed 3 -q
"$mk" moe q2.yaml q2/ --seed 4 -q
rm -rf base q2base e[1-8] qe[1-4] mx.yaml q2.yaml
