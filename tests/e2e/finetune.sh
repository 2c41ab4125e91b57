# finetune.sh - `mergekit-c finetune` on a synthetic model (word-level tokenizer; the data is
# made of its tokens): the loss falls, OUT is a model folder with the log and the chart,
# the same bytes at -j1 and -j2 and with --checkpointing, --resume gives the bytes of an
# uninterrupted run, --qlora equals LoRA on the NF4-quantized model, --eval-text with --lora and
# --qlora gives eval's figures for the adapted model, Ctrl-C saves a checkpoint that --resume
# continues to the same bytes, and the bad inputs fail
# with one line and write nothing.
. "$MK_ROOT/tests/e2e/lib.sh"

"$MK" synth base/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 128 --dtype bfloat16 --std 0.1 \
    --max-position 128 --seed 1 -q || { notok "synth" "could not make the model"; exit 1; }
# words of the vocabulary (tok3 .. tok127) in a learnable pattern: short repeating phrases
awk 'BEGIN { x = 7; for (i = 0; i < 600; i++) { x = (x * 1103515245 + 12345) % 2147483648; p = x % 8;
             for (j = 0; j < 4; j++) printf "tok%d ", 3 + (p * 11 + j * 3) % 125 } print "" }' >train.txt
awk 'BEGIN { x = 99; for (i = 0; i < 200; i++) { x = (x * 1103515245 + 12345) % 2147483648; p = x % 8;
             for (j = 0; j < 4; j++) printf "tok%d ", 3 + (p * 11 + j * 3) % 125 } print "" }' >heldout.txt

ARGS="--steps 8 --lr 3e-3 --warmup 2 --batch 2 --grad-accum 2 --seq 32 --weight-decay 0.1 --clip 1 --seed 5"
t_ok "finetune runs" "$MK" finetune base/ train.txt out1/ $ARGS --eval-text heldout.txt --eval-every 4 -j1
grep -q "finetune: memory: weights .* + gradients .* + AdamW moments .* + activations .*with --checkpointing" "$T/.err" &&
    ok "... prints the memory it needs first" || notok "memory line" "$(head -n 2 "$T/.err")"
grep -Eq "step 8/8  loss [0-9.]+  lr [0-9.e-]+  grad norm [0-9.e+]+  [0-9]+ tokens/s  ETA" "$T/.err" &&
    ok "... progress line with loss, lr, grad norm, tokens/s, ETA" || notok "progress line" "$(grep 'step 8' "$T/.err")"
for f in model.safetensors config.json tokenizer.json train_log.jsonl loss.svg; do
    [ -s "out1/$f" ] || notok "OUT has $f" "missing"
done
ok "OUT holds the weights, config, tokenizer, train_log.jsonl and loss.svg"
n=$(grep -c '"step"' out1/train_log.jsonl)
[ "$n" = 8 ] && ok "one log line per step" || notok "log lines" "$n"
[ "$(grep -c eval_ppl out1/train_log.jsonl)" = 2 ] && ok "held-out perplexity at steps 4 and 8" ||
    notok "eval_ppl lines" "$(grep -c eval_ppl out1/train_log.jsonl)"
first=$(sed -n '1s/.*"loss": \([0-9.e+-]*\).*/\1/p' out1/train_log.jsonl)
last=$(sed -n '8s/.*"loss": \([0-9.e+-]*\).*/\1/p' out1/train_log.jsonl)
awk "BEGIN { exit !($last < $first * 0.8) }" && ok "the loss falls ($first -> $last)" || notok "loss falls" "$first -> $last"
grep -q '<polyline' out1/loss.svg && ok "loss.svg draws the curve" || notok "loss.svg" "no polyline"
"$MK" inspect out1/ --json >insp.json 2>/dev/null
grep -q '"BF16"' insp.json && ok "weights keep the input's dtype" || notok "dtype" "$(head -c 300 insp.json)"
t_ok "the model evaluates" "$MK" eval out1/ --text heldout.txt --ctx 32

"$MK" finetune base/ train.txt out2/ $ARGS --eval-text heldout.txt --eval-every 4 -j2 -q
t_same "-j1 and -j2 give the same bytes" out1/model.safetensors out2/model.safetensors
"$MK" finetune base/ train.txt out3/ $ARGS --checkpointing -q
t_same "--checkpointing gives the same bytes" out1/model.safetensors out3/model.safetensors

