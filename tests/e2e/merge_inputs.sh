# merge_inputs.sh - how merge treats what it is given: model references naming one folder
# (base, base/, ./base, a link) are one model; the vocabulary warning names every model and
# its size; whose config.json the output gets when the donor has none (and the error when no
# model has one); an existing empty OUT folder is used without --force (a non-empty one is
# not); --resume reports how many tensors it kept and how many it computed.
. "$MK_ROOT/tests/e2e/lib.sh"
make_models || { notok "models" "synth failed"; exit 0; }

# ---- one folder, one model ------------------------------------------------------------------
printf 'merge_method: ties\nbase_model: ./base\nmodels:\n  - model: base/\n  - model: ft1\n    parameters: {weight: 1, density: 0.5}\n' >same.yaml
t_ok "base_model ./base with base/ listed" "$MK" same.yaml o-same --dry-run --json
grep -q '"models": 2,' "$T/.out" && ok "./base and base/ are one model (2 inputs, not 3)" || notok "one model" "$(head -c 120 "$T/.out")"
printf 'merge_method: linear\nmodels:\n  - model: base/\n    parameters: {weight: 1}\n  - model: ./base\n    parameters: {weight: 1}\n' >twice.yaml
t_fail "base/ and ./base in one merge" 2 "twice\.yaml:5:12: model \./base is base/ again \(the same folder\); each model can be merged once" \
    "$MK" twice.yaml o-twice
ln -s base lnk
printf 'merge_method: linear\nmodels:\n  - model: lnk\n    parameters: {weight: 1}\n  - model: base//\n    parameters: {weight: 1}\n' >link.yaml
t_fail "a link to base and base//" 2 "link\.yaml:5:12: model base// is lnk again" "$MK" link.yaml o-link
printf 'merge_method: linear\nmodels:\n  - model: ./ft1/\n    parameters: {weight: 1}\n  - model: ft2\n    parameters: {weight: 1}\ntokenizer_source: ft1\n' >tok.yaml
t_ok "tokenizer_source names a model written another way" "$MK" tok.yaml o-tok -q
# a tokenizer_source that names no model of the recipe fails at planning: --dry-run says so,
# and the merge writes nothing
sed 's/^tokenizer_source: ft1$/tokenizer_source: ft3/' tok.yaml >tok3.yaml
mkdir -p ft3 && cp base/config.json ft3/
t_fail "tokenizer_source not among the models, at --dry-run" 2 "tok3\.yaml:7:19: tokenizer_source 'ft3' is not one of the recipe's models" \
    "$MK" tok3.yaml o-tok3 --dry-run -q
t_fail "... and the merge" 2 "tokenizer_source 'ft3' is not one of the recipe's models" "$MK" tok3.yaml o-tok3 -q
t_absent "... writes nothing" o-tok3 o-tok3.tmp

# ---- vocabulary sizes ---------------------------------------------------------------------------
"$MK" synth v160/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 176 --vocab 160 --seed 4 -q
printf 'merge_method: linear\nmodels:\n  - model: base\n    parameters: {weight: 1}\n  - model: v160\n    parameters: {weight: 1}\n' >vocab.yaml
"$MK" vocab.yaml o-vocab --dry-run >/dev/null 2>vocab.err
grep -q "tensor model\.embed_tokens\.weight: vocabulary sizes differ (\[128, 64\] in base, \[160, 64\] in v160); keeping the first 128 rows" vocab.err &&
    ok "the vocabulary warning names each model and its size" || notok "vocabulary warning" "$(cat vocab.err)"

# ---- config.json -----------------------------------------------------------------------------------
mkdir nocfg && cp ft1/model.safetensors nocfg/
printf 'merge_method: linear\nmodels:\n  - model: nocfg\n    parameters: {weight: 1}\n  - model: ft2\n    parameters: {weight: 1}\n' >cfg.yaml
"$MK" cfg.yaml o-cfg 2>cfg.err
rc=$?
[ $rc -eq 0 ] && grep -q "cfg\.yaml: nocfg (the first model) has no config\.json; the output's config\.json is ft2's, the first model that has one" cfg.err &&
    ok "the first model without config.json: the next model's is used, and said" || notok "config donor" "exit $rc: $(cat cfg.err)"
