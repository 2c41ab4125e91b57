#!/bin/sh
# quantize --target-bpw: mixed precision under a budget on a synthetic Llama (8 layers, 56
# weights): the achieved bits per weight within 0.02 below the target at several budgets, the
# allocation no worse than any single format that fits the budget (on its own objective),
# one JSON document, the written checkpoint (one config group per format, its targets the
# modules, read back by dequantize and inspect), the model card's table, determinism, usage
# errors; --sensitivity fisher (also named kld), kld-probe and imatrix (another allocation, determinism, the refusals of a
# missing or mismatched imatrix). compressed-tensors' own reading of the output: tools/compat-alloc.sh (make compat).
. "$MK_ROOT/tests/e2e/lib.sh"
JC=${MK_JSONCHECK:-$ROOT/build/jsoncheck}
"$MK" synth m --hidden 256 --layers 8 --heads 8 --kv-heads 4 --intermediate 512 --vocab 256 --seed 5 -q || { notok "synth" "failed"; exit 0; }

# num KEY FILE: a number from the first line of the allocation JSON
num() { head -n 1 "$2" | sed -n "s/.*\"$1\": \([-0-9.e+]*\).*/\1/p"; }

for b in 4.3 5 6 7; do
    if ! "$MK" quantize m o --target-bpw "$b" --dry-run --json >a.json 2>a.err; then
        notok "--target-bpw $b" "$(tail -n 2 a.err)"
        continue
    fi
    [ -x "$JC" ] && { "$JC" <a.json >/dev/null 2>&1 || notok "--target-bpw $b --json" "not one JSON document"; }
    alloc_budget "--target-bpw $b" "$b" "$(num bpw_quantizable a.json)" a.json
done
if grep -q '"name": "model.layers.0.mlp.down_proj.weight", "numel": 131072, "format": "[a-z0-9:=-]*", "bits_per_weight": [0-9.]*, "predicted_error": .*"options": \[{"format": "int4"' a.json; then
    ok "--json lists each weight with its options"
else
    notok "--json lists each weight with its options" "$(sed -n 2p a.json | head -c 300)"
fi

t_ok "write a mixed checkpoint" "$MK" quantize m q --target-bpw 6 -q
if grep -q '"format": "mixed-precision"' q/config.json && grep -q '"group_1"' q/config.json &&
    grep -q '"model.layers.0.self_attn.q_proj"' q/config.json && grep -q '^## Allocation' q/README.md &&
    grep -q '^| `model.layers.7.mlp.down_proj.weight` | ' q/README.md; then
    ok "config groups per format, the allocation in the model card"
else
    notok "config groups per format, the allocation in the model card" "$(grep -c group_ q/config.json) groups"
fi
t_ok "--report with --target-bpw" "$MK" quantize m qr --target-bpw 6 -q --report qr.html
if [ "$(grep -c '<svg class="plot" data-plot="p[0-9]*" data-kind="bars" data-n="56"' qr.html)" = 2 ] &&
    grep -q '^<h2>Quantization error and size (recomputed' qr.html; then
    ok "--report: the error and bits of each of the 56 weights, read back from the mixed checkpoint"
else
    notok "--report with --target-bpw" "$(grep -o '<svg [^>]*>' qr.html | head -n 4)"
fi
t_fail "--report with --target-bpw --dry-run" 2 "report.*dry-run" "$MK" quantize m q4 --target-bpw 6 --dry-run --report q4.html
t_ok "dequantize reads the mixed checkpoint" "$MK" dequantize q d -q
"$MK" inspect q >ins.txt 2>&1
if grep -q "^quantized: mixed (compressed-tensors, a format per weight); 56 weights" ins.txt; then ok "inspect calls it mixed"
else notok "inspect calls it mixed" "$(tail -n 1 ins.txt)"; fi
t_ok "the same again with one thread and small chunks" "$MK" quantize m q2 --target-bpw 6 -q -j 1 --chunk 4096
t_same "deterministic" q/model.safetensors q2/model.safetensors
t_same "deterministic config" q/config.json q2/config.json

