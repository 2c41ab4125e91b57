#!/bin/sh
# make compat: load mergekit-c outputs in the reference Python libraries (tools venv).
# Merges the quick-start models with recipes/linear.yaml, loads the result with transformers
# (forward pass), and compares its logits with mergekit's own merge of the same recipe.
# Other areas add their checks as tools/compat-*.sh; this script runs them all.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/setup-venv.sh"
py="$root/.venv-tools/bin/python"
mk="$root/mergekit-c"
w=$(mktemp -d /tmp/mk-compat-XXXXXX)
trap 'rm -rf "$w"' EXIT
cd "$w"
"$mk" synth base/ --hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 688 --vocab 1000 --dtype bf16 --seed 1 -q
"$mk" synth ft1/ --finetune-of base/ --delta 0.01 --seed 2 -q
"$mk" synth ft2/ --finetune-of base/ --delta 0.01 --seed 3 -q
"$mk" "$root/recipes/linear.yaml" out/ -q
"$root/.venv-tools/bin/mergekit-yaml" "$root/recipes/linear.yaml" ref/ --quiet >/dev/null 2>&1
"$py" "$root/tools/check-load.py" out/ ref/
"$mk" "$root/recipes/linear.yaml" sharded/ --out-shard-size 2M -q
"$py" "$root/tools/check-load.py" sharded/ ref/
for s in "$root"/tools/compat-*.sh; do
    [ -e "$s" ] || continue
    echo "== $(basename "$s")"
    sh "$s"
done
echo "compat: all checks passed"
