#!/bin/sh
# What quantize writes, dequantize reads: every row of the format table (--list-formats: each
# format in each layout), with every combination of the settings that apply to it (the
# settings are those `quantize --help` lists; the values are the ones the suite uses). Each
# run either writes a checkpoint that inspect reads as that format and layout and dequantize
# turns back into the model's tensors, or refuses with exit 2 and one line, leaving nothing.
# A group size that divides no weight is refused; one that divides some keeps the others,
# says how many and which group size would fit them all.
. "$MK_ROOT/tests/e2e/lib.sh"
# widths 128 and 352: groups of 32 fit every weight, 64 only the 128-wide ones, 7 none
"$MK" synth m --hidden 128 --layers 1 --heads 4 --kv-heads 2 --intermediate 352 --vocab 64 --dtype bf16 --seed 3 -q || exit 1

# the values each setting takes here ("-" for a flag); every setting of the table needs a line
values() {
    case $1 in
    block-size) echo "32 128 4096" ;;
    double-quant) echo "-" ;;
    group-size) echo "0 7 32 64" ;;
    scheme) echo "asym" ;;
    method) echo "search" ;;
    per-tensor) echo "-" ;;
    target) echo "" ;; # each row names its layout
    *) echo "?" ;;
    esac
}

"$MK" quantize --help >help.txt
sed -n '/--format FORMAT/,/--skip PATTERN/p' help.txt | sed -n 's/^ *--\([a-z-]*\).*/\1/p' | grep -v '^format$\|^skip$' >settings.txt
missing=$(for k in $(cat settings.txt); do [ "$(values "$k")" = "?" ] && echo "$k"; done)
if [ "$(grep -c . settings.txt)" -ge 7 ] && [ -z "$missing" ]; then
    ok "every setting in quantize --help has values here ($(tr '\n' ' ' <settings.txt))"
else
    notok "every setting in quantize --help has values here" "missing: $missing; settings: $(tr '\n' ' ' <settings.txt)"
fi

names() { "$MK" inspect "$1" --json | grep -o '"name": "[^"]*", "dtype": "[A-Z0-9_]*", "shape": \[[0-9, ]*\]' | sed 's/"dtype": "[A-Z0-9_]*", //' | sort; }
names m >base.txt

# one run: quantize with "$@"; echo what went wrong, nothing when all is well
one() {
    rm -rf q d
    "$MK" quantize m q --format "$f" --target "$layout" "$@" >/dev/null 2>err.txt
    rc=$?
    if [ "$rc" -eq 2 ] && grep -q "^mergekit-c: error: --[a-z-]* applies to .*, not $f" err.txt; then
        echo "$*" >>inapplicable.txt # a value of a setting that this layout takes only at its default
        return
    fi
    if [ "$rc" -eq 2 ]; then
        lines=$(grep -vc '^mergekit-c: warning: ' err.txt)
        if [ "$lines" -ne 1 ] || ! grep -q "^mergekit-c: error: m: .* quantizes no weight: " err.txt; then
            echo "$*: exit 2 with: $(grep -v 'warning: ' err.txt | head -c 300)"
        elif [ -e q ] || [ -e q.tmp ]; then
            echo "$*: refused, but left output"
        fi
        echo "$*" >>refused.txt
        return
    fi
    [ "$rc" -ne 0 ] && { echo "$*: quantize exit $rc: $(tail -n 1 err.txt)"; return; }
    "$MK" inspect q --summary --json 2>&1 | grep -q "\"quantization\": {\"format\": \"$f\", \"layout\": \"$layout\"" ||
        { echo "$*: inspect does not read it as $f ($layout)"; return; }
    "$MK" dequantize q d -q 2>err.txt || { echo "$*: dequantize refuses what quantize wrote: $(cat err.txt)"; return; }
    names d >d.txt
    cmp -s base.txt d.txt || echo "$*: the dequantized model lacks the model's tensors: $(diff base.txt d.txt | head -3)"
    echo "$*" >>written.txt
}

"$MK" quantize --list-formats | awk 'NR > 1 && NF > 4 && $1 != "bpw:" {print $1, $4}' >rows.txt
: >refused.txt
: >written.txt
: >inapplicable.txt
while read -r f layout; do
    # the settings that apply to this row, each as its list of options (an empty one: unset)
    : >axes.txt
    for k in $(cat settings.txt); do
        v=$(values "$k")
        [ -z "$v" ] && continue
        first=${v%% *}
        if [ "$first" = "-" ]; then try="--$k"; else try="--$k $first"; fi
        "$MK" quantize m q --format "$f" --target "$layout" $try --dry-run >/dev/null 2>err.txt
        grep -q "applies to" err.txt && continue
        if [ "$first" = "-" ]; then echo "--$k" >>axes.txt; else echo "$v" | tr ' ' '\n' | sed "s/^/--$k /" | paste -sd'|' >>axes.txt; fi
    done
    # the cross product of the axes, each unset or one of its options (a line per run; the
    # empty line: the defaults)
    echo "" >combos.txt
    while read -r axis; do
        : >next.txt
        while read -r c; do
            echo "$c" >>next.txt
            echo "$axis" | tr '|' '\n' | while read -r o; do echo "$c $o" >>next.txt; done
        done <combos.txt
        mv next.txt combos.txt
    done <axes.txt
    bad=$(while read -r c; do one $c </dev/null; done <combos.txt)
    n=$(wc -l <combos.txt)
    if [ -z "$bad" ]; then ok "$f ($layout): $n setting combinations: what quantize writes, dequantize reads"; else notok "$f ($layout): what quantize writes, dequantize reads" "$bad"; fi
