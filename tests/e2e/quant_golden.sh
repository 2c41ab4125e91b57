#!/bin/sh
# quantize against the reference libraries: a tiny synthetic model quantized by
# transformers + bitsandbytes and by compressed-tensors (tests/golden/quant/model-*,
# made by tools/gen-golden-quant.py from the same `synth` command). Every stored tensor must
# be the same (compare, no tolerance), the quantization_config the same text, and
# `dequantize` must decode ours and theirs to the same values.
. "$MK_ROOT/tests/e2e/lib.sh"
G=$ROOT/tests/golden/quant
"$MK" synth m --hidden 32 --layers 1 --heads 2 --kv-heads 1 --intermediate 64 --vocab 64 --dtype bf16 --seed 5 -q || exit 1

# the quantization_config block of config.json, as its own JSON text
qconf() {
    awk '/^  "quantization_config": \{/{f=1; print "{"; next} f && /^  \}/{print "}"; exit} f{sub(/^  /,""); print}' "$1/config.json"
}

check() {
    name=$1
    shift
    t_ok "$name: quantize" "$MK" quantize m "o-$name" "$@" -q
    t_ok "$name: every tensor equals the reference library's" "$MK" compare "o-$name" "$G/model-$name.safetensors" --subset -q
    qconf "o-$name" >"q-$name.json"
    t_same "$name: quantization_config equals the reference library's" "q-$name.json" "$G/model-$name.qconfig.json"
    mkdir -p "ref-$name" && cp "$G/model-$name.safetensors" "ref-$name/model.safetensors"
    t_ok "$name: dequantize ours" "$MK" dequantize "o-$name" "d-$name" -q
    t_ok "$name: dequantize the reference's" "$MK" dequantize "ref-$name" "r-$name" --dtype bf16 -q
    t_ok "$name: both decode to the same values" "$MK" compare "d-$name" "r-$name" --subset -q
}

check nf4 --format nf4
check nf4-dq --format nf4 --double-quant
check fp4 --format fp4
check int8 --format int8
check int4 --format int4 --group-size 32
check int4-asym --format int4 --group-size 32 --scheme asym
check int8-ct --format int8 --target compressed-tensors
check fp8 --format fp8
