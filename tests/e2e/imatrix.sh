#!/bin/sh
# `imatrix`: a synthetic Llama's importance matrix on a text of its tokens is a llama-imatrix
# GGUF file (two tensors per layer matrix: 2 layers x 7), the same bytes at any thread count,
# different for other windows, and `convert --imatrix` takes it (other bytes than without);
# bad input is one line, exit 2 (usage, existing OUT) or 1, and nothing written. Its values
# against PyTorch forward hooks: tools/compat-imatrix.sh (make compat).
. "$MK_ROOT/tests/e2e/lib.sh"

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

t_fail "no --text" 2 "MODEL, --text FILE and -o OUT are required" "$MK" imatrix m -o x.gguf
t_fail "OUT exists" 2 "im.gguf already exists" "$MK" imatrix m --text text.txt -o im.gguf --ctx 128
t_fail "a text shorter than one window" 2 "fewer than one window of 4096" "$MK" imatrix m --text text.txt -o x.gguf --ctx 4096
t_fail "bad --ctx" 2 "--ctx 1: must be 2" "$MK" imatrix m --text text.txt -o x.gguf --ctx 1
"$MK" synth g --arch gemma --hidden 64 --layers 1 --heads 4 --kv-heads 1 --vocab 300 -q
t_fail "an architecture without llama.cpp names" 1 "model_type 'gemma' has no llama.cpp tensor names" "$MK" imatrix g --text text.txt -o x.gguf --ctx 64
t_absent "nothing written on errors" x.gguf x.gguf.tmp