done <rows.txt

runs=$(grep -c . written.txt)
if [ "$runs" -ge 40 ] && grep -q -- "--group-size 64" written.txt && grep -q -- "--double-quant" written.txt &&
    grep -q -- "--per-tensor" written.txt && grep -q -- "--block-size 4096" written.txt; then
    ok "$runs quantized checkpoints written and read back"
else
    notok "$runs quantized checkpoints written and read back" "$(tr '\n' '|' <written.txt | head -c 400)"
fi
if [ "$(cat inapplicable.txt)" = "$(printf -- '--group-size 7\n--group-size 32\n--group-size 64')" ]; then
    ok "int8 for bitsandbytes takes --group-size only as 0 (one scale per row, what it does)"
else
    notok "int8 for bitsandbytes takes --group-size only as 0" "refused as not applying: $(tr '\n' '|' <inapplicable.txt)"
fi
if grep -q -- "--group-size 7" refused.txt && ! grep -v -- "--group-size 7" refused.txt | grep -q .; then
    ok "only --group-size 7 (no weight's width) is refused ($(grep -c . refused.txt) runs)"
else
    notok "only --group-size 7 (no weight's width) is refused" "$(tr '\n' '|' <refused.txt | head -c 400)"
fi

# the refusal, from the command line: one line naming the format, the setting and why
t_fail "a group size that divides no weight" 2 \
    "m: int4 \(compressed-tensors, group 7, symmetric, round to nearest\) quantizes no weight: --group-size 7 divides the columns of no weight \(128, 352\); --group-size 32 divides them all" \
    "$MK" quantize m q7 --format int4 --group-size 7 -q
t_absent "nothing written" q7 q7.tmp
t_fail "... alone, with no warning about each weight before it (no -q)" 2 "quantizes no weight: --group-size 7" \
    "$MK" quantize m q7 --format int4 --group-size 7
t_fail "... also as a dry run" 2 "quantizes no weight: --group-size 7" "$MK" quantize m q7 --format int4 --group-size 7 --dry-run -q
t_fail "--skip that keeps every weight" 2 "m: nf4 \(bitsandbytes, block 64\) quantizes no weight: --skip keeps 7 weights, and embeddings and lm_head are kept unless --include names them" \
    "$MK" quantize m q7 --format nf4 --skip proj -q
"$MK" synth m2 --finetune-of m --delta 0.05 --seed 4 -q || exit 1
printf 'merge_method: linear\nmodels:\n  - model: m\n    parameters: {weight: 0.5}\n  - model: m2\n    parameters: {weight: 0.5}\ndtype: bfloat16\n' >r.yaml
t_fail "merge --quantize too" 2 "--quantize int4,group-size=7: int4 .* quantizes no weight: --group-size 7 divides the columns of no weight" \
    "$MK" r.yaml q7 --quantize int4,group-size=7 -q
t_absent "nothing written by the merge" q7 q7.tmp

# SmolLM2's widths (576 and 1536) with int4's default groups of 128: the 576-wide weights are
# kept, each warned about, and a summary says how many and which group size fits them all
"$MK" synth s --hidden 576 --layers 2 --heads 9 --kv-heads 3 --intermediate 1536 --vocab 64 --dtype bf16 --seed 4 -q || exit 1
t_ok "int4 on 576-wide weights" "$MK" quantize s s4 --format int4
if grep -q "warning: model.layers.0.self_attn.q_proj.weight: 576 columns are not a multiple of the group size 128" "$T/.err" &&
    grep -q "warning: int4 (compressed-tensors, group 128, symmetric, round to nearest): 2 of 16 weights quantized, 12 kept unquantized for their shape: --group-size 128 does not divide their columns (576); --group-size 64 divides the columns of every weight$" "$T/.err" &&
    grep -q "2 of 21 tensors quantized (12 weights kept for their shape)" "$T/.err"; then
    ok "kept weights: each warned about, then how many and the group size that fits them all"
else
    notok "kept weights: each warned about, then how many and the group size that fits them all" "$(grep -v '^  model\.' "$T/.err" | tail -n 5)"
fi
t_ok "... which quantizes every weight" "$MK" quantize s s64 --format int4 --group-size 64
if grep -q "14 of 21 tensors quantized;" "$T/.err" && ! grep -q "kept unquantized" "$T/.err"; then
    ok "--group-size 64 quantizes them all"
else
    notok "--group-size 64 quantizes them all" "$(tail -n 3 "$T/.err")"
fi
