# merge_stream.sh - merges read their inputs around the page cache (core/mk_dstream.h): a
# tensor read in one pass through streams, a tensor read in several held whole (--hold), the
# input hashing fed what the streams read (taps). --direct-io always reads every streamed
# block with O_DIRECT, off reads through the page cache as before: the output files and the
# recorded input hashes are the same either way, whatever the method, the hold, the thread
# count, a model given twice, or layers read out of file order. The output is written around
# the page cache too, where its tensors lie in file order.
. "$MK_ROOT/tests/e2e/lib.sh"

# tensors of 2 to 16 MiB per input: above the size a stream is opened for, and longer than a
# stream's ring (embeddings)
"$MK" synth base/ --hidden 1024 --layers 2 --heads 8 --kv-heads 8 --intermediate 2816 --vocab 8192 --dtype bf16 --seed 11 -q
"$MK" synth ft1/ --finetune-of base/ --delta 0.01 --seed 12 -q
"$MK" synth ft2/ --finetune-of base/ --delta 0.01 --seed 13 -q

cat >lin.yaml <<'EOF'
merge_method: linear
models:
  - {model: base, parameters: {weight: 0.4}}
  - {model: ft1, parameters: {weight: 0.3}}
  - {model: ft2, parameters: {weight: 0.3}}
dtype: bfloat16
EOF
cat >ta.yaml <<'EOF'
merge_method: task_arithmetic
base_model: base
models:
  - {model: ft1, parameters: {weight: 0.7}}
  - {model: ft2, parameters: {weight: 0.5}}
dtype: bfloat16
EOF
cat >ties.yaml <<'EOF'
merge_method: ties
base_model: base
models:
  - {model: ft1, parameters: {weight: 0.5, density: 0.5}}
  - {model: ft2, parameters: {weight: 0.5, density: 0.3}}
dtype: bfloat16
EOF
cat >dare.yaml <<'EOF'
merge_method: dare_ties
base_model: base
models:
  - {model: ft1, parameters: {weight: 0.5, density: 0.6}}
  - {model: ft2, parameters: {weight: 0.5, density: 0.6}}
dtype: bfloat16
random_seed: 7
EOF
cat >slerp.yaml <<'EOF'
merge_method: slerp
base_model: base
models:
  - {model: base}
  - {model: ft1}