# train in two sessions: stop after 3 steps, resume
t_ok "--stop-after 3 stops with a checkpoint" "$MK" finetune base/ train.txt out4/ $ARGS --stop-after 3
[ -s out4.checkpoint ] && [ ! -e out4 ] && ok "... the checkpoint is there, OUT is not" || notok "stop-after" "$(ls)"
t_ok "--resume continues" "$MK" finetune base/ train.txt out4/ $ARGS --resume
t_same "a resumed run gives the bytes of an uninterrupted one" out3/model.safetensors out4/model.safetensors
[ ! -e out4.checkpoint ] && ok "... and its checkpoint is removed when OUT is written" || notok "checkpoint removed" "still there"
[ "$(grep -c '"step"' out4/train_log.jsonl)" = 8 ] && ok "... its log has all 8 steps" || notok "resumed log" "$(wc -l <out4/train_log.jsonl)"

# Ctrl-C (SIGINT, sent once the first step is done): the run stops at the end of its step, saves
# OUT.checkpoint and exits 1 with one error line naming the step; no OUT and no OUT.tmp; --resume
# then gives the bytes of a run that was never interrupted
CARGS="--steps 400 --lr 1e-3 --batch 1 --seq 16 --seed 3 -j1"
"$MK" finetune base/ train.txt int-ref/ $CARGS -q
"$MK" finetune base/ train.txt int/ $CARGS 2>int.err &
pid=$!
n=0
while ! grep -q '^step [0-9]' int.err 2>/dev/null && [ $n -lt 1000 ]; do sleep 0.01; n=$((n + 1)); done
kill -INT $pid
wait $pid
rc=$?
k=$(sed -n 's/^mergekit-c: error: interrupted after step \([0-9]*\) of 400; the checkpoint is saved, --resume continues$/\1/p' int.err)
if [ $rc -eq 1 ] && [ -n "$k" ] && [ "$(grep -c 'error' int.err)" = 1 ] && grep -q "^checkpoint int.checkpoint (step $k)" int.err &&
    [ -s int.checkpoint ] && [ ! -e int ] && [ ! -e int.tmp ]; then
    ok "Ctrl-C: stopped after step $k of 400, exit 1, one error line, the checkpoint saved, no OUT or OUT.tmp"
else
    notok "Ctrl-C" "exit $rc, step '$k': $(grep -v '^step' int.err | tail -n 3); $(ls -d int* 2>/dev/null | tr '\n' ' ')"
fi
t_ok "Ctrl-C: --resume continues" "$MK" finetune base/ train.txt int/ $CARGS --resume -q
t_same "Ctrl-C: the resumed run gives the bytes of an uninterrupted one" int-ref/model.safetensors int/model.safetensors
[ "$(grep -c '"step"' int/train_log.jsonl)" = 400 ] && [ ! -e int.checkpoint ] &&
    ok "Ctrl-C: the resumed log has all 400 steps; the checkpoint is removed" || notok "Ctrl-C resumed log" "$(wc -l <int/train_log.jsonl)"

"$MK" finetune base/ train.txt out5/ $ARGS --stop-after 2 -q
t_fail "a checkpoint of another run is refused" 2 "out5.checkpoint is the checkpoint of another run" \
    "$MK" finetune base/ train.txt out5/ $ARGS --seed 6 --resume -q
t_fail "--resume without a checkpoint" 2 "no checkpoint .*out6.checkpoint" "$MK" finetune base/ train.txt out6/ $ARGS --resume -q

# supervised data
printf '{"prompt": "tok5 tok6 tok7", "response": "tok8 tok9"}\n{"text": "tok10 tok11 tok12 tok13"}\n' >sft.jsonl
t_ok "JSONL prompt/response with --prompt-loss-weight 0.1" "$MK" finetune base/ sft.jsonl sft/ --steps 2 --seq 8 --batch 1 \
    --prompt-loss-weight 0.1

# bad input: one line, exit 1 or 2, nothing written
printf '{"text": "tok5 tok6"}\n{"text": "tok7"}\n{"text": tok8}\n' >broken.jsonl
t_fail "a broken JSONL line is named by its number" 1 "broken.jsonl:3: not a JSON object" \
    "$MK" finetune base/ broken.jsonl bad1/ --steps 1 --seq 8
