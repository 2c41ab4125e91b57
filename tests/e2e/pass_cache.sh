# pass_cache.sh - methods that make several passes over a tensor keep their masks, selections
# and per-row or per-element state between passes, up to --pass-cache; the output is the same
# bytes whether everything, a few chunks (a cap smaller than most tensors) or nothing is kept.
. "$MK_ROOT/tests/e2e/lib.sh"
"$MK" synth base/ --hidden 32 --layers 4 --heads 4 --kv-heads 2 --intermediate 48 --vocab 48 --dtype bf16 --seed 1 -q &&
    "$MK" synth ft1/ --finetune-of base/ --delta 0.05 --seed 2 -q &&
    "$MK" synth ft2/ --finetune-of base/ --delta 0.05 --density 0.7 --seed 3 -q &&
    "$MK" synth ft3/ --finetune-of base/ --delta 0.08 --seed 4 -q || { notok "synth" "could not make the models"; exit 1; }

for name in ties dare_ties dare_linear della breadcrumbs_ties sce model_stock nuslerp multislerp karcher arcee_fusion ramplus_tl; do
    r=$ROOT/recipes/$name.yaml
    # 100 bytes: a few chunks of masks; 1K: a few chunks of means, no per-row KL (192 bytes a tensor)
    "$MK" "$r" all/ -q -j2 --chunk 96 --pass-cache 1G && "$MK" "$r" few/ -q -j2 --chunk 96 --pass-cache 100 &&
        "$MK" "$r" some/ -q -j2 --chunk 96 --pass-cache 1K &&
        "$MK" "$r" none/ -q -j1 --chunk 96 --pass-cache 0 || { notok "$name runs with --pass-cache" "$(cat "$T/.err" 2>/dev/null)"; continue; }
    if cmp -s all/model.safetensors few/model.safetensors && cmp -s all/model.safetensors some/model.safetensors &&
        cmp -s all/model.safetensors none/model.safetensors; then
        ok "$name: same bytes with every chunk, a few and none kept between passes"
    else
        notok "$name: same bytes with every chunk, a few and none kept between passes" "outputs differ"
    fi
    rm -rf all few some none
done
# karcher emits the chunks whose mean it kept without reading their inputs again
"$MK" "$ROOT/recipes/karcher.yaml" all/ -vv -j2 --chunk 96 --pass-cache 1G 2>all.log &&
    "$MK" "$ROOT/recipes/karcher.yaml" none/ -vv -j2 --chunk 96 --pass-cache 0 2>none.log || notok "karcher -vv" "$(tail -n 2 all.log none.log)"
n_t=$(grep -c "^mergekit-c: tensor .*read ahead" all.log) n_k=$(grep -c "chunks computed from what the method kept, no input read" all.log)
if [ "$n_t" -gt 0 ] && [ "$n_k" = "$n_t" ] && ! grep -q "no input read" none.log && cmp -s all/model.safetensors none/model.safetensors; then
    ok "karcher: every tensor's kept means emitted without their inputs ($n_k of $n_t), none with --pass-cache 0, same bytes"
else
    notok "karcher: every tensor's kept means emitted without their inputs" "$n_k of $n_t tensors; with --pass-cache 0: $(grep -c 'no input read' none.log)"
fi
rm -rf all none all.log none.log
t_fail "--pass-cache takes a size" 2 "pass-cache" "$MK" "$ROOT/recipes/ties.yaml" out/ --pass-cache lots
