#!/bin/sh
# convert --target-bpw: llama.cpp types per matrix under a budget on a synthetic Llama (4
# layers, rows of 256 and 512 values, and one of 160-value rows where the k-quants fall back):
# the achieved bits per weight within 0.02 below the target, the allocation no worse than any
# single candidate type within the budget (on its own objective), one JSON document, every
# tensor byte-identical to `convert --type` where that gives it the same type (the output
# matrix q6_k), the allocation in the GGUF metadata, the same file at -j 1 and 3 and in 2
# parts + finalize, --sensitivity imatrix (another allocation, its bytes those of convert
# --imatrix), usage errors exit 2; SmolLM2 (skipped when absent) at q4_k_m's budget. llama.cpp loading the file: tools/compat-gguf.sh.
. "$MK_ROOT/tests/e2e/lib.sh"
JC=${MK_JSONCHECK:-$ROOT/build/jsoncheck}
"$MK" synth m --hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 512 --vocab 256 --seed 5 --dtype float32 -q ||
    { notok "synth" "failed"; exit 0; }
"$MK" synth w --hidden 160 --layers 2 --heads 5 --kv-heads 5 --intermediate 320 --vocab 128 --seed 6 --dtype float32 -q

num() { head -n 1 "$2" | sed -n "s/^{\"kind\"[^[]*\"$1\": \([-0-9.e+]*\).*/\1/p"; }
# "NAME@TYPE xxh3" of every tensor
th() { tensor_hashes "$1" 2>/dev/null | sort; }

for model in m w; do
    budgets="3.2 4.5 5.6"
    [ $model = w ] && budgets="4.8 5.6 6.5" # q4_0 (4.5) at least, the q8_0 output matrix a fifth
    for b in $budgets; do
        if ! "$MK" convert $model o.gguf --target-bpw "$b" --dry-run --json >a.json 2>a.err; then
            notok "$model: --target-bpw $b" "$(tail -n 2 a.err)"
            continue
        fi
        [ -x "$JC" ] && { "$JC" <a.json >/dev/null 2>&1 || notok "$model: --target-bpw $b --json" "not one JSON document"; }
        alloc_budget "$model: --target-bpw $b" "$b" "$(num bpw a.json)" a.json
    done
done
grep -q '"name": "blk.0.ffn_up.weight", "numel": 51200, "type": "q[0-9a-z_]*", "fixed": false, .*"options": \[{"candidate": "q2_k", "type": "Q4_0"' a.json &&
    grep -q '"name": "output.weight", "numel": 20480, "type": "q8_0", "fixed": true' a.json &&
    ok "--json: each matrix with its options (160-value rows: q2_k falls back to q4_0; the output matrix q8_0)" ||
    notok "--json: each matrix with its options" "$(grep -m 1 blk.0.ffn_up a.json | head -c 300)"

# the bytes: every tensor as `convert --type` writes it where that type is its type there
t_ok "write the allocation at 4.5" "$MK" convert m o.gguf --target-bpw 4.5 -q
: >ref.txt
for t in q2_k q3_k_s q3_k_m q4_k_s q4_k_m q5_k_s q5_k_m q6_k q8_0 f16; do
    "$MK" convert m "r-$t.gguf" --type "$t" -q && th "r-$t.gguf" >>ref.txt
done
sort -u ref.txt -o ref.txt
th o.gguf >got.txt
types=$(sed 's/^[^@ ]*@\([A-Z0-9_]*\) .*/\1/; t; d' got.txt | sort -u | tr '\n' ' ')
miss=$(comm -23 got.txt ref.txt)
if [ -s got.txt ] && [ -z "$miss" ] && [ "$(echo "$types" | wc -w)" -ge 2 ]; then
    ok "4.5: all $(wc -l <got.txt) tensors byte-identical to convert --type's (types: $types)"
else
    notok "4.5: tensors as convert --type" "not found: $(echo "$miss" | head -n 3 | tr '\n' ' '); types $types"
fi
grep -q 'lm_head.weight@Q6_K' got.txt && ok "the output matrix q6_k, as the mixes" || notok "output matrix q6_k" "$(grep lm_head got.txt)"
grep -aq 'mergekit-c.quantize.target_bpw' o.gguf && grep -aq 'mergekit-c.quantize.types' o.gguf &&
    ok "the allocation's keys in the GGUF metadata" || notok "mergekit-c.quantize.* metadata" "absent"
"$MK" inspect o.gguf --json >i.json 2>/dev/null
bpw=$(sed -n 's/.*"quantization": {.*"bits_per_weight": \([0-9.]*\).*/\1/p' i.json | head -n 1)
awk -v g="$bpw" 'BEGIN { exit !(g > 4.48 && g <= 4.5) }' && ok "inspect reads the file back: $bpw bits per weight" ||
    notok "inspect's bits per weight" "'$bpw'"

