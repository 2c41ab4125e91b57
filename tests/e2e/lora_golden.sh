# lora_golden.sh - lora apply and lora combine against PEFT's own results
# (tests/golden/lora, made by tools/gen-golden-lora.py with the PEFT version in its manifest).
# Bases are regenerated with `mergekit-c synth` and checked against the recorded hashes;
# adapters are PEFT's, committed.
# Tolerances:
#  - apply: exact. PEFT merges with f32 adapter weights: update = (B @ A) * scaling, where
#    torch's CPU matmul is a chain of f32 fused multiply-adds in rank order, then W + update
#    rounded once (Linear) or update rounded to W's dtype first (Embedding); mergekit-c does
#    the same operations in the same order, so every element is bit-identical.
#  - combine cat: exact (no SVD; A_i * w_i * s_i as PEFT computes it).
#  - combine linear / svd / ties / dare_linear (density 1): both tools factor with a float32
#    SVD (torch vs LAPACK sgesdd), whose rounding differs: |got - want| <= 1e-5 x the largest
#    |weight| of the tensor (SVD_REL). A wrong method misses by ~1e-2 of it.
. "$MK_ROOT/tests/e2e/lib.sh"
G=$ROOT/tests/golden/lora
M=$G/manifest.txt
SVD_REL=1e-5

grep '^synth ' "$M" | while read -r _ dt cmd; do $MK $cmd -q || echo "synth $dt failed"; done >"$T/.synth"
t_ok "synth bases" test ! -s "$T/.synth"
# the bases are the golden's inputs: a passthrough merge records their XXH3-128
grep '^base ' "$M" | while read -r _ dt h; do
    printf 'merge_method: passthrough\nmodels:\n  - model: base-%s/\n' "$dt" >"id-$dt.yaml"
    "$MK" "id-$dt.yaml" "id-$dt" -q && grep -q "$h" "id-$dt/mergekit-c.json" || echo "base-$dt: hash is not $h"
done >"$T/.hash"
t_ok "bases match the golden's inputs" test ! -s "$T/.hash"

grep '^apply ' "$M" | while read -r _ c dt; do
    if "$MK" lora apply "base-$dt/" "$G/apply_$c/adapter" "out-$c" -q 2>"$T/.err"; then
        t_ok "apply $c equals PEFT merge_and_unload bit for bit" "$MK" compare "out-$c/model.safetensors" "$G/apply_$c/expected.safetensors"
    else
        notok "apply $c" "$(cat "$T/.err")"
    fi
done

A1=$G/combine_adapters/a1
A2=$G/combine_adapters/a2
grep '^combine ' "$M" | while read -r _ c w1 w2 opts; do
    # shellcheck disable=SC2086
    if ! "$MK" lora combine "$A1" "$A2" "cb-$c" --weights "$w1,$w2" $opts -q 2>"$T/.err"; then
        notok "combine $c" "$(cat "$T/.err")"
        continue
    fi
    "$MK" lora apply base-float32/ "cb-$c" "cbm-$c" -q || { notok "apply combined $c" "failed"; continue; }
    case $c in
    cat) t_ok "combine cat equals PEFT cat bit for bit" "$MK" compare "cbm-$c/model.safetensors" "$G/combine_$c/expected.safetensors" ;;
    *) t_ok "combine $c matches PEFT (rel $SVD_REL)" "$MK" compare "cbm-$c/model.safetensors" "$G/combine_$c/expected.safetensors" --rel $SVD_REL ;;
    esac
done

# recipes: base+adapter is merged on the fly, equal to lora apply, no cache folder left
printf 'merge_method: passthrough\nmodels:\n  - model: base-bfloat16/+%s\n' "$G/apply_plain_bf16/adapter" >r.yaml
t_ok "recipe with base+adapter" "$MK" r.yaml rec/ -q
t_ok "recipe base+adapter equals PEFT" "$MK" compare rec/model.safetensors "$G/apply_plain_bf16/expected.safetensors"
t_ok "provenance records the adapter files" grep -q adapter_model.safetensors rec/mergekit-c.json
ls -a >"$T/.ls"
t_ok "no cache folder" sh -c "! grep -qi cache '$T/.ls'"
