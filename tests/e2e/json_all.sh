# json_all.sh - every command whose --help lists --json prints exactly one JSON document on
# stdout with it (checked by build/jsoncheck, the project's strict JSON reader). The commands
# come from the command table (`mergekit-c help --commands`), so a new command without a
# representative invocation below fails here.
. "$MK_ROOT/tests/e2e/lib.sh"
JC=${MK_JSONCHECK:-$ROOT/build/jsoncheck}
[ -x "$JC" ] || { notok "jsoncheck" "$JC not built (make build/jsoncheck)"; exit 0; }

make_models || { notok "models" "synth failed"; exit 0; }
awk 'BEGIN { for (i = 0; i < 300; i++) printf "tok%d ", 3 + (i * 37) % 120; print "" }' >text.txt
"$MK" quantize base/ q/ --format nf4 -q || notok "setup" "quantize failed"
"$MK" pack base/ b.mkz -q || notok "setup" "pack failed"
# adapters with LoRA modules only (no tensor saved whole), so that they can be combined
for i in 1 2; do
    "$MK" lora extract base/ ft$i/ ad$i/ --rank 4 --embed-lora --skip-undecomposable -q || notok "setup" "lora extract failed"
done

# run_json NAME CMD...: the command succeeds and its stdout is one JSON document.
run_json() {
    _n=$1; shift
    "$@" >"$T/.out" 2>"$T/.err"
    _rc=$?
    if [ $_rc -ne 0 ]; then
        notok "$_n --json" "exit $_rc from: $* :: $(tail -n 2 "$T/.err")"
    elif ! "$JC" <"$T/.out" 2>"$T/.jc"; then
        notok "$_n --json" "$(cat "$T/.jc"); stdout begins: $(head -c 200 "$T/.out")"
    else
        ok "$_n --json: one JSON document"
    fi
}

"$MK" help --commands >commands.txt
[ "$(grep -c . commands.txt)" -ge 15 ] && ok "help --commands lists the commands" || notok "help --commands" "$(cat commands.txt)"
while read -r cmd; do
    # shellcheck disable=SC2086
    "$MK" $cmd --help >help.txt 2>&1 || { notok "$cmd --help" "exit $?"; continue; }
    grep -q -- '--json' help.txt || continue
    case $cmd in
    merge) run_json "$cmd" "$MK" merge "$ROOT/recipes/linear.yaml" o-merge --json -q ;;
    report) run_json "$cmd" "$MK" report q/ --ref base/ -o o-report.html --json -q ;;
    synth) run_json "$cmd" "$MK" synth o-synth/ --hidden 64 --layers 1 --heads 4 --intermediate 64 --vocab 32 --json -q ;;
    inspect) run_json "$cmd" "$MK" inspect base/ --json ;;
    compare) run_json "$cmd" "$MK" compare ft1/ base/ --rel 1 --json ;;
    quantize) run_json "$cmd" "$MK" quantize base/ o-q/ --format int4 --group-size 32 --json -q ;;
    dequantize) run_json "$cmd" "$MK" dequantize q/ o-dq/ --json -q ;;
    convert) run_json "$cmd" "$MK" convert base/ o-cv.gguf --type q8_0 --json -q ;;
    methods) run_json "$cmd" "$MK" methods --json ;;
    "lora apply") run_json "$cmd" "$MK" lora apply base/ ad1/ o-la/ --json -q ;;
    "lora extract") run_json "$cmd" "$MK" lora extract base/ ft1/ o-le/ --rank 2 --json -q ;;
    "lora combine") run_json "$cmd" "$MK" lora combine ad1/ ad2/ o-lc/ --method cat --json -q ;;
    eval) run_json "$cmd" "$MK" eval base/ --text text.txt --ctx 32 --ref ft1/ --json -q ;;
    imatrix) run_json "$cmd" "$MK" imatrix base/ --text text.txt --ctx 32 -o o-im.gguf --json -q ;;
    finetune) run_json "$cmd" "$MK" finetune base/ text.txt fto/ --steps 2 --seq 16 --batch 2 --json -q ;;
    estimate) run_json "$cmd" "$MK" estimate base/ --json ;;
    pack) run_json "$cmd" "$MK" pack ft1/ o-p.mkz --json -q ;;
    unpack) run_json "$cmd" "$MK" unpack b.mkz o-u/ --json -q ;;
    verify) run_json "$cmd" "$MK" verify b.mkz --json ;;
    tokenize) run_json "$cmd" "$MK" tokenize base/ tok3 tok17 --json ;;
    moe) run_json "$cmd" "$MK" moe "$ROOT/recipes/moe/qwen2-moe-shared.yaml" o-moe/ --json -q ;;
    finalize) "$MK" merge "$ROOT/recipes/linear.yaml" o-fin --part 1/1 -q && run_json "$cmd" "$MK" finalize o-fin --json -q ;;
    *) notok "$cmd --json" "its --help lists --json but this test has no invocation for it (add one)" ;;
    esac
done <commands.txt
# the other outputs of merge that --json changes
run_json "merge --dry-run" "$MK" merge "$ROOT/recipes/linear.yaml" o-dry --dry-run --json
run_json "merge --dry-run --parts" "$MK" merge "$ROOT/recipes/linear.yaml" o-dry --dry-run --parts 2 --json
run_json "quantize --dry-run --parts" "$MK" quantize base/ o-dry --format int8 --dry-run --parts 2 --json
run_json "merge --check" "$MK" merge "$ROOT/recipes/linear.yaml" o-merge --check --json -q
run_json "moe --dry-run" "$MK" moe "$ROOT/recipes/moe/mixtral-upcycle.yaml" o-moe-dry/ --dry-run --json
