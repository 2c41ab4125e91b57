# hub_cache.sh - Hugging Face model ids resolved in the local cache: a cache laid out as
# huggingface_hub writes it (refs/<branch or tag> holding a commit, snapshots/<commit>/ of
# relative links into blobs/ named by sha256 for weights and by git blob sha1 for small
# files), built here from synthetic models. Merge, quantize, eval, inspect, compare and lora
# by id give the bytes they give by folder; revisions by ref and by commit; subfolders; the
# cache folder from HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME and HOME in that order; a local
# path wins; every refusal is one line with its exit code and leaves no output.
# tools/compat-hub.sh checks the same layout against huggingface_hub itself.
. "$MK_ROOT/tests/e2e/lib.sh"

unset HF_HUB_CACHE HUGGINGFACE_HUB_CACHE HF_HOME XDG_CACHE_HOME HF_HUB_OFFLINE TRANSFORMERS_OFFLINE
# the cache alone: what it lacks is not fetched (tests/e2e/hub_fetch.sh fetches)
export HF_HUB_OFFLINE=1

make_models float32 || { notok "synth" "could not make the models"; exit 1; }

C1=1111111111111111111111111111111111111111
C2=2222222222222222222222222222222222222222
C3=3333333333333333333333333333333333333333
C4=4444444444444444444444444444444444444444

# blob_name FILE: sha256 for weights (Git LFS objects), git's blob sha1 for the rest
blob_name() {
    case "$1" in
    *.safetensors) sha256sum "$1" | cut -d' ' -f1 ;;
    *) { printf 'blob %s\0' "$(wc -c <"$1" | tr -d ' ')"; cat "$1"; } | sha1sum | cut -d' ' -f1 ;;
    esac
}

