# merge_bench_recipes.sh - the recipes of `make demo-merge-bench` (recipes/merge-bench/) merge,
# on tiny synthetic stand-ins for SmolLM2-135M and its three finetunes, for every method
# mergekit-c knows (a recipe whose method it lacks is shown as skipped); and the demo stops
# before any work when METHODS names a method without a recipe.
. "$MK_ROOT/tests/e2e/lib.sh"
"$MK" synth smollm2/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --vocab 300 --seed 1 -q
seed=2
for d in licenses manpages perl; do
    "$MK" synth "ft-$d/" --finetune-of smollm2/ --delta 0.01 --seed "$seed" -q
    seed=$((seed + 1))
done
known=$("$MK" methods --json | grep -o '"name": "[a-z_]*", "supported": true' | cut -d'"' -f4)
for r in "$ROOT"/recipes/merge-bench/*.yaml; do
    m=$(basename "$r" .yaml)
    if ! grep -qx "merge_method: $m" "$r"; then
        notok "merge-bench/$m.yaml" "its merge_method is not $m (the demo's METHODS names recipes by method)"
    elif echo "$known" | grep -qx "$m"; then
        t_ok "merge-bench/$m.yaml merges the three finetunes" "$MK" "$r" "out-$m/" -q
    else
        echo "skip - merge-bench/$m.yaml: mergekit-c has no merge method $m"
    fi
done
t_fail "demo-merge-bench refuses a method without a recipe" 1 "no recipe recipes/merge-bench/nosuch.yaml" \
    env MK_SMOLLM2=smollm2 METHODS="linear nosuch" DEMO_DIR="$T/demo" sh "$ROOT/tools/demo-merge-bench.sh"
t_absent "... before making its work folder" demo
