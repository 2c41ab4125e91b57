#!/bin/sh
# `imatrix`: a synthetic Llama's importance matrix on a text of its tokens is a llama-imatrix
# GGUF file (two tensors per layer matrix: 2 layers x 7), the same bytes at any thread count,
# different for other windows, and `convert --imatrix` takes it (other bytes than without);
# bad input is one line, exit 2 (usage, existing OUT) or 1, and nothing written.
# The legacy .dat layout: -o X.dat from the same run, and --in-file conversions both ways give
# the same bytes (round trips; chunk size a power of two), convert / quantize --method search /
# --sensitivity imatrix take it with the same bytes as the GGUF; llama.cpp's own layout of
# tests/golden/gguf/imatrix-w256.gguf (tests/golden/imatrix/, tools/gen-golden-imatrix-dat.py)
# byte-identical, of a mixture-of-experts imatrix within DAT_ULP (llama.cpp rounds twice in
# float, mergekit-c once), and read back. --process-output: output.weight; a MoE model's
# per-expert matrices. Values against PyTorch: tools/compat-imatrix.sh (make compat).
. "$MK_ROOT/tests/e2e/lib.sh"
DAT_ULP=1 # measured: 6 of 203 values 1 ulp apart in moe.dat, none in imatrix-w256.dat
GI=$ROOT/tests/golden/imatrix

"$MK" synth m --hidden 256 --layers 2 --heads 4 --kv-heads 2 --intermediate 512 --vocab 300 --dtype float32 --seed 5 -q
awk 'BEGIN { x = 7; for (i = 0; i < 1500; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "tok%d ", 3 + (x % 290) } print "" }' >text.txt
t_ok "imatrix runs" "$MK" imatrix m --text text.txt -o im.gguf --ctx 128 --chunks 4 -q
n=$("$MK" inspect im.gguf 2>/dev/null | grep -c -E '^  blk\.[01]\.(attn_(q|k|v|output)|ffn_(gate|up|down))\.weight\.(in_sum2|counts) ')
[ "$n" -eq 28 ] && ok "imatrix: in_sum2 and counts of 14 matrices" || notok "imatrix: 14 matrices" "$n tensors"
t_ok "imatrix with one thread" "$MK" imatrix m --text text.txt -o im1.gguf --ctx 128 --chunks 4 -q -j1
t_same "imatrix: the same bytes at any thread count" im.gguf im1.gguf
"$MK" imatrix m --text text.txt -o im2.gguf --ctx 128 --chunks 2 -q
cmp -s im.gguf im2.gguf && notok "imatrix: other windows" "the same bytes for 2 and 4 windows" || ok "imatrix: other windows, other sums"
t_ok "convert --imatrix takes it" "$MK" convert m w.gguf --type q4_k_m --imatrix im.gguf -q
"$MK" convert m p.gguf --type q4_k_m -q
cmp -s w.gguf p.gguf && notok "convert --imatrix: the importances matter" "same bytes" || ok "convert --imatrix: the importances matter"

# the legacy layout
t_ok "imatrix -o X.dat" "$MK" imatrix m --text text.txt -o im.dat --ctx 128 --chunks 4 -q
[ "$(head -c 4 im.dat | od -An -tu4 | tr -d ' ')" = 14 ] && ok "imatrix .dat: 14 entries" || notok "imatrix .dat: 14 entries" "$(head -c 4 im.dat | od -An -tu4)"
t_ok "--in-file GGUF to .dat" "$MK" imatrix --in-file im.gguf -o rt.dat -q
t_same "GGUF -> .dat: the run's own .dat bytes" rt.dat im.dat
t_ok "--in-file .dat to GGUF" "$MK" imatrix --in-file im.dat -o rt.gguf --ctx 128 -q
t_same ".dat -> GGUF: the run's own GGUF bytes (sums and counts identical)" rt.gguf im.gguf
"$MK" imatrix m --text text.txt -o fmt.bin --output-format dat --ctx 128 --chunks 4 -q
t_same "--output-format dat" fmt.bin im.dat
t_ok "convert --imatrix X.dat" "$MK" convert m wd.gguf --type q4_k_m --imatrix im.dat -q
t_same "convert: the same bytes with the .dat as with the GGUF" wd.gguf w.gguf
S="--format int4 --method search --group-size 32"
"$MK" quantize m qg $S --imatrix im.gguf -q && "$MK" quantize m qd $S --imatrix im.dat -q
t_same "quantize --method search: the same bytes with the .dat" qd/model.safetensors qg/model.safetensors
"$MK" quantize m o --target-bpw 5 --sensitivity imatrix --imatrix im.gguf --dry-run --json 2>/dev/null | grep -v '"imatrix"' >sg.json
"$MK" quantize m o --target-bpw 5 --sensitivity imatrix --imatrix im.dat --dry-run --json 2>/dev/null | grep -v '"imatrix"' >sd.json
[ -s sg.json ] && cmp -s sg.json sd.json && ok "--sensitivity imatrix: the same plan with the .dat" ||
    notok "--sensitivity imatrix with the .dat" "$(diff sg.json sd.json | head -n 3 | tr '\n' ' ')"