# cache_put CACHE OWNER--NAME COMMIT SRC [SUB]: SRC's files as snapshot COMMIT (in SUB)
cache_put() {
    _r=$1/models--$2
    _snap=$_r/snapshots/$3${5:+/$5}
    _up=../..
    [ -n "${5:-}" ] && _up=../../..
    mkdir -p "$_r/blobs" "$_r/refs" "$_snap" || return 1
    for _f in "$4"/*; do
        _h=$(blob_name "$_f")
        cp "$_f" "$_r/blobs/$_h" && ln -s "$_up/blobs/$_h" "$_snap/$(basename "$_f")" || return 1
    done
}
# cache_ref CACHE OWNER--NAME REF COMMIT (no newline, as huggingface_hub writes it)
cache_ref() { mkdir -p "$1/models--$2/refs" && printf '%s' "$4" >"$1/models--$2/refs/$3"; }

H=$T/hfc
cache_put "$H" acme--base $C1 base && cache_ref "$H" acme--base main $C1 &&
    cache_put "$H" acme--ft1 $C2 ft1 && cache_ref "$H" acme--ft1 main $C2 &&
    cache_put "$H" acme--ft1 $C3 ft2 && cache_ref "$H" acme--ft1 v2 $C3 &&
    cache_put "$H" acme--bundle $C4 ft2 ft2 && cache_ref "$H" acme--bundle main $C4 &&
    cache_put "$H" solo $C1 base && cache_ref "$H" solo main $C1 || { notok "cache" "could not build it"; exit 1; }
export HF_HUB_CACHE=$H

# ---- the same bytes by id as by folder ----------------------------------------------------
cat >by_dir.yaml <<'EOF'
merge_method: linear
models:
  - model: base/
    parameters: {weight: 0.2}
  - model: ft1/
    parameters: {weight: 0.4}
  - model: ft2/
    parameters: {weight: 0.4}
dtype: bfloat16
EOF
sed -e 's|model: base/|model: acme/base|' -e 's|model: ft1/|model: acme/ft1@main|' -e 's|model: ft2/|model: acme/bundle/ft2|' \
    by_dir.yaml >by_id.yaml
t_ok "merge by folder" "$MK" merge by_dir.yaml out_dir/ -q
t_ok "merge by Hub id (acme/base, acme/ft1@main, acme/bundle/ft2)" "$MK" merge by_id.yaml out_id/ -q
same=yes
for f in out_dir/*.safetensors out_dir/config.json out_dir/tokenizer.json; do
    [ -f "$f" ] || { same="no $f"; break; }
    cmp -s "$f" "out_id/$(basename "$f")" || { same="$(basename "$f") differs"; break; }
done
if [ "$same" = yes ]; then ok "merge by id: weights, config and tokenizer byte-identical to merge by folder"
else notok "merge by id: byte-identical" "$same"; fi

# the dict form with a revision, and a commit hash as the revision
cat >dict.yaml <<EOF
merge_method: linear
models:
  - model: {model: {path: acme/ft1, revision: v2}}
    parameters: {weight: 1.0}
dtype: float32
EOF
sed 's|path: acme/ft1, revision: v2|path: ft2/|' dict.yaml >dict_dir.yaml
t_ok "merge: dict form {path, revision}" "$MK" merge dict.yaml out_dict/ -q
t_ok "merge: the same from the folder" "$MK" merge dict_dir.yaml out_dict_dir/ -q
t_same "merge: revision v2 reads the v2 snapshot" out_dict/model.safetensors out_dict_dir/model.safetensors

# tokenizer_source by id names the model written another way (acme/ft1 = acme/ft1@main)
printf 'tokenizer_source: acme/ft1\n' | cat by_id.yaml - >tok.yaml
t_ok "tokenizer_source: acme/ft1 names the model written acme/ft1@main" "$MK" merge tok.yaml out_tok/ -q
printf 'tokenizer_source: acme/nothere\n' | cat by_id.yaml - >tok_bad.yaml
t_fail "tokenizer_source: an id not in the cache fails before the merge" 1 "tok_bad.yaml:[0-9]+:[0-9]+: tokenizer_source: acme/nothere: no such local path" \
    "$MK" merge tok_bad.yaml out_tok_bad/ -q
t_absent "tokenizer_source not cached: no output" out_tok_bad out_tok_bad.tmp

tensor_hashes base/ >h_base
tensor_hashes ft1/ >h_ft1
tensor_hashes ft2/ >h_ft2
same_hashes() { # NAME REF WANT-FILE
    tensor_hashes "$2" >h_got 2>h_err
    if [ -s h_got ] && cmp -s h_got "$3"; then ok "$1"; else notok "$1" "$2: tensors differ from $3: $(head -c 300 h_err)"; fi
}
same_hashes "inspect acme/ft1 (refs/main)" acme/ft1 h_ft1
same_hashes "inspect acme/ft1@v2 (a tag's ref)" acme/ft1@v2 h_ft2
same_hashes "inspect acme/ft1@<commit> (no ref needed)" acme/ft1@$C3 h_ft2
same_hashes "inspect acme/bundle/ft2 (a subfolder)" acme/bundle/ft2 h_ft2
same_hashes "inspect acme/bundle/ft2/model.safetensors (a file in a subfolder)" acme/bundle/ft2/model.safetensors h_ft2
same_hashes "inspect solo (an id without owner, when cached)" solo h_base

# ---- where the cache is --------------------------------------------------------------------
cache_put "$T/home1/hub" acme--m $C1 ft1 && cache_ref "$T/home1/hub" acme--m main $C1 &&
    cache_put "$T/xdg/huggingface/hub" acme--m $C1 ft2 && cache_ref "$T/xdg/huggingface/hub" acme--m main $C1 &&
    cache_put "$T/u/.cache/huggingface/hub" acme--m $C1 base && cache_ref "$T/u/.cache/huggingface/hub" acme--m main $C1 &&
    cache_put "$T/hc2" acme--m $C1 ft2 && cache_ref "$T/hc2" acme--m main $C1 || notok "caches" "could not build them"
env_hashes() { # NAME WANT-FILE ENV...
    _n=$1 _w=$2
    shift 2
    env -u HF_HUB_CACHE "$@" "$MK" inspect acme/m --json --hashes 2>h_err |
        sed -n 's/.*"name": "\([^"]*\)".*"xxh3": "\([0-9a-f]*\)".*/\1 \2/p' >h_got
    if [ -s h_got ] && cmp -s h_got "$_w"; then ok "$_n"; else notok "$_n" "wrong model or none: $(head -c 300 h_err)"; fi
}
env_hashes "HF_HUB_CACHE wins over HF_HOME" h_ft2 HF_HUB_CACHE="$T/hc2" HF_HOME="$T/home1" XDG_CACHE_HOME="$T/xdg" HOME="$T/u"
env_hashes "HUGGINGFACE_HUB_CACHE (the old name) wins over HF_HOME" h_ft2 HUGGINGFACE_HUB_CACHE="$T/hc2" HF_HOME="$T/home1"
env_hashes "HF_HOME/hub wins over XDG_CACHE_HOME" h_ft1 HF_HOME="$T/home1" XDG_CACHE_HOME="$T/xdg" HOME="$T/u"
env_hashes "XDG_CACHE_HOME/huggingface/hub wins over HOME" h_ft2 XDG_CACHE_HOME="$T/xdg" HOME="$T/u"
env_hashes "default ~/.cache/huggingface/hub" h_base HOME="$T/u"
env_hashes "HF_HOME=~/... expands ~" h_ft1 HF_HOME="~/../home1" HOME="$T/u"

