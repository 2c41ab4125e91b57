# merge_golden.sh - our merges against mergekit's own outputs (tests/golden/merge, made by
# tools/gen-golden-merge.py with the mergekit version named in its manifest).
# Tolerance: exact. mergekit 0.1.5 computes linear merges in f32 with one fused multiply-add
# per model, then divides and casts once; mergekit-c does the same operations in the same
# order, so every element must be bit-identical (fp32 and bf16).
. "$MK_ROOT/tests/e2e/lib.sh"
G=$ROOT/tests/golden/merge
M=$G/manifest.txt

for dt in float32 bfloat16; do
    mkdir -p "$dt"
    grep "^synth $dt " "$M" | sed "s/^synth $dt //" >"$dt.cmds"
    (cd "$dt" && while read -r c; do $MK $c -q || exit 1; done <"../$dt.cmds")
    t_ok "synth inputs ($dt)" test -f "$dt/ft2/model.safetensors"
done

for c in $(grep '^case ' "$M" | awk '{print $2 ":" $3}'); do
    name=${c%%:*}
    dt=${c##*:}
    (cd "$dt" && "$MK" "$G/$name/recipe.yaml" "out-$name" -q) >"$T/.err" 2>&1
    if [ $? -ne 0 ]; then notok "merge $name" "$(cat "$T/.err")"; continue; fi
    # the inputs are the ones the golden was made from
    bad=
    grep "^input $dt " "$M" | while read -r _ _ file h; do
        grep -q "model: ${file%%/*}/" "$G/$name/recipe.yaml" || continue
        grep -q "$h" "$dt/out-$name/mergekit-c.json" || echo "$file"
    done >"$T/.missing"
    bad=$(cat "$T/.missing")
    if [ -n "$bad" ]; then notok "inputs of $name match the golden's" "missing hashes:$bad"; else ok "inputs of $name match the golden's"; fi
    t_ok "$name equals mergekit bit for bit" "$MK" compare "$dt/out-$name/model.safetensors" "$G/$name/expected.safetensors"
done
