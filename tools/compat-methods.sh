#!/bin/sh
# Load checks of merges: every recipe in recipes/ run on synthetic 32-layer models (so the
# depth up-scaling recipes have the layers they name), then each output loaded with
# transformers, forward pass included (tools/check-forward.py); and a linear merge of each
# known architecture (mistral, qwen2, qwen3, gemma, gemma2, phi3, gpt2) likewise.
# Usage: tools/compat-methods.sh [PYTHON]   (default: .venv-tools/bin/python at the root)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-$root/.venv-tools/bin/python}
mk=$root/mergekit-c
[ -x "$py" ] || { echo "compat-methods: no venv python at $py (run tools/setup-venv.sh)" >&2; exit 1; }
[ -x "$mk" ] || { echo "compat-methods: build mergekit-c first (make)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
shape="--hidden 64 --heads 4 --kv-heads 2 --intermediate 176 --vocab 96"
"$mk" synth base/ $shape --layers 32 --dtype bf16 --seed 1 -q
"$mk" synth ft1/ --finetune-of base/ --delta 0.05 --seed 2 -q
"$mk" synth ft2/ --finetune-of base/ --delta 0.05 --density 0.7 --seed 3 -q
"$mk" synth ft3/ --finetune-of base/ --delta 0.08 --seed 4 -q
outs=""
for r in "$root"/recipes/*.yaml; do
    n=$(basename "$r" .yaml)
    "$mk" "$r" "out-$n" -q
    outs="$outs out-$n"
done
# shellcheck disable=SC2086
"$py" "$root/tools/check-forward.py" $outs
cat >arch.yaml <<'Y'
merge_method: linear
models:
  - model: base
    parameters: {weight: 0.5}
  - model: ft1
    parameters: {weight: 0.3}
  - model: ft2
    parameters: {weight: 0.2}
dtype: float32
Y
outs=""
for a in mistral qwen2 qwen3 gemma gemma2 phi3 gpt2; do
    kv="--kv-heads 2"
    [ "$a" = gpt2 ] && kv=""   # GPT-2 has no grouped-query attention
    mkdir "$a"
    (cd "$a" && "$mk" synth base/ --hidden 64 --heads 4 $kv --intermediate 176 --vocab 96 --layers 3 --arch "$a" --seed 5 -q &&
        "$mk" synth ft1/ --finetune-of base/ --delta 0.05 --seed 6 -q &&
        "$mk" synth ft2/ --finetune-of base/ --delta 0.05 --seed 7 -q &&
        "$mk" ../arch.yaml out/ -q)
    outs="$outs $a/out"
done
# shellcheck disable=SC2086
"$py" "$root/tools/check-forward.py" $outs
echo "compat-methods: $(ls "$root"/recipes/*.yaml | wc -l) recipes and 7 architectures load and run"