# ---- a local path wins ---------------------------------------------------------------------
mkdir -p acme && cp -r ft2 acme/base
same_hashes "a local folder named like an id wins over the cache" acme/base h_ft2
rm -rf acme

# ---- other commands take ids ---------------------------------------------------------------
t_ok "quantize acme/ft1" "$MK" quantize acme/ft1 q_id/ --format int8 -q
t_ok "quantize ft1/" "$MK" quantize ft1/ q_dir/ --format int8 -q
t_same "quantize by id: the bytes of quantize by folder" q_id/model.safetensors q_dir/model.safetensors
t_ok "compare acme/ft1@v2 ft2/ (identical)" "$MK" compare acme/ft1@v2 ft2/ -q
awk 'BEGIN { x = 7; for (i = 0; i < 300; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "tok%d ", 3 + (x % 125) } print "" }' >text.txt
# the report without the names and the timings
numbers() { sed -E 's/"(model|ref)": "[^"]*"//g; s/"(seconds|tokens_per_second)": [0-9.e+]*//g' "$1"; }
"$MK" eval ft1/ --text text.txt --ctx 32 --ref base/ --json >ev_dir.json 2>/dev/null
"$MK" eval acme/ft1 --text text.txt --ctx 32 --ref acme/base --json >ev_id.json 2>ev_err
numbers ev_dir.json >ev_dir.txt
numbers ev_id.json >ev_id.txt
if grep -q '"kl_mean"' ev_id.txt && cmp -s ev_dir.txt ev_id.txt; then ok "eval acme/ft1 --ref acme/base: the figures of eval by folder"
else notok "eval by id" "$(head -c 300 ev_err) $(diff ev_dir.txt ev_id.txt | head -c 300)"; fi
t_ok "lora extract acme/base acme/ft1" "$MK" lora extract acme/base acme/ft1 ad_id/ --rank 4 -q
t_ok "lora extract base/ ft1/" "$MK" lora extract base/ ft1/ ad_dir/ --rank 4 -q
t_same "lora extract by id: the adapter of lora extract by folder" ad_id/adapter_model.safetensors ad_dir/adapter_model.safetensors
# model+adapter in a recipe, both by id (mergekit's base+lora form), and lora apply by id
cache_put "$H" acme--adapter $C1 ad_dir && cache_ref "$H" acme--adapter main $C1
printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters: {weight: 1.0}\ndtype: float32\n' "acme/base+acme/adapter@main" >lora_id.yaml
printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters: {weight: 1.0}\ndtype: float32\n' "base/+ad_dir/" >lora_dir.yaml
t_ok "merge acme/base+acme/adapter@main" "$MK" merge lora_id.yaml out_lora_id/ -q
t_ok "merge base/+ad_dir/" "$MK" merge lora_dir.yaml out_lora_dir/ -q
t_same "base+adapter by id: the merge of the folders" out_lora_id/model.safetensors out_lora_dir/model.safetensors
t_ok "lora apply acme/base acme/adapter" "$MK" lora apply acme/base acme/adapter la_id/ -q
t_ok "lora apply base/ ad_dir/" "$MK" lora apply base/ ad_dir/ la_dir/ -q
t_same "lora apply by id: the model of the folders" la_id/model.safetensors la_dir/model.safetensors
t_ok "lora combine acme/adapter acme/adapter@$C1 --base acme/base" "$MK" lora combine acme/adapter "acme/adapter@$C1" lc_id/ --method cat --base acme/base -q
t_ok "lora combine ad_dir/ ad_dir/" "$MK" lora combine ad_dir/ ad_dir/ lc_dir/ --method cat --base base/ -q
t_same "lora combine by id: the adapter of the folders" lc_id/adapter_model.safetensors lc_dir/adapter_model.safetensors