# llama.cpp's legacy layout of GGUF imatrices (tools/gen-golden-imatrix-dat.py)
t_ok "--in-file the w256 golden GGUF" "$MK" imatrix --in-file "$ROOT/tests/golden/gguf/imatrix-w256.gguf" -o w256.dat -q
t_same "the w256 .dat byte for byte llama.cpp's layout" w256.dat "$GI/imatrix-w256.dat"
t_ok "--in-file the MoE golden GGUF" "$MK" imatrix --in-file "$GI/moe.gguf" -o moe.dat -q
"$MK" imatrix --in-file moe.dat -o moe-ours.gguf --ctx 16 -q && "$MK" imatrix --in-file "$GI/moe.dat" -o moe-want.gguf --ctx 16 -q
t_ok "the MoE .dat within $DAT_ULP ulp of llama.cpp's (sums, counts, names)" "$MK" compare moe-ours.gguf moe-want.gguf --max-ulp $DAT_ULP -q
"$MK" synth m256 --hidden 256 --intermediate 512 --layers 2 --heads 4 --kv-heads 1 --vocab 300 --dtype float32 -q
"$MK" convert m256 gw.gguf --type q4_k_m --imatrix "$ROOT/tests/golden/gguf/imatrix-w256.gguf" -q
t_ok "convert --imatrix llama.cpp's .dat" "$MK" convert m256 dw.gguf --type q4_k_m --imatrix "$GI/imatrix-w256.dat" -q
# the same tensors but blk.0.attn_v, whose count 0 (importance 1) the .dat leaves out
"$MK" inspect gw.gguf --hashes -q | awk '/@/ { print $1, $NF }' | sort >gw.h && "$MK" inspect dw.gguf --hashes -q | awk '/@/ { print $1, $NF }' | sort >dw.h
n=$(comm -3 gw.h dw.h | wc -l)
if [ "$n" -eq 2 ] && ! comm -3 gw.h dw.h | grep -q -v 'layers\.0\.self_attn\.v_proj'; then
    ok "convert: llama.cpp's .dat gives the GGUF's bytes but for the matrix it leaves out"
else
    notok "convert with llama.cpp's .dat" "$n tensor lines differ: $(comm -3 gw.h dw.h | head -n 4 | tr '\n' ' ')"
fi

# --process-output: lm_head's input, as output.weight; none for tied embeddings
t_ok "--process-output" "$MK" imatrix m --text text.txt -o po.gguf --ctx 128 --chunks 2 --process-output -q
"$MK" inspect po.gguf 2>/dev/null | grep -q -E '^  output\.weight\.in_sum2 +F32 +\[1, 256\]' && ok "--process-output: output.weight's 256 sums" ||
    notok "--process-output" "no output.weight.in_sum2 [1, 256]"
"$MK" inspect im.gguf 2>/dev/null | grep -q '^  output\.weight' && notok "no output.weight by default" "present" || ok "no output.weight by default"
"$MK" synth tied --hidden 64 --layers 1 --heads 4 --kv-heads 2 --vocab 300 --dtype float32 --tie -q
"$MK" imatrix tied --text text.txt -o tied.gguf --ctx 128 --chunks 1 --process-output 2>tied.err
if grep -q "lm_head is tied to the embeddings: no output.weight" tied.err && ! "$MK" inspect tied.gguf 2>/dev/null | grep -q '^  output\.'; then
    ok "--process-output on tied embeddings: a warning, no output.weight"
