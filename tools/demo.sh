#!/bin/sh
# make demo: the main job on its built-in default. Makes three small synthetic models (a base
# and two "finetunes" of it) with mergekit-c synth, merges them with recipes/linear.yaml,
# inspects the result and proves it reproduces (--check). Work folder: ./demo (or $DEMO_DIR).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk="$root/mergekit-c"
dir=${DEMO_DIR:-$root/demo}
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"
set -x
"$mk" synth base/ --hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 688 --vocab 1000 --dtype bf16 --seed 1
"$mk" synth ft1/ --finetune-of base/ --delta 0.01 --seed 2
"$mk" synth ft2/ --finetune-of base/ --delta 0.01 --seed 3
"$mk" "$root/recipes/linear.yaml" out/
"$mk" inspect out/ --summary
"$mk" "$root/recipes/linear.yaml" out/ --check
set +x
echo "demo: merged model in $dir/out (model card: $dir/out/README.md)"
