#!/bin/sh
# `convert --imatrix` on mixtures of experts: the Mixtral (8 fused experts) and the Qwen2-MoE (4
# per-expert tensors and a shared expert) of tools/make-moe-models.sh convert, with importance
# matrices in llama-imatrix's GGUF layout (one row and one count per expert; an expert with
# count 0), under q4_k, q5_k, q6_k, q3_k, q2_k, iq4_nl and q4_0, to exactly the tensors (types and
# bytes; tolerance: none) llama.cpp's llama_model_quantize makes of the same f32 GGUF with the same
# importances (tests/golden/gguf/moe-imatrix.txt, tools/gen-golden-gguf-moe.py; f32 lines: the
# stacked experts, checked there against numpy). An expert quantized with another expert's row
# fails: a file with experts 0 and 1 of one tensor exchanged gives llama.cpp's bytes for that and
# not the others; the same for quantize --method search and --sensitivity imatrix on the
# Qwen2-MoE's per-expert weights (expert 2 takes row 2), and convert by parts. Mismatched
# matrices are one line naming the file and the entry, exit 1.
. "$MK_ROOT/tests/e2e/lib.sh"
G=$ROOT/tests/golden/gguf
# same MODEL LABEL FILE: every tensor of FILE as the golden lines "MODEL LABEL ..."
same() {
    gguf_types_hashes "$3" | sed "s/^/$1 $2 /" | sort >got.txt
    grep "^$1 $2 " "$G/moe-imatrix.txt" | sort >want.txt
    t_lines "$1 $2: every tensor's type and bytes llama.cpp's" got.txt want.txt
}

"$ROOT/tools/make-moe-models.sh" "$MK" . || notok "the models" "tools/make-moe-models.sh failed"
for m in mx q2 d8; do
    t_ok "$m: convert f32" "$MK" convert $m $m-f32.gguf --type f32 -q
    same $m f32 $m-f32.gguf
    for t in q4_k q5_k q6_k q3_k q2_k iq4_nl q4_0; do
        t_ok "$m $t: convert --imatrix" "$MK" convert $m $m-$t.gguf --type $t --imatrix "$G/moe-$m.imatrix.gguf" -q
        same $m $t $m-$t.gguf
    done
    "$MK" convert $m p-$m.gguf --type q4_k -q
    gguf_types_hashes p-$m.gguf | sort >w-$m.txt
    n=$(gguf_types_hashes $m-q4_k.gguf | sort | comm -23 - w-$m.txt | wc -l)
    [ "$n" -ge 6 ] && ok "$m: the importances change $n tensors" || notok "$m: the importances matter" "only $n tensors differ"
done

# the stacked experts written by parts (--part I/N, then finalize) are the whole file's
"$MK" convert mx parts.gguf --type q4_k --part 2/2 -q && "$MK" convert mx parts.gguf --type q4_k --part 1/2 -q && "$MK" finalize parts.gguf -q
t_same "mx q4_k by two parts" parts.gguf p-mx.gguf

# Mixtral's per-expert checkpoint layout (block_sparse_moe.experts.E.w1 / w3 / w2), bf16
t_ok "pm: convert f32" "$MK" convert "$ROOT/tests/golden/moe/legacy_mixtral" pm.gguf --type f32 -q
same pm f32 pm.gguf

# a legacy .dat of the Mixtral (`mergekit-c imatrix -o x.dat`: one row of 8 x 256 values an expert tensor)
awk 'BEGIN { x = 7; for (i = 0; i < 600; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "tok%d ", 3 + (x % 290) } print "" }' >text.txt
"$MK" imatrix mx --text text.txt -o mx.dat --ctx 64 --chunks 2 -q
t_ok "a legacy .dat's expert rows" "$MK" convert mx dat.gguf --type q4_k --imatrix mx.dat -q
n=$(gguf_types_hashes dat.gguf | sort | comm -23 - w-mx.txt | wc -l)
[ "$n" -ge 6 ] && ok "... weigh the experts ($n tensors not the unweighted ones)" || notok "a legacy .dat weighs" "only $n tensors differ"

# each expert its own row: experts 0 and 1 of blk.0.ffn_down_exps exchanged
t_ok "swapped experts: convert" "$MK" convert mx swap.gguf --type q4_k --imatrix "$G/moe-mx.swap.gguf" -q
same mx q4_k-swap swap.gguf

