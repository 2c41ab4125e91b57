#!/bin/sh
# bench-cuda.sh: `mergekit-c finetune --device cuda` on a GPU (a build with make CUDA=1; make bench
# runs it and it says it skipped without one), each figure with its baseline in the same run:
#
# 1. Training tokens/s (full finetuning: forward, backward, clipping, AdamW; the CUDA trainer
#    computes in f32) on a ~1B-parameter synthetic Llama at seq 1024, and its model FLOPs
#    utilisation (6 x parameters x tokens/s over the GPU's peak, BENCH_CUDA_PEAK_TFLOPS, default
#    989: an H100 SXM's dense bf16), against PyTorch on the same GPU (tools/bench-train.py ...
#    cuda, eager attention) with the same model, batch and sequence, in f32 and with bf16
#    autocast, when the tools venv's torch sees the GPU. The median over the steps after the
#    first.
#    The attention is the fused kernel (MK_CUDA_ATTENTION=flash, nn/cuda/mk_cuda_flash.h); the
#    same run with the simple attention (MK_CUDA_ATTENTION=simple, the [heads, T, T]
#    probabilities) is the in-run baseline of the fused kernel's speed-up, unless
#    BENCH_CUDA_SIMPLE=0.
# 2. Peak GPU memory (nvidia-smi, sampled every 100 ms) against the estimate finetune prints.
# Env: BENCH_DIR (default ./bench-work), BENCH_CUDA_STEPS (5), BENCH_CUDA_BATCH (1),
#      BENCH_CUDA_SEQ (1024), BENCH_CUDA_HIDDEN (2048), BENCH_CUDA_LAYERS (16), BENCH_CUDA_PEAK_TFLOPS.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mk="$root/mergekit-c"
py="${MK_VENV:-$root/.venv-tools}/bin/python"
dir=${BENCH_DIR:-$root/bench-work}/cuda
steps=${BENCH_CUDA_STEPS:-5}
batch=${BENCH_CUDA_BATCH:-1}
seq=${BENCH_CUDA_SEQ:-1024}
hidden=${BENCH_CUDA_HIDDEN:-2048}
layers=${BENCH_CUDA_LAYERS:-16}
peak=${BENCH_CUDA_PEAK_TFLOPS:-989}
mkdir -p "$dir"
cd "$dir"
. "$root/tools/lib-bench.sh"

# a tiny run first: without a CUDA build or a GPU there is nothing to measure
"$mk" synth probe/ --hidden 32 --layers 1 --heads 2 --vocab 64 --dtype float32 -q --force
echo "tok5 tok6 tok7 tok8 tok9 tok10 tok11 tok12" >probe.txt
if ! "$mk" finetune probe/ probe.txt probe-out/ --device cuda --steps 1 --seq 4 --batch 1 -q --force 2>probe.err; then
    echo "bench-cuda: skipped: $(cat probe.err)"
    exit 0
fi

"$mk" synth m1b/ --hidden "$hidden" --layers "$layers" --heads 16 --kv-heads 8 --intermediate $((hidden * 11 / 4 / 16 * 16)) \
    --vocab 32000 --max-position 4096 --dtype bfloat16 --std 0.02 --seed 1 -q --force
params=$("$mk" inspect m1b/ --json | sed -n 's/.*"parameters": \([0-9]*\).*/\1/p' | head -n 1)
awk 'BEGIN { x = 7; for (i = 0; i < 200000; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "tok%d ", 3 + x % 31990 } print "" }' \
    >words.txt

mem_log=mem.log
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$mem_log" 2>/dev/null &
    smi=$!
else
    smi=
fi
MK_CUDA_ATTENTION=flash "$mk" finetune m1b/ words.txt out/ --device cuda --steps "$steps" --batch "$batch" --seq "$seq" \
    --lr 1e-5 --force 2>run.err || {
    cat run.err
    [ -n "$smi" ] && kill "$smi"
    exit 1
}
[ -n "$smi" ] && kill "$smi"
tps() { sed -n '2,$s/.*"tokens_per_s": \([0-9.]*\).*/\1/p' "$1/train_log.jsonl" | tr '\n' ' ' | median; }
ours=$(tps out)
mfu() { awk -v t="$1" -v p="$params" -v peak="$peak" 'BEGIN { printf "%.2f %%", 600 * p * t / (peak * 1e12) }'; }
echo "finetune --device cuda, ${params:-?} parameters, $batch x $seq tokens per step, median of steps 2..$steps"
printf '%-28s %10s %8s\n' "" tokens/s MFU
printf '%-28s %10.0f %8s\n' "mergekit-c (f32)" "$ours" "$(mfu "$ours")"
if [ "${BENCH_CUDA_SIMPLE:-1}" != 0 ] &&
    MK_CUDA_ATTENTION=simple "$mk" finetune m1b/ words.txt out-simple/ --device cuda --steps "$steps" --batch "$batch" \
        --seq "$seq" --lr 1e-5 --force 2>run-simple.err; then
    simple=$(tps out-simple)
    printf '%-28s %10.0f %8s  (fused / simple %s)\n' "  simple attention (f32)" "$simple" "$(mfu "$simple")" "$(div "$ours" "$simple")"
fi
if "$py" -c 'import torch, transformers, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    for dt in float32 bfloat16; do
        theirs=$("$py" "$root/tools/bench-train.py" m1b/ "$batch" "$seq" "$steps" 1 cuda "$dt" 2>/dev/null | median)
        printf '%-28s %10.0f %8s  (ours / theirs %s)\n' "PyTorch eager ($dt)" "$theirs" "$(mfu "$theirs")" "$(div "$ours" "$theirs")"
    done
else
    echo "PyTorch: not measured (the tools venv's torch does not see a GPU)"
fi
est=$(sed -n 's/^finetune: GPU memory: \([0-9.]* [kMGT]*B\).*/\1/p' run.err)
used=$([ -s "$mem_log" ] && sort -n "$mem_log" | tail -n 1)
echo "GPU memory: estimate ${est:-?}, peak used ${used:-?} MiB (nvidia-smi: the whole device, the CUDA context included)"