# determinism: threads, parts
"$MK" convert m j1.gguf --target-bpw 4.5 -q -j 1
"$MK" convert m j3.gguf --target-bpw 4.5 -q -j 3
t_same "the same file with 1 and 3 threads" j1.gguf j3.gguf
t_same "the same file again" j1.gguf o.gguf
"$MK" convert m p.gguf --target-bpw 4.5 --part 2/2 -q 2>p2.err && "$MK" convert m p.gguf --target-bpw 4.5 --part 1/2 -q 2>p1.err &&
    "$MK" finalize p.gguf -q 2>pf.err && cmp -s p.gguf o.gguf && [ ! -e p.gguf.tmp ] &&
    ok "2 parts + finalize: byte-identical to one process" || notok "2 parts + finalize" "$(cat p1.err p2.err pf.err 2>/dev/null | head -n 2)"

# --sensitivity imatrix (the golden importances of tests/e2e/gguf_imatrix.sh's model)
IM=$ROOT/tests/golden/gguf/imatrix-w256.gguf
"$MK" synth v --hidden 256 --intermediate 512 --layers 2 --heads 4 --kv-heads 1 --vocab 300 --dtype float32 -q
t_ok "--sensitivity imatrix" "$MK" convert v vi.gguf --target-bpw 4.5 --imatrix "$IM" --sensitivity imatrix -q
"$MK" convert v vw.gguf --target-bpw 4.5 --imatrix "$IM" -q
: >ref.txt
for t in q2_k q3_k_s q3_k_m q4_k_s q4_k_m q5_k_s q5_k_m q6_k q8_0 f16; do
    "$MK" convert v "ri-$t.gguf" --type "$t" --imatrix "$IM" -q && th "ri-$t.gguf" >>ref.txt
done
sort -u ref.txt -o ref.txt
th vi.gguf >got.txt
miss=$(comm -23 got.txt ref.txt)
[ -s got.txt ] && [ -z "$miss" ] && ok "imatrix: every tensor byte-identical to convert --type T --imatrix's" ||
    notok "imatrix: tensors as convert --imatrix" "$(echo "$miss" | head -n 3 | tr '\n' ' ')"
"$MK" convert v vi.json.gguf --target-bpw 4.5 --imatrix "$IM" --sensitivity imatrix --dry-run --json >vi.json 2>/dev/null
grep -q '"sensitivity": "imatrix"' vi.json && ! cmp -s vi.gguf vw.gguf &&
    ok "imatrix: weighted errors give another allocation than squared errors" || notok "imatrix allocation" "the same file as weight's"

# usage errors: exit 2, one line, nothing written
t_fail "--target-bpw with --type" 2 "not with --type" "$MK" convert m e.gguf --target-bpw 4 --type q4_0
t_fail "--types without --target-bpw" 2 "give --target-bpw" "$MK" convert m e.gguf --types q4_k
t_fail "an unknown type" 2 "'q9_k' is not one of" "$MK" convert m e.gguf --target-bpw 4 --types q4_k,q9_k
t_fail "a type twice" 2 "q4_k is listed twice" "$MK" convert m e.gguf --target-bpw 4 --types q4_k,q4_k
t_fail "a budget below the cheapest" 2 "below the cheapest choice" "$MK" convert m e.gguf --target-bpw 2
t_fail "--sensitivity kld" 2 "expected weight or imatrix" "$MK" convert m e.gguf --target-bpw 4 --sensitivity kld
t_fail "--sensitivity imatrix without --imatrix" 2 "give --imatrix" "$MK" convert m e.gguf --target-bpw 4 --sensitivity imatrix
t_fail "not a number" 2 "expected a number" "$MK" convert m e.gguf --target-bpw 4x
t_absent "no output after the errors" e.gguf e.gguf.tmp

# SmolLM2-135M (tools/get-smollm2.sh): 576-value rows, so only ffn_down takes k-quants, the
# others their 32-value fallbacks; at q4_k_m's 6.1587 bits per weight of the matrices
SM=${MK_SMOLLM2:-"$ROOT/.models/smollm2"}
if [ ! -f "$SM/model.safetensors" ]; then
    echo "skip - smollm2 convert --target-bpw: $SM is absent (run tools/get-smollm2.sh)"
elif "$MK" convert "$SM" s.gguf --target-bpw 6.1587 --types q4_k,q5_k,q6_k,q8_0 --dry-run --json >s.json 2>s.err; then
    alloc_budget "smollm2 convert --target-bpw 6.1587" 6.1587 "$(num bpw s.json)" s.json
else
    notok "smollm2 convert --target-bpw 6.1587" "$(tail -n 2 s.err)"
fi