# kld-probe: each layer's attention and MLP probed on a text; the weights' sensitivities then differ
awk 'BEGIN { for (i = 0; i < 600; i++) printf "tok%d ", 3 + (i * 37) % 200; print "" }' >text.txt
if "$MK" quantize m o --target-bpw 5 --sensitivity kld-probe --sensitivity-text text.txt --sensitivity-ctx 64 --dry-run --json >k.json 2>k.err &&
    grep -q "kld-probe: 16 groups of weights probed on 2 window(s) of 64 tokens" k.err && grep -q '"sensitivity": "kld-probe"' k.json; then
    ns=$(sed 1d k.json | grep -o '"sensitivity": [0-9.e+-]*' | sort -u | wc -l)
    got=$(num bpw_quantizable k.json)
    if [ "$ns" -ge 8 ] && awk -v g="$got" 'BEGIN { exit !(g <= 5 && 5 - g <= 0.02) }'; then ok "--sensitivity kld-probe: $ns distinct sensitivities, $got bits per weight"
    else notok "--sensitivity kld-probe" "$ns distinct sensitivities, $got bits per weight"; fi
else
    notok "--sensitivity kld-probe" "$(tail -n 2 k.err)"
fi
# fisher: each element's squared error weighted by half its expected Fisher information per
# token (one backward pass per window of the text): another allocation than weight's, the same
# bytes at one thread and small chunks
if "$MK" quantize m o --target-bpw 5 --sensitivity fisher --sensitivity-text text.txt --sensitivity-ctx 64 --sensitivity-chunks 3 \
    --dry-run --json >f.json 2>f.err && grep -q "fisher: 3 window(s) of 64 tokens of text.txt, labels drawn from the model" f.err &&
    grep -q '"sensitivity": "fisher"' f.json; then
    got=$(num bpw_quantizable f.json)
    "$MK" quantize m o --target-bpw 5 --dry-run --json >w5f.json 2>/dev/null
    sed 1d f.json | grep -o '"numel": [0-9]*, "format": "[^"]*"' >f.f
    sed 1d w5f.json | grep -o '"numel": [0-9]*, "format": "[^"]*"' >wf.f
    nd=$(cmp -l f.f wf.f 2>/dev/null | wc -l)
    ns=$(sed 1d f.json | grep -o '"sensitivity": [0-9.e+-]*' | sort -u | wc -l)
    if [ "$nd" -gt 0 ] && [ "$ns" -ge 50 ] && awk -v g="$got" 'BEGIN { exit !(g <= 5 && 5 - g <= 0.02) }'; then
        ok "--sensitivity fisher: $got bits per weight, $ns distinct mean Fisher values, another allocation than weight's"
    else
        notok "--sensitivity fisher" "$got bits per weight, $ns Fisher values, differs from weight's: $nd"
    fi
    "$MK" quantize m o --target-bpw 5 --sensitivity fisher --sensitivity-text text.txt --sensitivity-ctx 64 --sensitivity-chunks 3 \
        --dry-run --json -j 1 --chunk 4096 >f2.json 2>/dev/null
    sed 's/"seconds": [0-9.]*, "cpu_seconds": [0-9.]*//' f.json >f.n
    sed 's/"seconds": [0-9.]*, "cpu_seconds": [0-9.]*//' f2.json >f2.n
    t_same "--sensitivity fisher: the same allocation with one thread and small chunks" f.n f2.n
    # kld is the same predicted KL divergence under its other name
    "$MK" quantize m o --target-bpw 5 --sensitivity kld --sensitivity-text text.txt --sensitivity-ctx 64 --sensitivity-chunks 3 \
        --dry-run --json >f3.json 2>/dev/null
    sed 's/"seconds": [0-9.]*, "cpu_seconds": [0-9.]*//' f3.json >f3.n
    t_same "--sensitivity kld is fisher's allocation" f.n f3.n