printf '{"prompt": "tok5"}\n' >noresp.jsonl
t_fail "a line without text or prompt/response" 1 "noresp.jsonl:1: .*no string \"text\"" \
    "$MK" finetune base/ noresp.jsonl bad2/ --steps 1 --seq 8
: >empty.txt
t_fail "empty data" 1 "empty.txt: no training text" "$MK" finetune base/ empty.txt bad3/ --steps 1 --seq 8
t_fail "--seq longer than the context" 2 "--seq 256 is longer than the model's context of 128" \
    "$MK" finetune base/ train.txt bad4/ --steps 1 --seq 256
t_fail "over --max-memory" 1 "needs about .*over --max-memory" "$MK" finetune base/ train.txt bad5/ --steps 1 --seq 32 \
    --max-memory 100K -q
"$MK" synth gem2/ --arch gemma2 --hidden 32 --layers 1 --heads 2 --intermediate 64 --vocab 128 -q
t_fail "an architecture without a backward pass" 1 "no backward pass for gemma2 yet .soft-capping and sandwich norms" \
    "$MK" finetune gem2/ train.txt bad6/ --steps 1 --seq 16
t_fail "an unknown schedule" 2 "--schedule: 'step'" "$MK" finetune base/ train.txt bad7/ --schedule step
t_absent "nothing written by the failures" bad1 bad2 bad3 bad4 bad5 bad6 bad7 bad1.tmp bad1.checkpoint bad6.checkpoint

# the printed memory against the measured peak RSS (within 10 %): a run where the weights and
# AdamW dominate, and one where the activations do, with and without --checkpointing; and QLoRA
if [ -n "${ASAN_OPTIONS:-}" ]; then
    echo "skip - memory estimate against peak RSS: a sanitizer build (its shadow memory is not the program's)"
elif [ -x /usr/bin/time ]; then
    "$MK" synth w18/ --hidden 512 --layers 6 --heads 8 --kv-heads 4 --vocab 1000 --dtype float32 --max-position 1024 -q
    "$MK" synth a4/ --hidden 64 --layers 4 --heads 4 --kv-heads 2 --intermediate 128 --vocab 1000 --dtype float32 \
        --max-position 1024 -q
    awk 'BEGIN { for (i = 0; i < 6000; i++) printf "tok%d ", 3 + (i * 7) % 900; print "" }' >mem.txt
    for c in "w18/ --seq 64 --batch 2" "a4/ --seq 512 --batch 8" "a4/ --seq 512 --batch 16 --checkpointing" \
        "w18/ --seq 64 --batch 2 --lora 8 --qlora" \
        "a4/ --seq 512 --batch 16 --checkpointing --dtype bf16" "w18/ --seq 64 --batch 2 --lora 8 --dtype bf16"; do
        /usr/bin/time -v "$MK" finetune $c mem.txt mem-out/ --steps 1 --force >/dev/null 2>mem.err
        est=$(sed -n 's/.* = \([0-9.]*\) MB; machine.*/\1/p' mem.err)
        rss=$(awk '/Maximum resident set size/ {printf "%.2f", $6 * 1.024 / 1000}' mem.err)
        if [ -n "$est" ] && [ -n "$rss" ] && awk "BEGIN { d = ($est - $rss) / $rss; exit !(d < 0.1 && d > -0.1) }"; then
            ok "memory estimate $est MB within 10 % of the peak RSS $rss MB ($c)"
        else
            notok "memory estimate ($c)" "estimate '$est' MB, peak RSS '$rss' MB"
        fi
    done
    # `estimate` gives the trainer's own figure (train/mem.h): the printed total less the data and
    # the process so far, and within 10 % of the peak RSS of that bf16 run
    /usr/bin/time -v "$MK" finetune w18/ mem.txt mem-out/ --steps 1 --seq 64 --batch 2 --dtype bf16 --force >/dev/null 2>mem.err
    "$MK" estimate w18/ --train full --dtype bfloat16 --batch 2 --seq 64 --json >est.json 2>/dev/null
    e=$(sed -n 's/.*"finetune": {"dtype": "bf16", .*"total_bytes": \([0-9]*\),.*/\1/p' est.json)
    pr=$(sed -n 's/.* + data \([0-9.]*\) kB + the process so far \([0-9.]*\) MB = \([0-9.]*\) MB; machine.*/\3 - \2 - \1 \/ 1000/p' mem.err)
    rss=$(awk '/Maximum resident set size/ {printf "%.2f", $6 * 1.024 / 1000}' mem.err)
    if [ -n "$e" ] && [ -n "$pr" ] && [ -n "$rss" ] && awk "BEGIN { p = $pr; e = $e / 1e6; d = e - p; r = (e - $rss) / $rss;
        exit !(d < 0.02 && d > -0.02 && r < 0.1 && r > -0.1) }"; then
        ok "estimate --dtype bfloat16 gives finetune --dtype bf16's own figure ($e bytes), within 10 % of its peak RSS $rss MB"
    else
        notok "estimate against finetune --dtype bf16" "estimate '$e' bytes, finetune's '$pr' MB, peak RSS '$rss' MB"
    fi
