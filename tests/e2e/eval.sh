# eval.sh - `mergekit-c eval`: perplexity and KL divergence on synthetic models (word-level
# tokenizers: the text is made of their tokens), every input format, the bad inputs; and on
# SmolLM2-135M when tools/get-smollm2.sh has fetched it: our perplexity on a Debian text against
# transformers' (tests/golden/eval/, tools/check-ppl.py), and NF4 closer to the original than int4.
. "$MK_ROOT/tests/e2e/lib.sh"

# json_num FILE KEY: the first number after "KEY": in FILE
json_num() { sed -n "s/.*\"$2\": \([-0-9.e+]*\).*/\1/p" "$1" | head -n 1; }
# awk_true EXPR: the awk expression holds
awk_true() { awk "BEGIN { exit !($1) }"; }

"$MK" synth base/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 128 --dtype float32 --std 0.3 \
    --seed 1 -q &&
    "$MK" synth ft1/ --finetune-of base/ --delta 0.3 --seed 2 -q &&
    "$MK" synth ft2/ --finetune-of base/ --delta 0.3 --seed 3 -q || { notok "synth" "could not make the models"; exit 1; }
# 1,200 words of the models' vocabulary (tok3 .. tok127), a repeating but not periodic pattern
awk 'BEGIN { x = 7; for (i = 0; i < 1200; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "tok%d ", 3 + (x % 125) } print "" }' >text.txt

t_ok "eval runs" "$MK" eval base/ --text text.txt --ctx 64 --json
cp "$T/.out" base.json
ppl=$(json_num base.json ppl)
if [ -n "$ppl" ] && awk_true "$ppl > 1 && $ppl < 1e9"; then ok "perplexity is a finite number above 1 ($ppl)"; else notok "perplexity" "got '$ppl'"; fi
w=$(json_num base.json windows)
[ "$w" = 18 ] && ok "1,200 tokens make 18 windows of 64" || notok "windows" "got $w"
sc=$(json_num base.json scored)
[ "$sc" = $((18 * 31)) ] && ok "31 scored positions per window of 64 (the second half)" || notok "scored" "got $sc"

# a text the tokenizer does not cover: a warning with the share of unknown tokens, and no bits
# per byte (the scored tokens decode to no text), rather than a made-up 0
awk 'BEGIN { for (i = 0; i < 300; i++) printf "word%d ", i; print "" }' >unk.txt
t_ok "eval on a text of unknown words" "$MK" eval base/ --text unk.txt --ctx 64 --json
if grep -q "unk.txt: 300 of its 300 tokens (100 %) are the unknown token '<unk>'" "$T/.err" &&
    grep -q '"bits_per_byte": null' "$T/.out"; then
    ok "... warns of the unknown tokens; bits per byte is null"
else
    notok "... warns of the unknown tokens; bits per byte is null" "$(head -c 300 "$T/.err") $(grep -o '"bits_per_byte": [^,]*' "$T/.out")"
fi
"$MK" eval base/ --text unk.txt --ctx 64 >unk.out 2>/dev/null
grep -q "bits per byte n/a" unk.out && ok "... n/a in the text report" || notok "bits per byte n/a" "$(head -n 2 unk.out)"
t_ok "a covered text gives no such warning" "$MK" eval base/ --text text.txt --ctx 64
grep -q "unknown token" "$T/.err" && notok "no unknown-token warning" "$(cat "$T/.err")" || ok "... none"

# against itself: no divergence
t_ok "eval against itself" "$MK" eval base/ --text text.txt --ctx 64 --ref base/ --json
cp "$T/.out" self.json
kl=$(json_num self.json kl_mean)
st=$(json_num self.json same_top)
pr=$(json_num self.json ppl_ratio)
if awk_true "$kl == 0 && $st == 1 && $pr == 1"; then ok "KL 0, same top 100 %, PPL ratio 1 against itself"
else notok "against itself" "kl $kl same_top $st ratio $pr"; fi

# a merge between two parents is closer to each than they are to each other
printf 'merge_method: linear\nmodels:\n  - model: ft1/\n    parameters: {weight: 0.5}\n  - model: ft2/\n    parameters: {weight: 0.5}\ndtype: float32\n' >mid.yaml
"$MK" mid.yaml mid/ -q
t_ok "eval a merge against its parents" "$MK" eval mid/ --text text.txt --ctx 64 --ref ft1/ --ref ft2/ --json
cp "$T/.out" mid.json
k1=$(sed -n 's/.*"ref": "ft1\/", "kl_mean": \([-0-9.e+]*\).*/\1/p' mid.json)
pair=$(sed -n 's/.*"between_refs".*"kl_mean": \([-0-9.e+]*\).*/\1/p' mid.json)
if [ -n "$k1" ] && [ -n "$pair" ] && awk_true "$k1 > 0 && $k1 < $pair"; then
    ok "KL(ft1 || merge) $k1 is below KL(ft1 || ft2) $pair"