else
    notok "--sensitivity fisher" "$(tail -n 2 f.err)"
fi
t_fail "fisher needs a text" 2 "--sensitivity fisher runs the model on a text: give --sensitivity-text FILE" \
    "$MK" quantize m q3 --target-bpw 5 --sensitivity fisher
t_fail "fisher: a window longer than the text" 2 "text\.txt: [0-9]+ tokens, fewer than one window of 4096" \
    "$MK" quantize m q3 --target-bpw 5 --sensitivity fisher --sensitivity-text text.txt --sensitivity-ctx 4096
t_fail "--sensitivity-text without a text sensitivity" 2 "--sensitivity-text is for --sensitivity kld \(fisher\) or kld-probe" \
    "$MK" quantize m q3 --target-bpw 5 --sensitivity-text text.txt
# imatrix: each weight's error per input column weighted by the column's mean squared
# activation (an imatrix of the model on the text); the allocation then differs from weight's
if "$MK" imatrix m -t text.txt -o im.gguf -c 64 -q &&
    "$MK" quantize m o --target-bpw 5 --sensitivity imatrix --imatrix im.gguf --dry-run --json >i.json 2>i.err &&
    grep -q '"sensitivity": "imatrix"' i.json; then
    got=$(num bpw_quantizable i.json)
    "$MK" quantize m o --target-bpw 5 --dry-run --json >w5.json 2>/dev/null
    fmts() { sed 1d "$1" | grep -o '"numel": [0-9]*, "format": "[^"]*"'; }
    nd=$(fmts i.json >i.f; fmts w5.json >w.f; cmp -l i.f w.f 2>/dev/null | wc -l)
    ns=$(sed 1d i.json | grep -o '"sensitivity": [0-9.e+-]*' | sort -u | wc -l)
    if [ "$nd" -gt 0 ] && [ "$ns" -ge 16 ] && awk -v g="$got" 'BEGIN { exit !(g <= 5 && 5 - g <= 0.02) }'; then
        ok "--sensitivity imatrix: $got bits per weight, $ns distinct mean importances, another allocation than weight's"
    else
        notok "--sensitivity imatrix" "$got bits per weight, $ns importances, differs from weight's: $nd"
    fi
    "$MK" quantize m o --target-bpw 5 --sensitivity imatrix --imatrix im.gguf --dry-run --json -j 1 --chunk 4096 >i2.json 2>/dev/null
    sed 's/"seconds": [0-9.]*, "cpu_seconds": [0-9.]*//' i.json >i.n
    sed 's/"seconds": [0-9.]*, "cpu_seconds": [0-9.]*//' i2.json >i2.n
    t_same "--sensitivity imatrix: the same allocation with one thread and small chunks" i.n i2.n
else
    notok "--sensitivity imatrix" "$(tail -n 2 i.err)"
fi
t_ok "write a mixed checkpoint by imatrix" "$MK" quantize m qi --target-bpw 5 --sensitivity imatrix --imatrix im.gguf -q
if grep -q -- '--sensitivity imatrix --imatrix im.gguf`' qi/README.md; then ok "the model card names the imatrix sensitivity and file"
else notok "the model card names the imatrix sensitivity and file" "$(sed -n 10,12p qi/README.md)"; fi
"$MK" synth m2 --hidden 256 --layers 8 --heads 8 --kv-heads 4 --intermediate 384 --vocab 256 --seed 5 -q
"$MK" synth m3 --hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 512 --vocab 256 --seed 5 -q
"$MK" imatrix m2 -t text.txt -o im2.gguf -c 64 -q
"$MK" imatrix m3 -t text.txt -o im3.gguf -c 64 -q
t_fail "imatrix: a missing file" 1 "^mergekit-c: error: nope\.gguf: cannot open" "$MK" quantize m q3 --target-bpw 5 --sensitivity imatrix --imatrix nope.gguf
t_fail "imatrix: another model's columns" 1 "im2\.gguf: tensor blk\.0\.ffn_down\.weight: 1 x 384 importances for model\.layers\.0\.mlp\.down_proj\.weight, a matrix of 512 columns" \
    "$MK" quantize m q3 --target-bpw 5 --sensitivity imatrix --imatrix im2.gguf
