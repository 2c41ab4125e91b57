# methods_golden.sh - every merge method against mergekit's own outputs.
# The fixtures in tests/golden/methods/ come from tools/gen-golden-methods.py (mergekit
# 0.1.5, versions in MANIFEST.json). Per configuration (model shape x dtype) this script
# regenerates the synthetic inputs with the recorded synth commands, checks their SHA-256
# against the manifest, runs every golden recipe and compares with `mergekit-c compare`.
. "$MK_ROOT/tests/e2e/lib.sh"
G=$ROOT/tests/golden/methods

# Named tolerances.
# F32_REL: float32 results within 1e-5 x the tensor's largest magnitude. Seen: 1e-7;
#   mergekit sums with a different order (and torch may fuse multiply-adds).
F32_REL="--rel 1e-5"
# BF16_ULP: bfloat16 results at most one bf16 unit in the last place apart, on at most
#   1% of the elements: mergekit accumulates norms, dot products and sums in float32 in
#   its own order before rounding them to bf16, so a value next to a rounding boundary
#   can land on the other side. mergekit-c rounds every other step exactly as PyTorch
#   does (merge/methods/kernel.h).
BF16_ULP="--max-ulp 1 --max-diff-share 0.01"
# BF16_F32OUT: methods whose result is float32 although they compute in bf16
#   (ramplus_tl, arcee_fusion, and bf16 compute written as float32): 1% of the elements
#   may differ by a bf16-rounding of an intermediate, i.e. up to 2^-8 of the change
#   from the base; 1e-4 of the tensor's largest magnitude bounds that here.
BF16_F32OUT="--rel 1e-4 --max-diff-share 0.01"

# ARCEE_FLIP: arcee_fusion takes an entry from the other model when its importance
#   reaches a threshold; importances are |change| x the KL divergence of the row's softmax,
#   and mergekit's softmax uses PyTorch's vectorised exp (not correctly rounded), which we
#   do not replay. A row's KL then differs in its last bits and an entry right at the
#   threshold can fall on the other side: at most 0.5% of a tensor's entries (seen: 0.3%).
ARCEE_FLIP="--rel 1e-5 --max-bad-share 0.005"

tol_for() { # CONFIG RECIPE
    case "$1/$2" in
        */arcee_fusion) echo "$ARCEE_FLIP" ;;
        *-bfloat16/ramplus_tl | */ties_bf16compute) echo "$BF16_F32OUT" ;;
        */linear_dtype) echo "$BF16_ULP" ;;
        *-float32/*) echo "$F32_REL" ;;
        *) echo "$BF16_ULP" ;;
    esac
}

for dir in "$G"/*/; do
    cfg=$(basename "$dir")
    [ "$cfg" = recipes ] && continue
    mkdir "$T/$cfg" && cd "$T/$cfg" || exit 1
    # synth lines are plain words (no quoting needed)
    while read -r line; do
        if [ -n "$line" ] && ! "$MK" $line; then notok "$cfg: synth" "$MK $line failed"; fi
    done <"$dir/synth.txt"
    if sha256sum -c --quiet "$dir/inputs.sha256" >"$T/.sha" 2>&1; then
        ok "$cfg: synthetic inputs match the manifest's SHA-256"
    else
        notok "$cfg: synthetic inputs match the manifest's SHA-256" "$(head -c 300 "$T/.sha")"
        continue
    fi
    for gold in "$dir"/*.safetensors; do
        r=$(basename "$gold" .safetensors)
        if ! "$MK" merge "$G/recipes/$r.yaml" "out-$r" -q 2>"$T/.err"; then
            notok "$cfg/$r" "merge failed: $(head -c 300 "$T/.err")"
            continue
        fi
        tol=$(tol_for "$cfg" "$r")
        if "$MK" compare "out-$r" "$gold" $tol >"$T/.cmp" 2>&1; then
            ok "$cfg/$r matches mergekit ($tol)"
        else
            notok "$cfg/$r matches mergekit ($tol)" "$(head -n 4 "$T/.cmp" | tr '\n' ' ')"
        fi
    done
    cd "$T" || exit 1
done