t_ok "synth --finetune-of acme/base" "$MK" synth sy_id/ --finetune-of acme/base --delta 0.05 --seed 9 -q
t_ok "synth --finetune-of base/" "$MK" synth sy_dir/ --finetune-of base/ --delta 0.05 --seed 9 -q
t_same "synth --finetune-of by id: the finetune made from the folder" sy_id/model.safetensors sy_dir/model.safetensors
t_ok "pack acme/ft1 (a snapshot of links)" "$MK" pack acme/ft1 p_id.mkz -q
t_ok "pack ft1/" "$MK" pack ft1/ p_dir.mkz -q
t_same "pack by id: the container of the folder" p_id.mkz p_dir.mkz

# ---- verification of blob hashes -----------------------------------------------------------
cache_put "$H" acme--bad $C1 ft1 && cache_ref "$H" acme--bad main $C1
blob=$(readlink -f "$H/models--acme--bad/snapshots/$C1/model.safetensors")
# flip the last byte (tensor data: the header still parses)
sz=$(wc -c <"$blob")
last=$(tail -c 1 "$blob" | od -An -tu1 | tr -d ' ')
printf "$(printf '\\%03o' $(((last + 1) % 256)))" | dd of="$blob" bs=1 seek=$((sz - 1)) conv=notrunc 2>/dev/null
t_ok "a damaged blob is read without --verify-cache (hashing every run would cost a full read)" "$MK" inspect acme/bad -q
t_fail "--verify-cache refuses a blob whose sha256 is not its name" 1 "acme/bad: .*model\.safetensors: blob .* has sha256 [0-9a-f]{64}, not the one its name says" \
    "$MK" inspect acme/bad --verify-cache -q
t_ok "--verify-cache passes a sound snapshot" "$MK" inspect acme/ft1 --verify-cache -q
sed 's|model: base/|model: acme/bad|' by_dir.yaml >bad_blob.yaml
t_fail "merge --verify-cache: refused at planning" 1 "bad_blob.yaml:[0-9]+:[0-9]+: acme/bad: .*sha256" \
    "$MK" merge bad_blob.yaml out_bad/ --verify-cache -q
t_absent "merge --verify-cache: no output" out_bad out_bad.tmp

# ---- refusals: one line, exit code, no output ------------------------------------------------
# a missing snapshot (refs/main names a commit that is not there), a dangling link
cache_ref "$H" acme--nosnap main $C4 && mkdir -p "$H/models--acme--nosnap/snapshots/$C1"
cache_put "$H" acme--dangle $C1 ft1 && cache_ref "$H" acme--dangle main $C1 &&
    rm "$(readlink -f "$H/models--acme--dangle/snapshots/$C1/model.safetensors")"

