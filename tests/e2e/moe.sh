#!/bin/sh
# moe.sh - `mergekit-c moe` against mergekit-moe 0.1.5's own outputs (tests/golden/moe/, made
# by tools/gen-golden-moe.py on the same synthetic models):
#   - every output tensor byte-identical (XXH3-128 of its bytes) for gate_mode cheap_embed,
#     random and uniform_random (mergekit-moe after torch.manual_seed(N) = mergekit-c --seed N),
#     Mixtral, Qwen3-MoE and Qwen2-MoE;
#   - gate_mode hidden: every tensor but the routers byte-identical, the routers within
#     MOE_HIDDEN_REL of the largest |element| (mergekit-moe runs the base model in bfloat16,
#     mergekit-c in float32; on unit-length gate vectors), the worst element printed;
#   - gate_mode random with dtype float32: routers within MOE_RANDN_ULP units in the last place;
#   - config.json's MoE keys as mergekit-moe writes them;
#   - the forward pass: `eval` of our output against transformers' perplexity of mergekit-moe's
#     (same bytes) within MOE_PPL_REL (routing, softmax top-k, renormalization, shared expert);
#   - eval on a tiny Mixtral in the per-expert layout of real Mixtral checkpoints
#     (block_sparse_moe.experts.N.w1/w2/w3) against transformers' perplexity of it;
#   - noise_scale / residual_scale; the same bytes at 1 and 3 threads; the example configs in
#     recipes/moe/; bad input: one line, exit 2, nothing written.
. "$(dirname "$0")/lib.sh"
G="$ROOT/tests/golden/moe"
MOE_HIDDEN_REL=0.02 # measured worst: 0.002 absolute (one bf16 ulp), on vectors of largest |element| ~0.4
MOE_RANDN_ULP=2     # random in float32: torch's AVX2 Box-Muller uses SLEEF's log/sin/cos (measured: 2)
MOE_PPL_REL=0.0001  # measured worst: 2e-6

# the models of the goldens, made by the synth commands the manifest records
sed -n 's/^ *"mergekit-c synth \(.*\)",\{0,1\}$/\1/p' "$G/MANIFEST.json" | while read -r args; do
    # shellcheck disable=SC2086
    "$MK" synth $args -q || echo "synth failed: $args"
done >synth.log 2>&1
if [ -s synth.log ]; then notok "moe synth inputs" "$(head -c 300 synth.log)"; fi

# name dtype [shape] hash per tensor, from `inspect --hashes`, routers left out with $2 = noroute
hashes() {
    "$MK" inspect "$1" --hashes -q | awk -v skip="$2" '$2 ~ /^(BF16|F16|F32)$/ {
        s = $0; sub(/^[^[]*/, "", s); sub(/\].*/, "]", s);
        if (skip == "noroute" && ($1 ~ /\.mlp\.gate\.weight$/ || $1 ~ /shared_expert_gate\.weight$/)) next;
        print $1, $2, s, $NF }' | sort
}
json_num() { sed -n "s/.*\"$2\": \([-0-9.e+]*\).*/\1/p" "$1" | head -n 1; }