else
    echo "skip - memory estimate against peak RSS: /usr/bin/time is absent"
fi

# gemma (GeGLU, (1 + w) norms, scaled embeddings, tied head): full, bf16, LoRA merged by `lora apply`, QLoRA
"$MK" synth gem/ --arch gemma --hidden 64 --layers 2 --heads 4 --kv-heads 1 --intermediate 128 --vocab 128 --dtype float32 \
    --std 0.1 --max-position 128 --seed 3 -q
for c in "gf" "gb --dtype bf16" "gl --lora 4 --lora-alpha 8" "gq --lora 4 --lora-alpha 8 --qlora"; do
    set -- $c
    d=$1
    shift
    "$MK" finetune gem/ train.txt "$d/" $ARGS "$@" -q
    first=$(sed -n '1s/.*"loss": \([0-9.e+-]*\).*/\1/p' "$d/train_log.jsonl")
    last=$(sed -n '8s/.*"loss": \([0-9.e+-]*\).*/\1/p' "$d/train_log.jsonl")
    awk "BEGIN { exit !($last < $first) }" 2>/dev/null && ok "gemma finetune $* lowers the loss ($first -> $last)" ||
        notok "gemma finetune $*" "loss '$first' -> '$last'"
done
t_ok "gemma: lora apply merges the adapter" "$MK" lora apply gem/ gl/ gl-merged/ -q

# LoRA: an adapter folder that `lora apply` merges; the same bytes at -j1 and -j2
t_ok "--lora 4 trains an adapter" "$MK" finetune base/ train.txt lora1/ $ARGS --lora 4 --lora-alpha 8 -j1
for f in adapter_config.json adapter_model.safetensors train_log.jsonl loss.svg; do
    [ -s "lora1/$f" ] || notok "the adapter folder has $f" "missing"
done
grep -q '"r": 4' lora1/adapter_config.json && grep -q '"q_proj"' lora1/adapter_config.json && ok "... a PEFT adapter (r 4, q_proj...)" ||
    notok "adapter_config.json" "$(head -c 300 lora1/adapter_config.json)"
first=$(sed -n '1s/.*"loss": \([0-9.e+-]*\).*/\1/p' lora1/train_log.jsonl)
last=$(sed -n '8s/.*"loss": \([0-9.e+-]*\).*/\1/p' lora1/train_log.jsonl)
awk "BEGIN { exit !($last < $first) }" && ok "... the loss falls ($first -> $last)" || notok "LoRA loss falls" "$first -> $last"
t_ok "lora apply merges it" "$MK" lora apply base/ lora1/ lora-merged/
"$MK" finetune base/ train.txt lora2/ $ARGS --lora 4 --lora-alpha 8 --rslora -j2 -q
"$MK" finetune base/ train.txt lora3/ $ARGS --lora 4 --lora-alpha 8 --rslora -j1 -q --checkpointing
t_same "LoRA: -j2 and -j1 --checkpointing give the same bytes" lora2/adapter_model.safetensors lora3/adapter_model.safetensors
# --eval-text with --lora: the base with the adapters applied, scored on eval's windows, and its
# KL divergence from the base; the same figures as `eval` of the `lora apply` output (f32, so
# that merging rounds nothing) with the base as --ref, within EVAL_REL; the adapter's bytes are
# those of a run without --eval-text (the adapters are put back bit for bit after each eval)
EVAL_REL=1e-5
"$MK" synth b32/ --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 128 --dtype float32 --std 0.1 \
    --max-position 128 --seed 1 -q
