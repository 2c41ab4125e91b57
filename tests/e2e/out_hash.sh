# out_hash.sh - the XXH3-128 that merge records for each output shard (hashed as the shard is
# written, never read back) is the whole file's: what `xxhsum -H2 FILE` prints (skipped,
# saying so, without xxhsum) and what `--check` re-derives; sharded and single-file outputs.
. "$MK_ROOT/tests/e2e/lib.sh"
"$MK" synth base/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 160 --vocab 64 --dtype bf16 --seed 1 -q &&
    "$MK" synth ft1/ --finetune-of base/ --delta 0.01 --seed 2 -q &&
    "$MK" synth ft2/ --finetune-of base/ --delta 0.01 --seed 3 -q || { notok "synth" "could not make the models"; exit 1; }
t_ok "merge, 12 shards" "$MK" "$ROOT/recipes/linear.yaml" sh/ -q --out-shard-size 20000
t_ok "merge, one file" "$MK" "$ROOT/recipes/linear.yaml" one/ -q
t_ok "--check re-derives the shard hashes" "$MK" "$ROOT/recipes/linear.yaml" sh/ --check -q
# the input hashes, made beside the merge from all of a model's shards at once and paced by it:
# what --check hashes again, unpaced, before it merges
printf 'merge_method: linear\nmodels:\n  - model: sh/\n    parameters: {weight: 0.5}\n  - model: base/\n    parameters: {weight: 0.5}\n' >shin.yaml
t_ok "merge from the sharded output" "$MK" shin.yaml shin/ -q -j 2
n=$(grep -c '"file": "sh/model-' shin/mergekit-c.json) want=$(ls sh/*.safetensors | wc -l)
[ "$n" -eq "$want" ] && [ "$n" -gt 3 ] && ok "every input shard's hash recorded" || notok "every input shard's hash recorded" "$n of $want"
t_ok "--check re-derives the input shards' hashes" "$MK" shin.yaml shin/ --check -q
if command -v xxhsum >/dev/null 2>&1; then
    for d in sh one; do
        bad=$(sed -n 's/.*"name": "\([^"]*\)", "size": [0-9]*, "xxh128": "\([0-9a-f]*\)".*/\2 \1/p' "$d/mergekit-c.json" |
            while read -r h f; do
                got=$(xxhsum -H2 "$d/$f" | cut -d' ' -f1)
                [ "$got" = "$h" ] || echo "$f: recorded $h, xxhsum -H2 $got"
            done)
        n=$(grep -c '"xxh128"' "$d/mergekit-c.json")
        [ -z "$bad" ] && [ "$n" -gt 3 ] && ok "$d: every recorded output hash is xxhsum -H2's ($n files)" ||
            notok "$d: recorded output hashes are xxhsum -H2's" "${bad:-only $n hashes}"
    done
else
    echo "skip - recorded output hashes against xxhsum -H2: xxhsum is not installed (Debian package xxhash)"
fi