for d in "$G"/*/; do
    case=$(basename "$d")
    [ -f "$d/config.yaml" ] || continue
    cp "$d/config.yaml" "$case.yaml"
    # shellcheck disable=SC2046
    if ! "$MK" moe "$case.yaml" "out-$case" $(cat "$d/args") -q 2>"$case.err"; then
        notok "moe $case" "$(head -c 400 "$case.err")"
        continue
    fi
    skip=all tol=
    case "$case" in
    *hidden*) skip=noroute tol="--rel $MOE_HIDDEN_REL" ;;
    *random_f32*) skip=noroute tol="--max-ulp $MOE_RANDN_ULP" ;;
    esac
    hashes "out-$case" "$skip" >"$case.got"
    if [ "$skip" = noroute ]; then
        grep -v -e '\.mlp\.gate\.weight ' -e 'shared_expert_gate\.weight ' "$d/hashes.txt" | sort >"$case.want"
    else
        sort "$d/hashes.txt" >"$case.want"
    fi
    if cmp -s "$case.got" "$case.want"; then
        ok "moe $case: $(wc -l <"$case.want") tensors byte-identical to mergekit-moe"
    else
        notok "moe $case tensors" "$(diff "$case.want" "$case.got" | head -n 6)"
    fi
    if [ "$skip" = noroute ]; then
        # shellcheck disable=SC2086
        if "$MK" compare "out-$case" "$d/routers.safetensors" --subset $tol -q >"$case.cmp" 2>&1; then
            worst=$("$MK" compare "out-$case" "$d/routers.safetensors" --subset --json -q |
                sed -n 's/.*"max_abs_diff": \([-0-9.e+]*\).*/\1/p' | head -n 1)
            ok "moe $case: routers within $tol of mergekit-moe's (max |diff| ${worst:-?})"
        else
            notok "moe $case routers" "$(head -c 600 "$case.cmp")"
        fi
    fi
    for k in model_type num_local_experts num_experts num_experts_per_tok norm_topk_prob moe_intermediate_size \
        shared_expert_intermediate_size decoder_sparse_step; do
        want=$(sed -n "s/^  \"$k\": \(.*\),\{0,1\}$/\1/p" "$d/config.json" | sed 's/,$//')
        got=$(sed -n "s/^  \"$k\": \(.*\),\{0,1\}$/\1/p" "out-$case/config.json" | sed 's/,$//')
        [ "$want" = "$got" ] || notok "moe $case config.json" "$k is '$got', mergekit-moe writes '$want'"
    done
    if [ -f "$d/ppl.json" ]; then
        want=$(json_num "$d/ppl.json" ppl_transformers)
        got=$("$MK" eval "out-$case" --text "$G/text.txt" --ctx 32 --chunks 6 --json -q | sed -n 's/.*"ppl": \([-0-9.e+]*\).*/\1/p')
        if awk -v a="$got" -v b="$want" -v t="$MOE_PPL_REL" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d; exit !(a != "" && d <= t) }'; then
            ok "moe $case: eval perplexity $got, transformers $want"
        else
            notok "moe $case forward" "eval perplexity '$got', transformers on mergekit-moe's output $want (tolerance $MOE_PPL_REL)"
        fi
    fi
done

# a Mixtral checkpoint in the per-expert layout real ones store (block_sparse_moe.experts.N.w1,
# made by renaming mergekit-moe's output): eval runs it as transformers does
# (tiny/ is among the manifest's models made above)
mkdir legacy && cp "$G/legacy_mixtral/model.safetensors" "$G/legacy_mixtral/config.json" tiny/tokenizer.json tiny/tokenizer_config.json legacy/
want=$(json_num "$G/legacy_mixtral/ppl.json" ppl_transformers)
got=$("$MK" eval legacy/ --text "$G/text.txt" --ctx 32 --chunks 6 --json -q | sed -n 's/.*"ppl": \([-0-9.e+]*\).*/\1/p')
if awk -v a="$got" -v b="$want" -v t="$MOE_PPL_REL" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d; exit !(a != "" && d <= t) }'; then
    ok "moe: per-expert Mixtral checkpoint, eval perplexity $got, transformers $want"
else
    notok "moe per-expert Mixtral checkpoint" "eval perplexity '$got', transformers $want (tolerance $MOE_PPL_REL)"
fi

# thread counts: the hidden gates (a forward pass) give the same bytes
cp "$G/mixtral_hidden/config.yaml" h.yaml
"$MK" moe h.yaml j1/ -q -j1 && "$MK" moe h.yaml j3/ -q -j3
if [ -f j1/model.safetensors ] && t_same_quiet j1/model.safetensors j3/model.safetensors; then ok "moe: same bytes at 1 and 3 threads"
else notok "moe determinism" "outputs at -j1 and -j3 differ"; fi

# noise_scale: N(0, noise_scale) added to that expert's weights (mergekit-c's own noise, seeded),
# residual_scale: its down projections scaled; the other experts untouched
cat >noise.yaml <<'EOF2'
base_model: base/
gate_mode: random
dtype: float32
experts:
  - source_model: e1/
    noise_scale: 0.01
  - source_model: e2/
    residual_scale: 0.5