t_ok "--lora with --eval-text" "$MK" finetune b32/ train.txt le1/ $ARGS --lora 4 --lora-alpha 8 --eval-text heldout.txt \
    --eval-every 4 -q
"$MK" finetune b32/ train.txt le0/ $ARGS --lora 4 --lora-alpha 8 -q
t_same "... the adapter's bytes are those of a run without --eval-text" le0/adapter_model.safetensors le1/adapter_model.safetensors
[ "$(grep -c '"eval_ppl": .*"eval_kl": ' le1/train_log.jsonl)" = 2 ] && ok "... perplexity and KL to the base at steps 4 and 8" ||
    notok "LoRA eval lines" "$(grep -c eval_kl le1/train_log.jsonl)"
"$MK" lora apply b32/ le1/ le1-merged/ -q
"$MK" eval le1-merged/ --text heldout.txt --ctx 32 --ref b32/ --json >le1-eval.json 2>/dev/null
# compare_eval NAME LOG EVALJSON: the log's last eval_ppl / eval_kl against eval's ppl / kl_mean
compare_eval() {
    p1=$(tail -n 1 "$2" | sed -n 's/.*"eval_ppl": \([0-9.e+-]*\).*/\1/p')
    k1=$(tail -n 1 "$2" | sed -n 's/.*"eval_kl": \([0-9.e+-]*\).*/\1/p')
    p2=$(sed -n 's/.*"ppl": \([0-9.e+-]*\).*/\1/p' "$3")
    k2=$(sed -n 's/.*"kl_mean": \([0-9.e+-]*\).*/\1/p' "$3")
    if [ -n "$p1" ] && [ -n "$k1" ] && [ -n "$p2" ] && [ -n "$k2" ] && awk "BEGIN { a = ($p1 - $p2) / $p2; b = ($k1 - $k2) / $k2;
        exit !(a < $EVAL_REL && a > -$EVAL_REL && b < $EVAL_REL && b > -$EVAL_REL) }"; then
        ok "$1: PPL $p1 (eval: $p2), KL $k1 (eval: $k2), within $EVAL_REL"
    else
        notok "$1" "PPL '$p1' against eval's '$p2', KL '$k1' against '$k2' (tolerance $EVAL_REL relative)"
    fi
}
compare_eval "--lora --eval-text = eval of the lora apply output against the base" le1/train_log.jsonl le1-eval.json
"$MK" quantize b32/ nf4b/ --format nf4 -q
t_ok "--qlora with --eval-text" "$MK" finetune b32/ train.txt qe1/ $ARGS --lora 4 --qlora --eval-text heldout.txt -q
# the NF4 base as f32 (dequantize), the adapter merged into it, scored against it
"$MK" dequantize nf4b/ nf4b-f32/ --dtype float32 -q && "$MK" lora apply nf4b-f32/ qe1/ qe1-merged/ -q &&
    "$MK" eval qe1-merged/ --text heldout.txt --ctx 32 --ref nf4b-f32/ --json >qe1-eval.json 2>/dev/null
compare_eval "--qlora --eval-text = eval of the adapter on the NF4 base against that base" qe1/train_log.jsonl qe1-eval.json

t_fail "an unknown --lora-targets name" 2 "--lora-targets: 'qkv' is not" "$MK" finetune base/ train.txt bad8/ --lora 2 \
    --lora-targets q_proj,qkv
t_absent "... nothing written" bad8

# QLoRA: the base's projections held as NF4 (quantize --format nf4's layout), decoded per layer.
# Its adapter is the bytes of a LoRA run on the NF4-quantized model read dequantized: every
# step's gradients are the same, exactly. An NF4 input is held as it is (the same bytes again).
"$MK" quantize base/ nf4/ --format nf4 -q || notok "quantize --format nf4" "failed"
t_ok "--qlora trains an adapter on an NF4 base" "$MK" finetune base/ train.txt ql1/ $ARGS --lora 4 --qlora
grep -q "finetune: memory: weights .* (NF4 projections, the rest f32)" "$T/.err" && ok "... its memory line counts the NF4 base" ||
    notok "qlora memory line" "$(head -n 1 "$T/.err")"
