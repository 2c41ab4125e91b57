# recipe_params.sh - every parameter of every merge method refuses the values outside the range
# its table gives (`methods --json`: min, max, integer, boolean) as a recipe error (exit 2) at
# FILE:LINE:COL naming the method, the parameter, the value and what it accepts; the values at
# the edges are accepted. Gradients are checked entry by entry and where they interpolate to.
. "$MK_ROOT/tests/e2e/lib.sh"
"$MK" synth base/ --hidden 32 --layers 4 --heads 2 --intermediate 64 --vocab 64 -q &&
    "$MK" synth ft1/ --finetune-of base/ --seed 2 -q &&
    "$MK" synth ft2/ --finetune-of base/ --seed 3 -q || { notok "models" "synth failed"; exit 0; }

# recipe M SCOPE NAME VALUE: a recipe for method M with parameter NAME = VALUE (on ft1 for a
# per-model parameter, else at the top level), and the method's required weight / t set to
# something valid ($pnames: the method's parameter names).
recipe() {
    case $1 in
    passthrough) models="base" ;;
    slerp | nearswap | arcee_fusion) models="ft1" ;;
    *) models="ft1 ft2" ;;
    esac
    w=
    case " $pnames " in *" weight "*) [ "$3" = weight ] || w="weight: 1" ;; esac
    {
        printf 'merge_method: %s\n' "$1"
        case $1 in passthrough | linear | karcher) ;; *) printf "base_model: base\\n" ;; esac
        printf 'models:\n'
        for x in $models; do
            printf '  - model: %s\n    parameters: {%s' "$x" "$w"
            [ "$x" = "${models%% *}" ] && [ "$2" != global ] && printf '%s%s: %s' "${w:+, }" "$3" "$4"
            printf '}\n'
        done
        printf 'parameters: {'
        sep=
        case " $pnames " in *" t "*) [ "$3" = t ] || { printf 't: 0.5'; sep=', '; } ;; esac
        [ "$2" = global ] && printf '%s%s: %s' "$sep" "$3" "$4"
        printf '}\n'
    } >r.yaml
}

# dry MSG M SCOPE NAME VALUE: the recipe plans (exit 0)
dry() {
    recipe "$2" "$3" "$4" "$5"
    if "$MK" r.yaml out --dry-run -q >/dev/null 2>"$T/.err"; then ok "$1"; else notok "$1" "$(cat "$T/.err")"; fi
}
# bad MSG M SCOPE NAME VALUE ALLOWED: exit 2, one line at r.yaml:LINE:COL naming all of it
bad() {
    recipe "$2" "$3" "$4" "$5"
    t_fail "$1" 2 "r\.yaml:[0-9]+:[0-9]+: $2: parameter '$4' is $5, outside what it accepts: $6" "$MK" r.yaml out --dry-run
}

"$MK" methods --json >methods.json
checked=0
while read -r line; do
    m=$(printf '%s' "$line" | sed -n 's/^ *{"name": "\([a-z_]*\)".*/\1/p')
    [ -n "$m" ] || continue
    printf '%s' "$line" | sed 's/^.*"parameters": \[//' | grep -o '{"name": [^}]*}' >params.txt
    pnames=$(sed 's/^{"name": "\([a-z_0-9]*\)".*/\1/' params.txt | tr '\n' ' ')
    while read -r p; do
        f() { printf '%s' "$p" | sed -n "s/.*\"$1\": \"*\([^,\"]*\)\"*[,}].*/\1/p"; }
        n=$(f name) scope=$(f scope) lo=$(f min) hi=$(f max) open=$(f min_exclusive) int=$(f integer) boolean=$(f boolean)
        allowed=$(f allowed | sed 's/[][()]/\\&/g')
        if [ "$boolean" = true ]; then
            dry "$m $n: true" "$m" "$scope" "$n" true
            dry "$m $n: 0" "$m" "$scope" "$n" 0
            bad "$m $n: 2 refused" "$m" "$scope" "$n" 2 "$allowed"
            checked=$((checked + 1))
            continue
        fi
        [ "$lo" = null ] && [ "$hi" = null ] && [ "$int" = false ] && continue
        if [ "$lo" != null ]; then
            below=$(awk "BEGIN { print $lo - 0.5 }")
            bad "$m $n: $below refused" "$m" "$scope" "$n" "$below" "$allowed"
            if [ "$open" = true ]; then
                bad "$m $n: $lo refused (exclusive)" "$m" "$scope" "$n" "$lo" "$allowed"
                dry "$m $n: just above $lo" "$m" "$scope" "$n" "$(awk "BEGIN { print $lo + 1e-6 }")"
            else
                dry "$m $n: $lo accepted" "$m" "$scope" "$n" "$lo"
            fi
        fi
        if [ "$hi" != null ]; then
            above=$(awk "BEGIN { print $hi + 0.5 }")
            bad "$m $n: $above refused" "$m" "$scope" "$n" "$above" "$allowed"
            dry "$m $n: $hi accepted" "$m" "$scope" "$n" "$hi"
        fi
        if [ "$int" = true ]; then
            frac=$(awk "BEGIN { print ($lo == \"null\" ? 0 : $lo) + 1.5 }")
            bad "$m $n: $frac refused (an integer)" "$m" "$scope" "$n" "$frac" "$allowed"
        fi
        checked=$((checked + 1))
    done <params.txt
