# methods_recipes.sh - every recipe in recipes/ runs on synthetic models (32 layers, so the
# depth up-scaling recipes have the layers they name), its output is a valid checkpoint
# whose config.json layer count matches its tensors, and it is the same bytes at 1 and 4
# threads.
. "$MK_ROOT/tests/e2e/lib.sh"

"$MK" synth base/ --hidden 32 --layers 32 --heads 4 --kv-heads 2 --intermediate 48 --vocab 48 --dtype bf16 --seed 1 -q &&
    "$MK" synth ft1/ --finetune-of base/ --delta 0.05 --seed 2 -q &&
    "$MK" synth ft2/ --finetune-of base/ --delta 0.05 --density 0.7 --seed 3 -q &&
    "$MK" synth ft3/ --finetune-of base/ --delta 0.08 --seed 4 -q || { notok "synth" "could not make the models"; exit 1; }

# layers the stacking recipes produce; every other recipe keeps 32
layers_of() {
    case "$1" in
        solar-depth-upscale) echo 48 ;;
        solar-summed-overlap | solar-slerp-overlap) echo 40 ;;
        goliath-interleave) echo 72 ;;
        *) echo 32 ;;
    esac
}

n=0
for r in "$ROOT"/recipes/*.yaml; do
    name=$(basename "$r" .yaml)
    n=$((n + 1))
    if ! "$MK" "$r" "out-$name" -q -j 4 2>"$T/.err"; then
        notok "recipes/$name.yaml runs" "$(head -c 400 "$T/.err")"
        continue
    fi
    ok "recipes/$name.yaml runs"
    "$MK" inspect "out-$name" --json >"$T/.json" 2>"$T/.err" || { notok "$name: output is valid" "$(cat "$T/.err")"; continue; }
    want=$(layers_of "$name")
    cfg_layers=$(sed -n 's/.*"layers": \([0-9-]*\).*/\1/p' "$T/.json" | head -n 1)
    tensor_layers=$(grep -o '"name": "model\.layers\.[0-9]*\.' "$T/.json" | sed 's/.*layers\.\([0-9]*\)\./\1/' | sort -un | wc -l)
    top=$(grep -o '"name": "model\.layers\.[0-9]*\.' "$T/.json" | sed 's/.*layers\.\([0-9]*\)\./\1/' | sort -n | tail -n 1)
    if [ "$cfg_layers" = "$want" ] && [ "$tensor_layers" = "$want" ] && [ "$top" = "$((want - 1))" ]; then
        ok "$name: $want layers, numbered 0..$((want - 1)), config.json agrees"
    else
        notok "$name: $want layers" "config says $cfg_layers, tensors have $tensor_layers distinct layers up to $top"
    fi
    if "$MK" "$r" "out1-$name" -q -j 1 2>"$T/.err" && t_same_quiet "out-$name/model.safetensors" "out1-$name/model.safetensors"; then
        ok "$name: same bytes at 1 and 4 threads"
    else
        notok "$name: same bytes at 1 and 4 threads" "outputs differ"
    fi
    rm -rf "out1-$name"
done
[ "$n" -ge 22 ] && ok "$n recipes found" || notok "recipes found" "only $n"