# quantize --method search and --sensitivity imatrix take each expert's row for the Qwen2-MoE's
# per-expert weights: with moe-q2.row2.gguf (every row of blk.0.ffn_gate_exps that of expert 2)
# layer 0's experts.2.gate_proj is as with the whole file, experts 0, 1 and 3 are not
# expert_lines FILE LABEL: "LABEL E HASH" of layer 0's experts' gate_proj tensors (search) or
# their per-format predicted errors (allocation JSON)
expert_hashes() {
    "$MK" inspect "$1" --hashes --json | sed -n 's/.*"model\.layers\.0\.mlp\.experts\.\([0-9]\)\.gate_proj\.weight_packed".*"xxh3": "\([0-9a-f]*\)".*/\1 \2/p' | sort
}
expert_errors() {
    tr '\n' ' ' <"$1" | grep -o '"model\.layers\.0\.mlp\.experts\.[0-9]\.gate_proj\.weight"[^]]*]' |
        sed 's/"model\.layers\.0\.mlp\.experts\.\([0-9]\)\.gate_proj\.weight".*"options": \(.*\)/\1 \2/' | sort
}
# same_row WHAT A B: lines of A and B (per expert) equal for expert 2 only
same_row() {
    eq=$(join "$2" "$3" | awk '{ n = NF / 2; s = 1; for (i = 2; i <= n + 0.5; i++) if ($i != $(i + int(n))) s = 0; if (s) printf "%s ", $1 }')
    [ "$(wc -l <"$2")" -eq 4 ] && [ "$eq" = "2 " ] && ok "$1: layer 0's experts.2.gate_proj as with the whole file, the other experts not" ||
        notok "$1: expert 2 takes row 2" "experts equal to the whole file's: '$eq' ($(wc -l <"$2") experts)"
}
for f in imatrix row2; do
    t_ok "quantize --method search ($f)" "$MK" quantize q2 s-$f --format int4 --method search --imatrix "$G/moe-q2.$f.gguf" -q
    expert_hashes s-$f >s-$f.txt
    "$MK" quantize q2 a-$f --target-bpw 5 --sensitivity imatrix --imatrix "$G/moe-q2.$f.gguf" --dry-run --json -q >a-$f.json 2>/dev/null
    expert_errors a-$f.json >a-$f.txt
done
same_row "quantize --method search" s-imatrix.txt s-row2.txt
same_row "--sensitivity imatrix's predicted errors" a-imatrix.txt a-row2.txt

# mismatched matrices: one line naming the file and the entry, nothing written
t_fail "4 experts' importances for 8" 1 "moe-bad-nmat.gguf: tensor blk\.0\.ffn_up_exps\.weight: 4 x 256 importances for 8 experts of 256 columns" \
    "$MK" convert mx x.gguf --type q4_k --imatrix "$G/moe-bad-nmat.gguf"
t_fail "rows of 128 for 256 columns" 1 "moe-bad-width.gguf: tensor blk\.0\.ffn_up_exps\.weight: 8 x 128 importances for 8 experts of 256 columns" \
    "$MK" convert mx x.gguf --type q4_k --imatrix "$G/moe-bad-width.gguf"
t_fail "the Qwen2-MoE's matrix for the Mixtral" 1 "moe-q2.imatrix.gguf: tensor blk\.0\.ffn_(gate|up|down)_exps\.weight: 4 x 256 importances for 8 experts" \
    "$MK" convert mx x.gguf --type q4_k --imatrix "$G/moe-q2.imatrix.gguf"
t_fail "--target-bpw with experts" 1 "--target-bpw does not allocate expert tensors" "$MK" convert mx x.gguf --target-bpw 4.5
t_absent "nothing written on errors" x.gguf x.gguf.tmp
t_fail "quantize: the Mixtral's 8 experts for the Qwen2-MoE's 4" 1 \
    "moe-mx.imatrix.gguf: tensor blk\.0\.ffn_(gate|up|down)_exps\.weight: 8 x 256 importances for model\.layers\.0\.mlp\.experts\.0\..*, expert 0 of 4 of 256 columns" \
    "$MK" quantize q2 xq --format int4 --method search --imatrix "$G/moe-mx.imatrix.gguf"
t_absent "nothing written by quantize" xq xq.tmp
