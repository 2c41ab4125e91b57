#!/bin/sh
# tokenize: a synth model's tokenizer through the model folder, a .mkz container and a bare
# tokenizer.json; decode; errors. Then SmolLM2's real tokenizer against the ids Hugging Face
# tokenizers gives (tests/golden/tokenizer/smollm2/, tools/gen-golden-tokenizer.py) when
# tools/get-smollm2.sh has fetched it; otherwise each check prints "skip - ...".
. "$(dirname "$0")/lib.sh"

G="$ROOT/tests/golden/tokenizer"
tab=$(printf '\t')

# t_out NAME WANT CMD...: the command succeeds and prints exactly WANT
t_out() {
    _n=$1; _w=$2; shift 2
    _g=$("$@" 2>"$T/.err")
    _rc=$?
    if [ $_rc -ne 0 ]; then notok "$_n" "exit $_rc: $(head -c 300 "$T/.err")"
    elif [ "$_g" != "$_w" ]; then notok "$_n" "got '$(printf '%s' "$_g" | head -c 300)', want '$(printf '%s' "$_w" | head -c 300)'"
    else ok "$_n"; fi
}

# hex_to_file HEX FILE: the bytes (any, NUL and newlines included)
hex_to_file() {
    _fmt=$(printf '%s' "$1" | LC_ALL=C awk '{
        for (i = 1; i < length($0); i += 2) {
            v = (index("0123456789abcdef", substr($0, i, 1)) - 1) * 16 + index("0123456789abcdef", substr($0, i + 1, 1)) - 1
            printf "\\%03o", v
        }
    }')
    printf "$_fmt" >"$2"
}

"$MK" synth m/ --hidden 64 --layers 1 --heads 4 --kv-heads 2 --intermediate 128 --vocab 300 -q || exit 1

# WordLevel over "tokN" words: tokN -> N, <s> is added token 1, anything else <unk> (0)
t_out "tokenize a synth model folder" "3 17 299 1 0 0" "$MK" tokenize m/ --ids tok3 tok17 tok299 "<s>" tok300 x
t_out "default output: ids and count" "$(printf '5 1\n2 tokens')" "$MK" tokenize m/ tok5 "<s>"
t_out "-v: id and token per line" "$(printf '5\t"tok5"\n0\t"<unk>"\n2 tokens')" "$MK" tokenize m/ -v tok5 zz
t_out "--json" '{"tokens": 2, "ids": [7, 8]}' sh -c "'$MK' tokenize m/ --json tok7 tok8 | sed 's/\"bytes\": [0-9]*, \"seconds\": [0-9.]*, //'"
"$MK" pack m/ m.mkz -q
t_out "tokenize a .mkz container (tokenizer.json read through the source)" "3 17 1" "$MK" tokenize m.mkz --ids tok3 tok17 "<s>"
mkdir tok_only && cp m/tokenizer.json m/tokenizer_config.json tok_only/
t_out "a folder with tokenizer files only" "42" "$MK" tokenize tok_only --ids tok42
t_out "a tokenizer.json path" "42 2" "$MK" tokenize m/tokenizer.json --ids tok42 "</s>"
printf 'tok4 tok5\ntok6' >in.txt
t_out "--text FILE" "4 5 6" "$MK" tokenize m/ --ids --text in.txt
t_out "--text - reads standard input" "4 5 6" sh -c "'$MK' tokenize m/ --ids --text - <in.txt"
t_out "--decode (no decoder: tokens joined by spaces)" "tok3 tok17 <s>" "$MK" tokenize m/ --decode 3,17,1
t_out "--decode --no-special drops special tokens" "tok3 tok17" "$MK" tokenize m/ --decode "3 17 1" --no-special
t_out "--pieces: what the model sees" "$(printf '"a"\n"-"\n"b"')" "$MK" tokenize m/ --pieces "a -b" --no-special

# added tokens and BOS of a Llama-2 style tokenizer (golden fixture), through the CLI
t_out "BOS from the template, --no-special without it" "$("$MK" tokenize "$G/spm-llama2.json" --ids --no-special hello | sed 's/^/1 /')" \
    "$MK" tokenize "$G/spm-llama2.json" --ids hello

