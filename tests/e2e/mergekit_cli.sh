# mergekit_cli.sh - mergekit-yaml command lines as scripts, notebooks and issues write them,
# run by the mergekit-yaml link (and by mergekit-c with the same words): options that only
# steer PyTorch give a note and change nothing (every output file byte-identical to the plain
# mergekit-c run), those that change the output do what mergekit does, --trust-remote-code is
# refused with its reason.
. "$MK_ROOT/tests/e2e/lib.sh"
YAML=$T/bin/mergekit-yaml
mkdir bin && ln -s "$MK" "$YAML"
make_models || { notok "models" "synth failed"; exit 0; }
# recipes name the models by absolute path, so runs from different folders write the same files
cat >ties.yml <<END
models:
  - model: $T/ft1
    parameters: {density: 0.5, weight: 0.5}
  - model: $T/ft2
    parameters: {density: 0.5, weight: 0.3}
merge_method: ties
base_model: $T/base
parameters:
  normalize: true
  int8_mask: true
dtype: bfloat16
END
cat >dare.yml <<END
models:
  - model: $T/base
  - model: $T/ft1
    parameters: {density: 0.53, weight: 0.4}
  - model: $T/ft2
    parameters: {density: 0.53, weight: 0.3}
merge_method: dare_ties
base_model: $T/base
parameters:
  int8_mask: true
dtype: bfloat16
END
cat >slerp.yml <<END
slices:
  - sources:
      - model: $T/base
        layer_range: [0, 2]
      - model: $T/ft1
        layer_range: [0, 2]
merge_method: slerp
base_model: $T/base
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
END

n=0
# same NAME RECIPE "MERGEKIT-YAML ARGS" "MERGEKIT-C ARGS": both succeed from their own folders and
# write the same files, byte for byte
same() {
    n=$((n + 1))
    mkdir "y$n" "c$n"
    # shellcheck disable=SC2086
    (cd "y$n" && "$YAML" "../$2" out $3 >../y.out 2>../y.err)
    ry=$?
    # shellcheck disable=SC2086
    (cd "c$n" && "$MK" "../$2" out $4 -q >/dev/null 2>../c.err)
    rc=$?
    if [ $ry -ne 0 ] || [ $rc -ne 0 ]; then
        notok "$1" "exit $ry / $rc: $(cat y.err c.err | head -n 3)"
        return
    fi
    if [ "$(ls "y$n/out")" != "$(ls "c$n/out")" ]; then
        notok "$1" "files differ: $(ls "y$n/out" | tr '\n' ' ') vs $(ls "c$n/out" | tr '\n' ' ')"
        return
    fi
    for f in "c$n"/out/*; do
        cmp -s "$f" "y$n/out/${f##*/}" || { notok "$1" "${f##*/} differs"; return; }
    done
    ok "$1: $(ls "c$n/out" | wc -l) files byte-identical to mergekit-c $2 out $4"
}
# notes WORD...: y.err has a note for each --WORD and no other line
notes() {
    for w in "$@"; do
        grep -q "^mergekit-c: note: --$w: not needed: " y.err || { echo "no note for --$w"; return 1; }
    done
    [ "$(grep -vc '^mergekit-c: note: ' y.err)" -le 1 ] || { echo "other lines: $(grep -v note y.err)"; return 1; }
}

