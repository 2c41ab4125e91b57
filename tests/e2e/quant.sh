#!/bin/sh
# quantize / dequantize from the command line: the `quantize` program name, usage errors,
# atomic output, NaN and overflow errors naming the tensor, determinism across threads and
# chunk sizes, merge --quantize (= merge, then quantize), inspect and the report.
. "$MK_ROOT/tests/e2e/lib.sh"
make_models || exit 1
ln -s "$MK" quantize

t_ok "quantize is the same program" ./quantize base q1 --format nf4 -q
t_ok "mergekit-c quantize" "$MK" quantize base q2 --format nf4 -v
# formats/output_wb.c: each stored tensor gathered and written in one piece behind the computation
n=$(sed -n 's/.*wrote \([0-9]*\) tensor(s), .* behind the computation.*/\1/p' "$T/.err")
[ "${n:-0}" -gt 0 ] && ok "quantize writes its $n tensors behind the computation" || notok "quantize write-behind" "$(tail -n 2 "$T/.err")"
t_same "both give the same bytes" q1/model.safetensors q2/model.safetensors
t_fail "missing --format" 2 "error: --format is required" "$MK" quantize base q3
t_fail "unknown format" 2 "unknown format 'nf5'.*did you mean 'nf4'" "$MK" quantize base q3 --format nf5
t_fail "double quant is for 4-bit" 2 "double-quant applies to nf4 and fp4, not int8" "$MK" quantize base q3 --format int8 --double-quant
t_fail "scale search is for the integer formats" 2 "method search applies to" "$MK" quantize base q3 --format nf4 --method search
t_fail "existing output" 2 "q1: output already exists" "$MK" quantize base q1 --format nf4
t_ok "--force replaces it" "$MK" quantize base q1 --format int8 --force -q
t_fail "output inside the input" 2 "overlaps input" "$MK" quantize base base/q --format nf4
t_fail "already quantized" 2 "q2 is already quantized \(nf4 \(bitsandbytes, block 64\)\)" "$MK" quantize q2 q3 --format int4
t_fail "dequantize a plain model" 2 "base is not a quantized checkpoint" "$MK" dequantize base q3
t_absent "no output after errors" q3 q3.tmp
t_ok "dry run" "$MK" quantize base q3 --format int4 --group-size 64 --dry-run
t_absent "dry run writes nothing" q3
if grep -q "model.layers.0.self_attn.q_proj.weight  *int4" "$T/.out" && grep -q "lm_head.weight  *keep .*lm_head" "$T/.out" &&
    grep -q "down_proj.weight  *keep .*columns not a multiple of the group size" "$T/.out"; then
    ok "dry run lists each tensor"
else
    notok "dry run lists each tensor" "$(head -5 "$T/.out")"
fi

# int4 with groups of 64: down_proj (176 columns) stays unquantized and is named in "ignore"
t_ok "int4 keeps what does not fit the groups" "$MK" quantize base q4 --format int4 --group-size 64
if grep -q "down_proj.weight: 176 columns are not a multiple of the group size 64" "$T/.err" &&
    grep -q '"model.layers.1.mlp.down_proj"' q4/config.json; then
    ok "kept weights are warned about and ignored"
else
    notok "kept weights are warned about and ignored" "$(head -3 "$T/.err")"
fi

# the report and --json
t_ok "report" "$MK" quantize base q5 --format fp8 --json
if grep -q '"bits_per_weight"' "$T/.out" && grep -q '"sqnr_db"' "$T/.out" && grep -q "total of the quantized weights" "$T/.err"; then
    ok "report per tensor and total, stderr and --json"
else
    notok "report per tensor and total, stderr and --json" "$(head -c 300 "$T/.out")"
fi
t_ok "inspect a quantized model" "$MK" inspect q2 --summary
if grep -q "quantized: nf4 (bitsandbytes, block 64); 14 weights" "$T/.out"; then ok "inspect shows the format"; else notok "inspect shows the format" "$(cat "$T/.out")"; fi
t_ok "inspect --json" "$MK" inspect q4 --summary --json
if grep -q '"quantization": {"format": "int4", "layout": "compressed-tensors", "bits": 4, "block_size": 64' "$T/.out"; then
    ok "inspect --json has the quantization"
else
    notok "inspect --json has the quantization" "$(head -c 400 "$T/.out")"
fi

# the same bytes at 1, 2 and 8 threads and with small chunks
for spec in "nf4 --double-quant" "int4 --group-size 32 --scheme asym --method search" "fp8 --per-tensor" "int8"; do
    set -- $spec
    f=$1
    "$MK" quantize base j1 --format $spec -j 1 -q && "$MK" quantize base j2 --format $spec -j 2 -q &&
        "$MK" quantize base j8 --format $spec -j 8 --chunk 4096 -q
    if cmp -s j1/model.safetensors j2/model.safetensors && cmp -s j1/model.safetensors j8/model.safetensors; then
        ok "$f: same bytes at -j 1, 2, 8 and --chunk 4096"
    else
        notok "$f: same bytes at -j 1, 2, 8 and --chunk 4096" "outputs differ"
    fi
    rm -rf j1 j2 j8
done

# merge --quantize: the bytes of merging, then quantizing
cat >r.yaml <<'R'
merge_method: linear
models:
  - model: base
    parameters: {weight: 0.5}
  - model: ft1
    parameters: {weight: 0.5}