t_fail "imatrix: a weight it has none for" 1 "im3\.gguf: no importances for tensor model\.layers\.4\.self_attn\.q_proj\.weight" \
    "$MK" quantize m q3 --target-bpw 5 --sensitivity imatrix --imatrix im3.gguf
t_fail "imatrix: not a GGUF file" 1 "text\.txt: not a GGUF file" "$MK" quantize m q3 --target-bpw 5 --sensitivity imatrix --imatrix text.txt
t_fail "imatrix needs --imatrix" 2 "give --imatrix FILE" "$MK" quantize m q3 --target-bpw 5 --sensitivity imatrix
t_fail "--imatrix needs --sensitivity imatrix" 2 "--imatrix is for --sensitivity imatrix" "$MK" quantize m q3 --target-bpw 5 --imatrix im.gguf
t_fail "kld needs a text" 2 "give --sensitivity-text FILE" "$MK" quantize m q3 --target-bpw 5 --sensitivity kld
t_fail "kld-probe needs a text" 2 "give --sensitivity-text FILE" "$MK" quantize m q3 --target-bpw 5 --sensitivity kld-probe
t_fail "budget below the cheapest" 2 "--target-bpw 2: the budget is below the cheapest choice: at least 4\.[0-9]+ bits per weight" \
    "$MK" quantize m q3 --target-bpw 2
t_fail "--format with --target-bpw" 2 "not with --format" "$MK" quantize m q3 --target-bpw 5 --format int4
t_fail "a format that cannot mix" 2 "--formats: nf4 is not written in the compressed-tensors layout" "$MK" quantize m q3 --target-bpw 5 --formats nf4,int4
t_fail "settings go in --formats" 2 "--group-size: with --target-bpw, settings go in --formats" "$MK" quantize m q3 --target-bpw 5 --group-size 32
t_fail "--formats without --target-bpw" 2 "give --target-bpw" "$MK" quantize m q3 --formats int4,keep
t_fail "unknown sensitivity" 2 "--sensitivity bogus" "$MK" quantize m q3 --target-bpw 5 --sensitivity bogus
t_absent "no output after errors" q3 q3.tmp

# SmolLM2-135M (tools/get-smollm2.sh): 210 weights, int4's groups of 128 fit only down_proj
SM=${MK_SMOLLM2:-"$ROOT/.models/smollm2"}
if [ ! -f "$SM/model.safetensors" ]; then
    echo "skip - smollm2 --target-bpw: $SM is absent (run tools/get-smollm2.sh)"
elif ! "$MK" quantize "$SM" o --target-bpw 5 --dry-run --json >s.json 2>s.err; then
    notok "smollm2 --target-bpw 5" "$(tail -n 2 s.err)"
else
    got=$(num bpw_quantizable s.json)
    obj=$(num objective s.json)
    nv=$(head -n 1 s.json | sed -n 's/.*"format": "nvfp4", "alone_bpw": [0-9.]*, "alone_objective": \([0-9.e+-]*\).*/\1/p')
    if awk -v g="$got" -v o="$obj" -v n="$nv" 'BEGIN { exit !(g <= 5 && 5 - g <= 0.02 && n != "" && o < n) }'; then
        ok "smollm2 --target-bpw 5: $got bits per weight, objective $obj below nvfp4's $nv"
    else
        notok "smollm2 --target-bpw 5" "achieved $got, objective $obj, nvfp4 alone $nv"
    fi
fi
