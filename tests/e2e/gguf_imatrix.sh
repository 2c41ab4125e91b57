#!/bin/sh
# `convert --imatrix`: the synthetic Llama of tools/gen-golden-gguf-kquant-w.py with the
# importance matrix it wrote in llama-imatrix's GGUF layout (tests/golden/gguf/imatrix-w256.gguf)
# converts, under q4_0, q5_1, q2_k, q3_k_m, q4_k_m, q5_k_s, q6_k and iq4_nl, to exactly the tensor bytes llama.cpp's
# weighted quantizers give (imatrix-convert.txt: libggml-base's quantize_* with in_sum2 / count;
# tolerance: none), and not the unweighted bytes; bad importance files and types are one line,
# exit 1 (2 for usage), and nothing written. Quantizer bytes: tests/unit/test_ggml_kquant_w.c.
. "$MK_ROOT/tests/e2e/lib.sh"
G=$ROOT/tests/golden/gguf
IM=$G/imatrix-w256.gguf

"$MK" synth m --hidden 256 --intermediate 512 --layers 2 --heads 4 --kv-heads 1 --vocab 300 --dtype float32 -q
for mix in q4_0 q5_1 q2_k q3_k_m q4_k_m q5_k_s q6_k iq4_nl; do
    t_ok "$mix: convert --imatrix" "$MK" convert m "w-$mix.gguf" --type "$mix" --imatrix "$IM" -q
    gguf_types_hashes "w-$mix.gguf" | sed "s/^/$mix /" | sort >got.txt
    grep "^$mix " "$G/imatrix-convert.txt" | sort >want.txt
    t_lines "$mix: every tensor llama.cpp's weighted bytes" got.txt want.txt
    "$MK" convert m "p-$mix.gguf" --type "$mix" -q
    gguf_types_hashes "p-$mix.gguf" | sed "s/^/$mix /" | sort >plain.txt
    n=$(comm -13 plain.txt got.txt | wc -l)
    [ "$n" -ge 12 ] && ok "$mix: the importances change $n matrices" || notok "$mix: the importances matter" "only $n tensors differ"
done

# bad input: one line naming the file (and tensor), nothing written
t_fail "imatrix file missing" 1 "nothere.gguf" "$MK" convert m x.gguf --type q4_k --imatrix nothere.gguf
"$MK" convert m f32.gguf --type f32 -q
t_fail "a model GGUF is not an imatrix" 1 "f32.gguf: general.type is .model., not .imatrix." "$MK" convert m x.gguf --type q4_k --imatrix f32.gguf
printf 'GGUF\003\000\000\000' >trunc.gguf
t_fail "a truncated imatrix" 1 "trunc.gguf" "$MK" convert m x.gguf --type q4_k --imatrix trunc.gguf
"$MK" synth m64 --hidden 64 --layers 2 --heads 4 --kv-heads 1 --vocab 300 --dtype float32 -q
t_fail "an imatrix of another model's widths" 1 "imatrix-w256.gguf: tensor blk\.0\..*importances for a matrix of 64 columns" \
    "$MK" convert m64 x.gguf --type q4_k --imatrix "$IM"
t_ok "q8_0 takes no weights (as llama.cpp's): the plain bytes" "$MK" convert m w8.gguf --type q8_0 --imatrix "$IM" -q
"$MK" convert m p8.gguf --type q8_0 -q
t_same "q8_0 with and without --imatrix" w8.gguf p8.gguf
t_fail "--imatrix with --part" 2 "--imatrix cannot be combined with --part" "$MK" convert m x.gguf --type q4_k --imatrix "$IM" --part 1/2
t_absent "nothing written on errors" x.gguf x.gguf.tmp