dtype: bfloat16
R
t_ok "merge" "$MK" r.yaml mp -q
# (method=search is left out: a merge streams, so its search weighs every value alike, while
# quantize weighs by the data-free importances of quant/search_proxy.h)
for spec in "nf4" "int4,group-size=32,scheme=asym" "fp8" "int8,target=compressed-tensors"; do
    f=${spec%%,*}
    a=""
    case $spec in *group-size=32*) a="--group-size 32 --scheme asym" ;; esac
    case $spec in *compressed*) a="--target compressed-tensors" ;; esac
    "$MK" r.yaml mq --quantize "$spec" -q && "$MK" quantize mp pq --format $f $a -q
    t_same "merge --quantize $spec = merge, then quantize" mq/model.safetensors pq/model.safetensors
    rm -rf mq pq
done
t_ok "merge --quantize int4 with the scale search" "$MK" r.yaml mqs --quantize int4,group-size=32,scheme=asym,method=search -q
"$MK" r.yaml mqr --quantize int4,group-size=32,scheme=asym -q
cmp -s mqs/model.safetensors mqr/model.safetensors && notok "... other scales than rtn" "same bytes" || ok "... other scales than rtn"
rm -rf mqs mqr
t_ok "merge --quantize nf4,double-quant" "$MK" r.yaml mdq --quantize nf4,double-quant
if grep -q '< ' "$T/.err"; then ok "double quant in a merge marks the max error as a bound"; else notok "bound marked" "$(tail -3 "$T/.err")"; fi
t_ok "merge --quantize --check reproduces" "$MK" r.yaml mdq --check -q
t_fail "bad --quantize" 2 "unknown format 'int3'" "$MK" r.yaml mx --quantize int3
t_fail "per-tensor fp8 needs the whole tensor" 2 "per-tensor scale needs the whole tensor" "$MK" r.yaml mx --quantize fp8,per-tensor
t_ok "dequantize a merge" "$MK" dequantize mdq mdq-d --dtype float32 -q
if grep -q '"torch_dtype": "float32"' mdq-d/config.json && ! grep -q quantization_config mdq-d/config.json; then
    ok "dequantized config.json is plain"
else
    notok "dequantized config.json is plain" "$(head -c 300 mdq-d/config.json)"
fi

# hostile values: a NaN and a value beyond float16, in a hand-made checkpoint
mkdir bad && cp base/config.json bad/
hdr='{"x.weight":{"dtype":"BF16","shape":[2,64],"data_offsets":[0,256]}}'
while [ $(( ${#hdr} % 8 )) -ne 0 ]; do hdr="$hdr "; done
mkbad() { # $1: the bf16 value at element 70, as two octal-escaped bytes
    { printf "\\$(printf %o ${#hdr})\\000\\000\\000\\000\\000\\000\\000"; printf '%s' "$hdr"
      head -c 140 /dev/zero; printf "$1"; head -c 114 /dev/zero; } >bad/model.safetensors
}
mkbad '\300\177'
t_fail "NaN names the tensor and the first bad element" 1 "tensor x.weight: NaN at element 70 \(row 1, column 6\)" "$MK" quantize bad qbad --format nf4
t_absent "nothing left after the error" qbad qbad.tmp
# int4 and int8 (compressed-tensors) read bf16 weights as stored and check the bit patterns
t_fail "NaN in the bf16 path of int4" 1 "tensor x.weight: NaN at element 70 \(row 1, column 6\)" "$MK" quantize bad qbad --format int4 --group-size 32
t_absent "nothing left after the error" qbad qbad.tmp
mkbad '\200\377'
t_fail "-Inf in the bf16 path of int8" 1 "tensor x.weight: -Inf at element 70 \(row 1, column 6\)" "$MK" quantize bad qbad --format int8 --target compressed-tensors
t_absent "nothing left after the error" qbad qbad.tmp
mkbad '\211\107'
t_fail "int8 refuses values beyond float16" 1 "tensor x.weight: value 70144 at element 70 overflows float16" "$MK" quantize bad qbad --format int8
t_absent "nothing left after the error" qbad qbad.tmp

# tensors read once are streamed around the page cache (core/mk_dstream.h): --direct-io always
# reads every block with O_DIRECT, off through the page cache; the bytes written are the same,
# for raw copies and rows, with a prepass that keeps the values (fp8, ternary) or none, in bf16
# and f32, on one and two threads; tensors of several 2 MiB blocks and of less than one
"$MK" synth dio/ --hidden 1024 --layers 1 --heads 8 --kv-heads 8 --intermediate 2816 --vocab 2048 --dtype bfloat16 --seed 4 -q
"$MK" synth dio32/ --hidden 328 --layers 1 --heads 8 --kv-heads 4 --intermediate 1000 --vocab 1500 --dtype float32 --seed 5 -q
for m in dio dio32; do
    for f in nf4 int8 "int4 --group-size 8" fp8 ternary; do
        for j in 1 2; do
            tag="$m $f -j $j"
            rm -rf qd1 qd2
            if "$MK" quantize $m qd1 --format $f -j $j -v --direct-io always 2>"$T/.dio" &&
                "$MK" quantize $m qd2 --format $f -j $j -q --direct-io off &&
                cmp -s qd1/model.safetensors qd2/model.safetensors; then
                ok "direct-io always = off: $tag"
            else
                notok "direct-io always = off: $tag" "$(tail -n 2 "$T/.dio")"
            fi
            grep -q "streamed [0-9.]* MiB of tensors read once: [1-9][0-9.]* MiB with O_DIRECT, 0.0 MiB from the page cache" "$T/.dio" &&
                ok "always reads with O_DIRECT: $tag" || notok "always reads with O_DIRECT: $tag" "$(grep streamed "$T/.dio")"
        done
    done
done
t_fail "--direct-io takes auto, always or off" 2 "error: --direct-io: 'yes' is not auto, always or off" "$MK" quantize dio qd3 --format nf4 --direct-io yes
t_absent "nothing written" qd3 qd3.tmp
