#!/bin/sh
# mkz.sh - the .mkz container through the CLI: pack/unpack byte-identical (bf16, f16, f32,
# sharded, one file), verify, inspect ratios, merges reading .mkz inputs and writing .mkz
# outputs with the same bytes as plain safetensors, the same bytes at any thread count,
# and damaged containers (header, block, index, footer) reported by every reader with
# nothing written.
. "$MK_ROOT/tests/e2e/lib.sh"

# flip FILE OFFSET: invert one byte in place
flip() {
    _b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    printf "$(printf '\\%03o' $((_b ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
# u64 FILE OFFSET: a little-endian u64
u64() { od -An -tu8 -j "$2" -N8 "$1" | tr -d ' '; }
size() { wc -c <"$1" | tr -d ' '; }

make_models bfloat16 || exit 1
"$MK" synth f32/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 176 --vocab 128 --dtype float32 --seed 4 -q
"$MK" synth f16/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 176 --vocab 128 --dtype float16 --seed 5 \
    --out-shard-size 40K -q
printf 'hello\n' >base/notes.txt
: >base/empty.txt

for m in base f32 f16; do
    t_ok "pack $m" "$MK" pack $m/ $m.mkz -q
    t_ok "unpack $m" "$MK" unpack $m.mkz back-$m/ -q
    if diff -r $m back-$m >/dev/null; then ok "$m restored byte for byte"; else notok "$m restored byte for byte" "$(diff -r $m back-$m | head -3)"; fi
done
t_ok "sharded model packs" test -f f16/model.safetensors.index.json
t_ok "verify" "$MK" verify base.mkz
grep -q "base.mkz: ok: 8 files, 21 tensors" .out && ok "verify summary" || notok "verify summary" "$(cat .out)"
t_ok "pack one file" "$MK" pack base/model.safetensors one.mkz -q
t_ok "unpack one file" "$MK" unpack one.mkz one/ -q
t_same "one file restored" base/model.safetensors one/model.safetensors
t_ok "pack -j1" "$MK" pack base/ j1.mkz -j 1 -q
t_ok "pack -j2" "$MK" pack base/ j2.mkz -j 2 --level 3 -q
t_ok "pack -j2 level 1" "$MK" pack base/ j2l1.mkz -j 2 -q
t_same "pack: same bytes at 1 and 2 threads" j1.mkz j2l1.mkz

"$MK" inspect base.mkz >insp.txt 2>&1
if grep -q "model.layers.0.mlp.up_proj.weight .* [0-9.]*x$" insp.txt && grep -q "BF16 .* stored .*(1\.[0-9]*x)" insp.txt &&
    grep -q "^container: 8 files" insp.txt; then ok "inspect shows ratios"; else notok "inspect shows ratios" "$(tail -4 insp.txt)"; fi
"$MK" inspect base.mkz --json -s >insp.json 2>&1
grep -q '"format": "mkz"' insp.json && grep -q '"stored_bytes"' insp.json && ok "inspect --json" || notok "inspect --json" "$(head -c 300 insp.json)"

# merges: .mkz inputs give the same output; .mkz outputs hold the same files
cat >plain.yaml <<EOF
merge_method: linear
models:
  - model: base
    parameters: {weight: 0.2}
  - model: ft1
    parameters: {weight: 0.4}
  - model: ft2
    parameters: {weight: 0.4}
dtype: bfloat16
EOF
"$MK" pack ft1 ft1.mkz -q && "$MK" pack ft2 ft2.mkz -q
sed 's/model: \(base\|ft1\|ft2\)$/model: \1.mkz/' plain.yaml >z.yaml
t_ok "merge plain" "$MK" plain.yaml out-plain -q
t_ok "merge from .mkz inputs" "$MK" z.yaml out-z -q
t_same "same tensors from .mkz inputs" out-plain/model.safetensors out-z/model.safetensors
t_ok "merge into .mkz" "$MK" plain.yaml out.mkz -q -j 2
t_ok "unpack merged .mkz" "$MK" unpack out.mkz out-back -q
for f in model.safetensors config.json tokenizer.json mergekit_config.yml; do
    t_same "merged .mkz holds $f" out-plain/$f out-back/$f
done
t_ok "merge --check on a .mkz output" "$MK" plain.yaml out.mkz --check -q
card_cmd=$(sed -n 's/.*reproduces, from the folder it was run in: `\(.*\)` (re-derives.*/\1/p' out-back/README.md |
    sed "s#^mergekit-c#$MK#; s#&& mergekit-c#\&\& $MK#")
t_ok "the card names a check command" test -n "$card_cmd"
t_ok "the card's check command works" sh -c "$card_cmd"
cp out.mkz out-j2.mkz
t_ok "merge into .mkz -j1" "$MK" plain.yaml out.mkz -q -j 1 --force
t_same "merged .mkz: same bytes at 1 and 2 threads" out.mkz out-j2.mkz
t_ok "merge --compress=5" "$MK" plain.yaml outc --compress=5 -q
t_ok "--compress output is a container" "$MK" verify outc -q
t_ok "merge sharded into .mkz" "$MK" plain.yaml sh.mkz --out-shard-size 100K -q
t_ok "merge sharded into folder" "$MK" plain.yaml sh --out-shard-size 100K -q
t_ok "unpack sharded merge" "$MK" unpack sh.mkz sh-back -q
for f in model.safetensors.index.json model-00001-of-00003.safetensors model-00003-of-00003.safetensors; do
    t_same "sharded .mkz holds $f" sh/$f sh-back/$f
done
t_fail "merge --compress level" 2 "--compress=0: the level" "$MK" plain.yaml bad.mkz --compress=0
t_fail "merge --resume into .mkz" 2 "resume is not supported" "$MK" plain.yaml bad.mkz --resume

# the other commands read containers too
t_ok "compare a .mkz with its folder" "$MK" compare base.mkz base/ -q
t_ok "estimate a .mkz" "$MK" estimate base.mkz
grep -q "base.mkz (parameters from tensors)" .out && ok "estimate counts the container's tensors" ||
    notok "estimate counts the container's tensors" "$(head -2 .out)"
t_ok "lora extract from .mkz" "$MK" lora extract base.mkz ft1.mkz ad-z --rank 4 -q
t_ok "lora extract from folders" "$MK" lora extract base ft1 ad-f --rank 4 -q
t_same "lora extract: same adapter" ad-z/adapter_model.safetensors ad-f/adapter_model.safetensors
t_ok "lora apply onto a .mkz" "$MK" lora apply base.mkz ad-f ap-z -q
t_ok "lora apply onto a folder" "$MK" lora apply base ad-f ap-f -q
t_same "lora apply: same result" ap-z/model.safetensors ap-f/model.safetensors
t_ok "synth --finetune-of a .mkz" "$MK" synth ft-z/ --finetune-of base.mkz --delta 0.05 --seed 2 -q
t_same "synth --finetune-of: same finetune" ft-z/model.safetensors ft1/model.safetensors

# usage errors
t_fail "pack: output exists" 2 "j1.mkz: output already exists" "$MK" pack base/ j1.mkz
t_fail "pack: level" 2 "level 30 is out of range" "$MK" pack base/ x.mkz --level 30
t_fail "pack: missing input" 1 "nope/: no such file" "$MK" pack nope/ x.mkz
t_fail "pack: output inside input" 2 "overlaps input" "$MK" pack base/ base/x.mkz
t_fail "unpack: output exists" 2 "output already exists" "$MK" unpack base.mkz back-base
t_fail "verify: a folder" 2 "not a .mkz container" "$MK" verify base/
t_fail "verify: not a container" 1 "bad magic" "$MK" verify base/model.safetensors

# damage: one byte anywhere; every reader names what is damaged, exits 1, writes nothing
n=$(size ft1.mkz)
isz=$(u64 ft1.mkz $((n - 40)))
iof=$((n - 48 - isz))
for where in header block index footer; do
    cp ft1.mkz d.mkz
    case $where in
    header) flip d.mkz 5; pat="d.mkz: not a .mkz container, or its header is damaged" ;;
    block) flip d.mkz $((iof / 2)); pat="d.mkz: tensor [a-z0-9_.]+: block [0-9]+ of [0-9]+ is damaged" ;;
    index) flip d.mkz $((iof + 100)); pat="d.mkz: index damaged" ;;
    footer) flip d.mkz $((n - 42)); pat="d.mkz: footer damaged" ;;
    esac
    t_fail "verify: $where damage" 1 "$pat" "$MK" verify d.mkz
    t_fail "unpack: $where damage" 1 "$pat" "$MK" unpack d.mkz d-out
    t_absent "unpack: $where damage leaves nothing" d-out d-out.tmp
    sed 's/model: ft1.mkz$/model: d.mkz/' z.yaml >d.yaml
    t_fail "merge: $where damage" 1 "$pat" "$MK" d.yaml d-merge
    t_absent "merge: $where damage leaves nothing" d-merge d-merge.tmp
    if [ $where != block ]; then t_fail "inspect: $where damage" 1 "$pat" "$MK" inspect d.mkz; fi
done