else notok "merge between its parents" "KL to ft1 '$k1', between the parents '$pair'"; fi
t_ok "merge --eval-text reports against the inputs" "$MK" mid.yaml mid2/ --eval-text text.txt --eval-ctx 64 -q
"$MK" mid.yaml mid3/ --eval-text text.txt --eval-ctx 64 >/dev/null 2>mid3.err
grep -q "against ft1/" mid3.err && grep -q "between the references" mid3.err && ok "merge --eval-text: KL to each parent, and between them" ||
    notok "merge --eval-text report" "$(head -c 300 mid3.err)"

# every input format: a container and a quantized checkpoint run directly
"$MK" pack base/ base.mkz -q
t_ok "eval a .mkz container" "$MK" eval base.mkz --text text.txt --ctx 64 --json
[ "$(json_num "$T/.out" ppl)" = "$ppl" ] && ok "the container gives the folder's perplexity" || notok "mkz ppl" "$(json_num "$T/.out" ppl) vs $ppl"
"$MK" quantize base/ q8/ --format int8 --target compressed-tensors -q
"$MK" quantize base/ q4/ --format int4 --group-size 32 -q
t_ok "eval quantized checkpoints against the original" "$MK" eval q8/ --text text.txt --ctx 64 --ref base/ --json
kq8=$(json_num "$T/.out" kl_mean)
"$MK" eval q4/ --text text.txt --ctx 64 --ref base/ --json >q4.json 2>/dev/null
kq4=$(json_num q4.json kl_mean)
if awk_true "$kq8 > 0 && $kq8 < $kq4"; then ok "int8 ($kq8) is closer to the original than int4 ($kq4)"
else notok "quantized KL" "int8 $kq8, int4 $kq4"; fi
t_ok "quantize --eval-text" "$MK" quantize base/ q4e/ --format int4 --group-size 32 --eval-text text.txt --eval-ctx 64 -q

# bad input: one line, nonzero exit, nothing else
mkdir notok && cp base/model.safetensors base/config.json notok/
t_fail "a model without tokenizer.json" 2 "notok.*no tokenizer.json" "$MK" eval notok/ --text text.txt --ctx 64
mkdir alien && cp base/* alien/ && sed -i 's/LlamaForCausalLM/FooForCausalLM/; s/"model_type": "llama"/"model_type": "foo"/' alien/config.json
t_fail "an architecture eval cannot run" 1 "alien.*FooForCausalLM.*not one mergekit-c can run" "$MK" eval alien/ --text text.txt --ctx 64
echo "tok5 tok6 tok7" >short.txt
t_fail "a text shorter than one window" 2 "short.txt: [0-9]+ tokens, fewer than one window of 64" "$MK" eval base/ --text short.txt --ctx 64
"$MK" synth other/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 96 --seed 4 -q
t_fail "a --ref with another vocabulary" 2 "vocabulary of 96 tokens.*128" "$MK" eval base/ --text text.txt --ctx 64 --ref other/
t_fail "no --text" 2 "--text FILE is required" "$MK" eval base/
t_fail "a missing text file" 1 "nothere.txt" "$MK" eval base/ --text nothere.txt

# the real model
SM=${MK_SMOLLM2:-"$ROOT/.models/smollm2"}
G="$ROOT/tests/golden/eval/smollm2-gpl3.json"
text=$(sed -n 's/.*"text": "\([^"]*\)".*/\1/p' "$G")
want_sha=$(sed -n 's/.*"text_sha256": "\([0-9a-f]*\)".*/\1/p' "$G")
if [ ! -f "$SM/model.safetensors" ]; then
    echo "skip - smollm2 perplexity: $SM is absent (run tools/get-smollm2.sh)"
elif [ ! -f "$text" ] || [ "$(sha256sum "$text" | cut -d' ' -f1)" != "$want_sha" ]; then
    echo "skip - smollm2 perplexity: $text is absent or not the text the golden was made from"
else
    chunks=$(json_num "$G" windows)
    "$MK" eval "$SM" --text "$text" --chunks "$chunks" --json >sm.json 2>sm.err || notok "smollm2 eval" "$(cat sm.err)"
    got=$(json_num sm.json ppl)
    want=$(json_num "$G" ppl_transformers)
    if awk_true "($got - $want) / $want < 0.001 && ($want - $got) / $want < 0.001"; then
        ok "smollm2 on $text: PPL $got, transformers $want (within 0.1 %)"
    else notok "smollm2 perplexity" "got $got, transformers $want"; fi
    # int4 in groups of 64 as NF4's blocks: the default 128 does not divide SmolLM2's 576-wide rows,
    # and those weights would stay unquantized
    "$MK" quantize "$SM" sm-nf4/ --format nf4 -q && "$MK" quantize "$SM" sm-int4/ --format int4 --group-size 64 -q
    "$MK" eval sm-nf4/ --text "$text" --chunks 2 --ref "$SM" --json >nf4.json 2>/dev/null
    "$MK" eval sm-int4/ --text "$text" --chunks 2 --ref "$SM" --json >int4.json 2>/dev/null
    kn=$(json_num nf4.json kl_mean)
    ki=$(json_num int4.json kl_mean)
    if [ -n "$kn" ] && [ -n "$ki" ] && awk_true "$kn > 0 && $kn < $ki"; then ok "smollm2: KL after nf4 ($kn) is below int4 g64's ($ki)"
    else notok "smollm2 nf4 vs int4" "nf4 '$kn', int4 '$ki'"; fi
fi