else
    notok "--process-output, tied" "$(cat tied.err)"
fi

# a mixture of experts (4 experts, 2 a token): per-expert sums and counts under llama.cpp's names
"$MK" synth base --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 96 --vocab 300 --dtype float32 --std 0.3 -q
for i in 1 2 3 4; do "$MK" synth "e$i" --finetune-of base --delta 0.5 --seed $((i + 1)) -q; done
printf 'base_model: base/\ngate_mode: random\ndtype: float32\nexperts_per_token: 2\nexperts:\n' >moe.yaml
for i in 1 2 3 4; do printf '  - source_model: e%s/\n    positive_prompts: ["tok%s"]\n' "$i" "$i" >>moe.yaml; done
"$MK" moe moe.yaml mx --seed 3 -q
t_ok "imatrix of a Mixtral" "$MK" imatrix mx --text text.txt -o mx.gguf --ctx 64 --chunks 3 -q
"$MK" inspect mx.gguf 2>/dev/null | sed -n 's/^  \(blk\.[01]\.ffn_[a-z_]*\.weight\.[a-z0-9_]*\) *F32 *\(\[[0-9, ]*\]\).*/\1 \2/p' | sort >mx.txt
for l in 0 1; do printf 'blk.%s.ffn_%s.weight.%s\n' $l down_exps 'counts [4, 1]' $l down_exps 'in_sum2 [4, 96]' $l gate_exps 'counts [4, 1]' \
    $l gate_exps 'in_sum2 [4, 64]' $l gate_inp 'counts [1, 1]' $l gate_inp 'in_sum2 [1, 64]' $l up_exps 'counts [4, 1]' $l up_exps 'in_sum2 [4, 64]'; done | sort >mx.want
t_same "Mixtral: router and ffn_{gate,up,down}_exps with one row and count per expert" mx.txt mx.want
"$MK" imatrix mx --text text.txt -o mx1.gguf --ctx 64 --chunks 3 -q -j1
t_same "Mixtral imatrix: the same bytes at one thread" mx1.gguf mx.gguf
t_ok "Mixtral imatrix as .dat" "$MK" imatrix mx --text text.txt -o mx.dat --ctx 64 --chunks 3 -q

t_fail "no --text" 2 "MODEL, --text FILE and -o OUT are required" "$MK" imatrix m -o x.gguf
t_fail "OUT exists" 2 "im.gguf already exists" "$MK" imatrix m --text text.txt -o im.gguf --ctx 128
t_fail "a text shorter than one window" 2 "fewer than one window of 4096" "$MK" imatrix m --text text.txt -o x.gguf --ctx 4096
t_fail "bad --ctx" 2 "--ctx 1: must be 2" "$MK" imatrix m --text text.txt -o x.gguf --ctx 1
"$MK" synth g --arch gemma --hidden 64 --layers 1 --heads 4 --kv-heads 1 --vocab 300 -q
t_fail "an architecture without llama.cpp names" 1 "model_type 'gemma' has no llama.cpp tensor names" "$MK" imatrix g --text text.txt -o x.gguf --ctx 64
t_fail "--in-file with a model" 2 "--in-file converts a file: no MODEL or --text" "$MK" imatrix m --in-file im.gguf -o x.gguf
t_fail "a bad --output-format" 2 "--output-format csv: gguf or dat" "$MK" imatrix --in-file im.gguf -o x.gguf --output-format csv
printf '\001\000\000\000\377\377\377\3770123456789abcdef' >bad.dat
t_fail "a bad .dat" 1 "bad.dat: legacy imatrix entry 0: name length -1" "$MK" imatrix --in-file bad.dat -o x.gguf
t_fail "convert --imatrix with a bad .dat" 1 "bad.dat: legacy imatrix entry 0: name length -1" "$MK" convert m x.gguf --type q4_k --imatrix bad.dat
t_fail "--in-file OUT exists" 2 "im.dat already exists" "$MK" imatrix --in-file im.gguf -o im.dat
t_absent "nothing written on errors" x.gguf x.gguf.tmp
