# determinism.sh - every merge method (each recipe in recipes/), every quantize format and
# the compressed container give the same bytes at 1, 2 and 8 threads and across repeated
# runs. Small chunks make every tensor span many chunks, so threads really share the work.
. "$MK_ROOT/tests/e2e/lib.sh"
"$MK" synth base/ --hidden 32 --layers 32 --heads 4 --kv-heads 2 --intermediate 48 --vocab 48 --dtype bf16 --seed 1 -q &&
    "$MK" synth ft1/ --finetune-of base/ --delta 0.05 --seed 2 -q &&
    "$MK" synth ft2/ --finetune-of base/ --delta 0.05 --density 0.7 --seed 3 -q &&
    "$MK" synth ft3/ --finetune-of base/ --delta 0.08 --seed 4 -q || { notok "synth" "could not make the models"; exit 1; }

for r in "$ROOT"/recipes/*.yaml; do
    name=$(basename "$r" .yaml)
    "$MK" "$r" a/ -q -j1 --chunk 96 && "$MK" "$r" b/ -q -j2 --chunk 96 && "$MK" "$r" c/ -q -j8 --chunk 96 &&
        "$MK" "$r" d/ -q -j8 --chunk 96 || { notok "$name runs" "$(cat "$T/.err" 2>/dev/null)"; rm -rf a b c d; continue; }
    if cmp -s a/model.safetensors b/model.safetensors && cmp -s a/model.safetensors c/model.safetensors &&
        cmp -s c/model.safetensors d/model.safetensors && cmp -s a/mergekit-c.json d/mergekit-c.json; then
        ok "$name: same bytes at -j1, -j2, -j8 and on a repeat"
    else
        notok "$name: same bytes at -j1, -j2, -j8 and on a repeat" "outputs differ"
    fi
    rm -rf a b c d
done

# widths 64 and 160: int4's default groups of 128 divide neither (quantize refuses it); groups of
# 64 quantize the 64-wide weights and keep down_proj, groups of 32 quantize every weight
"$MK" synth q/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 160 --vocab 64 --dtype bf16 --seed 5 -q
for spec in "nf4" "nf4 --double-quant" "fp4" "int8" "int8 --target compressed-tensors" "int4 --group-size 64" "int4 --scheme asym --group-size 32" \
    "int4 --method search --group-size 32" "fp8" "fp8 --per-tensor" "fp8-e5m2" "nvfp4" "mxfp4" "mxfp8"; do
    "$MK" quantize q/ a/ --format $spec -q -j1 --chunk 1024 && "$MK" quantize q/ b/ --format $spec -q -j2 --chunk 1024 &&
        "$MK" quantize q/ c/ --format $spec -q -j8 --chunk 1024 && "$MK" quantize q/ d/ --format $spec -q -j8 --chunk 1024 ||
        { notok "quantize $spec runs" "failed"; rm -rf a b c d; continue; }
    if cmp -s a/model.safetensors b/model.safetensors && cmp -s a/model.safetensors c/model.safetensors &&
        cmp -s c/model.safetensors d/model.safetensors && cmp -s a/config.json d/config.json; then
        ok "quantize $spec: same bytes at -j1, -j2, -j8 and on a repeat"
    else
        notok "quantize $spec: same bytes at -j1, -j2, -j8 and on a repeat" "outputs differ"
    fi
    rm -rf a b c d
done

"$MK" pack q/ a.mkz -q -j1 && "$MK" pack q/ b.mkz -q -j2 && "$MK" pack q/ c.mkz -q -j8
cmp -s a.mkz b.mkz && cmp -s a.mkz c.mkz && ok "pack: same bytes at -j1, -j2, -j8" || notok "pack: same bytes at -j1, -j2, -j8" "containers differ"
