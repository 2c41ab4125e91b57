#!/bin/sh
# Regenerates tests/bad/: crafted hostile or broken inputs that mergekit-c must reject with
# one clear error line, exit code 1 or 2, no output folder and no sanitizer report
# (reference/formats-security-compression.md 2.7). Each case is a folder with the inputs,
# `cmd` (the mergekit-c arguments, run inside a copy of the folder) and `expect` (line 1: exit
# code; line 2: an extended regex the error line must match). tests/e2e/bad_corpus.sh replays
# them. Run from the repository root after `make`.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dst="$root/tests/bad"
mk="$root/mergekit-c"
rm -rf "$dst"
mkdir -p "$dst"
n=0

le64() { _n=$1; _i=0; while [ $_i -lt 8 ]; do printf "\\$(printf '%03o' $((_n % 256)))"; _n=$((_n / 256)); _i=$((_i + 1)); done; }
CFG='{"architectures":["LlamaForCausalLM"],"model_type":"llama","num_hidden_layers":1,"vocab_size":8}'

# case NAME CODE REGEX CMD: start a case folder; the caller then fills it (cwd = the folder)
case_dir() {
    n=$((n + 1))
    d="$dst/$(printf '%02d' $n)-$1"
    mkdir -p "$d"
    printf '%s\n%s\n' "$2" "$3" >"$d/expect"
    printf '%s\n' "$4" >"$d/cmd"
    cd "$d"
}
# st NAME REGEX HEADER DATALEN: a model folder m/ whose model.safetensors has this header
st() {
    case_dir "$1" 1 "$2" "inspect m/"
    mkdir m
    printf '%s' "$CFG" >m/config.json
    { le64 ${#3}; printf '%s' "$3"; head -c "$4" /dev/zero; } >m/model.safetensors
}
# st_raw NAME REGEX: m/model.safetensors is the file $in
st_raw() {
    case_dir "$1" 1 "$2" "inspect m/"
    mkdir m
    printf '%s' "$CFG" >m/config.json
    cp "$in" m/model.safetensors
}
T='"dtype":"F32","shape":[1],"data_offsets":[0,4]'
in=$(mktemp)
trap 'rm -f "$in"' EXIT
# one-tensor file image: {"NAME":{T}} + 4 data bytes
one() { _h="{\"$1\":{$T}}"; le64 ${#_h}; printf '%s' "$_h"; head -c 4 /dev/zero; }

# ---- safetensors files ----------------------------------------------------------------------
printf 'abc' >"$in"
st_raw short-file "m/model.safetensors: file is 3 bytes, too short"
{ le64 1000; printf '{}'; } >"$in"
st_raw header-past-end "header length 1000 runs past the end of the file"
{ le64 200000000; printf '{}'; } >"$in"
st_raw header-over-cap "header length 200000000 is over the 100000000-byte limit"
{ printf '\377\377\377\377\377\377\377\377{}'; } >"$in"
st_raw header-len-overflow "is over the 100000000-byte limit"
{ le64 6; printf '{"\377":1}'; } >"$in"
st_raw header-not-utf8 "header: invalid JSON at byte [0-9]+: invalid UTF-8"
st not-json "header: invalid JSON" 'hello' 0
st json-array "header is a JSON array, expected an object" '[1,2,3]' 0
st json-number "header is a JSON number, expected an object" '12' 0
st json-string "header is a JSON string, expected an object" '"x"' 0
st trailing-garbage "trailing characters after the JSON value" "{\"a\":{$T}}xx" 4
st metadata-not-object "__metadata__ is a array, expected an object of strings" "{\"__metadata__\":[1],\"a\":{$T}}" 4
st metadata-not-string "__metadata__ value 'format' is a number, expected a string" "{\"__metadata__\":{\"format\":1},\"a\":{$T}}" 4
st metadata-twice "header names '__metadata__' twice" "{\"__metadata__\":{},\"__metadata__\":{},\"a\":{$T}}" 4
st duplicate-identical "header names 'a' twice" "{\"a\":{$T},\"a\":{$T}}" 4
st duplicate-different "header names 'a' twice" "{\"a\":{$T},\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}" 4
st unknown-dtype "tensor a: unknown dtype 'F33'" '{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}' 4
st lowercase-dtype "tensor a: unknown dtype 'f32'" '{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}' 4
st missing-dtype "tensor a: missing 'dtype'" '{"a":{"shape":[1],"data_offsets":[0,4]}}' 4
st missing-shape "tensor a: missing 'shape'" '{"a":{"dtype":"F32","data_offsets":[0,4]}}' 4
st missing-offsets "tensor a: missing 'data_offsets'" '{"a":{"dtype":"F32","shape":[1]}}' 4
st offsets-one "tensor a: data_offsets has 1 entries, expected 2" '{"a":{"dtype":"F32","shape":[1],"data_offsets":[4]}}' 4
st offsets-three "tensor a: 'data_offsets' has 3 entries" '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}' 4
st negative-dim "tensor a: 'shape' entry 0 is not a non-negative integer" '{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}' 4
st fractional-offset "tensor a: 'data_offsets' entry 1 is not a non-negative integer" '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}}' 4
st exponent-offset "tensor a: 'data_offsets' entry 1 is not a non-negative integer" '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4e0]}}' 4
st huge-integer "tensor a: 'shape' entry 0 is not a non-negative integer" '{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}' 4
st shape-product-overflow "tensor a: shape product overflows" '{"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,4]}}' 4
st byte-size-overflow "tensor a: byte size overflows" '{"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]}}' 4
st end-before-begin "tensor a: data_offsets end 0 is before begin 4" '{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}' 4
st hole-at-start "tensor a: data_offsets begin at 4, leaving a hole after 0" '{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}' 8
st gap "tensor b: data_offsets begin at 8, leaving a hole after 4" "{\"a\":{$T},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}" 12
st overlap "tensor b: data_offsets \[2, 6\) overlap another tensor" "{\"a\":{$T},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}" 8
st aliasing "data_offsets \[0, 4\) overlap another tensor" "{\"a\":{$T},\"b\":{$T},\"c\":{$T},\"d\":{$T}}" 4
st size-mismatch "tensor a: data_offsets cover 4 bytes but F32 \[2\] needs 8" '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}' 4
st data-short "data section is 2 bytes but the tensors cover 4 \(file truncated\)" "{\"a\":{$T}}" 2
st data-long "data section is 9 bytes but the tensors cover 4 \(trailing bytes after the last tensor\)" "{\"a\":{$T}}" 9
st empty-name "a tensor name is empty or contains NUL" "{\"\":{$T}}" 4
st nul-in-name "a tensor name is empty or contains NUL" "{\"a\\u0000b\":{$T}}" 4
st entry-not-object "tensor a: entry is a string, expected an object" '{"a":"F32"}' 0
st too-many-dims "tensor a: 'shape' has 9 entries \(at most 8 supported\)" '{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}' 1
deep=$(printf '%0.s[' $(seq 1 100))$(printf '%0.s]' $(seq 1 100))
st deep-nesting "nesting too deep" "{\"a\":$deep}" 0
st unsupported-dtype "tensor a: mergekit-c does not support dtype 'F8_E8M0'" '{"a":{"dtype":"F8_E8M0","shape":[4],"data_offsets":[0,4]}}' 4

# ---- sharded checkpoints ------------------------------------------------------------------------
# idx NAME REGEX INDEX_JSON: m/ holds two valid shards (tensors a, b) and this index
idx() {
    case_dir "$1" 1 "$2" "inspect m/"
    mkdir m
    printf '%s' "$CFG" >m/config.json
    one a >m/model-00001-of-00002.safetensors
    one b >m/model-00002-of-00002.safetensors
    printf '%s' "$3" >m/model.safetensors.index.json
}
S1=model-00001-of-00002.safetensors
S2=model-00002-of-00002.safetensors
idx index-dotdot "weight_map\[a\] = '../x.safetensors' is not a .safetensors file name inside the model folder" '{"weight_map":{"a":"../x.safetensors"}}'
idx index-absolute "weight_map\[a\] = '/etc/x.safetensors' is not a .safetensors file name" '{"weight_map":{"a":"/etc/x.safetensors"}}'
idx index-subdir "weight_map\[a\] = 'sub/m.safetensors' is not a .safetensors file name" '{"weight_map":{"a":"sub/m.safetensors"}}'
idx index-backslash "is not a .safetensors file name" '{"weight_map":{"a":"..\\x.safetensors"}}'
idx index-drive "weight_map\[a\] = 'C:m.safetensors' is not a .safetensors file name" '{"weight_map":{"a":"C:m.safetensors"}}'
idx index-pickle "weight_map\[a\] = 'pytorch_model.bin' is not a .safetensors file name" '{"weight_map":{"a":"pytorch_model.bin"}}'
idx index-missing-shard "index lists shard 'model-00003-of-00003.safetensors': m/model-00003-of-00003.safetensors: missing" '{"weight_map":{"a":"model-00003-of-00003.safetensors"}}'
idx index-wrong-shard "index maps tensor a to $S2, which does not contain it" "{\"weight_map\":{\"a\":\"$S2\",\"b\":\"$S2\"}}"
idx index-not-json "model.safetensors.index.json: invalid JSON" '{"weight_map":'
idx index-no-map "missing 'weight_map' object" '{"metadata":{"total_size":8}}'
idx index-duplicate "weight_map lists tensor 'a' twice" "{\"weight_map\":{\"a\":\"$S1\",\"a\":\"$S1\"}}"
idx index-map-value "weight_map\[a\] is a number, expected a file name" '{"weight_map":{"a":1}}'
# the same tensor in two shards
case_dir index-two-shards 1 "tensor a is in two shards, $S1 and $S2" "inspect m/"
mkdir m
printf '%s' "$CFG" >m/config.json
one a >m/$S1
# shard 2 holds b and, again, a
{ _h="{\"a\":{$T},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}"; le64 ${#_h}; printf '%s' "$_h"; head -c 8 /dev/zero; } >m/$S2
printf '{"weight_map":{"a":"%s","b":"%s"}}' "$S1" "$S2" >m/model.safetensors.index.json

# ---- model folders ------------------------------------------------------------------------------------
case_dir no-model-file 1 "m/: no model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json in this folder" "inspect m/"
mkdir m
printf '%s' "$CFG" >m/config.json
case_dir symlink-escape 1 "m/config.json: symlink points outside the model folder" "inspect m/"
mkdir m
one a >m/model.safetensors
ln -s /etc/hostname m/config.json
case_dir shard-symlink-escape 1 "m/$S2: symlink points outside the model folder" "inspect m/"
mkdir m outside
printf '%s' "$CFG" >m/config.json
one a >m/$S1
one b >outside/$S2
ln -s ../outside/$S2 m/$S2
printf '{"weight_map":{"a":"%s","b":"%s"}}' "$S1" "$S2" >m/model.safetensors.index.json
case_dir config-not-json 1 "m/: config.json is not a JSON object" "inspect m/"
mkdir m
printf '{"architectures": [' >m/config.json
one a >m/model.safetensors

# ---- recipes --------------------------------------------------------------------------------------------
# rc NAME REGEX: r.yaml is the file $in, merged into out/ from a small valid model m/
rc() {
    case_dir "$1" 2 "$2" "r.yaml out/"
    "$mk" synth m/ --hidden 8 --layers 1 --heads 1 --intermediate 8 --vocab 8 -q
    rm -f m/tokenizer.json m/tokenizer_config.json m/special_tokens_map.json m/generation_config.json
    cp "$in" r.yaml
}
{
    printf 'merge_method: linear\nmodels:\n  - model: m/\n    parameters:\n      weight: 1\n      a0: &a0 [1,1,1,1,1,1,1,1,1]\n'
    for i in 1 2 3 4 5 6 7 8 9; do
        printf '      a%d: &a%d [' "$i" "$i"
        for j in 1 2 3 4 5 6 7 8 9; do [ "$j" -gt 1 ] && printf ','; printf '{value: *a%d}' $((i - 1)); done
        printf ']\n'
    done
} >"$in"
rc yaml-alias-bomb "r.yaml: recipe expands to too many values \(alias bomb\?\)"
{
    printf 'merge_method: linear\nmodels:\n  - model: m/\n    parameters:\n      weight: '
    for i in $(seq 1 40); do printf '[{value: '; done
    printf '1'
    for i in $(seq 1 40); do printf '}]'; done
    printf '\n'
} >"$in"
rc yaml-deep-nesting "r.yaml:[0-9]+:[0-9]+: parameter 'weight': nested too deeply"
printf 'merge_method: linear\nmodels:\n  - model: m/\n    parameters:\n      weight: abc\n' >"$in"
rc wrong-type "r.yaml:5:15: parameter 'weight' must be a number, found 'abc'"
printf 'merge_method: linear\nmodels:\n  - model: m/\n    parameters:\n      weight: .nan\n' >"$in"
rc nan-parameter "r.yaml:5:15: parameter 'weight' must be a finite number, found '.nan'"
printf 'merge_method: linear\nmodels:\n  - model: m/\n    parameters:\n      weight: -.inf\n' >"$in"
rc inf-parameter "parameter 'weight' must be a finite number, found '-.inf'"
printf 'merge_method: linear\nmodels:\n  - model: m/\n    parameters:\n      weight: 1e999\n' >"$in"
rc overflow-parameter "parameter 'weight' must be a number, found '1e999'"
printf 'merge_method: linear\nmodel:\n  - model: m/\n' >"$in"
rc unknown-key "r.yaml:2:1: unknown key 'model' in the recipe \(did you mean 'models'\?\)"
printf 'merge_method: dare-ties\nmodels:\n  - model: m/\n' >"$in"
rc unknown-method "r.yaml:1:15: unknown merge_method 'dare-ties' \(did you mean 'dare_ties'\?\)"
printf 'merge_method: passthrough\nslices:\n  - sources:\n      - model: m/\n        layer_range: [0, 40]\n' >"$in"
rc layer-range "layer_range \[0, 40\] but m/ has 1 layers"
printf 'merge_method: linear\nmodels: [{model: m/}]\nslices: [{sources: [{model: m/}]}]\n' >"$in"
rc models-and-slices "exactly one of 'models', 'slices' or 'modules' must be present"
printf -- '- merge_method\n- linear\n' >"$in"
rc not-a-mapping "r.yaml:1:1: the recipe must be a mapping, found a list"
printf '\001\002\377binary' >"$in"
rc binary "r.yaml:[0-9]+:[0-9]+: YAML error"
printf 'merge_method: linear\nmodels:\n\t- model: m/\n' >"$in"
rc tab-indent "r.yaml:3:1: YAML error"
printf 'merge_method: linear\nmodels:\n  - model: m/\n    parameters:\n      weight: {filter: mlp, value: 1}\n' >"$in"
rc bare-conditional "must be inside a list"
printf 'merge_method: linear\nmodels:\n  - model: m/\n    parameters:\n      weight: [1, x]\n' >"$in"
rc gradient-string "parameter 'weight' must be a number, found 'x'"
printf 'merge_method: passthrough\nslices:\n  - sources:\n      - model: m/\n        layer_range: [1, 0]\n' >"$in"
rc range-reversed "layer_range \[1, 0\] ends before it starts"
printf 'merge_method: linear\nmodels:\n  - model: m/+a/+b/\n' >"$in"
rc plus-twice "model reference 'm/\+a/\+b/' has more than one '\+'"
printf 'merge_method: linear\nmodels:\n  - model: m/\n    parameters:\n      weight: 1\nrandom_seed: 1.5\n' >"$in"
rc seed-float "random_seed must be an integer, found '1.5'"
printf 'merge_method: linear\nmodels:\n  - model: m/\n    parameters:\n      weight: 1\ndtype: float8\n' >"$in"
rc bad-dtype "dtype 'float8' is not supported"
printf 'merge_method: linear\nmodels:\n  - model: /nonexistent/model\n' >"$in"
rc missing-model "model '/nonexistent/model' not found"

# ---- PEFT adapters ------------------------------------------------------------------------------------
# adapter NAME REGEX CONFIG: a tiny base m/ and an adapter ad/ with this adapter_config.json text
adapter() {
    case_dir "$1" 1 "$2" "lora apply m/ ad/ out/"
    "$mk" synth m/ --hidden 8 --layers 1 --heads 1 --intermediate 8 --vocab 8 -q
    rm -f m/tokenizer.json
    mkdir ad
    printf '%s' "$3" >ad/adapter_config.json
    { le64 2; printf '{}'; } >ad/adapter_model.safetensors
}
adapter adapter-regex-blowup "ad/adapter_config.json: target_modules: regular expression .* is too complex" \
    '{"r": 2, "lora_alpha": 2, "peft_type": "LORA", "target_modules": "((((((((((((((((q+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+_proj"}'
# a stray ')' would close the group the pattern is wrapped in (and let '+' stack on it; fuzz_peft)
adapter adapter-regex-paren "ad/adapter_config.json: exclude_modules: regular expression .* has an unbalanced parenthesis" \
    '{"r": 2, "lora_alpha": 2, "peft_type": "LORA", "target_modules": ["q_proj"], "exclude_modules": "a)++++++++++++++++++++++++(b"}'
# a newline (JSON \n) inside a quoted name must not split the error line
adapter adapter-newline-in-name "ad/adapter_config.json: .*q\\?proj" \
    '{"r": 2, "lora_alpha": 2, "peft_type": "LORA", "target_modules": ["q\nproj"]}'

# ---- compressed containers that lie (forged with their checksums recomputed) --------------------
py="$root/.venv-tools/bin/python"
"$root/tools/setup-venv.sh"
w=$(mktemp -d)
"$mk" synth "$w/small/" --hidden 16 --layers 1 --heads 2 --intermediate 16 --vocab 16 -q
"$mk" synth "$w/large/" --hidden 256 --layers 1 --heads 2 --intermediate 16 --vocab 260 --tie -q
rm -f "$w"/*/tokenizer.json
"$mk" pack "$w/small/" "$w/small.mkz" -q
"$mk" pack "$w/large/" "$w/large.mkz" -q
"$py" "$root/tools/make-bad-mkz.py" "$w/small.mkz" "$w/large.mkz" "$w/forged"
# mkz NAME REGEX [CMD]: verify (or CMD on) the forged container m.mkz
mkz() {
    case_dir "mkz-$1" 1 "$2" "${3:-verify m.mkz}"
    cp "$w/forged/$1.mkz" m.mkz
}
mkz frame-size "m.mkz: tensor model.embed_tokens.weight: block 0 plane 1: the zstd frame declares 4294967280 bytes"
mkz frame-size "m.mkz: tensor model.embed_tokens.weight: block 0 plane 1: the zstd frame declares 4294967280 bytes" "r.yaml out/"
printf 'merge_method: passthrough\nmodels:\n  - model: m.mkz\n' >r.yaml
mkz raw-size "m.mkz: index damaged: tensor [a-z_.0-9]+: 1152921504606846976 bytes recorded, its shape and dtype need"
mkz block-count "m.mkz: index damaged: tensor [a-z_.0-9]+: blocks \[[0-9]+, \+[0-9]+\) where \[[0-9]+, \+[0-9]+\) was expected"
mkz index-counts "m.mkz: index damaged: .* do not add up to the index size"
mkz index-size "m.mkz: footer damaged or file truncated: index of 1099511627776 bytes"
mkz file-name "m.mkz: index damaged: file [0-9]+: '../onfig.js' is not a plain file name"
mkz plane-bound "m.mkz: index damaged: byte stream [0-9]+: block 0 plane 0: method 1 with 2147483647 bytes for [0-9]+ raw bytes"
mkz plane-bound "m.mkz: index damaged" "inspect m.mkz"

# ---- PyTorch checkpoints that attack or lie (made by tools/make-bad-torchbin.py) ----------------
# The code-execution payloads would `touch pwned` (the script proves each one runs under
# torch.load); bad_corpus.sh checks that the file never appears.
"$py" "$root/tools/make-bad-torchbin.py" "$w/torch"
# tb NAME REGEX [CMD [FILE]]: the forged checkpoint NAME as m/pytorch_model.bin (or FILE)
tb() {
    case_dir "torch-$1" 1 "$2" "${3:-inspect m/}"
    _f=${4:-m/pytorch_model.bin}
    mkdir -p "$(dirname "$_f")"
    [ "$(dirname "$_f")" = m ] && printf '%s' "$CFG" >m/config.json
    cp "$w/torch/$1.bin" "$_f"
}
R="mergekit-c reads state dicts of tensors and never runs code from a checkpoint"
tb os-system "m/pytorch_model.bin: x/data.pkl: byte [0-9]+: refused pickle global 'posix.system' \(GLOBAL\): $R"
tb os-system "m/pytorch_model.bin: x/data.pkl: byte [0-9]+: refused pickle global 'posix.system'" "r.yaml out/"
printf 'merge_method: passthrough\nmodels:\n  - model: m/\n' >r.yaml
tb eval "m/pytorch_model.bin: x/data.pkl: byte [0-9]+: refused pickle global '__builtin__.eval'"
tb eval "m/pytorch_model.bin: .*refused pickle global '__builtin__.eval'" "quantize m/ out/ --format nf4"
tb exec "m/pytorch_model.bin: x/data.pkl: byte [0-9]+: refused pickle global '__builtin__.exec'"
tb exec "ad/adapter_model.bin: .*refused pickle global '__builtin__.exec'" "lora apply m/ ad/ out/" ad/adapter_model.bin
"$mk" synth m/ --hidden 8 --layers 1 --heads 1 --intermediate 8 --vocab 8 -q
rm -f m/tokenizer.json m/tokenizer_config.json m/special_tokens_map.json m/generation_config.json
printf '{"r": 2, "lora_alpha": 2, "peft_type": "LORA", "target_modules": ["q_proj"]}' >ad/adapter_config.json
tb popen "m/pytorch_model.bin: x/data.pkl: byte [0-9]+: refused pickle global 'commands.Popen'"
tb stack-global "m/pytorch_model.bin: byte [0-9]+: refused pickle global 'posix.system' \(STACK_GLOBAL\)"
tb offset-past-storage "tensor w: float32 elements from storage offset 3 with strides reach past the end of storage '0' \(16 bytes\)"
tb storage-past-entry "m/pytorch_model.bin: storage '0' declares 400 bytes \(100 x float32\) but entry archive/data/0 holds 12"
tb zip-dotdot "m/pytorch_model.bin: zip entry 'archive/../../evil.sh' is not a relative path inside the archive"
tb zip-deflated "m/pytorch_model.bin: entry archive/data/0 is compressed \(method 8\)"
tb big-endian "m/pytorch_model.bin: archive/byteorder is 'big'; only little-endian checkpoints are read"
tb bomb-nesting "m/pytorch_model.bin: byte [0-9]+: containers nested deeper than 64"
tb bomb-marks "m/pytorch_model.bin: byte [0-9]+: MARKs nested deeper than 4096"
tb bomb-laughs "m/pytorch_model.bin: entry w is a tuple, not a tensor"
tb truncated-zip "m/pytorch_model.bin: no zip end-of-central-directory record \(file truncated\?\)"
tb truncated-legacy "m/pytorch_model.bin: storage '[0-9]+' needs 24 bytes at byte [0-9]+; the file ends at [0-9]+ \(truncated\?\)"
tb module "m.pt: x/data.pkl: byte 2: refused pickle global 'torch.nn.modules.linear.Linear'" "inspect m.pt" m.pt
tb training-checkpoint "m.ckpt: x/data.pkl: entry state_dict is an OrderedDict, not a tensor" "inspect m.ckpt" m.ckpt

# ---- GGUF files that lie (made by tools/make-bad-gguf.py, plain Python) ----------------------
"$py" "$root/tools/make-bad-gguf.py" "$w/gguf"
# gg NAME REGEX [CMD]: inspect (or CMD on) the forged file m.gguf
gg() {
    case_dir "gguf-$1" 1 "m.gguf: $2" "${3:-inspect m.gguf}"
    cp "$w/gguf/$1.gguf" m.gguf
}
gg version "GGUF version 1 \(versions 2 and 3 are read\)"
gg big-endian "a big-endian GGUF file"
gg tensor-count "tensor count 1099511627776 is over the limit"
gg kv-count "metadata count 9223372036854775809 is over the limit"
gg key-length "a metadata key at byte 24: length 4611686018427387904 is over the limit of 65535"
gg string-length "general.name at byte 56 runs past the end of the file \(64 bytes\)"
gg array-count "key x.list: array of 2305843009213693952 u32 elements is larger than the rest of the file"
gg string-array-count "key tokenizer.ggml.tokens: array of 1099511627776 string elements is larger than the rest of the file"
gg nested-array "key x.list: array of arrays"
gg value-type "key x.y: unknown value type 13"
gg bool-value "key x.flag: boolean value 2 is not 0 or 1"
gg duplicate-key "metadata key general.architecture appears twice"
gg alignment "general.alignment 48 is not a power of two"
gg alignment-type "general.alignment is a u64, not a u32"
gg tensor-type "tensor a: unknown ggml type 4$"
gg tensor-type-huge "tensor a: unknown ggml type 4294967295"
gg unsupported-type "tensor a: ggml type IQ2_XXS is not supported"
gg too-many-dims "tensor a: 5 dimensions \(1 to 4 allowed\)"
gg zero-dim "tensor a: dimension 1 is 0"
gg dim-overflow "tensor a: dimension 1 \(4294967296\) makes the element count overflow"
gg byte-size-overflow "tensor a: byte size overflows"
gg partial-block "tensor a: first dimension 33 is not a multiple of the Q4_0 block of 32"
gg misaligned-offset "tensor a: offset 8 is not a multiple of the alignment 32"
gg offset-past-end "tensor a: bytes \[1099511627776, \+64\) of the data section run past the end of the file"
gg offset-wraps "tensor a: bytes \[18446744073709551584, \+64\) of the data section run past the end of the file"
gg data-short "tensor a: bytes \[0, \+64\) of the data section run past the end of the file \(60 bytes of data\)"
gg overlap "tensors a and b overlap"
gg overlap "tensors a and b overlap" "dequantize m.gguf out"
gg duplicate-tensor "tensor a appears twice"
gg name-length "tensor 0: name of 100 bytes \(1 to 63 allowed\)"
gg truncated "a metadata key at byte 32 runs past the end of the file \(40 bytes\)"
gg truncated "a metadata key at byte 32 runs past the end of the file" "eval m.gguf --text m.gguf"
gg qk-heads "tensor blk.0.attn_q.weight: 4 rows do not split into 3 heads of rotary pairs"
gg qk-heads "tensor blk.0.attn_q.weight: 4 rows do not split" "r.yaml out/"
printf 'merge_method: passthrough\nmodels:\n  - model: m.gguf\n' >r.yaml
rm -rf "$w"

echo "tests/bad: $n cases"
