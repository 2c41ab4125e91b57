#!/bin/sh
# quantize --format ternary (BitNet b1.58, transformers' BitNet layout): the same bytes at any
# thread count and chunk size (the per-tensor mean is summed per row, then in row order);
# dequantize gives the same values whether its chunks cross the packed quarters or not; the
# report's figures are those of a ternary code; a row count that is not a multiple of 4 keeps
# the weight (listed in modules_to_not_convert); a merge cannot stream it. The values
# themselves are checked against transformers in tests/unit/test_ternary.c.
. "$MK_ROOT/tests/e2e/lib.sh"
make_models || exit 1

t_ok "ternary: quantize" "$MK" quantize base q1 --format ternary --threads 1 -q
t_ok "ternary: quantize, 2 threads, chunks of one row" "$MK" quantize base q2 --format ternary --threads 2 --chunk 64 -q
t_same "ternary: the same bytes at any thread count and chunk size" q1/model.safetensors q2/model.safetensors
grep -q '"quant_method": "bitnet"' q1/config.json && grep -q '"linear_class": "bitlinear"' q1/config.json &&
    grep -q '"quantization_mode": "offline"' q1/config.json && ok "ternary: quantization_config is BitNet's" ||
    notok "ternary: quantization_config is BitNet's" "$(cat q1/config.json)"
"$MK" inspect q1 >inspect.txt 2>&1
grep -q "model.layers.0.mlp.up_proj.weight  *U8  *\[44, 64\]" inspect.txt && grep -q "up_proj.weight_scale  *BF16  *\[1\]" inspect.txt &&
    grep -q "quantized: ternary (bitnet, per tensor)" inspect.txt && ok "ternary: inspect shows the packed layout" ||
    notok "ternary: inspect shows the packed layout" "$(tail -n 5 inspect.txt)"

t_ok "ternary: dequantize" "$MK" dequantize q1 d1 -q
t_ok "ternary: dequantize in chunks of one row" "$MK" dequantize q1 d2 --chunk 64 --threads 2 -q
t_same "ternary: dequantize gives the same values for any chunk" d1/model.safetensors d2/model.safetensors

"$MK" quantize base q3 --format ternary --json -q >report.json 2>/dev/null
tot=$(grep -o '"total": {[^}]*}' report.json)
bpw=$(echo "$tot" | grep -o '"bits_per_weight": [0-9.]*' | cut -d' ' -f2)
rel=$(echo "$tot" | grep -o '"rel_rmse": [0-9.]*' | cut -d' ' -f2)
if awk -v b="$bpw" -v r="$rel" 'BEGIN { exit !(b >= 2.0 && b < 2.01 && r > 0.4 && r < 0.6) }'; then
    ok "ternary: report: $bpw bits per weight, relative RMSE $rel"
else
    notok "ternary: report has 2 bits per weight and a ternary error" "$tot"
fi

"$MK" synth odd --hidden 64 --layers 1 --heads 4 --intermediate 174 --vocab 64 --dtype f32 --seed 2 -q
"$MK" quantize odd qo --format ternary >/dev/null 2>warn.txt
grep -q "gate_proj.weight: 174 rows are not a multiple of 4" warn.txt && grep -q '"model.layers.0.mlp.gate_proj"' qo/config.json &&
    ok "ternary: rows not a multiple of 4 are kept and listed in modules_to_not_convert" ||
    notok "ternary: rows not a multiple of 4 are kept" "$(cat warn.txt)"

cat >r.yaml <<EOY
merge_method: linear
models:
  - model: base
    parameters: {weight: 1.0}
dtype: bfloat16
EOY
t_fail "ternary: merge --quantize is refused" 2 "ternary's per-tensor scale needs the whole tensor" "$MK" r.yaml mq --quantize ternary
t_absent "ternary: the refused merge leaves nothing" mq mq.tmp