"$MK" finetune nf4/ train.txt ql2/ $ARGS --lora 4 -q
t_same "QLoRA = LoRA on the quantize --format nf4 output (same gradients every step)" ql1/adapter_model.safetensors \
    ql2/adapter_model.safetensors
"$MK" finetune nf4/ train.txt ql3/ $ARGS --lora 4 --qlora -q -j2
t_same "... and --qlora on that NF4 input gives the same bytes" ql1/adapter_model.safetensors ql3/adapter_model.safetensors
t_fail "--qlora without --lora" 2 "--qlora trains LoRA adapters on an NF4 base: give --lora R" "$MK" finetune base/ train.txt \
    bad9/ --qlora
t_fail "an NF4 input without --lora" 2 "is quantized .nf4.: it trains only with --lora" "$MK" finetune nf4/ train.txt bad10/ \
    --steps 1 --seq 16
t_absent "... nothing written" bad9 bad10

# --dtype bf16: mixed precision (the numbers are checked against torch.autocast in the unit
# tests): the same bytes at -j1 and -j2 and with --checkpointing, --resume gives the bytes of an
# uninterrupted run, a checkpoint of the f32 run is refused, LoRA and QLoRA train with it (QLoRA
# = LoRA on the NF4 model, as in f32)
t_ok "--dtype bf16 trains" "$MK" finetune base/ train.txt bf1/ $ARGS --dtype bf16 -j1
grep -q "+ bf16-rounded copies .* + gradients" "$T/.err" && ok "... its memory line counts the rounded weights" ||
    notok "bf16 memory line" "$(head -n 1 "$T/.err")"
first=$(sed -n '1s/.*"loss": \([0-9.e+-]*\).*/\1/p' bf1/train_log.jsonl)
last=$(sed -n '8s/.*"loss": \([0-9.e+-]*\).*/\1/p' bf1/train_log.jsonl)
awk "BEGIN { exit !($last < $first * 0.8) }" && ok "... the loss falls ($first -> $last)" || notok "bf16 loss falls" "$first -> $last"
cmp -s out1/model.safetensors bf1/model.safetensors && notok "bf16 differs from f32" "the same bytes" ||
    ok "... its weights differ from the f32 run's"
"$MK" finetune base/ train.txt bf2/ $ARGS --dtype bf16 -j2 --checkpointing -q
t_same "bf16: -j2 --checkpointing gives the bytes of -j1" bf1/model.safetensors bf2/model.safetensors
"$MK" finetune base/ train.txt bf3/ $ARGS --dtype bf16 --stop-after 3 -q
t_fail "bf16: a checkpoint of the f32 run is refused" 2 "bf3.checkpoint is the checkpoint of another run" \
    "$MK" finetune base/ train.txt bf3/ $ARGS --resume -q
t_ok "bf16: --resume continues" "$MK" finetune base/ train.txt bf3/ $ARGS --dtype bf16 --resume -q
t_same "bf16: a resumed run gives the bytes of an uninterrupted one" bf1/model.safetensors bf3/model.safetensors
"$MK" finetune base/ train.txt bfl1/ $ARGS --lora 4 --dtype bf16 -j1 -q
"$MK" finetune base/ train.txt bfl2/ $ARGS --lora 4 --dtype bf16 -j2 --checkpointing -q
t_same "bf16 LoRA: -j2 --checkpointing gives the bytes of -j1" bfl1/adapter_model.safetensors bfl2/adapter_model.safetensors
"$MK" finetune base/ train.txt bfq1/ $ARGS --lora 4 --qlora --dtype bf16 -q
"$MK" finetune nf4/ train.txt bfq2/ $ARGS --lora 4 --dtype bf16 -q
t_same "bf16 QLoRA = bf16 LoRA on the NF4 model" bfq1/adapter_model.safetensors bfq2/adapter_model.safetensors
t_fail "--dtype f16 is refused" 2 "--dtype: 'f16' is not f32 or bf16" "$MK" finetune base/ train.txt bad11/ --dtype f16
t_absent "... nothing written" bad11
