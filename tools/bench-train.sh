#!/bin/sh
# bench-train.sh: `mergekit-c finetune` speed and memory, each figure with its baseline in the
# same run.
#
# 1. Training tokens/s (full finetuning: forward, backward, clipping, AdamW) at -j1 and -j2
#    on a ~25M-parameter synthetic Llama and on SmolLM2-135M (when tools/get-smollm2.sh has
#    fetched it), against PyTorch on the CPU (tools/bench-train.py) with the same model, batch
#    and sequence length, the same thread count; in f32, and with --dtype bf16 against
#    torch.autocast("cpu", dtype=torch.bfloat16). Each run's median over the steps after the
#    first; BENCH_TRAIN_ROUNDS runs of each, ours and PyTorch's alternating, and the median.
# 2. Peak resident memory against the estimate finetune prints, with and without
#    --checkpointing.
# Env: BENCH_DIR (default ./bench-work), BENCH_TRAIN_STEPS (4), BENCH_TRAIN_BATCH (4), MK_SMOLLM2 (the
#      SmolLM2-135M folder; default .models/smollm2),
#      BENCH_TRAIN_SEQ (256), BENCH_TRAIN_DTYPES ("f32 bf16"), BENCH_TRAIN_ROUNDS (3),
#      BENCH_TRAIN_MODELS (default: m25 and SmolLM2 when present).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk="$root/mergekit-c"
py="${MK_VENV:-$root/.venv-tools}/bin/python"
dir=${BENCH_DIR:-$root/bench-work}/train
steps=${BENCH_TRAIN_STEPS:-4}
batch=${BENCH_TRAIN_BATCH:-4}
seq=${BENCH_TRAIN_SEQ:-256}
mkdir -p "$dir"
cd "$dir"

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

"$mk" synth m25/ --hidden 512 --layers 6 --heads 8 --kv-heads 8 --intermediate 1536 --vocab 4000 --max-position 2048 \
    --dtype float32 --std 0.02 --seed 1 -q --force
# words of the synthetic vocabulary; SmolLM2 reads the GPL
awk 'BEGIN { x = 7; for (i = 0; i < 60000; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "tok%d ", 3 + x % 3990 } print "" }' \
    >words.txt
models="m25"
sm=${MK_SMOLLM2:-$root/.models/smollm2}
[ -f "$sm/model.safetensors" ] && models="$models $sm"
models=${BENCH_TRAIN_MODELS:-$models}
rounds=${BENCH_TRAIN_ROUNDS:-3}

echo "finetune, $batch x $seq tokens per step, $steps steps (median of steps 2..$steps; median of $rounds alternating runs), tokens/s"
printf '%-12s %5s %4s %10s %10s %7s\n' model dtype j ours pytorch ratio
for m in $models; do
    text=words.txt
    [ "$m" = m25 ] || text=/usr/share/common-licenses/GPL-3
    name=$(basename "$m")
    for dt in ${BENCH_TRAIN_DTYPES:-f32 bf16}; do
        tdt=float32
        [ "$dt" = bf16 ] && tdt=bfloat16
        for j in 1 2; do
            o="" t=""
            for r in $(seq "$rounds"); do
                "$mk" finetune "$m" "$text" out-$name-$j/ --steps "$steps" --batch "$batch" --seq "$seq" --dtype "$dt" -j "$j" -q --force
                o="$o $(sed -n '2,$s/.*"tokens_per_s": \([0-9.]*\).*/\1/p' "out-$name-$j/train_log.jsonl" | tr '\n' ' ' | median)"
                t="$t $("$py" "$root/tools/bench-train.py" "$m" "$batch" "$seq" "$steps" "$j" cpu "$tdt" 2>/dev/null | median)"
            done
            ours=$(echo "$o" | median) theirs=$(echo "$t" | median)
            printf '%-12s %5s %4s %10.0f %10.0f %7.2f\n' "$name" "$dt" "$j" "$ours" "$theirs" \
                "$(awk -v a="$ours" -v b="$theirs" 'BEGIN { print a / b }')"
        done
    done
done

echo "peak resident memory against the printed estimate (m25, $batch x $seq)"
for ck in "" --checkpointing; do
    /usr/bin/time -v "$mk" finetune m25 words.txt out-mem/ --steps 2 --batch "$batch" --seq "$seq" $ck --force >/dev/null 2>mem.err
    est=$(sed -n 's/.* = \([0-9.]*\) MB; machine.*/\1/p' mem.err)
    peak=$(awk '/Maximum resident set size/ {printf "%.1f", $6 * 1.024 / 1000}' mem.err)
    printf '%-18s estimate %8s MB  peak RSS %8s MB  estimate/peak %s\n' "${ck:-no checkpointing}" "$est" "$peak" \
        "$(awk -v a="$est" -v b="$peak" 'BEGIN { printf "%.3f", a / b }')"
done