EOF2
sed '/noise_scale/d; /residual_scale/d' noise.yaml >plain.yaml
"$MK" moe noise.yaml n1/ -q && "$MK" moe noise.yaml n2/ -q && "$MK" moe noise.yaml n3/ --seed 9 -q && "$MK" moe plain.yaml np/ -q
t_same "moe noise: same seed, same bytes" n1/model.safetensors n2/model.safetensors
if t_same_quiet n1/model.safetensors n3/model.safetensors; then notok "moe noise: another seed" "same bytes"; else ok "moe noise: another seed, other noise"; fi
"$MK" compare n1/ np/ --json -q >noise.json
gu=$(grep '"model.layers.0.mlp.experts.gate_up_proj"' noise.json)
dn=$(grep '"model.layers.0.mlp.experts.down_proj"' noise.json)
d_gu=$(echo "$gu" | sed -n 's/.*"differ": \([0-9]*\).*/\1/p'); m_gu=$(echo "$gu" | sed -n 's/.*"max_abs_diff": \([-0-9.e+]*\).*/\1/p')
d_dn=$(echo "$dn" | sed -n 's/.*"differ": \([0-9]*\).*/\1/p')
# gate_up: expert 0's 2 x 48 x 32 elements noisy (~8 % round back to the same bfloat16), max
# |noise| over 3072 draws of N(0, 0.01) about 0.035; down: expert 0 noisy and expert 1 halved
if [ "${d_gu:-0}" -ge 2600 ] && [ "$d_gu" -le 3072 ] && awk -v m="$m_gu" 'BEGIN { exit !(m > 0.02 && m < 0.08) }' &&
    [ "${d_dn:-0}" -ge 2600 ] && [ "$d_dn" -le 3072 ]; then
    ok "moe noise_scale / residual_scale: $d_gu of 6144 gate_up and $d_dn of 3072 down elements changed, max |noise| $m_gu"
else
    notok "moe noise_scale / residual_scale" "gate_up: $d_gu changed, max $m_gu; down: $d_dn changed"
fi

# bad input: one line, exit 2, nothing written
"$MK" synth wide/ --hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 64 --vocab 64 --seed 30 -q
"$MK" synth short/ --hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 48 --vocab 64 --max-position 4 --seed 31 -q
"$MK" synth short1/ --finetune-of short/ --seed 32 -q
cat >shape.yaml <<'EOF'
base_model: base/
gate_mode: cheap_embed
experts:
  - source_model: e1/
    positive_prompts: ["tok5"]
  - source_model: wide/
    positive_prompts: ["tok6"]
EOF
t_fail "moe: expert with other MLP shapes" 2 'shape\.yaml:6:5: expert 1 \(wide/\): tensor model\.layers\.0\.mlp\.[a-z_]*\.weight is \[[0-9, ]*\], but the base model.s is' \
    "$MK" moe shape.yaml bad1/
cat >long.yaml <<'EOF'
base_model: short/
gate_mode: hidden
experts:
  - source_model: short/
    positive_prompts: ["tok5 tok6 tok7 tok8 tok9"]
  - source_model: short1/
    positive_prompts: ["tok6"]
EOF
t_fail "moe: prompt longer than the context" 2 'long\.yaml:4:5: expert 0: a prompt of 6 tokens is longer than the model.s context \(max_position_embeddings 4\)' \
    "$MK" moe long.yaml bad2/
sed 's/^gate_mode: cheap_embed/architecture: gpt9\ngate_mode: cheap_embed/' shape.yaml >arch.yaml
t_fail "moe: unknown architecture" 2 'arch\.yaml:2:15: unknown architecture .gpt9. \(mixtral, qwen, qwen3\)' "$MK" moe arch.yaml bad3/
sed 's/^gate_mode:/gate_mod:/' shape.yaml >key.yaml
t_fail "moe: unknown key" 2 "key\.yaml:2:1: unknown key 'gate_mod' in the MoE config \(did you mean 'gate_mode'\?\)" "$MK" moe key.yaml bad4/
sed 's/noise_scale/noise/; s/positive_prompts: \["tok6"\]/positive_promts: ["tok6"]/' shape.yaml >key2.yaml
t_fail "moe: unknown expert key" 2 "key2\.yaml:7:5: unknown key 'positive_promts' in experts" "$MK" moe key2.yaml bad5/
sed 's#wide/#e1/#' shape.yaml >same.yaml
t_fail "moe: every expert the same model" 2 'every expert is the same model' "$MK" moe same.yaml bad6/
t_absent "moe: nothing written on bad input" bad1 bad1.tmp bad2 bad2.tmp bad3 bad4 bad5 bad6

# the example configs in recipes/moe/ run on the quick-start models, and eval runs their output
mkdir qs && cd qs && make_models
for r in "$ROOT"/recipes/moe/*.yaml; do
    name=$(basename "$r" .yaml)
    if "$MK" moe "$r" "ex-$name/" -q 2>"$name.err" && "$MK" eval "ex-$name/" --text "$G/text.txt" --ctx 32 --chunks 2 -q >/dev/null 2>>"$name.err"; then
        ok "recipes/moe/$name.yaml runs, and eval runs its output"
    else
        notok "recipes/moe/$name.yaml" "$(head -c 400 "$name.err")"
    fi
done