grep -q '"num_hidden_layers": 2' o-cfg/config.json 2>/dev/null && ok "the output has config.json" || notok "output config" "missing"
printf 'merge_method: task_arithmetic\nbase_model: nocfg\nmodels:\n  - model: ft2\n    parameters: {weight: 1}\n' >cfg2.yaml
"$MK" cfg2.yaml o-cfg2 -n >/dev/null 2>cfg2.err && grep -q "nocfg (the base model) has no config\.json; the output's config\.json is ft2's" cfg2.err &&
    ok "a base without config.json: said the same way" || notok "base without config" "$(cat cfg2.err)"
printf 'merge_method: passthrough\nmodels:\n  - model: nocfg\n' >cfg3.yaml
t_fail "no model has config.json" 2 "cfg3\.yaml:3:12: no input model has a config\.json \(nocfg\): the output needs one to load" "$MK" cfg3.yaml o-cfg3
t_absent "nothing written" o-cfg3 o-cfg3.tmp

# ---- an empty OUT folder ----------------------------------------------------------------------------
mkdir empty-out
t_ok "an empty existing OUT is used without --force" "$MK" "$ROOT/recipes/linear.yaml" empty-out -q
[ -f empty-out/model.safetensors ] && [ ! -e empty-out.tmp ] && ok "the merge is in the empty folder" || notok "empty OUT" "$(ls empty-out)"
mkdir empty-synth
t_ok "synth into an empty folder" "$MK" synth empty-synth --hidden 16 --layers 1 --heads 2 --intermediate 16 --vocab 16 -q
mkdir full-out && echo keep >full-out/notes.txt
t_fail "a non-empty OUT still needs --force" 2 "full-out: output already exists \(use --force" "$MK" "$ROOT/recipes/linear.yaml" full-out
[ "$(cat full-out/notes.txt)" = keep ] && ok "the non-empty folder is untouched" || notok "non-empty OUT" "changed"
mkdir empty-resume
t_ok "--resume into an empty folder starts the merge" "$MK" "$ROOT/recipes/linear.yaml" empty-resume --resume -q
[ -f empty-resume/mergekit-c.json ] && ok "--resume: empty folder filled" || notok "--resume into empty" "$(ls empty-resume)"

# ---- --resume counts ----------------------------------------------------------------------------------
"$MK" synth b4/ --hidden 128 --layers 4 --heads 4 --kv-heads 2 --intermediate 344 --vocab 2000 --dtype float32 --seed 5 -q
"$MK" synth f4/ --finetune-of b4/ --seed 6 -q
printf 'merge_method: linear\nmodels:\n  - model: b4\n    parameters: {weight: 1}\n  - model: f4\n    parameters: {weight: 1}\n' >big.yaml
MK_TEST_KILL_AT=25 "$MK" big.yaml part --out-shard-size 400K -q 2>/dev/null
"$MK" big.yaml part --out-shard-size 400K --resume -v >resume.log 2>&1
kept=$(sed -n 's/.*: 39 tensors (\([0-9]*\) kept from the interrupted run, \([0-9]*\) computed).*/\1/p' resume.log)
done_=$(sed -n 's/.*: 39 tensors (\([0-9]*\) kept from the interrupted run, \([0-9]*\) computed).*/\2/p' resume.log)
items=$(grep -c '^mergekit-c: \[[0-9]*/' resume.log)
if [ -n "$kept" ] && [ "$kept" -gt 0 ] && [ $((kept + done_)) -eq 39 ] && [ "$items" -eq "$done_" ] &&
    grep -q "computed and wrote $done_ tensor(s)" resume.log && grep -q "^mergekit-c: \[$done_/$done_\]" resume.log; then
    ok "--resume reports $kept tensors kept and $done_ computed (the progress counts the computed ones)"
else
    notok "--resume counts" "kept '$kept' computed '$done_' items $items: $(grep -v '^mergekit-c: \[' resume.log | grep -v hashing | head -5)"
fi
"$MK" big.yaml whole --out-shard-size 400K -q
t_same "the resumed merge equals an uninterrupted one" part/model-00001-of-00010.safetensors whole/model-00001-of-00010.safetensors
