# torchbin.sh - PyTorch checkpoints (tests/golden/torchbin, written by torch.save through
# tools/gen-golden-torchbin.py): every command reads them as exactly the tensors torch.load
# makes of them. Tolerance: none; names, dtypes, shapes and the XXH3-128 of every tensor's
# bytes must be equal.
. "$MK_ROOT/tests/e2e/lib.sh"
G=$ROOT/tests/golden/torchbin

# "name dtype shape xxh3" per tensor, sorted (the order of a state dict is not safetensors')
tensors() {
    "$MK" inspect "$1" --json --hashes |
        sed -n 's/.*"name": "\([^"]*\)", "dtype": "\([^"]*\)", "shape": \(\[[^]]*\]\).*"xxh3": "\([0-9a-f]*\)".*/\1 \2 \3 \4/p' | sort
}
for c in zip/ zip64/ legacy/ sharded/ module/ module/pytorch_model.bin params/params.pth proto4/model.pt; do
    d=${c%%/*}
    tensors "$G/$c" >got.txt
    tensors "$G/$d/expected.safetensors" >want.txt
    if [ -s want.txt ] && cmp -s got.txt want.txt; then ok "$c: the tensors torch.load reads, bit for bit ($(wc -l <want.txt))"
    else notok "$c" "$(diff got.txt want.txt | head -5)"; fi
done
t_ok "compare: the zip archive equals torch.load's tensors" "$MK" compare "$G/zip/" "$G/zip/expected.safetensors"
"$MK" inspect "$G/zip/" --json >zip.json
t_ok "inspect names the format" grep -q '"format": "pytorch"' zip.json

# merges, quantize and estimate read them like any model
printf 'merge_method: passthrough\nmodels:\n  - model: %s/sharded/\n' "$G" >pass.yaml
t_ok "passthrough merge of a sharded .bin folder" "$MK" pass.yaml pass -q
t_ok "writes safetensors equal to torch.load's tensors" "$MK" compare pass/ "$G/sharded/expected.safetensors"
t_ok "no pickle is copied to the output" test ! -e pass/pytorch_model.bin
printf 'merge_method: linear\nmodels:\n  - model: %s/module/\n    parameters: {weight: 0.5}\n  - model: %s/params/params.pth\n    parameters: {weight: 0.5}\n' "$G" "$G" >lin.yaml
t_ok "linear merge of two .bin inputs" "$MK" lin.yaml lin -q
t_ok "the average of a model with itself is the model" "$MK" compare lin/ "$G/module/expected.safetensors"
t_ok "quantize a .bin folder" "$MK" quantize "$G/zip/" q --format int8 -q
"$MK" estimate "$G/zip/" >est.txt 2>&1
t_ok "estimate counts a .bin folder's parameters from its tensors" grep -q 'parameters: 572 (572)' est.txt

# a PEFT adapter saved with torch.save applies as its safetensors twin does (PEFT's own result)
L=$ROOT/tests/golden/lora
cmd=$(sed -n 's/^synth float32 //p' "$L/manifest.txt")
# shellcheck disable=SC2086
t_ok "synth the LoRA golden base" "$MK" $cmd -q
t_ok "lora apply with adapter_model.bin" "$MK" lora apply base-float32/ "$G/adapter" applied -q
t_ok "equals PEFT merge_and_unload bit for bit" "$MK" compare applied/model.safetensors "$L/apply_plain_fp32/expected.safetensors"

t_fail "pack refuses a PyTorch checkpoint, saying why" 1 "zip/pytorch_model.bin: a PyTorch checkpoint; pack stores safetensors models" \
    "$MK" pack "$G/zip/pytorch_model.bin" z.mkz

# a folder with both: safetensors wins (the pickle is never opened)
mkdir both && cp "$G/module/expected.safetensors" both/model.safetensors && printf 'not a pickle' >both/pytorch_model.bin
"$MK" inspect both/ --json >both.json 2>&1
t_ok "safetensors wins over pytorch_model.bin" grep -q '"format": "safetensors"' both.json
mkdir only && printf 'not a pickle' >only/pytorch_model.bin
t_fail "a damaged pytorch_model.bin is named" 1 "only/pytorch_model.bin: not a PyTorch checkpoint" "$MK" inspect only/

# any name: the content decides
cp "$G/zip/pytorch_model.bin" copy.pt
t_ok "any file name reads by its content" "$MK" inspect copy.pt