# mergekit's README: "mergekit-yaml path/to/your/config.yml ./output-model-directory [--cuda] [--lazy-unpickle] [--allow-crimes]"
same "README usage" ties.yml "--cuda --lazy-unpickle --allow-crimes" "--allow-crimes"
d=$(notes cuda lazy-unpickle) && ok "README usage: one note per PyTorch option" || notok "README usage notes" "$d"
# LazyMergekit notebooks (and the scripts this command line was reported from)
same "LazyMergekit" slerp.yml "--copy-tokenizer --allow-crimes --out-shard-size 1B --lazy-unpickle" "--allow-crimes --out-shard-size 1B"
same "LazyMergekit with --cuda" ties.yml "--cuda --lazy-unpickle --copy-tokenizer --allow-crimes --out-shard-size 1B" "--out-shard-size 1B --allow-crimes"
# mergekit issue #192 (Windows, a StarCoder2 merge)
same "issue 192 command line" ties.yml "--cuda --write-model-card --lazy-unpickle --low-cpu-memory --out-shard-size 1B --safe-serialization" "--out-shard-size 1B"
# mergekit issue #20 (low memory on Colab): smaller shards, --low-cpu-memory
same "issue 20: --out-shard-size 500M --low-cpu-memory" ties.yml "--out-shard-size 500M --low-cpu-memory --lazy-unpickle" "--out-shard-size 500M"
same "shards in mergekit's k units" ties.yml "--out-shard-size 100k --lazy-unpickle" "--out-shard-size 100K"
[ "$(ls "y$n/out"/model-*-of-*.safetensors | wc -l)" -ge 2 ] && ok "--out-shard-size 100k shards the output" || notok "100k shards" "$(ls "y$n/out")"
# mergekit PR #682's notebook
same "PR 682 notebook" dare.yml "--copy-tokenizer --allow-crimes --lazy-unpickle" "--allow-crimes"
# randomized methods with a seed (mergekit's --random-seed)
same "--random-seed 42" dare.yml "--random-seed 42 --cuda" "--random-seed 42"
same "--random-seed 43" dare.yml "--random-seed 43" "--random-seed 43"
cmp -s "y$((n - 1))/out/model.safetensors" "y$n/out/model.safetensors" && notok "--random-seed changes DARE" "seeds 42 and 43 gave the same" ||
    ok "--random-seed changes DARE's masks"
# options before the arguments, verbosity and threads
n=$((n + 1)); mkdir "y$n" "c$n"
(cd "y$n" && "$YAML" --cuda --allow-crimes -v --num-threads 2 ../ties.yml out >/dev/null 2>../y.err) &&
    (cd "c$n" && "$MK" ../ties.yml out -j 2 -q) && t_same "options first, -v, --num-threads 2" "y$n/out/model.safetensors" "c$n/out/model.safetensors"
same "-j 1 (mergekit's short --num-threads)" ties.yml "-j 1" "--threads 1"
# every option that steers PyTorch at once
same "every PyTorch-only option" ties.yml "--device cpu --read-to-gpu --multi-gpu --gpu-rich --clone-tensors --async-write --write-threads 4 --transformers-cache $T/hf --no-cuda --no-low-cpu-memory" ""
d=$(notes device read-to-gpu multi-gpu gpu-rich clone-tensors async-write write-threads transformers-cache) &&
    ! grep -q -- "--cuda\|--low-cpu-memory" y.err && ok "a note for each option turned on, none for --no-X" || notok "PyTorch-only notes" "$d $(cat y.err)"
same "--quiet silences the notes" ties.yml "--quiet --cuda --lazy-unpickle" ""
[ -s y.err ] && notok "--quiet" "$(cat y.err)" || ok "--quiet: nothing on stderr"
same "--no-quiet --no-allow-crimes --unsafe-truncate-embeddings" ties.yml "--no-quiet --no-allow-crimes --unsafe-truncate-embeddings" ""

# ---- options that change the output do what mergekit does -----------------------------------
n=$((n + 1)); mkdir "y$n"
(cd "y$n" && "$YAML" ../ties.yml out --no-copy-tokenizer -q) && ls "y$n/out" >files.txt
! grep -q 'tokenizer\|special_tokens_map\|generation_config' files.txt && grep -q config.json files.txt && grep -q README.md files.txt &&
    ok "--no-copy-tokenizer: no tokenizer or generation files" || notok "--no-copy-tokenizer" "$(cat files.txt | tr '\n' ' ')"
t_same "--no-copy-tokenizer: the same weights" "y$n/out/model.safetensors" "c1/out/model.safetensors"
n=$((n + 1)); mkdir "y$n"
(cd "y$n" && "$YAML" ../ties.yml out --no-write-model-card -q) && ls "y$n/out" >files.txt
! grep -q 'README.md\|mergekit_config.yml' files.txt && grep -q tokenizer.json files.txt &&
    ok "--no-write-model-card: no README.md and no mergekit_config.yml, as mergekit" || notok "--no-write-model-card" "$(cat files.txt | tr '\n' ' ')"