parameters: {t: 0.3}
dtype: float32
EOF
# the same files twice (hard links): two streams of one file in one tensor
mkdir base2 && ln base/* base2/
cat >twice.yaml <<'EOF'
merge_method: linear
models:
  - {model: base, parameters: {weight: 0.5}}
  - {model: base2, parameters: {weight: 0.25}}
  - {model: ft1, parameters: {weight: 0.25}}
dtype: bfloat16
EOF
# layers read out of file order and twice: streams of one file not in file order
cat >stack.yaml <<'EOF'
slices:
  - sources: [{model: ft1, layer_range: [1, 2]}]
  - sources: [{model: ft1, layer_range: [0, 2]}]
merge_method: passthrough
dtype: bfloat16
EOF

# every file the same (the model card aside: it names OUT), shards and the recorded output
# and input hashes among them; m1's -vv log in $T/.dio
same_merge() { # tag, recipe, options...
    tag=$1 r=$2
    shift 2
    rm -rf m1 m2
    same=no
    if timeout -s KILL 120 "$MK" "$r" m1/ -vv --direct-io always "$@" 2>"$T/.dio" && "$MK" "$r" m2/ -q --direct-io off "$@"; then
        same=yes
        for f in m2/*; do
            [ "${f#m2/}" = README.md ] || cmp -s "$f" "m1/${f#m2/}" || same="no: $f"
        done
    fi
    [ "$same" = yes ] && ok "direct-io always = off, output and input hashes: $tag" ||
        notok "direct-io always = off, output and input hashes: $tag" "$same; $(tail -n 2 "$T/.dio")"
}

for j in 1 2; do
    same_merge "linear -j $j" lin.yaml -j $j
    grep -q "streamed [0-9.]* MiB of inputs: [1-9][0-9.]* MiB with O_DIRECT, 0.0 MiB from the page cache" "$T/.dio" &&
        ok "linear reads with O_DIRECT: -j $j" || notok "linear reads with O_DIRECT: -j $j" "$(grep streamed "$T/.dio")"
    same_merge "task_arithmetic -j $j" ta.yaml -j $j
    same_merge "ties -j $j" ties.yaml -j $j
    grep -q "streamed [0-9.]* MiB of inputs: [1-9][0-9.]* MiB with O_DIRECT" "$T/.dio" &&
        ok "ties holds its inputs: -j $j" || notok "ties holds its inputs: -j $j" "$(grep streamed "$T/.dio")"
    same_merge "dare_ties -j $j" dare.yaml -j $j
    same_merge "slerp in float32 -j $j" slerp.yaml -j $j
done
same_merge "ties, nothing held" ties.yaml --hold 0
grep -q "streamed" "$T/.dio" && notok "--hold 0: ties streams nothing" "$(grep streamed "$T/.dio")" || ok "--hold 0: ties streams nothing"
same_merge "ties, all held" ties.yaml --hold 1G
# reading ahead: a method of several passes reads further ahead within --hold, one read in a
# single pass only the next tensor (and a norm after it, read through the page cache)
rm -rf m1 m2
"$MK" ties.yaml m1/ -vv -j 2 --hold 1G 2>"$T/.dbg" && "$MK" lin.yaml m2/ -vv -j 2 2>"$T/.dbg2" &&
    grep -q "tensor model.embed_tokens.weight: [3-8] tensor(s) read ahead" "$T/.dbg" &&
    grep -q "tensor model.layers.0.self_attn.q_proj.weight: 1 tensor(s) read ahead" "$T/.dbg2" &&
    ! grep -q "[3-8] tensor(s) read ahead" "$T/.dbg2" &&
    ok "ties reads tensors ahead within --hold, linear the next" ||
    notok "ties reads tensors ahead within --hold, linear the next" "$(grep -h "read ahead" "$T/.dbg" "$T/.dbg2" | head -n 4)"
"$MK" ties.yaml m3/ -vv -j 2 --hold 0 2>"$T/.dbg" && ! grep -q "[2-8] tensor(s) read ahead" "$T/.dbg" &&
    ok "--hold 0: only the next tensor read ahead" || notok "--hold 0: only the next tensor read ahead" "$(grep "read ahead" "$T/.dbg" | head -n 3)"
same_merge "a model given twice" twice.yaml -j 2
same_merge "layers out of file order" stack.yaml -j 2
# the output: written around the page cache (core/mk_dwrite.h) where its tensors lie in file
# order, as a merge's do: every window of every shard, and the same files and recorded hashes
# as written through the page cache (--direct-io off); a quantized model's tensors do not lie
# in file order (sorted by element size), so it is written through the cache, as before
same_merge "ties into 20M shards" ties.yaml -j 2 --out-shard-size 20M
n=$(grep -c "model-0000[1-9]-of-0000[2-9].safetensors: [1-9][0-9]* window(s) written around the page cache, 0 through it" "$T/.dio")
[ "$n" -ge 2 ] && ok "the output written around the page cache, every window of every shard" ||
    notok "the output written around the page cache, every window of every shard" "$n shard(s): $(grep "window(s)" "$T/.dio" | head -n 2)"
rm -rf q1 q2
"$MK" quantize ft1 q1/ --format int8 -vv 2>"$T/.dbg" && "$MK" quantize ft1 q2/ --format int8 -q --direct-io off &&
    ! grep -q "window(s) written" "$T/.dbg" && cmp -s q1/model.safetensors q2/model.safetensors &&
    ok "a quantized model (not in file order) written through the page cache" ||
    notok "a quantized model (not in file order) written through the page cache" "$(grep "window(s)" "$T/.dbg" | head -n 2)"
# sharded inputs: a tap per shard, each hashed behind the merge's reads in that shard alone,
# so no shard is read through the page cache ahead of the streams
"$MK" synth sh1/ --finetune-of base/ --delta 0.01 --seed 14 --out-shard-size 20M -q
"$MK" synth sh2/ --finetune-of base/ --delta 0.01 --seed 15 --out-shard-size 30M -q
sed 's/ft1/sh1/; s/ft2/sh2/' lin.yaml >shards.yaml
same_merge "sharded inputs" shards.yaml -j 2
grep -q "streamed [0-9.]* MiB of inputs: [1-9][0-9.]* MiB with O_DIRECT, 0.0 MiB from the page cache" "$T/.dio" &&
    ok "sharded inputs read with O_DIRECT" || notok "sharded inputs read with O_DIRECT" "$(grep streamed "$T/.dio")"
rm -rf m1
sync
for f in base/*.safetensors sh1/*.safetensors sh2/*.safetensors; do # out of the page cache
    dd if="$f" iflag=nocache count=0 status=none
done
"$MK" shards.yaml m1/ -v -j 2 2>"$T/.dio"
grep -q "streamed [0-9.]* MiB of inputs: [1-9][0-9.]* MiB with O_DIRECT, 0.0 MiB from the page cache" "$T/.dio" &&
    ok "auto: sharded inputs, none read ahead into the page cache" || notok "auto: sharded inputs, none read ahead into the page cache" "$(grep streamed "$T/.dio")"
# the default hold: 1/16 of the memory available (MemAvailable, or the least room a limit leaves
# in the process's memory cgroup and the groups above it: v1's memory line, else v2's), 64M to
# 1G; a part of a split output 64M; a given size as given (no line)
expect_hold() { # -> MiB
    cg=$({ grep -E '^[0-9]+:[^:]*memory[^:]*:' /proc/self/cgroup || grep '^0::' /proc/self/cgroup; } 2>/dev/null | head -n 1)
    case "$cg" in
    0::*) base=/sys/fs/cgroup lim=memory.max use=memory.current ;;
    *) base=/sys/fs/cgroup/memory lim=memory.limit_in_bytes use=memory.usage_in_bytes ;;
    esac
    rel=${cg#*:}
    rel=${rel#*:}
    room=""
    while [ -n "$cg" ]; do
        l=$(cat "$base$rel/$lim" 2>/dev/null) u=$(cat "$base$rel/$use" 2>/dev/null)
        room=$(awk -v l="$l" -v u="${u:-0}" -v r="$room" 'BEGIN { if (l ~ /^[0-9]+$/ && l > 0 && l < 2^60) {
            x = l > u ? l - u : 0; if (r == "" || x < r) r = x }; printf "%s", r }')
        [ -z "$rel" ] || [ "$rel" = / ] && break
        rel=${rel%/*}
    done
    awk -v r="$room" '/^MemAvailable:/ { a = $2 * 1024; if (r != "" && r < a) a = r; h = a / 16 / 1048576
        printf "%d", (h < 64 ? 64 : (h > 1024 ? 1024 : h)) }' /proc/meminfo
}
"$MK" ties.yaml m5/ -v --dry-run 2>"$T/.h" &&
    mib=$(sed -n 's/.*--hold: \([0-9]*\) MiB for the inputs held (1\/16 of the memory available, 64M to 1G).*/\1/p' "$T/.h") &&
    want=$(expect_hold) && [ -n "$mib" ] && [ -n "$want" ] && awk "BEGIN { exit !($mib >= 0.8 * $want && $mib <= 1.25 * $want) }" &&
    ok "default --hold: $mib MiB, 1/16 of the memory available ($want MiB)" ||
    notok "default --hold" "$(grep -e --hold "$T/.h"), expected about ${want:-?} MiB"
"$MK" ties.yaml m5/ -v --dry-run --part 1/2 2>"$T/.h"
grep -q -e "--hold: 64 MiB for the inputs held (a part of a split output)" "$T/.h" &&
    ok "--part: --hold 64M" || notok "--part: --hold 64M" "$(grep -e --hold "$T/.h")"
"$MK" ties.yaml m5/ -v --dry-run --hold 32M 2>"$T/.h"
grep -q -e "--hold:" "$T/.h" && notok "--hold 32M: as given" "$(grep -e --hold "$T/.h")" || ok "--hold 32M: as given"
t_fail "--hold takes a size" 2 "--hold" "$MK" lin.yaml m4/ --hold lots
t_absent "nothing written" m4 m4.tmp
