#!/bin/sh
# The format table from the command line: `quantize --list-formats` (text and --json) lists
# every format in every layout, and each one listed quantizes a synthetic model, reads back
# as itself (inspect), and dequantizes to the model's tensors; `quantize --help` names every
# format and which formats each option applies to, and docs/quantization.md's table every
# format; a bad combination names the formats the option is for.
. "$MK_ROOT/tests/e2e/lib.sh"
make_models || exit 1
# weights 128 and 256 wide: every format's default group fits
"$MK" synth m --hidden 128 --layers 1 --heads 4 --kv-heads 2 --intermediate 256 --vocab 64 --dtype bf16 --seed 3 -q || exit 1

t_ok "--list-formats" "$MK" quantize --list-formats
awk 'NR > 1 && NF > 4 && $1 != "bpw:" {print $1, $4}' "$T/.out" >list.txt
n=$(grep -c . list.txt)
if [ "$n" -ge 6 ] && grep -q "^nf4 bitsandbytes$" list.txt && grep -q "^int8 compressed-tensors$" list.txt; then
    ok "--list-formats has a line per format and layout ($n)"
else
    notok "--list-formats has a line per format and layout" "$(cat "$T/.out")"
fi
if grep -q "^nf4 .* 4\.500 .*bitsandbytes .*4\.12[78] with --double-quant .*transformers + bitsandbytes" "$T/.out"; then
    ok "--list-formats: bits per weight with their overhead, and who loads it"
else
    notok "--list-formats: bits per weight with their overhead, and who loads it" "$(grep '^nf4' "$T/.out")"
fi
t_ok "--list-formats --json" "$MK" quantize --list-formats --json
nj=$(grep -c '"name": ' "$T/.out")
if [ "$nj" -eq "$n" ] && grep -q '"name": "int4", "bits": 4, "layout": "compressed-tensors", "default_layout": true' "$T/.out" &&
    grep -q '"bits_per_weight": 4.1250' "$T/.out"; then
    ok "--list-formats --json has the same entries"
else
    notok "--list-formats --json has the same entries" "$nj vs $n: $(head -c 400 "$T/.out")"
fi

for f in $(cut -d' ' -f1 list.txt | sort -u); do
    grep -q "^| .*\`$f[\` ]" "$ROOT/docs/quantization.md" || echo "$f"
done >missing.txt
[ -s missing.txt ] && notok "docs/quantization.md's table has every format" "$(cat missing.txt)" || ok "docs/quantization.md's table has every format"

"$MK" quantize --help >help.txt
for f in $(cut -d' ' -f1 list.txt | sort -u); do
    grep -q "^  $f " help.txt || echo "$f"
done >missing.txt
[ -s missing.txt ] && notok "--help lists every format" "$(cat missing.txt)" || ok "--help lists every format"
if grep -q -- "--double-quant  *nf4 and fp4: " help.txt && grep -q -- "--per-tensor  *fp8 and fp8-e5m2: " help.txt &&
    grep -q -- "--group-size N  *int8 (compressed-tensors) and int4: .*(default: 0 for int8 (compressed-tensors), 128 for int4)" help.txt; then
    ok "--help says which formats each option applies to, with their defaults"
else
    notok "--help says which formats each option applies to, with their defaults" "$(grep -- '--double-quant\|--group-size' help.txt)"
fi

names() { "$MK" inspect "$1" --json | grep -o '"name": "[^"]*", "dtype": "[A-Z0-9_]*", "shape": \[[0-9, ]*\]' | sed 's/"dtype": "[A-Z0-9_]*", //' | sort; }
names m >base.txt
while read -r f layout; do
    id="$f-$layout"
    t_ok "$f ($layout): quantize" "$MK" quantize m "q-$id" --format "$f" --target "$layout" -q
    "$MK" inspect "q-$id" --summary --json >insp.txt 2>&1
    if grep -q "\"quantization\": {\"format\": \"$f\", \"layout\": \"$layout\"" insp.txt; then
        ok "$f ($layout): inspect reads it as $f in $layout"
    else
        notok "$f ($layout): inspect reads it as $f in $layout" "$(grep -o '"quantization": {[^}]*' insp.txt)"
    fi
    t_ok "$f ($layout): dequantize" "$MK" dequantize "q-$id" "d-$id" -q
    names "d-$id" >d.txt
    if cmp -s base.txt d.txt; then ok "$f ($layout): the dequantized model has the model's tensors"; else notok "$f ($layout): the dequantized model has the model's tensors" "$(diff base.txt d.txt | head -5)"; fi
    rm -rf "q-$id" "d-$id"
done <list.txt

t_fail "an option of another format names the formats it is for" 2 "per-tensor applies to fp8 and fp8-e5m2, not int4" \
    "$MK" quantize base qx --format int4 --per-tensor
t_fail "a layout the format has not" 2 "target bitsandbytes: format fp8 is only written for compressed-tensors" \
    "$MK" quantize base qx --format fp8 --target bnb
t_fail "merge --quantize takes the same settings" 2 "unknown setting 'blocksize=32' \(expected block-size=N, double-quant," \
    "$MK" "$ROOT/recipes/linear.yaml" qx --quantize nf4,blocksize=32
t_fail "nvfp4 and the MX formats have fixed groups" 2 "group-size applies to int8 \(compressed-tensors\) and int4, not nvfp4" \
    "$MK" quantize base qx --format nvfp4 --group-size 32
t_fail "merge --quantize nvfp4: its global scale needs the whole tensor" 2 "nvfp4's global scale needs the whole tensor before its first value" \
    "$MK" "$ROOT/recipes/linear.yaml" qx --quantize nvfp4
"$MK" synth odd --hidden 48 --layers 1 --heads 2 --kv-heads 1 --intermediate 72 --vocab 64 --seed 1 -q
t_fail "mxfp4 on widths that are no multiple of 32 quantizes nothing" 2 "mxfp4 needs columns that are a multiple of 32; no weight has them" \
    "$MK" quantize odd qx --format mxfp4
t_fail "list-formats or IN OUT" 2 "quantize: missing arguments" "$MK" quantize base
t_absent "no output after the errors" qx qx.tmp