# errors: one line, nonzero exit, nothing on stdout
rm m/tokenizer.json
t_fail "a model without tokenizer.json" 2 "m/: the model has no tokenizer.json" "$MK" tokenize m/ x
printf '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}' >bad.json
t_fail "a merge naming an unknown token" 1 "bad.json: model.merges\[0\]: 'b' is not in the vocabulary" "$MK" tokenize bad.json x
printf '{"model": {"type": "WordLevel", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\\\d+"}, "behavior": "Isolated", "invert": false}}' >re.json
t_fail "an unknown Split regex" 1 "re.json: pre_tokenizer.pattern.Regex: .* is not a known split pattern" "$MK" tokenize re.json x
printf '{"model": ' >trunc.json
t_fail "truncated JSON" 1 "trunc.json: invalid JSON" "$MK" tokenize trunc.json x
t_fail "an id out of range" 2 "token id 5000 at position 1 is out of range" "$MK" tokenize tok_only --decode 1,5000
t_fail "--decode with text" 2 "--decode takes no TEXT" "$MK" tokenize tok_only --decode 1 x
t_fail "not a list of ids" 2 "is not a list of token ids" "$MK" tokenize tok_only --decode 1,x
t_fail "no such input" 1 "nope" "$MK" tokenize nope/ x

# ---- SmolLM2-135M-Instruct's tokenizer (from its GGUF) against Hugging Face tokenizers ------
SM=${MK_SMOLLM2:-"$ROOT/.models/smollm2"}
want_sha=$(sed -n 's/.*"tokenizer_json_sha256": "\([0-9a-f]*\)".*/\1/p' "$G/MANIFEST.json")
if [ ! -f "$SM/tokenizer.json" ]; then
    echo "skip - smollm2 tokenizer: $SM is absent (run tools/get-smollm2.sh)"
elif [ "$(sha256sum "$SM/tokenizer.json" | cut -d' ' -f1)" != "$want_sha" ]; then
    echo "skip - smollm2 tokenizer: $SM/tokenizer.json is not the one the goldens were made from (SHA-256 $want_sha)"
else
    n=0; bad=0; first=""
    while IFS="$tab" read -r hex ids; do
        n=$((n + 1))
        if [ "$hex" = "-" ]; then : >s.txt; else hex_to_file "$hex" s.txt; fi
        got=$("$MK" tokenize "$SM" --text s.txt --ids 2>&1)
        if [ "$got" != "$ids" ]; then
            bad=$((bad + 1))
            [ -z "$first" ] && first="string $n ($hex): got '$got', want '$ids'"
        fi
    done <"$G/smollm2/hard.tsv"
    if [ $bad -eq 0 ] && [ $n -ge 60 ]; then ok "smollm2: ids of $n hard strings as tokenizers"
    else notok "smollm2: hard strings" "$bad of $n differ; first: $first"; fi
    while IFS="$tab" read -r path sha ids; do
        name="smollm2: $path"
        if [ ! -f "$path" ]; then
            echo "skip - $name: the file is absent on this machine"
            continue
        fi
        if [ "$(sha256sum "$path" | cut -d' ' -f1)" != "$sha" ]; then
            echo "skip - $name: its SHA-256 differs from the one the goldens were made from ($sha)"
            continue
        fi
        got=$("$MK" tokenize "$SM" --text "$path" --ids 2>&1)
        if [ "$got" = "$ids" ]; then
            ok "$name: $(echo "$ids" | wc -w) ids as tokenizers"
        else
            # the first differing position
            echo "$got" | tr ' ' '\n' >got.ids
            echo "$ids" | tr ' ' '\n' >want.ids
            notok "$name" "ids differ: $(cmp got.ids want.ids 2>&1 | head -n 1)"
        fi
        "$MK" tokenize "$SM" --decode "$got" >dec.txt 2>&1
        { cat "$path"; echo; } >want.txt
        if cmp -s want.txt dec.txt; then ok "$name: decode(encode(text)) is the text"
        else notok "$name: decode" "$(cmp want.txt dec.txt 2>&1 | head -n 1)"; fi
    done <"$G/smollm2/texts.tsv"
fi
