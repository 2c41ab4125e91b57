#!/bin/sh
# The CUDA path (docs/cuda.md). `finetune --device cuda` is a one-line usage error naming
# `make CUDA=1` in a build without CUDA; in a CUDA build (MK_CUDA_BUILD=1) it trains (full, --lora, --qlora) on the
# GPU, or without one fails with one line saying there is no device. `make test` builds
# build/test-cuda when nvcc is found and runs it here: the kernels and the trainer on the GPU
# against the CPU, or one "skip - cuda: no CUDA device ..." line. The CPU emulation of the same
# kernels and trainer runs in the unit tests (test_cuda_emu.c) on every machine.
. "$MK_ROOT/tests/e2e/lib.sh"

"$MK" synth base/ --hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 64 --vocab 64 --dtype float32 --std 0.2 \
    --max-position 64 --seed 3 -q || { notok "synth" "could not make the model"; exit 1; }
awk 'BEGIN { for (i = 0; i < 200; i++) printf "tok%d ", 3 + (i * 7) % 60; print "" }' >train.txt
ARGS="--steps 3 --lr 3e-3 --batch 2 --seq 16 --seed 5"

t_fail "--device tpu is refused" 2 "--device: 'tpu' is not cpu or cuda" "$MK" finetune base/ train.txt out0/ $ARGS --device tpu
if [ "${MK_CUDA_BUILD:-}" = 1 ]; then
    # full finetuning, LoRA and QLoRA (also in bf16): on a GPU 3 steps (an adapter folder under
    # LoRA), without one a single line, exit 1, no output
    for mode in full lora qlora bf16-lora bf16-qlora; do
        case $mode in
        full) X="" ;; lora) X="--lora 2" ;; qlora) X="--lora 2 --qlora" ;;
        bf16-lora) X="--lora 2 --dtype bf16" ;; *) X="--lora 2 --qlora --dtype bf16" ;;
        esac
        "$MK" finetune base/ train.txt "out-$mode/" $ARGS $X --device cuda -q 2>err.txt
        rc=$?
        if [ $rc -eq 1 ] && grep -q "no CUDA device" err.txt && [ "$(grep -c . err.txt)" -eq 1 ]; then
            ok "--device cuda ($mode) without a GPU: one line, exit 1 ($(cat err.txt))"
            [ ! -e "out-$mode" ] && ok "... and no output" || notok "no output without a GPU" "out-$mode/ exists"
        elif [ $rc -eq 0 ] && [ -s "out-$mode/train_log.jsonl" ] && [ "$(grep -c . "out-$mode/train_log.jsonl")" -eq 3 ] &&
            { [ $mode = full ] || [ -s "out-$mode/adapter_config.json" ]; }; then
            ok "--device cuda ($mode) trains 3 steps on the GPU"
        else
            notok "--device cuda ($mode)" "exit $rc: $(head -c 400 err.txt)"
        fi
    done
    "$MK" finetune base/ train.txt out3/ $ARGS --device cuda --dtype bf16 -q 2>err3.txt
    rc3=$?
    if [ $rc3 -eq 1 ] && grep -q "no CUDA device" err3.txt; then
        ok "--device cuda --dtype bf16 without a GPU: one line, exit 1"
    elif [ $rc3 -eq 0 ] && [ "$(grep -c . out3/train_log.jsonl)" -eq 3 ]; then
        ok "--device cuda --dtype bf16 trains 3 steps on the GPU"
    else
        notok "--device cuda --dtype bf16" "exit $rc3: $(head -c 400 err3.txt)"
    fi
    if [ $rc -eq 0 ]; then # a GPU: a card smaller than the run (MK_CUDA_MEMORY) is refused before anything is written
        t_fail "a run larger than the card is refused" 1 "training needs .* of GPU memory, the device has .*(MK_CUDA_MEMORY)" \
            env MK_CUDA_MEMORY=10M "$MK" finetune base/ train.txt out4/ $ARGS --device cuda
        [ ! -e out4 ] && ok "... and writes nothing" || notok "a refused run writes nothing" "out4/ exists"
    fi
else
    t_fail "--device cuda without CUDA names the build switch" 2 "built without CUDA .*make CUDA=1" \
        "$MK" finetune base/ train.txt out1/ $ARGS --device cuda
    t_fail "--device cuda --dtype bf16 without CUDA names the build switch" 2 "built without CUDA .*make CUDA=1" \
        "$MK" finetune base/ train.txt out1/ $ARGS --device cuda --dtype bf16
    [ ! -e out1 ] && ok "... and writes nothing" || notok "--device cuda writes nothing" "out1/ exists"
fi

if [ -z "${MK_CUDA_TEST:-}" ]; then
    echo "skip - cuda: the CUDA kernels were not built for this run (make test builds them when nvcc is found)"
    exit 0
fi
if [ ! -x "$MK_CUDA_TEST" ]; then
    notok "cuda" "$MK_CUDA_TEST was not built"
    exit 0
fi
"$MK_CUDA_TEST"