t_ok "--no-write-model-card: --check still reproduces it" "$MK" ties.yml "y$n/out" --check -q
printf 'merge_method: linear\nmodels:\n  - model: ft1\n    parameters: {weight: 1}\n  - model: ft2\n    parameters: {weight: 1}\ntokenizer_source: ft2\n' >tok.yml
t_ok "--no-copy-tokenizer with a tokenizer_source" "$YAML" tok.yml tok-out --no-copy-tokenizer -q
[ -f tok-out/tokenizer.json ] && ok "a recipe's tokenizer_source is saved whatever --no-copy-tokenizer says (as mergekit)" ||
    notok "tokenizer_source" "$(ls tok-out)"
t_ok "--no-safe-serialization" "$YAML" ties.yml nss --no-safe-serialization
grep -q "warning: --no-safe-serialization: mergekit-c writes safetensors only" "$T/.err" && [ -f nss/model.safetensors ] &&
    ok "--no-safe-serialization: a warning, and safetensors" || notok "--no-safe-serialization" "$(cat "$T/.err")"

# ---- refused -----------------------------------------------------------------------------------------
# mergekit issue #124: "mergekit-yaml models1.yml ./ok --trust-remote-code --lora-merge-cache ."
t_fail "--trust-remote-code refused" 2 "^mergekit-c: error: --trust-remote-code: refused: mergekit-c never runs code from a model repository" \
    "$YAML" ties.yml ok --trust-remote-code --lora-merge-cache .
t_absent "refused: nothing written" ok ok.tmp
t_ok "--no-trust-remote-code is the default" "$YAML" ties.yml ntrc --no-trust-remote-code -q
"$MK" lora extract base/ ft1/ ad/ --rank 4 -q
printf 'merge_method: linear\nmodels:\n  - model: base+ad\n    parameters: {weight: 1}\n  - model: ft2\n    parameters: {weight: 1}\n' >lora.yml
t_ok "an adapter recipe with --lora-merge-cache" "$YAML" lora.yml lora-out --lora-merge-cache ./cache --cuda
grep -q "note: --lora-merge-cache: not needed: adapters .* are merged on the fly" "$T/.err" && [ ! -e cache ] &&
    ok "--lora-merge-cache: a note, no cache folder" || notok "--lora-merge-cache" "$(cat "$T/.err")"
t_fail "--lora-merge-dtype with an adapter refused" 2 "--lora-merge-dtype bfloat16: not supported: adapters are merged on the fly" \
    "$YAML" lora.yml ld --lora-merge-dtype bfloat16
t_fail "an option mergekit-yaml does not have" 2 "unknown option '--cuda-graphs'" "$YAML" ties.yml x --cuda-graphs
t_fail "mergekit-yaml needs its two arguments" 2 "usage: mergekit-yaml CONFIG_FILE OUT_PATH" "$YAML" ties.yml

# ---- mergekit-c takes the same words -------------------------------------------------------------------
n=$((n + 1)); mkdir "c$n"
(cd "c$n" && "$MK" ../ties.yml out --cuda --lazy-unpickle --copy-tokenizer --allow-crimes --out-shard-size 1B 2>../c.err) &&
    cmp -s "c$n/out/model.safetensors" c1/out/model.safetensors && grep -q "note: --cuda" c.err &&
    ok "mergekit-c RECIPE OUT with mergekit-yaml's words" || notok "mergekit-c with mergekit words" "$(cat c.err)"
t_ok "merge --help lists mergekit-yaml's options" "$MK" merge --help
grep -q "mergekit-yaml options" "$T/.out" && grep -q -- "--\[no-\]copy-tokenizer" "$T/.out" && ok "merge --help: the mergekit-yaml section" ||
    notok "merge --help" "no mergekit-yaml section"
t_ok "mergekit-yaml --help" "$YAML" --help
head -n 1 "$T/.out" | grep -q "^usage: mergekit-yaml CONFIG_FILE OUT_PATH" && ok "mergekit-yaml --help names itself" || notok "mergekit-yaml --help" "$(head -n 1 "$T/.out")"
