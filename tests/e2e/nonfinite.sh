# nonfinite.sh - NaN/Inf in merge inputs are reported by tensor, model and first element;
# --on-nonfinite warn (the default for merges) carries on, error stops with one line.
. "$MK_ROOT/tests/e2e/lib.sh"
"$MK" synth base/ --hidden 64 --layers 1 --heads 4 --intermediate 96 --vocab 50 --dtype float32 -q
"$MK" synth ft1/ --finetune-of base/ --seed 2 -q
# NaN (0x7fc00000, little-endian) into element 25 of the first tensor in the file
hl=$(od -An -t u8 -N8 ft1/model.safetensors | tr -d ' ')
printf '\000\000\300\177' | dd of=ft1/model.safetensors bs=1 seek=$((8 + hl + 100)) conv=notrunc status=none
first=$(head -c $((8 + hl)) ft1/model.safetensors | tail -c +9 | grep -o '"[a-z_.0-9]*":{"dtype":"F32","shape":\[[0-9,]*\],"data_offsets":\[0,' | head -n 1 | cut -d'"' -f2)
printf 'merge_method: linear\nmodels:\n  - model: base/\n    parameters:\n      weight: 0.5\n  - model: ft1/\n    parameters:\n      weight: 0.5\n' >r.yaml
"$MK" r.yaml out/ >"$T/.out" 2>"$T/.err"
rc=$?
if [ $rc -eq 0 ] && grep -q "warning: tensor $first in model ft1/: 1 NaN/Inf value(s), first at element 25" "$T/.err"; then
    ok "NaN input: warned by tensor, model and element; merge continues"
else
    notok "NaN input warning" "exit $rc: $(cat "$T/.err")"
fi
t_fail "--on-nonfinite error stops" 1 "tensor $first in model ft1/: 1 NaN/Inf value\(s\), first at element 25" "$MK" r.yaml out2/ --on-nonfinite error
t_absent "no output after --on-nonfinite error" out2 out2.tmp
printf 'merge_method: passthrough\nmodels:\n  - model: ft1/\n' >p.yaml
"$MK" p.yaml out3/ >"$T/.out" 2>"$T/.err"
grep -q "warning: tensor $first in model ft1/: 1 NaN/Inf" "$T/.err" && ok "raw copies are checked too" || notok "raw copies are checked too" "$(cat "$T/.err")"
t_fail "bad --on-nonfinite value" 2 "--on-nonfinite expects error or warn, got 'maybe'" "$MK" r.yaml out4/ --on-nonfinite maybe
