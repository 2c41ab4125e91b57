#!/bin/sh
# mkz_delta.sh - `pack --base`: a finetune stored as deltas against its base. Round trips
# byte for byte (dense and sparse finetunes), smaller than a plain container, the same bytes
# at any thread count; the base found by --base, MK_DELTA_BASE or the recorded path; a wrong
# base refused by hash or by shape, a missing one named; a damaged delta block named; and
# inspect, eval and quantize reading the container give what they give on the folder.
. "$MK_ROOT/tests/e2e/lib.sh"

flip() {
    _b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    printf "$(printf '\\%03o' $((_b ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
u64() { od -An -tu8 -j "$2" -N8 "$1" | tr -d ' '; }
size() { wc -c <"$1" | tr -d ' '; }

"$MK" synth base/ --hidden 128 --layers 2 --heads 4 --kv-heads 2 --intermediate 256 --vocab 128 --seed 1 -q &&
    "$MK" synth ft/ --finetune-of base/ --delta 0.01 --seed 2 -q &&
    "$MK" synth sp/ --finetune-of base/ --delta 0.01 --density 0.1 --seed 3 -q &&
    "$MK" synth other/ --finetune-of base/ --delta 0.01 --seed 4 -q &&
    "$MK" synth small/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 128 --seed 1 -q ||
    { notok "synth" "could not make the models"; exit 1; }

for m in ft sp; do
    t_ok "pack $m plain" "$MK" pack $m/ $m.mkz -q
    t_ok "pack $m --base" "$MK" pack $m/ $m-d.mkz --base base/ -q
    t_ok "unpack $m with its base" "$MK" unpack $m-d.mkz back-$m/ --base base/ -q
    if diff -r $m back-$m >/dev/null; then ok "$m restored byte for byte"; else notok "$m restored byte for byte" "$(diff -r $m back-$m | head -3)"; fi
    p=$(size $m.mkz) d=$(size $m-d.mkz)
    echo "# $m: plain container $p bytes, delta container $d bytes"
    if [ "$d" -lt "$p" ]; then ok "$m: the delta container is smaller ($d < $p bytes)"; else notok "$m: delta container smaller" "$d >= $p"; fi
done
t_ok "verify with the recorded base path" "$MK" verify ft-d.mkz
grep -q "ft-d.mkz: ok: 6 files, 21 tensors" .out && ok "verify summary" || notok "verify summary" "$(cat .out)"
t_ok "pack --json names the base" "$MK" pack ft/ j.mkz --base base/ --json -q
grep -q '"base": "base", "deltas": 21' .out && ok "pack --json: base and deltas" || notok "pack --json: base and deltas" "$(cat .out)"

# format versions: containers are written as version 3 (plane codec 2), plain or delta
[ "$(u32 ft.mkz 8)" = 3 ] && [ "$(u32 ft-d.mkz 8)" = 3 ] && [ "$(u32 ft-d.mkz $(($(size ft-d.mkz) - 16)))" = 3 ] &&
    ok "header and footer versions: 3, plain and delta" || notok "versions" "$(u32 ft.mkz 8) $(u32 ft-d.mkz 8)"

# determinism
t_ok "pack --base -j1" "$MK" pack ft/ j1.mkz --base base/ -j 1 -q
t_ok "pack --base -j2" "$MK" pack ft/ j2.mkz --base base/ -j 2 -q
t_same "delta pack: same bytes at 1 and 2 threads" j1.mkz j2.mkz
t_same "delta pack: same bytes as the first pack" j1.mkz ft-d.mkz

# where the base is found: --base, MK_DELTA_BASE, the path recorded relative to the container
mkdir -p sub && cp ft-d.mkz sub/ft-d.mkz
t_fail "missing base named" 1 "sub/ft-d.mkz: tensor [a-z0-9_.]+ is stored as a delta against base base, which is not at sub/base" \
    "$MK" verify sub/ft-d.mkz
t_ok "--base finds it" "$MK" verify sub/ft-d.mkz --base base/ -q
t_ok "MK_DELTA_BASE finds it" env MK_DELTA_BASE=base/ "$MK" verify sub/ft-d.mkz -q
t_ok "pack into a folder elsewhere" "$MK" pack ft/ sub/rel.mkz --base base/ -q
t_ok "the recorded path is relative to the container" "$MK" verify sub/rel.mkz -q
t_fail "unpack without its base" 1 "delta against base base, which is not at sub/base" "$MK" unpack sub/ft-d.mkz nob
t_absent "unpack without its base leaves nothing" nob nob.tmp

# a wrong base: by hash (same shapes), by shape (another model)
t_fail "wrong base refused by hash" 1 \
    "ft-d.mkz: tensor [a-z0-9_.]+: the base's XXH3-128 is [0-9a-f]{32}, the container was packed against [0-9a-f]{32} \(wrong base\)" \
    "$MK" verify ft-d.mkz --base other/
t_fail "wrong base refused by hash (unpack)" 1 "the base's XXH3-128 is [0-9a-f]{32}, the container was packed against" \
    "$MK" unpack ft-d.mkz wb --base other/
t_absent "a wrong base leaves nothing" wb wb.tmp
t_fail "wrong base refused by shape" 1 "ft-d.mkz: tensor [a-z0-9_.]+ is stored against a base tensor BF16 \[[0-9, ]+\], base small/ has BF16 \[[0-9, ]+\] \(wrong base\)" \
    "$MK" verify ft-d.mkz --base small/
t_fail "a delta container as a base" 1 "is itself a delta container" "$MK" pack sp/ dd.mkz --base ft-d.mkz
t_fail "pack: missing base" 1 "nope/: no such file or folder" "$MK" pack ft/ x.mkz --base nope/
t_fail "verify: missing --base" 1 "nope/: no such file or folder" "$MK" verify ft-d.mkz --base nope/

# a damaged delta block is named (the middle of the data: a tensor block)
n=$(size ft-d.mkz)
isz=$(u64 ft-d.mkz $((n - 40)))
iof=$((n - 48 - isz))
cp ft-d.mkz dmg.mkz
flip dmg.mkz $((iof / 2))
t_fail "verify: damaged delta block" 1 "dmg.mkz: tensor [a-z0-9_.]+: block [0-9]+ of [0-9]+ is damaged" "$MK" verify dmg.mkz --base base/
t_fail "unpack: damaged delta block" 1 "dmg.mkz: tensor [a-z0-9_.]+: block [0-9]+ of [0-9]+ is damaged" "$MK" unpack dmg.mkz dmg --base base/
t_absent "unpack: damage leaves nothing" dmg dmg.tmp

# without its base, inspect still lists the tensors and says what the base is
t_ok "inspect without the base" "$MK" inspect sub/ft-d.mkz
grep -q "model.layers.0.mlp.up_proj.weight" .out && grep -q "^delta: 21 tensors stored as deltas against base base" .out &&
    ok "inspect lists tensors and the base" || notok "inspect lists tensors and the base" "$(tail -3 .out)"
t_ok "inspect --json without the base" "$MK" inspect sub/ft-d.mkz --json -s
grep -q '"delta_base": "base", "delta_tensors": 21' .out && ok "inspect --json names the base" || notok "inspect --json names the base" "$(head -c 300 .out)"

# every command reads the container given its base, with the folder's results
"$MK" inspect ft-d.mkz --json --hashes | sed -n 's/.*"name": "\([^"]*\)".*"xxh3": "\([0-9a-f]*\)".*/\1 \2/p' >h-d.txt
"$MK" inspect ft/ --json --hashes | sed -n 's/.*"name": "\([^"]*\)".*"xxh3": "\([0-9a-f]*\)".*/\1 \2/p' >h-f.txt
[ -s h-f.txt ] && cmp -s h-d.txt h-f.txt && ok "inspect --hashes: same tensors" || notok "inspect --hashes: same tensors" "$(diff h-d.txt h-f.txt | head -3)"
awk 'BEGIN { x = 7; for (i = 0; i < 400; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "tok%d ", 3 + (x % 125) } print "" }' >text.txt
"$MK" eval sp-d.mkz --text text.txt --ctx 64 2>/dev/null | sed 's/ (.* s, .* tokens\/s)//; s/^eval [^ ]*/eval M/' >e-d.txt
"$MK" eval sp/ --text text.txt --ctx 64 2>/dev/null | sed 's/ (.* s, .* tokens\/s)//; s/^eval [^ ]*/eval M/' >e-f.txt
grep -q perplexity e-f.txt && cmp -s e-d.txt e-f.txt && ok "eval: same perplexity" || notok "eval: same perplexity" "$(cat e-d.txt e-f.txt)"
t_ok "quantize the container" "$MK" quantize sp-d.mkz q-d --format nf4 -q
t_ok "quantize the folder" "$MK" quantize sp/ q-f --format nf4 -q
t_same "quantize: same weights" q-d/model.safetensors q-f/model.safetensors
cat >m.yaml <<EOF
merge_method: linear
models:
  - model: base
    parameters: {weight: 0.5}
  - model: sp-d.mkz
    parameters: {weight: 0.5}
dtype: bfloat16
EOF
sed 's/sp-d.mkz/sp/' m.yaml >mf.yaml
t_ok "merge from the container" "$MK" m.yaml out-d -q
t_ok "merge from the folder" "$MK" mf.yaml out-f -q
t_same "merge: same weights" out-d/model.safetensors out-f/model.safetensors