done <methods.json
[ "$checked" -ge 25 ] && ok "$checked bounded parameters checked" || notok "bounded parameters" "only $checked"

# the issue's case, with the position of the value
printf 'merge_method: ties\nbase_model: base\nmodels:\n  - model: ft1\n    parameters:\n      weight: 1\n      density: 1.5\n' >r.yaml
t_fail "density: 1.5 names the line, column, key and range" 2 \
    "^mergekit-c: error: r\.yaml:7:16: ties: parameter 'density' is 1\.5, outside what it accepts: a number in \[0, 1\]$" \
    "$MK" r.yaml out
t_absent "nothing written" out out.tmp
# gradients: each entry, and inside conditionals
printf 'merge_method: ties\nbase_model: base\nmodels:\n  - model: ft1\n    parameters:\n      weight: 1\n      density: [0.5, 1, 1.25]\n' >r.yaml
t_fail "a gradient entry out of range" 2 "r\.yaml:7:16: ties: parameter 'density' has 1\.25 at gradient entry 2" "$MK" r.yaml out
printf 'merge_method: nearswap\nbase_model: base\nmodels:\n  - model: base\n  - model: ft1\nparameters:\n  t:\n    - filter: self_attn\n      value: -0.1\n    - value: 0.5\n' >r.yaml
t_fail "a conditional value out of range" 2 "r\.yaml:9:14: nearswap: parameter 't' is -0\.1" "$MK" r.yaml out
# slerp's t is any number, as in mergekit (past 0 and 1 it extrapolates along the arc)
printf 'merge_method: slerp\nbase_model: base\nmodels:\n  - model: base\n  - model: ft1\nparameters:\n  t: 1.2\n' >r.yaml
t_ok "slerp t: 1.2 extrapolates, as mergekit" "$MK" r.yaml out-slerp -q
# an integer parameter whose gradient interpolates between integers (4 layers: t = 1/3 gives 1.33)
printf 'merge_method: karcher\nmodels:\n  - model: ft1\n  - model: ft2\nparameters:\n  max_iter: [1, 2]\n' >r.yaml
t_fail "an interpolated integer that is not one" 2 "r\.yaml:6:3: karcher: tensor model\.layers\.1\..*: parameter 'max_iter' interpolates to 1\.33" \
    "$MK" r.yaml out
printf 'merge_method: karcher\nmodels:\n  - model: ft1\n  - model: ft2\nparameters:\n  max_iter: [1, 4]\n' >r.yaml
t_ok "a gradient through integers only (1, 2, 3, 4)" "$MK" r.yaml out -q
# della: density +- epsilon inside (0, 1) is mergekit's own rule, per tensor
printf 'merge_method: della\nbase_model: base\nmodels:\n  - model: ft1\n    parameters:\n      weight: 1\n      density: 0.5\n      epsilon: 0.6\n' >r.yaml
t_fail "della density - epsilon <= 0" 2 "della needs density - epsilon > 0 and density \+ epsilon < 1, got density 0\.5, epsilon 0\.6" \
    "$MK" r.yaml out
