# quant_search.sh - `quantize --format int4 --method search`: the scale search weighs each
# value's error by an importance matrix (--imatrix, as `mergekit-c imatrix` writes it) or by a
# data-free proxy; the importances change the bytes, the output is the same at any thread
# count, a bad or mismatched imatrix is one error line and nothing written; and on SmolLM2-135M
# (when tools/get-smollm2.sh has fetched it) search's perplexity is at most round-to-nearest's.
. "$MK_ROOT/tests/e2e/lib.sh"

json_num() { sed -n "s/.*\"$2\": \([-0-9.e+]*\).*/\1/p" "$1" | head -n 1; }
awk_true() { awk "BEGIN { exit !($1) }"; }

"$MK" synth m --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 160 --vocab 128 --dtype float32 --seed 7 -q &&
    "$MK" synth m4 --hidden 64 --layers 4 --heads 4 --kv-heads 2 --intermediate 160 --vocab 128 --dtype float32 --seed 8 -q &&
    "$MK" synth w96 --hidden 96 --layers 2 --heads 4 --kv-heads 2 --intermediate 160 --vocab 128 --dtype float32 --seed 9 -q ||
    { notok "synth" "could not make the models"; exit 1; }
awk 'BEGIN { x = 3; for (i = 0; i < 800; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "tok%d ", 3 + (x % 120) } print "" }' >text.txt
"$MK" imatrix m --text text.txt -o im.gguf --ctx 64 --chunks 6 -q && "$MK" imatrix w96 --text text.txt -o im96.gguf --ctx 64 --chunks 2 -q ||
    { notok "imatrix" "could not make the importance matrices"; exit 1; }

S="--format int4 --method search --group-size 32"
t_ok "search with --imatrix" "$MK" quantize m a/ $S --imatrix im.gguf -q -j1 --chunk 1024
t_ok "search without" "$MK" quantize m p/ $S -q -j1 --chunk 1024
cmp -s a/model.safetensors p/model.safetensors && notok "--imatrix: the importances change the scales" "same bytes with and without" ||
    ok "--imatrix: the importances change the scales"
"$MK" quantize m r/ --format int4 --group-size 32 -q
cmp -s p/model.safetensors r/model.safetensors && notok "search: other scales than rtn" "same bytes" || ok "search: other scales than rtn"
for v in "--imatrix im.gguf" ""; do
    "$MK" quantize m b/ $S $v -q -j3 --chunk 1024 && "$MK" quantize m c/ $S $v -q -j3 --chunk 96 || notok "search -j3 runs" "failed"
    want=a/model.safetensors
    [ -z "$v" ] && want=p/model.safetensors
    if cmp -s $want b/model.safetensors && cmp -s $want c/model.safetensors; then ok "search ${v:-(data-free)}: same bytes at -j1 and -j3, any chunk"
    else notok "search ${v:-(data-free)}: same bytes at -j1 and -j3" "outputs differ"; fi
    rm -rf b c
done
t_ok "asym search with --imatrix" "$MK" quantize m aa/ --format int4 --scheme asym --method search --group-size 32 --imatrix im.gguf -q
t_ok "int8 search with --imatrix" "$MK" quantize m a8/ --format int8 --target compressed-tensors --method search --imatrix im.gguf -q

# an imatrix of a 2-layer model for a 4-layer one: layers 2 and 3 keep the data-free weights
t_ok "an imatrix covering some weights" "$MK" quantize m4 h/ $S --imatrix im.gguf
grep -q "im.gguf has importances for 14 of the 28 quantized weights" "$T/.err" && ok "... warns which share it covers" ||
    notok "... warns which share it covers" "$(cat "$T/.err")"

t_fail "--imatrix without --method search" 2 "--imatrix weighs the error --method search minimises" \
    "$MK" quantize m x/ --format int4 --group-size 32 --imatrix im.gguf
t_fail "--imatrix with --part" 2 "--imatrix cannot be combined with --part" "$MK" quantize m x/ $S --imatrix im.gguf --part 1/2
t_fail "--imatrix with --format gguf-T" 2 "convert IN OUT.gguf --type q4_k --imatrix im.gguf" "$MK" quantize m x.gguf --format gguf-q4_k --imatrix im.gguf
t_fail "--imatrix with --target-bpw" 2 "--imatrix is for --sensitivity imatrix" "$MK" quantize m x/ --target-bpw 5 --imatrix im.gguf
t_fail "imatrix file missing" 1 "nothere.gguf" "$MK" quantize m x/ $S --imatrix nothere.gguf
"$MK" convert m f32.gguf --type f32 -q
t_fail "a model GGUF is not an imatrix" 1 "f32.gguf: general.type is .model., not .imatrix." "$MK" quantize m x/ $S --imatrix f32.gguf
head -c 700 im.gguf >trunc.gguf
t_fail "a truncated imatrix" 1 "trunc.gguf" "$MK" quantize m x/ $S --imatrix trunc.gguf
t_fail "an imatrix of another model's widths" 1 "im96.gguf: tensor blk\.0\..*importances for model\.layers\.0\..*, a weight of 64 columns" \
    "$MK" quantize m x/ $S --imatrix im96.gguf
t_fail "an imatrix of none of the quantized weights" 1 "im.gguf: none of its 14 matrices .* is a weight this run quantizes" \
    "$MK" quantize m x/ $S --imatrix im.gguf --skip layers --include embed_tokens
"$MK" synth g --arch gemma --hidden 64 --layers 1 --heads 4 --kv-heads 1 --intermediate 128 --vocab 128 -q
t_fail "an architecture without llama.cpp names" 1 "model_type 'gemma' has no llama.cpp tensor names" "$MK" quantize g x/ $S --imatrix im.gguf
t_absent "nothing written on errors" x x.tmp x.gguf

# the real model: search (data-free weights) scores at most rtn's perplexity, int4 groups of 32
SM=${MK_SMOLLM2:-"$ROOT/.models/smollm2"}
text=/usr/share/common-licenses/GPL-3
if [ ! -f "$SM/model.safetensors" ] || [ ! -f "$text" ]; then
    echo "skip - smollm2 search vs rtn: $SM or $text is absent (run tools/get-smollm2.sh)"
else
    "$MK" quantize "$SM" sm-rtn/ --format int4 --group-size 32 -q && "$MK" quantize "$SM" sm-s/ --format int4 --group-size 32 --method search -q
    "$MK" eval sm-rtn/ --text "$text" --chunks 4 --json >rtn.json 2>/dev/null
    "$MK" eval sm-s/ --text "$text" --chunks 4 --json >s.json 2>/dev/null
    pr=$(json_num rtn.json ppl)
    ps=$(json_num s.json ppl)
    if [ -n "$pr" ] && [ -n "$ps" ] && awk_true "$ps <= $pr"; then ok "smollm2 int4 g32: search PPL $ps <= rtn's $pr"
    else notok "smollm2 int4 g32: search PPL at most rtn's" "search '$ps', rtn '$pr'"; fi
fi
