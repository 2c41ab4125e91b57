# tokmerge.sh - merges of models whose vocabularies differ (tokenizer_source union / base /
# model), against mergekit's outputs (tests/golden/tokmerge, made by
# tools/gen-golden-tokmerge.py with the versions in its manifest).
# Tolerance: exact. The vocabulary rows are gathered by token and merged in f32 as mergekit
# does; the golden is mergekit's output with a union's appended tokens relabelled into
# mergekit-c's order (mergekit's own order follows a hash map and changes between runs).
. "$MK_ROOT/tests/e2e/lib.sh"
G=$ROOT/tests/golden/tokmerge
M=$G/manifest.txt

grep '^synth ' "$M" | while read -r c; do $MK $c || exit 1; done
# b's vocabulary: tok30..tok39 renamed bee30..bee39, tok3 and tok4 swap ids (edit-b in the generator)
sed -i -e 's/"tok3\([0-9]\)":/"bee3\1":/g' -e 's/"tok3": 3,/"tok4": 3,/' -e 's/"tok4": 4,/"tok3": 4,/' b/tokenizer.json
printf '%s\n%s' "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}" "{% endfor %}" >b/chat_template.jinja
t_ok "inputs with different vocabularies" grep -q '"bee35": 35' b/tokenizer.json

for name in $(grep '^case ' "$M" | awk '{print $2}'); do
    "$MK" "$G/$name/recipe.yaml" "out-$name" -q >"$T/.err" 2>&1 || { notok "merge $name" "$(cat "$T/.err")"; continue; }
    # every tensor, the vocabulary rows included, equals mergekit's bit for bit (compare
    # prints the worst element when one differs); pad rows: PAD_REL = 1e-6 x the tensor's largest value (mean summed in double
    # here, by torch.mean there)
    if [ "$name" = pad ]; then tol="--rel 1e-6"; what="within rel 1e-6 (pad rows)"; else tol=; what="bit for bit"; fi
    t_ok "$name: weights equal mergekit's $what" "$MK" compare $tol "out-$name/model.safetensors" "$G/$name/expected.safetensors"
    n=$(grep -c . "$G/$name/vocab.txt")
    rows=$n
    [ "$name" = pad ] && rows=64
    t_ok "$name: config.json vocab_size $rows" grep -q "\"vocab_size\": $rows," "out-$name/config.json"
    # the merged tokenizer: each golden token encodes to its golden id, and the corpus to
    # the ids HF tokenizers gives with mergekit's merged tokenizer
    bad=
    i=0
    while read -r tok; do
        got=$("$MK" tokenize "out-$name" --ids --no-special -- "$tok" 2>&1)
        [ "$got" = "$i" ] || bad="$bad $tok:$got(want $i)"
        i=$((i + 1))
    done <"$G/$name/vocab.txt"
    if [ -z "$bad" ]; then ok "$name: merged vocabulary equals mergekit's ($n tokens)"; else notok "$name: merged vocabulary" "$bad"; fi
    bad=
    exec 3<"$G/$name/ids.txt"
    while read -r line; do
        read -r want <&3
        got=$("$MK" tokenize "out-$name" --ids --no-special -- "$line" 2>&1)
        [ "$got" = "$want" ] || bad="$bad [$line] got '$got' want '$want'"
    done <"$G/corpus.txt"
    exec 3<&-
    if [ -z "$bad" ]; then ok "$name: corpus encodes as HF tokenizers does"; else notok "$name: corpus ids" "$bad"; fi
    # chat_template: the one transformers loads from mergekit's output
    [ -f "$G/$name/chat_template.jinja" ] &&
        t_ok "$name: chat_template.jinja is mergekit's" cmp "out-$name/chat_template.jinja" "$G/$name/chat_template.jinja"
done

# conflicting and bad tokenizer settings: one line, nothing written
printf 'merge_method: linear\nmodels:\n  - model: a/\n    parameters: {weight: 1}\n  - model: b/\n    parameters: {weight: 1}\ntokenizer_source: c/\n' >bad-src.yaml
t_fail "tokenizer_source naming no model" 2 "bad-src.yaml:7:19: tokenizer_source" "$MK" bad-src.yaml out-bad -q
t_absent "nothing written for a bad tokenizer_source" out-bad out-bad.tmp
mkdir notok && cp a/config.json a/model.safetensors notok/
printf 'merge_method: linear\nmodels:\n  - model: a/\n    parameters: {weight: 1}\n  - model: notok/\n    parameters: {weight: 1}\ntokenizer_source: union\n' >no-tok.yaml
"$MK" no-tok.yaml out-notok -q >/dev/null 2>"$T/.e2"
rc=$?
if [ $rc -eq 0 ]; then ok "a model without tokenizer.json is read as the base's vocabulary (as mergekit does)"; else notok "model without tokenizer.json" "exit $rc: $(cat "$T/.e2")"; fi

# tokenizer: tokens entries that conflict or cannot be met: one line with the position, exit 2
bad_tok() { # NAME PATTERN TOKENS-YAML
    printf 'merge_method: linear\nmodels:\n  - model: a/\n    parameters: {weight: 1}\n  - model: b/\n    parameters: {weight: 1}\ntokenizer:\n  tokens:\n%s\n' "$3" >bad.yaml
    t_fail "$1" 2 "$2" "$MK" bad.yaml out-badtok -q
    t_absent "$1: nothing written" out-badtok out-badtok.tmp
}
bad_tok "a token listed twice" "bad.yaml:10:5: token 'tok5' has two conflicting entries.*9:5" \
    "$(printf '    tok5: {source: a/}\n    tok5: {source: b/, force: true}')"
bad_tok "model_token with token and token_id" "bad.yaml:9:20: token 'tok5': .*exactly one of token and token_id" \
    "    tok5: {source: {kind: model_token, model: a/, token: tok6, token_id: 6}}"
bad_tok "force with no source" "bad.yaml:9:11: token 'tok5': force needs a source" "    tok5: {force: true}"
bad_tok "a token source naming no model" "bad.yaml:9:20: token source 'c/' is not one of the recipe's models" \
    "    tok5: {source: c/}"
bad_tok "a model_token source the model lacks" "bad.yaml:9:47: token 'tok5': model b/ has no token 'tok35'" \
    "    tok5: {source: {kind: model_token, model: b/, token: tok35}}"
printf 'merge_method: linear\nmodels:\n  - model: a/\n    parameters: {weight: 1}\nchat_template: chatml\n' >bad-chat.yaml
t_fail "a bundled chat template name" 2 "bad-chat.yaml:5:16: chat_template 'chatml' .*not supported yet" "$MK" bad-chat.yaml out-chat -q
printf 'merge_method: linear\nmodels:\n  - model: a/\n    parameters: {weight: 1}\nchat_template: hello\n' >bad-chat.yaml
t_fail "a chat template that is no template" 2 "bad-chat.yaml:5:16: chat_template 'hello' is not 'auto' nor a Jinja template" "$MK" bad-chat.yaml out-chat -q
t_absent "nothing written for a bad chat_template" out-chat out-chat.tmp