refuse() { # NAME CODE PATTERN MODEL-REF
    sed "s|model: base/|model: \"$4\"|" by_dir.yaml >r.yaml
    t_fail "merge: $1" "$2" "r.yaml:3:12: .*$3" "$MK" merge r.yaml out_r/ -q
    t_absent "merge: $1: no output" out_r out_r.tmp
    t_fail "inspect: $1" "$2" "$3" "$MK" inspect "$4" -q
}
refuse "an id not in the cache" 1 "acme/nothere: no such local path, and no Hugging Face model 'acme/nothere' in the cache $H \\(no models--acme--nothere\\); HF_HUB_OFFLINE is set" acme/nothere
refuse "a revision not in refs/" 1 "acme/ft1@nope: revision 'nope' is not in the Hugging Face cache \\(no $H/models--acme--ft1/refs/nope\\)" acme/ft1@nope
refuse "a commit not in snapshots/" 1 "acme/ft1@$C4: commit $C4 is not in the cache" "acme/ft1@$C4"
refuse "refs/main naming a missing snapshot" 1 "acme/nosnap@main: commit $C4 is not in the cache \\(no $H/models--acme--nosnap/snapshots/$C4" acme/nosnap
refuse "a link to a missing blob" 1 "acme/dangle: .*/model\.safetensors links to a missing blob \\(\\.\\./\\.\\./blobs/[0-9a-f]{64}\\): the download is unfinished" acme/dangle
refuse "a subfolder not in the snapshot" 1 "acme/bundle@main: no 'nope' in the cached snapshot" acme/bundle/nope
refuse "'..' in the subfolder" 2 "a/b/\\.\\./c: subfolder '\\.\\./c' of a Hugging Face model id is refused: it has a '\\.' or '\\.\\.' component" a/b/../c
refuse "an empty revision" 2 "revision '' is not a branch, tag or commit: it is empty" "acme/ft1@"
refuse "a bare '@'" 2 "(empty path|revision '' is not a branch, tag or commit)" "@"
refuse "'..' in the revision" 2 "revision '\\.\\./\\.\\./x' is not a branch, tag or commit: it has a '\\.' or '\\.\\.' component" "acme/ft1@../../x"
refuse "a revision with a space" 2 "revision 'a b' is not a branch, tag or commit: it holds characters" "acme/ft1@a b"
refuse "an owner ending with '-'" 2 "not a Hugging Face model id \\(owner/name\\[/subfolder\\]\\[@revision\\]\\): a name that starts or ends with '-' or '\\.'" "x-/y"
refuse "'--' in a name" 2 "'--' or '\\.\\.' in a name" "a--b/c"
refuse "a name over 96 characters" 2 "longer than 96" "acme/$(printf 'x%.0s' $(seq 97))"

t_fail "HF_HUB_OFFLINE=1: the message says the network is disallowed" 1 "acme/nothere: .*HF_HUB_OFFLINE is set, so the network is disallowed" \
    env HF_HUB_OFFLINE=1 "$MK" inspect acme/nothere -q
t_fail "HF_HUB_OFFLINE=0 is not offline: it fetches" 1 "acme/nothere@main: .*127\\.0\\.0\\.1:1" \
    env HF_HUB_OFFLINE=0 HF_ENDPOINT=http://127.0.0.1:1 MK_HUB_RETRIES=1 "$MK" inspect acme/nothere -q
t_fail "quantize: an id not in the cache, no output" 1 "acme/nothere: no such local path" "$MK" quantize acme/nothere q_none/ --format int8 -q
t_absent "quantize: no output" q_none q_none.tmp
# a local path that does not exist keeps its own message
t_fail "a missing ./path is not looked up as an id" 1 "\\./nothere: no such file or folder" "$MK" inspect ./nothere -q
