#!/bin/sh
# make demo-heal: heal a depth up-scaled model. SmolLM2-135M (tools/get-smollm2.sh, or
# MK_SMOLLM2) is stacked from 30 to 40 layers by recipes/heal/smollm2-depth-upscale.yaml,
# evaluated on held-out Debian text (the end of the GPL-3), healed by a short finetune on other
# Debian text (Apache-2.0 and GPL-2), fully and with --lora (then `lora apply`), and evaluated
# again; the table shows the perplexities it measured. Work folder: ./demo-heal (or
# $DEMO_DIR). Short on purpose (a few minutes on 2 cores); HEAL_STEPS, HEAL_SEQ, HEAL_BATCH,
# HEAL_LR, HEAL_LORA_LR change the finetunes, HEAL_LINES the held-out lines.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk="$root/mergekit-c"
model=${MK_SMOLLM2:-$root/.models/smollm2}
if [ ! -f "$model/model.safetensors" ]; then
    echo "demo-heal: SmolLM2-135M is absent (run tools/get-smollm2.sh, or set MK_SMOLLM2)" >&2
    exit 1
fi
licenses=/usr/share/common-licenses
for f in GPL-3 GPL-2 Apache-2.0; do
    [ -f "$licenses/$f" ] || { echo "demo-heal: $licenses/$f is absent" >&2; exit 1; }
done
steps=${HEAL_STEPS:-12} seq=${HEAL_SEQ:-64} batch=${HEAL_BATCH:-2} lines=${HEAL_LINES:-90}
lr=${HEAL_LR:-5e-5} lora_lr=${HEAL_LORA_LR:-1e-3}
dir=${DEMO_DIR:-$root/demo-heal}
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"
ln -s "$(cd "$model" && pwd)" smollm2
tail -n "$lines" "$licenses/GPL-3" >heldout.txt             # evaluated, never trained on
cat "$licenses/Apache-2.0" "$licenses/GPL-2" >train.txt      # the healing text

ppl() { # MODEL -> its perplexity on heldout.txt (windows of 256 tokens)
    "$mk" eval "$1" --text heldout.txt --ctx 256 --json -q | sed -n 's/.*"ppl": \([0-9.e+-]*\),.*/\1/p'
}

set -x
"$mk" "$root/recipes/heal/smollm2-depth-upscale.yaml" stacked/ -q
"$mk" inspect stacked/ --summary
"$mk" finetune stacked/ train.txt healed/ --steps "$steps" --seq "$seq" --batch "$batch" --lr "$lr" --warmup 2 \
    --schedule cosine --checkpointing
"$mk" finetune stacked/ train.txt adapter/ --steps "$steps" --seq "$seq" --batch "$batch" --lr "$lora_lr" --warmup 2 \
    --schedule cosine --checkpointing --lora 16 --lora-alpha 32
"$mk" lora apply stacked/ adapter/ healed-lora/
set +x
p0=$(ppl smollm2/) p1=$(ppl stacked/) p2=$(ppl healed/) p3=$(ppl healed-lora/)
for p in "$p0" "$p1" "$p2" "$p3"; do
    [ -n "$p" ] || { echo "demo-heal: an evaluation gave no perplexity" >&2; exit 1; }
done
echo
echo "perplexity on held-out text (last $lines lines of the GPL-3, $(wc -c <heldout.txt) bytes; windows of 256 tokens)"
echo "healing: $steps steps of $batch x $seq tokens on Apache-2.0 + GPL-2 (lr $lr full, $lora_lr LoRA)"
printf '%-44s %10s\n' "model" "perplexity"
printf '%-44s %10.3f\n' "SmolLM2-135M (30 layers)" "$p0"
printf '%-44s %10.3f\n' "stacked (40 layers, no training)" "$p1"
printf '%-44s %10.3f\n' "stacked + full finetune" "$p2"
printf '%-44s %10.3f\n' "stacked + LoRA r 16 (lora apply)" "$p3"
echo "demo-heal: models in $dir"
